import Foundation

/// Qwen3-MoE (`qwen3_moe`; transformers' `modeling_qwen3_moe.py`): Qwen2-MoE's routing without
/// a shared expert, QK-norm per head, optional attention biases, sliding window on every layer
/// when `use_sliding_window`.
enum Qwen3MoE: ArchitectureFamily {
    static let modelTypes = ["qwen3_moe"]
    static func className(_ modelType: String) -> String { "Qwen3MoeForCausalLM" }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Qwen2MoE.Config.self, data, path: path)
        var s = try common.base(path: path)
        try x.apply(to: &s, path: path)
        s.qkvBias = x.attentionBias ?? false
        s.outputBias = x.attentionBias ?? false
        s.qkNorm = .perHead
        s.slidingWindows = try common.slidingWindows(layers: s.layers, rule: .everyLayerWhenUsed, path: path)
        return s
    }

    static func randomConfig(_ shape: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["num_experts_per_tok": shape.topK, "num_experts": shape.experts, "moe_intermediate_size": shape.expertSize, "intermediate_size": shape.denseSize,
         "decoder_sparse_step": 1, "mlp_only_layers": [Int](), "norm_topk_prob": true, "attention_bias": false]
    }
}
