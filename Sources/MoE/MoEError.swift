/// An error from the MoE module: bad input from outside the process, naming file and field.
public enum MoEError: Error, Equatable, CustomStringConvertible {
    /// A router or layer configuration is invalid (`path` is the config file, if any).
    case invalidConfig(path: String?, field: String, reason: String)
    /// Router logits (from a file) are malformed.
    case invalidLogits(path: String, field: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidConfig(path, field, reason):
            return (path.map { "\($0): " } ?? "") + "\(field): \(reason)"
        case let .invalidLogits(path, field, reason):
            return "\(path): \(field): \(reason)"
        }
    }
}
