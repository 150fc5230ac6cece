import MoECore

/// An error loading or running a model: bad input from outside the process, naming the file and
/// the field or tensor at fault.
public enum ModelError: Error, Equatable, CustomStringConvertible {
    /// A file could not be read.
    case io(path: String, reason: String)
    /// A file is malformed (truncated, a header past the end, bad JSON, inconsistent offsets).
    case invalidFile(path: String, field: String, reason: String)
    /// A tensor the architecture needs is not in the checkpoint.
    case missingTensor(path: String, name: String)
    /// A tensor has the wrong shape.
    case wrongShape(path: String, name: String, expected: [Int], found: [Int])
    /// A tensor's dtype cannot be used.
    case unsupportedDType(path: String, name: String, dtype: String)
    /// config.json's `model_type` names an architecture MoEKit does not implement.
    case unknownArchitecture(path: String, name: String)
    /// A config value is missing or invalid.
    case invalidConfig(path: String, field: String, reason: String)
    /// A token id is outside the vocabulary.
    case tokenOutOfRange(id: Int, vocabularySize: Int)

    public var description: String {
        switch self {
        case let .io(path, reason): return "\(path): \(reason)"
        case let .invalidFile(path, field, reason): return "\(path): \(field): \(reason)"
        case let .missingTensor(path, name): return "\(path): tensor '\(name)' is missing"
        case let .wrongShape(path, name, expected, found):
            return "\(path): tensor '\(name)' has shape \(found), expected \(expected)"
        case let .unsupportedDType(path, name, dtype):
            return "\(path): tensor '\(name)' has dtype \(dtype); MoEKit reads F32, F16 and BF16"
        case let .unknownArchitecture(path, name):
            return "\(path): model_type: '\(name)' is not supported (MoEKit runs \(Architectures.modelTypes.joined(separator: ", ")))"
        case let .invalidConfig(path, field, reason): return "\(path): \(field): \(reason)"
        case let .tokenOutOfRange(id, vocab): return "token id \(id) is outside the vocabulary (0..<\(vocab))"
        }
    }
}

extension MappedFile {
    /// Maps a model file (safetensors, GGUF), a failure being `ModelError.io` naming it.
    static func model(_ path: String) throws(ModelError) -> MappedFile {
        do {
            return try MappedFile(path: path)
        } catch {
            throw .io(path: path, reason: error.description)
        }
    }
}
