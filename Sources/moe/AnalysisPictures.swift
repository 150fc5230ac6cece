import Foundation
import MoEGenerate

/// The pictures of `moe analyze` and the HTML report that shows them.
enum AnalysisPictures {
    /// (file name, SVG) for every picture of `layers`.
    static func draw(_ layers: [RoutingAnalysis.Layer]) -> [(name: String, svg: String)] {
        guard let first = layers.first else { return [] }
        var out: [(String, String)] = []
        let expertLabels = (0..<first.experts).map(String.init), layerLabels = layers.map { "layer \($0.layer)" }
        func share(_ load: [Int]) -> [Double] {
            let total = Double(max(1, load.reduce(0, +)))
            return load.map { Double($0) / total }
        }
        out.append(("load.svg", SVGPlot.heatmap(layers.map { share($0.load) }, rows: layerLabels, columns: expertLabels,
                                                title: "Expert load: share of each layer's routed tokens", rowAxis: "MoE layer", columnAxis: "expert")))
        let maxCount = layers.flatMap { $0.expertsPerTokenHistogram.keys }.max() ?? 0
        let counts = Array(0...maxCount)
        out.append(("experts-per-token.svg", SVGPlot.lines(layers.map { l in
            let tokens = Double(max(1, l.expertsPerTokenHistogram.values.reduce(0, +)))
            return (name: "layer \(l.layer)", values: counts.map { Double(l.expertsPerTokenHistogram[$0] ?? 0) / tokens })
        }, xLabels: counts.map(String.init), title: "Experts per token", xAxis: "experts a token got", yAxis: "share of tokens")))
        let groups = Set(layers.flatMap { $0.loadByGroup.keys }).sorted()
        if groups.count > 1 {
            out.append(("experts-per-token-by-task.svg", SVGPlot.heatmap(groups.map { g in layers.map { $0.expertsPerTokenByGroup[g] ?? 0 } },
                        rows: groups, columns: layers.map { String($0.layer) }, title: "Experts per token, by task and layer",
                        rowAxis: "task", columnAxis: "MoE layer")))
        }
        out.append(("consistency.svg", SVGPlot.bars(layers.map(\.tokenConsistency), labels: layers.map { String($0.layer) },
                                                    title: "Token-id consistency of the top expert (OpenMoE)", xAxis: "MoE layer",
                                                    yAxis: "share of occurrences")))
        for l in layers {
            let e = l.experts
            let rows = (0..<e).map { i -> [Double] in
                let own = Double(max(1, l.load[i]))
                return (0..<e).map { Double(l.coactivation[i * e + $0]) / own }
            }
            out.append(("coactivation-layer\(l.layer).svg", SVGPlot.heatmap(rows, rows: expertLabels, columns: expertLabels,
                        title: "Layer \(l.layer): P(expert j also chosen | expert i chosen)", rowAxis: "expert i", columnAxis: "expert j")))
            let groups = l.loadByGroup.keys.sorted()
            if groups.count > 1 {
                out.append(("groups-layer\(l.layer).svg", SVGPlot.heatmap(groups.map { share(l.loadByGroup[$0]!) }, rows: groups, columns: expertLabels,  // safe: keys of the same dictionary
                            title: "Layer \(l.layer): each task's expert distribution", rowAxis: "task", columnAxis: "expert")))
            }
            if !l.droppedByPosition.isEmpty {
                out.append(("dropped-layer\(l.layer).svg", SVGPlot.bars(l.droppedByPosition.map(Double.init), labels: l.droppedByPosition.indices.map(String.init),
                            title: "Layer \(l.layer): assignments capacity dropped, by position", xAxis: "position in the window", yAxis: "dropped")))
            }
        }
        return out
    }

    /// One self-contained page: a summary table and every picture inline.
    static func html(_ report: AnalysisReport, _ pictures: [(name: String, svg: String)]) -> String {
        var rows = ""
        for l in report.layers {
            let total = Double(max(1, l.load.reduce(0, +)))
            let shares = l.load.map { Double($0) / total }
            rows += "<tr><td>\(l.layer)</td><td>\(String(format: "%.3f", l.expertsPerToken))</td><td>\(String(format: "%.3f", l.tokenConsistency))</td>"
                + "<td>\(String(format: "%.3f", shares.min() ?? 0))</td><td>\(String(format: "%.3f", shares.max() ?? 0))</td>"
                + "<td>\(l.droppedByPosition.reduce(0, +))</td></tr>"
        }
        let figures = pictures.map { "<figure><figcaption>\(SVGPlot.escape($0.name))</figcaption>\($0.svg)</figure>" }.joined(separator: "\n")
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>MoEKit routing analysis</title>
        <style>body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}figure{display:inline-block;margin:12px;vertical-align:top}figcaption{font-size:12px;color:#555}</style>
        </head><body>
        <h1>Routing analysis</h1>
        <p>Model: \(SVGPlot.escape(report.model)). \(report.tokens) tokens in \(report.windows) windows, \(String(format: "%.0f", report.tokensPerS)) tokens/s traced; tracing cost \(String(format: "%.1f", 100 * report.traceOverhead))% of a forward pass.</p>
        <table><tr><th>layer</th><th>experts per token</th><th>token-id consistency</th><th>least load share</th><th>most load share</th><th>dropped</th></tr>
        \(rows)</table>
        \(figures)
        </body></html>
        """
    }
}
