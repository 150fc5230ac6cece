import Foundation


/// Decodes configuration files into `Codable` types, with errors that name the file and the
/// field (`bias[1]: expected Float`).
///
/// JSON, or TOML (by the `.toml` extension) read by MoEKit's own `TOML` reader into the same
/// JSON, so both formats take the same keys and give the same errors. (The one TOML package
/// available, TOMLKit, declares public literal conformances that leak into every module
/// importing MoE and make ordinary arithmetic fail to type-check, so it cannot be a dependency.)
public enum ConfigFile {
    /// The two formats.
    public enum Format: Sendable { case json, toml }

    /// TOML for a `.toml` path, JSON otherwise.
    public static func format(of path: String) -> Format {
        path.lowercased().hasSuffix(".toml") ? .toml : .json
    }

    /// Reads and decodes the file at `path`.
    public static func load<T: Decodable>(_ type: T.Type, path: String) throws -> T {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw MoECoreError.io(path: path, reason: "cannot read: \(systemReason(error))")
        }
        return try decode(type, data: data, path: path, format: format(of: path))
    }

    /// Decodes `data` in `format`; `path` names it in errors.
    public static func decode<T: Decodable>(_ type: T.Type, data: Data, path: String, format: Format) throws(MoECoreError) -> T {
        var json = data
        if format == .toml {
            guard let text = String(data: data, encoding: .utf8) else {
                throw .invalidValue(path: path, field: "(file)", reason: "TOML must be UTF-8")
            }
            json = try TOML.json(from: text, path: path)
        }
        return try decodeJSON(type, data: json, path: path)
    }

    static func decodeJSON<T: Decodable>(_ type: T.Type, data: Data, path: String) throws(MoECoreError) -> T {
        func name(_ codingPath: [any CodingKey]) -> String {
            let s = codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return s.isEmpty ? "(top level)" : s.replacingOccurrences(of: ".[", with: "[")
        }
        if let strict = T.self as? any StrictConfig.Type, let object = try? JSONSerialization.jsonObject(with: data) {
            try strict.configKeys.check(object, path: path, field: "")
        }
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw .invalidValue(path: path, field: name(context.codingPath + [key]), reason: "missing")
        } catch let DecodingError.typeMismatch(expected, context) {
            throw .invalidValue(path: path, field: name(context.codingPath), reason: "expected \(expected)")
        } catch let DecodingError.valueNotFound(expected, context) {
            throw .invalidValue(path: path, field: name(context.codingPath), reason: "expected \(expected), found null")
        } catch let DecodingError.dataCorrupted(context) {
            throw .invalidValue(path: path, field: name(context.codingPath), reason: context.debugDescription)
        } catch {
            throw .invalidValue(path: path, field: "(top level)", reason: "\(error)")
        }
    }
}
