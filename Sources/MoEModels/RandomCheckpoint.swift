import Foundation
import MoECore

/// Writes random-weight checkpoints of any supported architecture and shape: a Hugging Face
/// folder (config.json, model.safetensors in bf16, tokenizer.json) that MoEKit and transformers
/// both load. For speed work and tests; `moe init-random` is its command.
public enum RandomCheckpoint {
    /// The shape of the model to write.
    public struct Shape: Sendable {
        public var vocabSize = 512
        public var hiddenSize = 256
        public var layers = 2
        public var heads = 4
        public var kvHeads = 4
        public var headDim: Int? = nil
        public var experts = 8
        public var topK = 2
        public var expertSize = 512
        /// Dense FFN size (Qwen's non-MoE layers) and shared expert size (Qwen2-MoE).
        public var denseSize = 1024
        public var sharedSize = 512
        public var ropeTheta = 10_000.0
        /// DeepSeek: multi-head latent attention sizes (qLoraRank nil: a plain q_proj),
        /// shared experts, expert groups and the leading dense layers.
        public var qLoraRank: Int? = 64
        public var kvLoraRank = 64
        public var nopeDim = 32, ropeDim = 16, valueDim = 32
        public var sharedExperts = 1
        public var groups = 1, topkGroup = 1
        public var denseLayers = 0
        public init() {}
    }

    /// The architectures it can write.
    public static let architectures = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "deepseek_v2"]

    /// Writes a checkpoint of `arch` with `shape` into `directory` (created if needed), weights
    /// drawn uniformly in ±1/sqrt(fan-in) from `seed`, norms 1, stored as `dtype`.
    public static func write(arch: String, shape s: Shape, to directory: String, seed: UInt64 = 0,
                             dtype: DType = .bf16) throws(ModelError) {
        guard architectures.contains(arch) else { throw .unknownArchitecture(path: directory, name: arch) }
        guard s.vocabSize >= 257, s.hiddenSize > 0, s.layers > 0, s.heads > 0, s.kvHeads > 0, s.heads % s.kvHeads == 0,
              s.experts > 0, s.topK >= 1, s.topK <= s.experts, s.expertSize > 0 else {
            throw .invalidConfig(path: directory, field: "shape",
                                 reason: "need vocab >= 257, positive sizes, kv heads dividing heads and 1 <= top-k <= experts")
        }
        let hd = s.headDim ?? s.hiddenSize / s.heads
        guard hd > 0, hd % 2 == 0 else { throw .invalidConfig(path: directory, field: "head_dim", reason: "must be positive and even, got \(hd)") }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(path: directory, reason: "cannot create: \(error.localizedDescription)")
        }
        let eos = 256
        var config: [String: Any] = [
            "model_type": arch, "vocab_size": s.vocabSize, "hidden_size": s.hiddenSize, "num_hidden_layers": s.layers,
            "num_attention_heads": s.heads, "num_key_value_heads": s.kvHeads, "head_dim": hd, "rms_norm_eps": 1e-6,
            "rope_theta": s.ropeTheta, "max_position_embeddings": 4096, "tie_word_embeddings": false,
            "bos_token_id": eos, "eos_token_id": eos, "hidden_act": "silu", "torch_dtype": dtype == .bf16 ? "bfloat16" : dtype == .f16 ? "float16" : "float32",
            "num_experts_per_tok": s.topK,
        ]
        switch arch {
        case "mixtral":
            config["architectures"] = ["MixtralForCausalLM"]
            config["num_local_experts"] = s.experts
            config["intermediate_size"] = s.expertSize
        case "qwen2_moe", "qwen3_moe":
            config["architectures"] = [arch == "qwen2_moe" ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM"]
            config["num_experts"] = s.experts
            config["moe_intermediate_size"] = s.expertSize
            config["intermediate_size"] = s.denseSize
            config["decoder_sparse_step"] = 1
            config["mlp_only_layers"] = [Int]()
            config["norm_topk_prob"] = arch == "qwen3_moe"
            if arch == "qwen2_moe" {
                config["shared_expert_intermediate_size"] = s.sharedSize
                config["qkv_bias"] = true
            } else {
                config["attention_bias"] = false
            }
        case "deepseek_v3", "deepseek_v2":
            guard s.experts % max(1, s.groups) == 0, s.topkGroup >= 1, s.topkGroup <= s.groups, s.ropeDim % 2 == 0,
                  s.denseLayers >= 0, s.denseLayers <= s.layers else {
                throw .invalidConfig(path: directory, field: "shape", reason: "groups must divide experts, 1 <= topk-group <= groups, rope dim even")
            }
            config["architectures"] = [arch == "deepseek_v3" ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"]
            config["n_routed_experts"] = s.experts
            config["n_shared_experts"] = s.sharedExperts
            config["moe_intermediate_size"] = s.expertSize
            config["intermediate_size"] = s.denseSize
            config["first_k_dense_replace"] = s.denseLayers
            config["moe_layer_freq"] = 1
            config["n_group"] = s.groups
            config["topk_group"] = s.topkGroup
            config["routed_scaling_factor"] = 2.5  // V3's value; a whole number would be written as an integer, which transformers refuses
            config["q_lora_rank"] = s.qLoraRank.map { $0 as Any } ?? NSNull()
            config["kv_lora_rank"] = s.kvLoraRank
            config["qk_nope_head_dim"] = s.nopeDim
            config["qk_rope_head_dim"] = s.ropeDim
            config["v_head_dim"] = s.valueDim
            config["head_dim"] = s.ropeDim
            config["num_key_value_heads"] = s.heads
            config["attention_bias"] = false
            if arch == "deepseek_v3" {
                config["norm_topk_prob"] = true
                config["scoring_func"] = "sigmoid"
                config["topk_method"] = "noaux_tc"
                config["rope_interleave"] = true
            } else {
                config["norm_topk_prob"] = false
                config["topk_method"] = s.groups > 1 ? "group_limited_greedy" : "greedy"
            }
        default:  // olmoe
            config["architectures"] = ["OlmoeForCausalLM"]
            config["num_experts"] = s.experts
            config["intermediate_size"] = s.expertSize
            config["norm_topk_prob"] = false
            config["attention_bias"] = false
        }
        let configPath = (directory as NSString).appendingPathComponent("config.json")
        guard let configData = try? JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]) else {
            throw .invalidFile(path: configPath, field: "(json)", reason: "cannot encode")
        }
        try AtomicFile.write(configData, to: configPath)
        let spec = try Architectures.spec(configAt: configPath)

        var tensors: [(name: String, tensor: Tensor)] = []
        var counter: UInt64 = 0
        func random(_ shape: [Int]) -> Tensor {
            counter += 1
            let bound = Float(1 / Double(shape.last ?? 1).squareRoot())
            return Tensor(randomUniform: shape, in: -bound...bound, seed: seed &* 1_000_003 &+ counter, dtype: dtype)
        }
        func ones(_ n: Int) -> Tensor { Tensor(shape: [n], values: [Float](repeating: 1, count: n), dtype: dtype) }
        let d = s.hiddenSize
        tensors.append(("model.embed_tokens.weight", random([s.vocabSize, d])))
        tensors.append(("model.norm.weight", ones(d)))
        tensors.append(("lm_head.weight", random([s.vocabSize, d])))
        for i in 0..<s.layers {
            let p = "model.layers.\(i)", a = "\(p).self_attn"
            tensors += [("\(p).input_layernorm.weight", ones(d)), ("\(p).post_attention_layernorm.weight", ones(d))]
            if let l = spec.latent {
                let kd = l.nopeDim + l.ropeDim
                if let rq = l.qLoraRank {
                    tensors += [("\(a).q_a_proj.weight", random([rq, d])), ("\(a).q_a_layernorm.weight", ones(rq)),
                                ("\(a).q_b_proj.weight", random([s.heads * kd, rq]))]
                } else {
                    tensors.append(("\(a).q_proj.weight", random([s.heads * kd, d])))
                }
                tensors += [("\(a).kv_a_proj_with_mqa.weight", random([l.kvLoraRank + l.ropeDim, d])),
                            ("\(a).kv_a_layernorm.weight", ones(l.kvLoraRank)),
                            ("\(a).kv_b_proj.weight", random([s.heads * (l.nopeDim + l.valueDim), l.kvLoraRank])),
                            ("\(a).o_proj.weight", random([d, s.heads * l.valueDim]))]
            } else {
                tensors += [("\(a).q_proj.weight", random([s.heads * hd, d])), ("\(a).k_proj.weight", random([s.kvHeads * hd, d])),
                            ("\(a).v_proj.weight", random([s.kvHeads * hd, d])), ("\(a).o_proj.weight", random([d, s.heads * hd]))]
            }
            if !spec.moeLayers[i] {
                tensors += [("\(p).mlp.gate_proj.weight", random([spec.denseIntermediate, d])),
                            ("\(p).mlp.up_proj.weight", random([spec.denseIntermediate, d])),
                            ("\(p).mlp.down_proj.weight", random([d, spec.denseIntermediate]))]
                continue
            }
            if spec.qkvBias {
                tensors += [("\(a).q_proj.bias", random([s.heads * hd])), ("\(a).k_proj.bias", random([s.kvHeads * hd])),
                            ("\(a).v_proj.bias", random([s.kvHeads * hd]))]
            }
            switch spec.qkNorm {
            case .perHead: tensors += [("\(a).q_norm.weight", ones(hd)), ("\(a).k_norm.weight", ones(hd))]
            case .full: tensors += [("\(a).q_norm.weight", ones(s.heads * hd)), ("\(a).k_norm.weight", ones(s.kvHeads * hd))]
            case .none: break
            }
            let m = Architectures.moePrefix(spec, layer: i)
            tensors.append(("\(m).gate.weight", random([s.experts, d])))
            if spec.routerKind == .deepseekV3 {
                var rng = SplitMix64(seed: seed &+ UInt64(i))
                let bias = (0..<s.experts).map { _ in 0.2 * (rng.nextUnitFloat() - 0.5) }
                tensors.append(("\(m).gate.e_score_correction_bias", Tensor(shape: [s.experts], values: bias)))  // f32, as shipped
            }
            if spec.sharedExperts > 0 {
                let si = spec.sharedExperts * s.expertSize
                tensors += [("\(m).shared_experts.gate_proj.weight", random([si, d])),
                            ("\(m).shared_experts.up_proj.weight", random([si, d])),
                            ("\(m).shared_experts.down_proj.weight", random([d, si]))]
            }
            for e in 0..<s.experts {
                let n = Architectures.expertNames(spec, layer: i, expert: e)
                tensors += [(n.gate, random([s.expertSize, d])), (n.up, random([s.expertSize, d])), (n.down, random([d, s.expertSize]))]
            }
            if let shared = spec.sharedExpertIntermediate, shared > 0 {
                tensors += [("\(m).shared_expert.gate_proj.weight", random([shared, d])),
                            ("\(m).shared_expert.up_proj.weight", random([shared, d])),
                            ("\(m).shared_expert.down_proj.weight", random([d, shared])),
                            ("\(m).shared_expert_gate.weight", random([1, d]))]
            }
        }
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: (directory as NSString).appendingPathComponent("model.safetensors"))
        try AtomicFile.write(byteLevelTokenizerJSON(), to: (directory as NSString).appendingPathComponent("tokenizer.json"))
    }

    /// A byte-level BPE tokenizer.json with the 256 bytes as ids 0...255 and `specials` as ids
    /// 256, 257, ...; when `bos` names one of them, encoding adds it in front.
    public static func byteLevelTokenizerJSON(specials: [String] = ["<|endoftext|>"], bos: String? = nil) -> Data {
        var vocab: [String: Int] = [:]
        for (b, scalar) in ByteLevelAlphabet.byteToScalar.enumerated() { vocab[String(scalar)] = b }
        let added: [[String: Any]] = specials.enumerated().map { i, content in
            ["id": 256 + i, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        let post: [String: Any]
        if let bos, let i = specials.firstIndex(of: bos) {
            post = ["type": "TemplateProcessing",
                    "single": [["SpecialToken": ["id": bos, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                    "pair": [["Sequence": ["id": "A", "type_id": 0]], ["Sequence": ["id": "B", "type_id": 1]]],
                    "special_tokens": [bos: ["id": bos, "ids": [256 + i], "tokens": [bos]]]]
        } else {
            post = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true]
        }
        let json: [String: Any] = [
            "version": "1.0",
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            "post_processor": post,
            "decoder": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "vocab": vocab, "merges": [String](), "dropout": NSNull(), "unk_token": NSNull(),
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false],
        ]
        return (try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])) ?? Data()
    }
}
