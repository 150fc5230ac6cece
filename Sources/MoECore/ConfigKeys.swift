import Foundation

/// The keys a config object may hold, so that a misspelt key (`learning_rat`, `capacity_factr`)
/// is an error naming it rather than a setting silently left at its default.
///
/// A type whose config files are MoEKit's own (a training config, a router config) conforms to
/// `StrictConfig`; `ConfigFile` checks the parsed file against its `configKeys` before decoding.
/// Hugging Face's config.json is not checked: it carries many keys MoEKit has no use for.
public indirect enum ConfigKeys: Sendable {
    /// Any value: a leaf, or an object whose keys are not checked.
    case any
    /// An object with exactly these keys (each optional), and what each holds.
    case object([String: ConfigKeys])
    /// An array each of whose elements is checked.
    case array(ConfigKeys)

    /// An object whose keys are the raw values of a `CodingKeys` enum, each holding anything.
    public static func keys<K: CodingKey & CaseIterable>(_: K.Type) -> ConfigKeys {
        .object(Dictionary(uniqueKeysWithValues: K.allCases.map { ($0.stringValue, .any) }))
    }

    /// This object with `extra` describing some of its keys further.
    public func with(_ extra: [String: ConfigKeys]) -> ConfigKeys {
        guard case let .object(keys) = self else { return self }
        return .object(keys.merging(extra) { _, new in new })
    }

    /// Checks the parsed JSON `value`; throws naming the first unknown key under `field`.
    /// A value of the wrong kind is left to the decoder, which names it.
    func check(_ value: Any, path: String, field: String) throws(MoECoreError) {
        switch self {
        case .any: return
        case let .array(element):
            guard let items = value as? [Any] else { return }
            for (i, item) in items.enumerated() { try element.check(item, path: path, field: "\(field)[\(i)]") }
        case let .object(keys):
            guard let object = value as? [String: Any] else { return }
            for key in object.keys.sorted() {
                let name = field.isEmpty ? key : "\(field).\(key)"
                guard let inner = keys[key] else {
                    throw .invalidValue(path: path, field: name, reason: "unknown key (known: \(keys.keys.sorted().joined(separator: ", ")))")
                }
                try inner.check(object[key]!, path: path, field: name)  // safe: key comes from object.keys
            }
        }
    }
}

/// A type read from MoEKit's own config files, whose keys are a closed set.
public protocol StrictConfig {
    /// The keys its config object may hold.
    static var configKeys: ConfigKeys { get }
}
