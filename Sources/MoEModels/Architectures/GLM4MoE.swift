import Foundation

/// GLM-4.5 and GLM-4.5-Air (`glm4_moe`; transformers' `modeling_glm4_moe.py`): partial rotary
/// (`partial_rotary_factor`, default 0.5, rotate-half over the rotating part), q/k/v biases
/// (`attention_bias`; never on the output), optional per-head QK-norm (`use_qk_norm`), dense
/// leading layers (`first_k_dense_replace`), and DeepSeek-V3's routing: sigmoid scores, the
/// correction bias, groups by top-2 sum, `routed_scaling_factor`, plus shared experts.
enum GLM4MoE: ArchitectureFamily {
    static let modelTypes = ["glm4_moe"]
    static func className(_ modelType: String) -> String { "Glm4MoeForCausalLM" }

    /// GLM-4.5's own config.json fields, with transformers' defaults.
    struct Config: Decodable {
        var nRoutedExperts: Int, numExpertsPerTok: Int
        var moeIntermediateSize: Int, intermediateSize: Int
        var nSharedExperts: Int, firstKDenseReplace: Int
        var nGroup: Int, topkGroup: Int
        var routedScalingFactor: Double
        var normTopKProb: Bool, useQkNorm: Bool, attentionBias: Bool
        var partialRotaryFactor: Double
        enum CodingKeys: String, CodingKey {
            case nRoutedExperts = "n_routed_experts", numLocalExperts = "num_local_experts", numExpertsPerTok = "num_experts_per_tok"
            case moeIntermediateSize = "moe_intermediate_size", intermediateSize = "intermediate_size"
            case nSharedExperts = "n_shared_experts", firstKDenseReplace = "first_k_dense_replace"
            case nGroup = "n_group", topkGroup = "topk_group", routedScalingFactor = "routed_scaling_factor"
            case normTopKProb = "norm_topk_prob", useQkNorm = "use_qk_norm", attentionBias = "attention_bias"
            case partialRotaryFactor = "partial_rotary_factor"
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            nRoutedExperts = try c.decodeIfPresent(Int.self, forKey: .nRoutedExperts) ?? c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 128
            numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
            moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1408
            intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 10944
            nSharedExperts = try c.decodeIfPresent(Int.self, forKey: .nSharedExperts) ?? 1
            firstKDenseReplace = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? 1
            nGroup = try c.decodeIfPresent(Int.self, forKey: .nGroup) ?? 1
            topkGroup = try c.decodeIfPresent(Int.self, forKey: .topkGroup) ?? 1
            routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? 1
            normTopKProb = try c.decodeIfPresent(Bool.self, forKey: .normTopKProb) ?? true
            useQkNorm = try c.decodeIfPresent(Bool.self, forKey: .useQkNorm) ?? false
            attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
            partialRotaryFactor = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor) ?? 0.5
        }
    }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Config.self, data, path: path), c = ConfigCheck(path: path)
        var common = common
        // GLM's default factor is 0.5 (transformers sets it when the config has none).
        if common.ropeParameters?.partialRotaryFactor == nil, common.partialRotaryFactor == nil {
            common.partialRotaryFactor = x.partialRotaryFactor
        }
        var s = try common.base(path: path)
        (s.experts, s.topK) = try c.routing(experts: x.nRoutedExperts, "n_routed_experts", k: x.numExpertsPerTok)
        s.expertIntermediate = try c.size(x.moeIntermediateSize, "moe_intermediate_size", max: ConfigLimits.width)
        s.denseIntermediate = try c.size(x.intermediateSize, "intermediate_size", max: ConfigLimits.width)
        let first = try c.count(x.firstKDenseReplace, "first_k_dense_replace", max: s.layers)
        s.moeLayers = (0..<s.layers).map { $0 >= first }
        s.sharedExperts = try c.count(x.nSharedExperts, "n_shared_experts", max: ConfigLimits.experts)
        (s.groups, s.topkGroup) = try DeepSeek.groups(experts: s.experts, nGroup: x.nGroup, topkGroup: x.topkGroup, path: path)
        s.routedScaling = Float(try c.real(x.routedScalingFactor, "routed_scaling_factor", 0...1e6))
        s.routerKind = .deepseekV3
        s.normTopKProb = x.normTopKProb
        s.qkvBias = x.attentionBias
        s.qkNorm = x.useQkNorm ? .perHead : .none
        return s
    }

    static func randomConfig(_ s: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["num_experts_per_tok": s.topK, "n_routed_experts": s.experts, "n_shared_experts": s.sharedExperts, "moe_intermediate_size": s.expertSize,
         "intermediate_size": s.denseSize, "first_k_dense_replace": s.denseLayers, "n_group": s.groups,
         "topk_group": s.topkGroup, "routed_scaling_factor": 2.5, "norm_topk_prob": true, "use_qk_norm": true,
         "attention_bias": true, "partial_rotary_factor": 0.5]
    }
}
