import Foundation

/// A TOML 1.0 reader for config files that turns a document into the equivalent JSON, so
/// every `Decodable` config reads TOML and JSON through one decoder with the same field errors.
///
/// Supported: comments; bare, quoted and dotted keys; `[table]` and `[[array of tables]]`
/// headers; basic, literal and multi-line strings with every escape; integers (decimal with
/// `_`, `0x`, `0o`, `0b`); floats (fraction, exponent); booleans; arrays (over several lines,
/// trailing comma); inline tables. Refused with the line named: dates and times (no config
/// field takes one), `inf` and `nan` (JSON cannot carry them), duplicate keys, and anything
/// malformed.
enum TOML {
    /// One parsed value.
    indirect enum Value {
        case string(String), integer(Int64), float(Double), bool(Bool), array([Value]), table(Table)
    }

    /// A table, keeping its keys in document order.
    final class Table {
        var keys: [String] = []
        var values: [String: Value] = [:]
        /// Tables made by a `[header]` cannot be given a second header.
        var explicitlyDefined = false
        /// `[[name]]` arrays, which later headers may extend.
        var arraysOfTables: Set<String> = []
        /// Inline tables and plain arrays are closed to headers and dotted keys.
        var sealed = false

        func set(_ key: String, _ value: Value) { if values[key] == nil { keys.append(key) }; values[key] = value }
    }

    /// Parses `text`; errors name `path` and the line.
    static func json(from text: String, path: String?) throws(MoECoreError) -> Data {
        var parser = Parser(bytes: Array(text.utf8), path: path)
        let root = try parser.document()
        var out = ""
        try write(.table(root), to: &out, path: path)
        return Data(out.utf8)
    }

    private static func write(_ value: Value, to out: inout String, path: String?) throws(MoECoreError) {
        switch value {
        case .string(let s): out += quoted(s)
        case .integer(let i): out += String(i)
        case .float(let d):
            guard d.isFinite else { throw .invalidValue(path: path, field: "(file)", reason: "inf and nan cannot be config values") }
            out += "\(d)"
        case .bool(let b): out += b ? "true" : "false"
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                try write(item, to: &out, path: path)
            }
            out += "]"
        case .table(let t):
            out += "{"
            for (i, key) in t.keys.enumerated() {
                if i > 0 { out += "," }
                out += quoted(key) + ":"
                try write(t.values[key]!, to: &out, path: path)
            }
            out += "}"
        }
    }

    private static func quoted(_ s: String) -> String {
        var r = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": r += "\\\""
            case "\\": r += "\\\\"
            case "\n": r += "\\n"
            case "\r": r += "\\r"
            case "\t": r += "\\t"
            default:
                if u.value < 0x20 { r += String(format: "\\u%04x", u.value) } else { r.unicodeScalars.append(u) }
            }
        }
        return r + "\""
    }
}
