import Foundation

/// Small, dependency-free SVG charts for `moe analyze`: heatmaps, bar charts and line plots,
/// each a self-contained `<svg>` element with a title, axis labels and a colour or value scale.
public enum SVGPlot {
    /// A heatmap of `values` (rows x columns), white to dark blue over [0, max], labelled.
    public static func heatmap(_ values: [[Double]], rows: [String], columns: [String], title: String,
                               rowAxis: String, columnAxis: String, cell: Double = 14) -> String {
        let longest = Double(rows.map(\.count).max() ?? 0)
        let left = 34 + 6 * longest, top = 40.0, bottom = 46.0
        let nr = values.count, nc = values.first?.count ?? 0
        // Wide enough for the title (about 7 px a character at 14 px).
        let right = max(80, 7 * Double(title.count) + 20 - left - Double(nc) * cell)
        let w = left + Double(nc) * cell + right, h = top + Double(nr) * cell + bottom
        let peak = max(values.flatMap { $0 }.max() ?? 0, 1e-12)
        var out = header(width: w, height: h, title: title)
        for (r, row) in values.enumerated() {
            for (c, v) in row.enumerated() {
                out += "<rect x=\"\(f(left + Double(c) * cell))\" y=\"\(f(top + Double(r) * cell))\" width=\"\(f(cell))\" height=\"\(f(cell))\" fill=\"\(color(v / peak))\"><title>\(escape(rows[r])), \(escape(columns[c])): \(f(v, 4))</title></rect>"
            }
        }
        let rowStep = max(1, nr / 24), columnStep = max(1, nc / 32)
        for r in stride(from: 0, to: nr, by: rowStep) {
            out += text(left - 4, top + (Double(r) + 0.75) * cell, rows[r], anchor: "end")
        }
        for c in stride(from: 0, to: nc, by: columnStep) {
            out += text(left + (Double(c) + 0.5) * cell, top + Double(nr) * cell + 14, columns[c], anchor: "middle")
        }
        out += text(left + Double(nc) * cell / 2, h - 8, columnAxis, anchor: "middle", size: 12)
        out += "<text x=\"12\" y=\"\(f(top + Double(nr) * cell / 2))\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 12 \(f(top + Double(nr) * cell / 2)))\">\(escape(rowAxis))</text>"
        // The colour scale.
        let sx = left + Double(nc) * cell + 20, sh = max(40, Double(nr) * cell)
        for i in 0..<20 {
            let v = 1 - Double(i) / 19
            out += "<rect x=\"\(f(sx))\" y=\"\(f(top + Double(i) * sh / 20))\" width=\"12\" height=\"\(f(sh / 20 + 0.5))\" fill=\"\(color(v))\"/>"
        }
        out += text(sx + 16, top + 8, f(peak, 3), anchor: "start")
        out += text(sx + 16, top + sh, "0", anchor: "start")
        return out + "</svg>"
    }

    /// A bar chart of `values`, one bar per label, with a y axis from 0.
    public static func bars(_ values: [Double], labels: [String], title: String, xAxis: String, yAxis: String) -> String {
        let left = 60.0, top = 40.0, bottom = 46.0, width = max(240, 22.0 * Double(values.count)), height = 180.0
        let peak = max(values.max() ?? 0, 1e-12)
        var out = header(width: left + width + 20, height: top + height + bottom, title: title)
        out += axes(left: left, top: top, width: width, height: height, peak: peak, xAxis: xAxis, yAxis: yAxis)
        let slot = width / Double(max(1, values.count))
        for (i, v) in values.enumerated() {
            let bh = height * v / peak
            out += "<rect x=\"\(f(left + Double(i) * slot + slot * 0.15))\" y=\"\(f(top + height - bh))\" width=\"\(f(slot * 0.7))\" height=\"\(f(bh))\" fill=\"#3a6fb0\"><title>\(escape(labels[i])): \(f(v, 4))</title></rect>"
            if values.count <= 40 || i % max(1, values.count / 20) == 0 {
                out += text(left + (Double(i) + 0.5) * slot, top + height + 14, labels[i], anchor: "middle")
            }
        }
        return out + "</svg>"
    }

    /// Line plots over shared x labels, one line (and legend entry) per series.
    public static func lines(_ series: [(name: String, values: [Double])], xLabels: [String], title: String, xAxis: String, yAxis: String) -> String {
        let left = 60.0, top = 40.0, bottom = 46.0, width = 420.0, height = 200.0
        let peak = max(series.flatMap(\.values).max() ?? 0, 1e-12)
        var out = header(width: left + width + 140, height: top + height + bottom, title: title)
        out += axes(left: left, top: top, width: width, height: height, peak: peak, xAxis: xAxis, yAxis: yAxis)
        let n = max(2, xLabels.count)
        func x(_ i: Int) -> Double { left + width * Double(i) / Double(n - 1) }
        for (i, label) in xLabels.enumerated() where xLabels.count <= 24 || i % (xLabels.count / 12) == 0 {
            out += text(x(i), top + height + 14, label, anchor: "middle")
        }
        let palette = ["#3a6fb0", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d6a9f", "#2e4057", "#b5838d"]
        for (s, line) in series.enumerated() {
            let colour = palette[s % palette.count]
            let points = line.values.enumerated().map { "\(f(x($0.offset))),\(f(top + height - height * $0.element / peak))" }.joined(separator: " ")
            out += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"/>"
            out += "<rect x=\"\(f(left + width + 16))\" y=\"\(f(top + Double(s) * 16))\" width=\"10\" height=\"10\" fill=\"\(colour)\"/>"
            out += text(left + width + 30, top + Double(s) * 16 + 9, line.name, anchor: "start")
        }
        return out + "</svg>"
    }

    static func header(width: Double, height: Double, title: String) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(width))\" height=\"\(f(height))\" viewBox=\"0 0 \(f(width)) \(f(height))\" font-family=\"sans-serif\">"
            + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>" + text(width / 2, 20, title, anchor: "middle", size: 14)
    }

    static func axes(left: Double, top: Double, width: Double, height: Double, peak: Double, xAxis: String, yAxis: String) -> String {
        var out = "<line x1=\"\(f(left))\" y1=\"\(f(top + height))\" x2=\"\(f(left + width))\" y2=\"\(f(top + height))\" stroke=\"black\"/>"
        out += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(top + height))\" stroke=\"black\"/>"
        for i in 0...4 {
            let v = peak * Double(i) / 4, y = top + height - height * Double(i) / 4
            out += "<line x1=\"\(f(left - 4))\" y1=\"\(f(y))\" x2=\"\(f(left))\" y2=\"\(f(y))\" stroke=\"black\"/>" + text(left - 6, y + 4, f(v, 3), anchor: "end")
        }
        out += text(left + width / 2, top + height + 34, xAxis, anchor: "middle", size: 12)
        out += "<text x=\"14\" y=\"\(f(top + height / 2))\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(f(top + height / 2)))\">\(escape(yAxis))</text>"
        return out
    }

    static func text(_ x: Double, _ y: Double, _ s: String, anchor: String, size: Int = 10) -> String {
        "<text x=\"\(f(x))\" y=\"\(f(y))\" font-size=\"\(size)\" text-anchor=\"\(anchor)\">\(escape(s))</text>"
    }

    /// White (0) through blue to dark navy (1).
    static func color(_ v: Double) -> String {
        let t = min(1, max(0, v.isFinite ? v : 0))
        let stops: [(Double, Double, Double)] = [(255, 255, 255), (120, 170, 220), (30, 80, 160), (10, 20, 60)]
        let x = t * Double(stops.count - 1), i = min(Int(x), stops.count - 2), u = x - Double(i)
        let (a, b) = (stops[i], stops[i + 1])
        return String(format: "#%02x%02x%02x", Int(a.0 + (b.0 - a.0) * u), Int(a.1 + (b.1 - a.1) * u), Int(a.2 + (b.2 - a.2) * u))
    }

    static func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }

    /// `s` safe inside XML text and attributes.
    public static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
