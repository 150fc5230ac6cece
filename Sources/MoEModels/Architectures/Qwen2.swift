import Foundation

/// Qwen2 and Qwen2.5 (`qwen2`; transformers' `modeling_qwen2.py`): Llama with q/k/v biases
/// (never on the output) and sliding windows from `max_window_layers` on when
/// `use_sliding_window` (or as `layer_types` says).
enum Qwen2: ArchitectureFamily {
    static let modelTypes = ["qwen2"]
    static func className(_ modelType: String) -> String { "Qwen2ForCausalLM" }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        var s = try decodeConfig(Llama.DenseConfig.self, data, path: path).denseSpec(common, path: path)
        s.qkvBias = true
        s.slidingWindows = try common.slidingWindows(layers: s.layers, rule: .fromMaxWindowLayers, path: path)
        return s
    }

    static func randomConfig(_ s: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["intermediate_size": s.denseSize, "use_sliding_window": false]
    }
}
