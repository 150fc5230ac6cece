import MoECore

/// Where a model's weights come from, asked for by their Hugging Face names (the names the
/// family's `TensorNames` spell): a checkpoint folder of safetensors (`Checkpoint`), or a GGUF
/// file (`GGUFWeights`, which maps each name to llama.cpp's). Every tensor is a zero-copy view
/// in its stored type.
public protocol WeightSource: AnyObject, Sendable {
    /// The file errors about the model's configuration name (config.json, or the GGUF file).
    var configPath: String { get }
    /// Every stored tensor name, as the source stores it.
    var names: [String] { get }
    /// Whether the tensor `name` is there.
    func has(_ name: String) -> Bool
    /// The tensor `name`, checked against `shape` when given.
    func tensor(_ name: String, shape: [Int]?) throws(ModelError) -> Tensor
}

extension WeightSource {
    /// The file or folder that holds the weights (errors about a weight's values name it).
    public var weightsPath: String {
        configPath.hasSuffix("/config.json") ? String(configPath.dropLast("/config.json".count)) : configPath
    }

    /// The tensor `name`, any shape.
    public func tensor(_ name: String) throws(ModelError) -> Tensor { try tensor(name, shape: nil) }

    /// The tensor `name` if present (checked against `shape`), else nil.
    public func optionalTensor(_ name: String, shape: [Int]? = nil) throws(ModelError) -> Tensor? {
        has(name) ? try tensor(name, shape: shape) : nil
    }
}

extension Checkpoint: WeightSource {}
