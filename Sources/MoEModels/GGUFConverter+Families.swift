import Foundation
import MoECore

extension GGUFConverter {
    /// DeepSeek's `kv_b_proj` [H (nope + v), kv_lora] as llama.cpp's converter writes it for its
    /// absorbed attention: `attn_k_b` [H, kv_lora, nope] (each head's key rows, transposed) and
    /// `attn_v_b` [H, v, kv_lora], in the stored element type.
    static func splitKVB(_ ck: Checkpoint, name: String, gguf: String, heads: Int, latent: DecoderSpec.Latent) throws(ModelError) -> [Source] {
        let (rank, nope, v) = (latent.kvLoraRank, latent.nopeDim, latent.valueDim)
        let source = try ck.tensor(name, shape: [heads * (nope + v), rank])
        let stored = source.dtype.isElementFormat ? source.dtype : .f32
        let blk = gguf.replacingOccurrences(of: ".attn_kv_b.weight", with: "")
        let kb = Source(name: "\(blk).attn_k_b.weight", shape: [heads, rank, nope], stored: stored) { () throws(ModelError) in
            let w = source.toFloats()
            var out = [Float](repeating: 0, count: heads * rank * nope)
            for h in 0..<heads { for i in 0..<nope { for r in 0..<rank { out[(h * rank + r) * nope + i] = w[(h * (nope + v) + i) * rank + r] } } }
            return Tensor(shape: [heads, rank, nope], values: out, dtype: stored)
        }
        let vb = Source(name: "\(blk).attn_v_b.weight", shape: [heads, v, rank], stored: stored) { () throws(ModelError) in
            let w = source.toFloats()
            var out = [Float](repeating: 0, count: heads * v * rank)
            for h in 0..<heads { for j in 0..<v { for r in 0..<rank { out[(h * v + j) * rank + r] = w[(h * (nope + v) + nope + j) * rank + r] } } }
            return Tensor(shape: [heads, v, rank], values: out, dtype: stored)
        }
        return [kb, vb]
    }

    /// llama.cpp's `deepseek2` keys (convert_hf_to_gguf.py's DeepseekV2Model): MLA as MQA with
    /// wider heads, the leading dense layers, shared experts, routed scaling and groups, and
    /// YaRN's log multiplier. A layout llama.cpp cannot hold is a typed error naming the field.
    static func deepseekMetadata(_ config: [String: Any], _ spec: DecoderSpec, path: String,
                                 put: (String, GGUFWriter.Value) -> Void) throws(ModelError) {
        guard let latent = spec.latent else {
            throw .invalidConfig(path: path, field: "kv_lora_rank", reason: "deepseek2 GGUF files hold latent attention only")
        }
        guard latent.interleave else {
            throw .invalidConfig(path: path, field: "rope_interleave", reason: "llama.cpp's deepseek2 rotates interleaved pairs; this checkpoint rotates halves")
        }
        let dense = spec.moeLayers.prefix { !$0 }.count
        guard spec.moeLayers.dropFirst(dense).allSatisfy({ $0 }) else {
            throw .invalidConfig(path: path, field: "moe_layer_freq", reason: "deepseek2 GGUF files hold dense layers only before the MoE ones")
        }
        put("leading_dense_block_count", .u32(UInt32(dense)))
        if let q = latent.qLoraRank { put("attention.q_lora_rank", .u32(UInt32(q))) }
        put("attention.kv_lora_rank", .u32(UInt32(latent.kvLoraRank)))
        put("attention.key_length", .u32(UInt32(latent.kvLoraRank + latent.ropeDim)))
        put("attention.value_length", .u32(UInt32(latent.kvLoraRank)))
        put("attention.key_length_mla", .u32(UInt32(latent.nopeDim + latent.ropeDim)))
        put("attention.value_length_mla", .u32(UInt32(latent.valueDim)))
        if spec.groups > 1 {
            put("expert_group_count", .u32(UInt32(spec.groups)))
            put("expert_group_used_count", .u32(UInt32(spec.topkGroup)))
        }
        put("expert_shared_count", .u32(UInt32(spec.sharedExperts)))
        if config["routed_scaling_factor"] != nil { put("expert_weights_scale", .f32(spec.routedScaling)) }
        if spec.normTopKProb { put("expert_weights_norm", .bool(true)) }
        put("rope.dimension_count", .u32(UInt32(latent.ropeDim)))
        if spec.rope.kind == .yarn {
            put("rope.scaling.yarn_beta_fast", .f32(Float(spec.rope.betaFast)))
            put("rope.scaling.yarn_beta_slow", .f32(Float(spec.rope.betaSlow)))
            if let all = spec.rope.mscaleAllDim { put("rope.scaling.yarn_log_multiplier", .f32(Float(0.1 * all))) }
        }
    }
}

extension GGUFConverter {
    /// llama.cpp's `glm4moe` keys (convert_hf_to_gguf.py's Glm4MoeModel): the leading dense
    /// layers, shared experts, groups, sigmoid gating with its correction bias, routed scaling.
    /// Multi-token-prediction layers are not written (MoEKit does not run them): the block count
    /// is the decoder's, with `nextn_predict_layers` 0.
    static func glmMetadata(_ config: [String: Any], _ spec: DecoderSpec, path: String,
                            put: (String, GGUFWriter.Value) -> Void) throws(ModelError) {
        let dense = spec.moeLayers.prefix { !$0 }.count
        guard spec.isMoE, spec.moeLayers.dropFirst(dense).allSatisfy({ $0 }) else {
            throw .invalidConfig(path: path, field: "first_k_dense_replace", reason: "glm4moe GGUF files hold dense layers only before the MoE ones")
        }
        if config["n_group"] != nil {
            put("expert_group_count", .u32(UInt32(spec.groups)))
            put("expert_group_used_count", .u32(UInt32(spec.topkGroup)))
        }
        put("expert_shared_count", .u32(UInt32(spec.sharedExperts)))
        put("leading_dense_block_count", .u32(UInt32(dense)))
        put("expert_gating_func", .u32(2))  // sigmoid
        if config["routed_scaling_factor"] != nil { put("expert_weights_scale", .f32(spec.routedScaling)) }
        if config["norm_topk_prob"] != nil { put("expert_weights_norm", .bool(spec.normTopKProb)) }
        put("nextn_predict_layers", .u32(0))
    }
}

extension GGUFConverter {
    /// GPT-OSS's stacked `mlp.experts.*` tensors as llama.cpp's converter writes them: the
    /// interleaved gate/up projection and its bias split into `ffn_gate_exps` and `ffn_up_exps`
    /// (even and odd columns), every projection per expert [rows, columns] as the loader holds
    /// them; nil for any other name (`down_proj_bias` maps by name).
    static func gptOssStacked(_ ck: Checkpoint, _ spec: DecoderSpec, name: String) throws(ModelError) -> [Source]? {
        let parts = name.split(separator: ".")
        guard parts.count == 6, parts[4] == "experts", let layer = Int(parts[2]) else { return nil }
        let blk = "blk.\(layer)"
        switch parts[5] {
        case "gate_up_proj":
            return [try stackedExperts(ck, spec, layer: layer, which: 0, name: "\(blk).ffn_gate_exps.weight"),
                    try stackedExperts(ck, spec, layer: layer, which: 1, name: "\(blk).ffn_up_exps.weight")]
        case "down_proj":
            return [try stackedExperts(ck, spec, layer: layer, which: 2, name: "\(blk).ffn_down_exps.weight")]
        case "gate_up_proj_bias":
            let (e, inner) = (spec.experts, spec.expertIntermediate)
            return [("gate", 0), ("up", 1)].map { (which, offset) in
                Source(name: "\(blk).ffn_\(which)_exps.bias", shape: [e, inner], stored: .f32) { () throws(ModelError) in
                    let b = try ck.tensor(name, shape: [e, 2 * inner]).toFloats()
                    return Tensor(shape: [e, inner], values: (0..<(e * inner)).map { b[($0 / inner) * 2 * inner + 2 * ($0 % inner) + offset] })
                }
            }
        default: return nil
        }
    }

    /// llama.cpp's `gpt-oss` keys beyond the shared MoE ones: the head size, YaRN's betas and the sliding
    /// window, which llama.cpp applies to even layers: a checkpoint with another pattern, or
    /// another SwiGLU clamp, is a typed error naming `layer_types` or the SwiGLU key.
    static func gptOssMetadata(_ spec: DecoderSpec, path: String, put: (String, GGUFWriter.Value) -> Void) throws(ModelError) {
        // llama.cpp fixes GPT-OSS's clamped SwiGLU at alpha 1.702 and limit 7 (no GGUF key holds them).
        if case let .clampedSwiGLU(alpha, limit) = spec.expertActivation, alpha != 1.702 || limit != 7 {
            throw .invalidConfig(path: path, field: alpha != 1.702 ? "swiglu_alpha" : "swiglu_limit",
                                 reason: "llama.cpp runs GPT-OSS with alpha 1.702 and limit 7 only; this checkpoint has \(alpha) and \(limit)")
        }
        let window = spec.slidingWindows.compactMap { $0 }.first ?? 0
        for (i, w) in spec.slidingWindows.enumerated() where (w != nil) != (i % 2 == 0) || (w != nil && w != window) {
            throw .invalidConfig(path: path, field: "layer_types", reason: "layer \(i) breaks llama.cpp's GPT-OSS pattern (a window of \(window) on even layers only)")
        }
        put("attention.key_length", .u32(UInt32(spec.headDim)))
        put("attention.value_length", .u32(UInt32(spec.headDim)))
        put("attention.sliding_window", .u32(UInt32(window)))
        if spec.rope.kind == .yarn {
            put("rope.scaling.yarn_beta_fast", .f32(Float(spec.rope.betaFast)))
            put("rope.scaling.yarn_beta_slow", .f32(Float(spec.rope.betaSlow)))
        }
    }
}
