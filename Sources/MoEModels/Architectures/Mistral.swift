import Foundation

/// Mistral (`mistral`; transformers' `modeling_mistral.py`): Llama with sliding-window
/// attention on every layer when `sliding_window` is set, and no biases.
enum Mistral: ArchitectureFamily {
    static let modelTypes = ["mistral"]
    static func className(_ modelType: String) -> String { "MistralForCausalLM" }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Llama.DenseConfig.self, data, path: path)
        var s = try x.denseSpec(common, path: path)
        s.slidingWindows = try common.slidingWindows(layers: s.layers, rule: .everyLayer, path: path)
        return s
    }

    static func randomConfig(_ s: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["intermediate_size": s.denseSize, "sliding_window": s.slidingWindow.map { $0 as Any } ?? NSNull()]
    }
}
