import Foundation

/// DeepSeek-V2 and V3 (`deepseek_v2`, `deepseek_v3`; transformers' `modeling_deepseek_v3.py`,
/// ROUTING.md §2.2): multi-head latent attention, dense leading layers (`first_k_dense_replace`,
/// `moe_layer_freq`), shared experts, and group-limited routing: V3 sigmoid with the correction
/// bias and groups scored by their top-2 sum; V2 softmax, groups by max (or none: greedy).
enum DeepSeek: ArchitectureFamily {
    static let modelTypes = ["deepseek_v3", "deepseek_v2"]
    static func className(_ modelType: String) -> String {
        modelType == "deepseek_v2" ? "DeepseekV2ForCausalLM" : "DeepseekV3ForCausalLM"
    }

    /// DeepSeek's own config.json fields, with transformers' defaults.
    struct Config: Decodable {
        var nRoutedExperts: Int, numExpertsPerTok: Int
        var moeIntermediateSize: Int, intermediateSize: Int
        var nSharedExperts: Int, firstKDenseReplace: Int, moeLayerFreq: Int
        var nGroup: Int, topkGroup: Int?
        var routedScalingFactor: Double
        var normTopKProb: Bool?
        var scoringFunc: String?, topkMethod: String?
        var qLoraRank: Int?
        var kvLoraRank: Int, qkNopeHeadDim: Int, qkRopeHeadDim: Int, vHeadDim: Int
        var ropeInterleave: Bool
        var attentionBias: Bool
        /// transformers' derived `qk_nope_head_dim + qk_rope_head_dim`, when written.
        var qkHeadDim: Int?
        enum CodingKeys: String, CodingKey {
            case nRoutedExperts = "n_routed_experts", numLocalExperts = "num_local_experts", numExpertsPerTok = "num_experts_per_tok"
            case moeIntermediateSize = "moe_intermediate_size", intermediateSize = "intermediate_size"
            case nSharedExperts = "n_shared_experts", firstKDenseReplace = "first_k_dense_replace", moeLayerFreq = "moe_layer_freq"
            case nGroup = "n_group", topkGroup = "topk_group", routedScalingFactor = "routed_scaling_factor"
            case normTopKProb = "norm_topk_prob", scoringFunc = "scoring_func", topkMethod = "topk_method"
            case qLoraRank = "q_lora_rank", kvLoraRank = "kv_lora_rank", qkNopeHeadDim = "qk_nope_head_dim"
            case qkRopeHeadDim = "qk_rope_head_dim", vHeadDim = "v_head_dim", ropeInterleave = "rope_interleave"
            case attentionBias = "attention_bias", qkHeadDim = "qk_head_dim"
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            qkHeadDim = try c.decodeIfPresent(Int.self, forKey: .qkHeadDim)
            nRoutedExperts = try c.decodeIfPresent(Int.self, forKey: .nRoutedExperts) ?? c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 256
            numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
            moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 2048
            intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 18432
            nSharedExperts = try c.decodeIfPresent(Int.self, forKey: .nSharedExperts) ?? 1
            firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 0
            moeLayerFreq = try c.decodeIfPresent(Int.self, forKey: .moeLayerFreq) ?? 1
            nGroup = try c.decodeIfPresent(Int.self, forKey: .nGroup) ?? 1
            topkGroup = try c.decodeIfPresent(Int.self, forKey: .topkGroup)
            routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 1
            normTopKProb = try c.decodeIfPresent(Bool.self, forKey: .normTopKProb)
            scoringFunc = try c.decodeIfPresent(String.self, forKey: .scoringFunc)
            topkMethod = try c.decodeIfPresent(String.self, forKey: .topkMethod)
            qLoraRank = try c.decodeIfPresent(Int.self, forKey: .qLoraRank)
            kvLoraRank = try c.decodeIfPresent(Int.self, forKey: .kvLoraRank) ?? 512
            qkNopeHeadDim = try c.decodeIfPresent(Int.self, forKey: .qkNopeHeadDim) ?? 128
            qkRopeHeadDim = try c.decodeIfPresent(Int.self, forKey: .qkRopeHeadDim) ?? 64
            vHeadDim = try c.decodeIfPresent(Int.self, forKey: .vHeadDim) ?? 128
            ropeInterleave = try c.decodeIfPresent(Bool.self, forKey: .ropeInterleave) ?? true
            attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        }
    }

    /// The group-limited routing fields DeepSeek and GLM-4.5 share, checked.
    static func groups(experts: Int, nGroup: Int, topkGroup: Int?, path: String) throws(ModelError) -> (Int, Int) {
        let c = ConfigCheck(path: path)
        let groups = try c.size(nGroup, "n_group", max: experts)
        let keep = try c.size(topkGroup ?? groups, "topk_group", max: groups)
        guard experts % groups == 0 else {
            throw .invalidConfig(path: path, field: "n_group", reason: "\(experts) experts do not split into \(groups) groups")
        }
        return (groups, keep)
    }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Config.self, data, path: path), c = ConfigCheck(path: path)
        var s = try common.base(path: path)
        (s.experts, s.topK) = try c.routing(experts: x.nRoutedExperts, "n_routed_experts", k: x.numExpertsPerTok)
        s.expertIntermediate = try c.size(x.moeIntermediateSize, "moe_intermediate_size", max: ConfigLimits.width)
        s.denseIntermediate = try c.size(x.intermediateSize, "intermediate_size", max: ConfigLimits.width)
        let first = try c.count(x.firstKDenseReplace, "first_k_dense_replace", max: s.layers)
        let freq = try c.size(x.moeLayerFreq, "moe_layer_freq", max: ConfigLimits.layers)
        s.moeLayers = (0..<s.layers).map { $0 >= first && $0 % freq == 0 }
        s.sharedExperts = try c.count(x.nSharedExperts, "n_shared_experts", max: ConfigLimits.experts)
        (s.groups, s.topkGroup) = try groups(experts: s.experts, nGroup: x.nGroup, topkGroup: x.topkGroup, path: path)
        s.routedScaling = Float(try c.real(x.routedScalingFactor, "routed_scaling_factor", 0...1e6))
        if modelType == "deepseek_v3" {
            s.routerKind = .deepseekV3
            s.normTopKProb = x.normTopKProb ?? true
            if let f = x.scoringFunc, f != "sigmoid" { throw .invalidConfig(path: path, field: "scoring_func", reason: "'\(f)' is not supported for deepseek_v3") }
        } else {
            s.routerKind = .deepseekV2
            s.normTopKProb = false  // transformers' DeepSeek-V2 never renormalises
            if (x.topkMethod ?? "greedy") == "greedy" { (s.groups, s.topkGroup) = (1, 1) }
        }
        let rank = try x.qLoraRank.map { r throws(ModelError) in try c.size(r, "q_lora_rank", max: ConfigLimits.width) }
        let kvRank = try c.size(x.kvLoraRank, "kv_lora_rank", max: ConfigLimits.width)
        let nope = try c.count(x.qkNopeHeadDim, "qk_nope_head_dim", max: ConfigLimits.headDim)
        let ropeDim = try c.size(x.qkRopeHeadDim, "qk_rope_head_dim", max: ConfigLimits.headDim)
        guard ropeDim % 2 == 0 else { throw .invalidConfig(path: path, field: "qk_rope_head_dim", reason: "must be even, got \(ropeDim)") }
        let valueDim = try c.size(x.vHeadDim, "v_head_dim", max: ConfigLimits.headDim)
        if let q = x.qkHeadDim, q != nope + ropeDim {
            throw .invalidConfig(path: path, field: "qk_head_dim", reason: "\(q) is not qk_nope_head_dim + qk_rope_head_dim = \(nope + ropeDim)")
        }
        s.latent = DecoderSpec.Latent(qLoraRank: rank, kvLoraRank: kvRank, nopeDim: nope, ropeDim: ropeDim, valueDim: valueDim,
                                      interleave: modelType == "deepseek_v2" || x.ropeInterleave)
        s.kvHeads = s.heads
        s.outputBias = x.attentionBias
        return s
    }

    static func randomConfig(_ s: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        var c: [String: Any] = [
            "num_experts_per_tok": s.topK,
            "n_routed_experts": s.experts, "n_shared_experts": s.sharedExperts, "moe_intermediate_size": s.expertSize,
            "intermediate_size": s.denseSize, "first_k_dense_replace": s.denseLayers, "moe_layer_freq": 1,
            "n_group": s.groups, "topk_group": s.topkGroup,
            "routed_scaling_factor": 2.5,  // V3's value; a whole number would be written as an integer, which transformers refuses
            "q_lora_rank": s.qLoraRank.map { $0 as Any } ?? NSNull(), "kv_lora_rank": s.kvLoraRank,
            "qk_nope_head_dim": s.nopeDim, "qk_rope_head_dim": s.ropeDim, "v_head_dim": s.valueDim,
            "head_dim": s.ropeDim, "num_key_value_heads": s.heads, "attention_bias": false,
        ]
        if modelType == "deepseek_v3" {
            c["norm_topk_prob"] = true
            c["scoring_func"] = "sigmoid"
            c["topk_method"] = "noaux_tc"
            c["rope_interleave"] = true
        } else {
            c["norm_topk_prob"] = false
            c["topk_method"] = s.groups > 1 ? "group_limited_greedy" : "greedy"
        }
        return c
    }
}
