import Foundation
import MoECore

/// A GGUF file as a model's weights: the spec its metadata describes (through the family's own
/// config reading: the metadata is translated to the config.json the family reads), and each
/// Hugging Face tensor name the loader asks for mapped to llama.cpp's name (`blk.N.attn_q`,
/// stacked `blk.N.ffn_gate_exps` whose expert e is a zero-copy view).
public final class GGUFWeights: WeightSource, @unchecked Sendable {
    public let file: GGUFFile
    /// The decoder the file describes.
    public let spec: DecoderSpec

    /// llama.cpp's architecture names and the family each maps to.
    static let families = ["llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe",
                           "olmoe": "olmoe", "gpt-oss": "gpt_oss", "deepseek2": "deepseek_v3",
                           "glm4moe": "glm4_moe"]

    public init(path: String) throws(ModelError) {
        file = try GGUFFile(path: path)
        let config = try Self.config(file)
        let data = (try? JSONSerialization.data(withJSONObject: config)) ?? Data()
        var spec = try Architectures.spec(configData: data, path: path)
        // llama.cpp's converter permutes Llama-family q/k rows for its interleaved RoPE.
        spec.ropeInterleaved = file.architecture == "llama"
        self.spec = spec
    }

    public var configPath: String { file.path }
    public var names: [String] { file.tensorNames }
    /// DeepSeek's `kv_b_proj` [H (nope + v), kv_lora], which llama.cpp's converter splits into
    /// `attn_k_b` [H, kv_lora, nope] (transposed, for its absorbed attention) and `attn_v_b`
    /// [H, v, kv_lora]: the two, when the file has them instead of `attn_kv_b`.
    func splitKVB(_ hf: String) -> (k: String, v: String)? {
        guard hf.hasSuffix(".self_attn.kv_b_proj.weight"), let mapped = Self.ggufName(hf), !file.has(mapped.name) else { return nil }
        let blk = mapped.name.replacingOccurrences(of: ".attn_kv_b.weight", with: "")
        return ("\(blk).attn_k_b.weight", "\(blk).attn_v_b.weight")
    }

    /// `kv_b_proj` put back together from `attn_k_b` and `attn_v_b`: per head, the rows of k_b
    /// transposed, then v_b's rows. An f32 copy for f32 parts, else f16 (the layer's one
    /// transposition: block rows cannot be transposed in place).
    func joinedKVB(_ parts: (k: String, v: String), shape: [Int]?) throws(ModelError) -> Tensor {
        let kb = try file.tensor(parts.k), vb = try file.tensor(parts.v)
        guard kb.rank == 3, vb.rank == 3, kb.shape[0] == vb.shape[0], kb.shape[1] == vb.shape[2] else {
            throw .wrongShape(path: file.path, name: parts.v, expected: [kb.shape.first ?? 0, -1, kb.shape.count > 1 ? kb.shape[1] : 0], found: vb.shape)
        }
        let (heads, rank, nope, v) = (kb.shape[0], kb.shape[1], kb.shape[2], vb.shape[1])
        let k = kb.toFloats(), vv = vb.toFloats()
        var out = [Float](repeating: 0, count: heads * (nope + v) * rank)
        for h in 0..<heads {
            let base = h * (nope + v) * rank
            for i in 0..<nope { for r in 0..<rank { out[base + i * rank + r] = k[(h * rank + r) * nope + i] } }
            for j in 0..<v { for r in 0..<rank { out[base + (nope + j) * rank + r] = vv[(h * v + j) * rank + r] } }
        }
        let dtype: DType = kb.dtype == .f32 && vb.dtype == .f32 ? .f32 : .f16
        return try checked(Tensor(shape: [heads * (nope + v), rank], values: out, dtype: dtype), parts.v, shape)
    }

    public func has(_ name: String) -> Bool {
        if let parts = splitKVB(name) { return file.has(parts.k) && file.has(parts.v) }
        if name.hasSuffix(".mlp.experts.gate_up_proj_bias"), let b = Self.splitBiases(name) { return file.has(b.gate) && file.has(b.up) }
        return resolved(name).map { file.has($0.name) } ?? file.has(name)
    }

    /// llama.cpp's name for `hf`, with the family-specific spellings: GPT-OSS calls the norm after
    /// attention `post_attention_norm` where the Llama-like families call it `ffn_norm`.
    func resolved(_ hf: String) -> (name: String, expert: Int?)? {
        guard var mapped = Self.ggufName(hf) else { return nil }
        if mapped.name.hasSuffix(".ffn_norm.weight") && !file.has(mapped.name) {
            mapped.name = mapped.name.replacingOccurrences(of: ".ffn_norm.weight", with: ".post_attention_norm.weight")
        }
        return mapped
    }

    /// GPT-OSS's experts' gate and up biases, which llama.cpp stores apart (`ffn_gate_exps.bias`,
    /// `ffn_up_exps.bias`, [E, I] each) and the checkpoint interleaved (`gate_up_proj_bias`).
    static func splitBiases(_ hf: String) -> (gate: String, up: String)? {
        let parts = hf.split(separator: ".")
        guard parts.count == 6, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        return ("blk.\(layer).ffn_gate_exps.bias", "blk.\(layer).ffn_up_exps.bias")
    }

    public func tensor(_ name: String, shape: [Int]?) throws(ModelError) -> Tensor {
        if let parts = splitKVB(name) { return try joinedKVB(parts, shape: shape) }
        if name.hasSuffix(".mlp.experts.gate_up_proj_bias"), let b = Self.splitBiases(name) {
            // Interleaved back into [E, 2I]: gate c at 2c, up c at 2c + 1 (a small f32 copy).
            let gate = try file.tensor(b.gate), up = try file.tensor(b.up)
            guard gate.rank == 2, gate.shape == up.shape else {
                throw .wrongShape(path: file.path, name: b.up, expected: gate.shape, found: up.shape)
            }
            let (g, u) = (gate.toFloats(), up.toFloats())
            var out = [Float](repeating: 0, count: 2 * g.count)
            for i in 0..<g.count { out[2 * i] = g[i]; out[2 * i + 1] = u[i] }
            return try checked(Tensor(shape: [gate.shape[0], 2 * gate.shape[1]], values: out), b.gate, shape)
        }
        guard let mapped = resolved(name) else {
            guard file.has(name) else { throw .missingTensor(path: file.path, name: name) }
            return try checked(try file.tensor(name), name, shape)
        }
        guard file.has(mapped.name) else { throw .missingTensor(path: file.path, name: "\(mapped.name) (\(name))") }
        var t = try file.tensor(mapped.name)
        if let e = mapped.expert {
            guard t.rank == 3, e < t.shape[0] else {
                throw .wrongShape(path: file.path, name: mapped.name, expected: [e + 1, -1, -1], found: t.shape)
            }
            t = t[e]
        }
        return try checked(t, mapped.name, shape)
    }

    /// `t` against `shape`, allowing a vector for a one-row matrix and back.
    func checked(_ t: Tensor, _ name: String, _ shape: [Int]?) throws(ModelError) -> Tensor {
        guard let shape, t.shape != shape else { return t }
        guard t.count == shape.reduce(1, *), t.shape.filter({ $0 != 1 }) == shape.filter({ $0 != 1 }) else {
            throw .wrongShape(path: file.path, name: name, expected: shape, found: t.shape)
        }
        return t.reshaped(shape)
    }

    /// llama.cpp's name for a Hugging Face tensor name, and the expert it is a slice of.
    static func ggufName(_ hf: String) -> (name: String, expert: Int?)? {
        switch hf {
        case "model.embed_tokens.weight": return ("token_embd.weight", nil)
        case "model.norm.weight": return ("output_norm.weight", nil)
        case "lm_head.weight": return ("output.weight", nil)
        default: break
        }
        let parts = hf.split(separator: ".").map(String.init)
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        let blk = "blk.\(layer)", rest = Array(parts[3...])
        let suffix = rest.last ?? "weight"
        switch (rest.first ?? "", rest.count) {
        case ("input_layernorm", _): return ("\(blk).attn_norm.weight", nil)
        case ("post_attention_layernorm", _): return ("\(blk).ffn_norm.weight", nil)
        case ("self_attn", 3):
            let map = ["q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
                       "q_norm": "attn_q_norm", "k_norm": "attn_k_norm",
                       // DeepSeek's latent attention
                       "q_a_proj": "attn_q_a", "q_a_layernorm": "attn_q_a_norm", "q_b_proj": "attn_q_b",
                       "kv_a_proj_with_mqa": "attn_kv_a_mqa", "kv_a_layernorm": "attn_kv_a_norm", "kv_b_proj": "attn_kv_b"]
            return map[rest[1]].map { ("\(blk).\($0).\(suffix)", nil) }
        case ("self_attn", 2) where rest[1] == "sinks": return ("\(blk).attn_sinks.weight", nil)
        case ("mlp", _), ("block_sparse_moe", _):
            let body = Array(rest.dropFirst())
            if body == ["experts", "down_proj_bias"] { return ("\(blk).ffn_down_exps.bias", nil) }  // GPT-OSS
            // DeepSeek-V3's selection bias (`mlp.gate.e_score_correction_bias`).
            if body == ["gate", "e_score_correction_bias"] { return ("\(blk).exp_probs_b.bias", nil) }
            if body.count == 2 {  // dense: gate_proj.weight; router: gate.weight (GPT-OSS: router.weight, .bias)
                let map = ["gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down", "gate": "ffn_gate_inp",
                           "router": "ffn_gate_inp", "shared_expert_gate": "ffn_gate_inp_shexp"]
                return map[body[0]].map { ("\(blk).\($0).\(suffix)", nil) }
            }
            if body.count == 3, body[0] == "shared_expert" || body[0] == "shared_experts" {
                let map = ["gate_proj": "ffn_gate_shexp", "up_proj": "ffn_up_shexp", "down_proj": "ffn_down_shexp"]
                return map[body[1]].map { ("\(blk).\($0).\(suffix)", nil) }
            }
            if body.count == 4, body[0] == "experts", let e = Int(body[1]) {
                let map = ["gate_proj": "ffn_gate_exps", "w1": "ffn_gate_exps", "up_proj": "ffn_up_exps", "w3": "ffn_up_exps",
                           "down_proj": "ffn_down_exps", "w2": "ffn_down_exps"]
                return map[body[2]].map { ("\(blk).\($0).weight", e) }
            }
            return nil
        default: return nil
        }
    }

    /// The config.json the family reads, from GGUF metadata (`<arch>.*` keys as llama.cpp writes them).
    public static func config(_ file: GGUFFile) throws(ModelError) -> [String: Any] {
        let m = file.metadata, path = file.path
        guard let arch = file.architecture else { throw .invalidFile(path: path, field: "general.architecture", reason: "missing") }
        guard var family = families[arch] else { throw .unknownArchitecture(path: path, name: arch) }
        func int(_ key: String) -> Int? { m["\(arch).\(key)"]?.int }
        func double(_ key: String) -> Double? { m["\(arch).\(key)"]?.double }
        func required(_ key: String) throws(ModelError) -> Int {
            guard let v = int(key) else { throw .invalidFile(path: path, field: "\(arch).\(key)", reason: "missing or not an integer") }
            return v
        }
        let embedding = try file.tensor("token_embd.weight")
        let hidden = try required("embedding_length"), heads = try required("attention.head_count")
        var c: [String: Any] = [
            "vocab_size": embedding.shape.first ?? 0, "hidden_size": hidden, "num_hidden_layers": try required("block_count"),
            "num_attention_heads": heads, "num_key_value_heads": int("attention.head_count_kv") ?? heads,
            "head_dim": int("attention.key_length") ?? hidden / max(1, heads),
            "rms_norm_eps": double("attention.layer_norm_rms_epsilon") ?? 1e-5, "rope_theta": double("rope.freq_base") ?? 10_000,
            "max_position_embeddings": int("context_length") ?? 4096, "tie_word_embeddings": !file.has("output.weight"),
        ]
        if let b = m["tokenizer.ggml.bos_token_id"]?.int { c["bos_token_id"] = b }
        if let e = m["tokenizer.ggml.eos_token_id"]?.int { c["eos_token_id"] = e }
        if let kind = m["\(arch).rope.scaling.type"]?.string, kind != "none" {
            var scaling: [String: Any] = ["rope_type": kind, "factor": double("rope.scaling.factor") ?? 1]
            if let original = int("rope.scaling.original_context_length") { scaling["original_max_position_embeddings"] = original }
            if let v = double("rope.scaling.yarn_beta_fast") { scaling["beta_fast"] = v }
            if let v = double("rope.scaling.yarn_beta_slow") { scaling["beta_slow"] = v }
            if let v = double("rope.scaling.yarn_attn_factor") { scaling["attention_factor"] = v }
            c["rope_scaling"] = scaling
        }
        if let window = int("attention.sliding_window"), window > 0 {  // every layer (GPT-OSS sets its own pattern below)
            c["sliding_window"] = window
            c["use_sliding_window"] = true
            c["max_window_layers"] = 0
            c["layer_types"] = [String](repeating: "sliding_attention", count: c["num_hidden_layers"] as? Int ?? 0)
            if arch == "llama" && int("expert_count") ?? 0 == 0 { family = "mistral" }  // Mistral is llama.cpp's llama
        }
        if let clip = double("attention.clamp_kqv"), clip > 0 { c["clip_qkv"] = clip }
        let ff = int("feed_forward_length")
        if let experts = int("expert_count"), experts > 0 {
            c["num_experts_per_tok"] = try required("expert_used_count")
            let expertFF = int("expert_feed_forward_length") ?? ff
            switch arch {
            case "deepseek2":
                // V3 routes by sigmoid with a correction bias (expert_gating_func 2); V2 by softmax.
                let dense = int("leading_dense_block_count") ?? 0
                let v3 = int("expert_gating_func") == 2 || file.has("blk.\(dense).exp_probs_b.bias")
                family = v3 ? "deepseek_v3" : "deepseek_v2"
                c["n_routed_experts"] = experts
                c["n_shared_experts"] = int("expert_shared_count") ?? 0
                c["moe_intermediate_size"] = expertFF ?? 0
                c["intermediate_size"] = ff ?? expertFF ?? 0
                c["first_k_dense_replace"] = dense
                c["routed_scaling_factor"] = double("expert_weights_scale") ?? 1
                c["norm_topk_prob"] = m["\(arch).expert_weights_norm"]?.bool ?? false
                let groups = int("expert_group_count") ?? 1
                c["n_group"] = groups
                c["topk_group"] = int("expert_group_used_count") ?? groups
                c["topk_method"] = v3 ? "noaux_tc" : groups > 1 ? "group_limited_greedy" : "greedy"
                c["scoring_func"] = v3 ? "sigmoid" : "softmax"
                c["q_lora_rank"] = int("attention.q_lora_rank").map { $0 as Any } ?? NSNull()
                c["kv_lora_rank"] = try required("attention.kv_lora_rank")
                let ropeDim = try required("rope.dimension_count")
                c["qk_rope_head_dim"] = ropeDim
                c["qk_nope_head_dim"] = try required("attention.key_length_mla") - ropeDim
                c["v_head_dim"] = try required("attention.value_length_mla")
                c["num_key_value_heads"] = heads  // the file says 1: llama.cpp's absorbed (MQA) form
                c["head_dim"] = ropeDim
                if var scaling = c["rope_scaling"] as? [String: Any], let mul = double("rope.scaling.yarn_log_multiplier") {
                    // llama.cpp keeps 0.1 mscale_all_dim; DeepSeek's configs set mscale to the same value.
                    scaling["mscale_all_dim"] = mul / 0.1
                    scaling["mscale"] = mul / 0.1
                    c["rope_scaling"] = scaling
                }
            case "glm4moe":
                // The block count includes the multi-token-prediction layers, which decoding skips.
                let layers = (c["num_hidden_layers"] as? Int ?? 0) - (int("nextn_predict_layers") ?? 0)
                guard layers > 0 else {
                    throw .invalidFile(path: path, field: "\(arch).nextn_predict_layers", reason: "leaves no decoder layers")
                }
                c["num_hidden_layers"] = layers
                c["n_routed_experts"] = experts
                c["n_shared_experts"] = int("expert_shared_count") ?? 0
                c["moe_intermediate_size"] = expertFF ?? 0
                c["intermediate_size"] = ff ?? expertFF ?? 0
                c["first_k_dense_replace"] = int("leading_dense_block_count") ?? 0
                c["routed_scaling_factor"] = double("expert_weights_scale") ?? 1
                c["norm_topk_prob"] = m["\(arch).expert_weights_norm"]?.bool ?? true
                let groups = int("expert_group_count") ?? 1
                c["n_group"] = groups
                c["topk_group"] = int("expert_group_used_count") ?? groups
                let headDim = c["head_dim"] as? Int ?? 1
                c["partial_rotary_factor"] = Double(int("rope.dimension_count") ?? headDim / 2) / Double(max(1, headDim))
                c["use_qk_norm"] = file.has("blk.0.attn_q_norm.weight")
                c["attention_bias"] = file.has("blk.0.attn_q.bias")
            case "gpt-oss":
                c["num_local_experts"] = experts
                c["intermediate_size"] = expertFF ?? 0
                c["attention_bias"] = file.has("blk.0.attn_q.bias")
                // llama.cpp's pattern: sliding-window attention on even layers, full on odd.
                let layers = c["num_hidden_layers"] as? Int ?? 0
                c["layer_types"] = (0..<layers).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" }
                c["use_sliding_window"] = nil
                if var scaling = c["rope_scaling"] as? [String: Any] {
                    scaling["truncate"] = false  // GPT-OSS's YaRN keeps the correction range unrounded
                    c["rope_scaling"] = scaling
                }
            case "llama":
                family = "mixtral"
                c["num_local_experts"] = experts
                c["intermediate_size"] = expertFF ?? 0
            case "olmoe":
                c["num_experts"] = experts
                c["intermediate_size"] = expertFF ?? 0
                c["norm_topk_prob"] = m["\(arch).expert_weights_norm"]?.bool ?? false
            default:  // qwen2moe, qwen3moe
                c["num_experts"] = experts
                c["moe_intermediate_size"] = expertFF ?? 0
                c["intermediate_size"] = ff ?? expertFF ?? 0
                c["norm_topk_prob"] = m["\(arch).expert_weights_norm"]?.bool ?? (arch == "qwen3moe")
                if let shared = int("expert_shared_feed_forward_length") { c["shared_expert_intermediate_size"] = shared }
                c["qkv_bias"] = file.has("blk.0.attn_q.bias")
            }
        } else {
            c["intermediate_size"] = ff ?? 0
            c["attention_bias"] = file.has("blk.0.attn_q.bias")
        }
        c["model_type"] = family
        return c
    }
}
