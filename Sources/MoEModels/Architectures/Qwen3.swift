import Foundation

/// Qwen3 (`qwen3`; transformers' `modeling_qwen3.py`): Llama with per-head QK-norm, optional
/// biases on q, k, v and o (`attention_bias`), and Qwen2's sliding-window rule.
enum Qwen3: ArchitectureFamily {
    static let modelTypes = ["qwen3"]
    static func className(_ modelType: String) -> String { "Qwen3ForCausalLM" }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Llama.DenseConfig.self, data, path: path)
        var s = try x.denseSpec(common, path: path)
        s.qkvBias = x.attentionBias
        s.outputBias = x.attentionBias
        s.qkNorm = .perHead
        s.slidingWindows = try common.slidingWindows(layers: s.layers, rule: .fromMaxWindowLayers, path: path)
        return s
    }

    static func randomConfig(_ s: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["intermediate_size": s.denseSize, "attention_bias": false, "use_sliding_window": false]
    }
}
