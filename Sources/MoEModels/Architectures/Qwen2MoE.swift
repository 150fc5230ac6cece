import Foundation

/// Qwen2-MoE (`qwen2_moe`; transformers' `modeling_qwen2_moe.py`): q/k/v biases, MoE layers by
/// `decoder_sparse_step` and `mlp_only_layers` (the rest dense), softmax top-k renormalised only
/// with `norm_topk_prob`, and a shared expert scaled by a sigmoid gate.
enum Qwen2MoE: ArchitectureFamily {
    static let modelTypes = ["qwen2_moe"]
    static func className(_ modelType: String) -> String { "Qwen2MoeForCausalLM" }

    /// The MoE fields Qwen2-MoE and Qwen3-MoE share, with transformers' defaults.
    struct Config: Decodable {
        var numExperts: Int, numExpertsPerTok: Int
        /// The key the expert count came from (`num_experts`, or the alias `num_local_experts`).
        var numExpertsField = "num_experts"
        var moeIntermediateSize: Int, intermediateSize: Int
        var sharedExpertIntermediateSize: Int
        var normTopKProb: Bool
        var decoderSparseStep: Int
        var mlpOnlyLayers: [Int]
        var qkvBias: Bool?, attentionBias: Bool?
        enum CodingKeys: String, CodingKey {
            case numExperts = "num_experts", numLocalExperts = "num_local_experts", numExpertsPerTok = "num_experts_per_tok"
            case moeIntermediateSize = "moe_intermediate_size", intermediateSize = "intermediate_size"
            case sharedExpertIntermediateSize = "shared_expert_intermediate_size", normTopKProb = "norm_topk_prob"
            case decoderSparseStep = "decoder_sparse_step", mlpOnlyLayers = "mlp_only_layers", qkvBias = "qkv_bias"
            case attentionBias = "attention_bias"
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let experts = try c.decodeIfPresent(Int.self, forKey: .numExperts), alias = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
            if let experts, let alias, experts != alias {
                throw DecodingError.dataCorruptedError(forKey: .numLocalExperts, in: c, debugDescription: "\(alias) disagrees with num_experts \(experts)")
            }
            numExperts = experts ?? alias ?? 60
            if experts == nil && alias != nil { numExpertsField = "num_local_experts" }
            numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 4
            moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 1408
            intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 5632
            sharedExpertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedExpertIntermediateSize) ?? 0
            normTopKProb = try c.decodeIfPresent(Bool.self, forKey: .normTopKProb) ?? false
            decoderSparseStep = try c.decodeIfPresent(Int.self, forKey: .decoderSparseStep) ?? 1
            mlpOnlyLayers = try c.decodeIfPresent([Int].self, forKey: .mlpOnlyLayers) ?? []
            qkvBias = try c.decodeIfPresent(Bool.self, forKey: .qkvBias)
            attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias)
        }

        /// The MoE part of the spec both Qwen MoE families share.
        func apply(to s: inout DecoderSpec, path: String) throws(ModelError) {
            let c = ConfigCheck(path: path)
            (s.experts, s.topK) = try c.routing(experts: numExperts, numExpertsField, k: numExpertsPerTok)
            s.expertIntermediate = try c.size(moeIntermediateSize, "moe_intermediate_size", max: ConfigLimits.width)
            s.denseIntermediate = try c.size(intermediateSize, "intermediate_size", max: ConfigLimits.width)
            s.normTopKProb = normTopKProb
            let step = try c.size(decoderSparseStep, "decoder_sparse_step", max: ConfigLimits.layers)
            let dense = try c.layerList(mlpOnlyLayers, "mlp_only_layers", layers: s.layers)
            s.moeLayers = (0..<s.layers).map { !dense.contains($0) && ($0 + 1) % step == 0 }
        }
    }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Config.self, data, path: path)
        var s = try common.base(path: path)
        try x.apply(to: &s, path: path)
        s.qkvBias = x.qkvBias ?? true
        let shared = try ConfigCheck(path: path).count(x.sharedExpertIntermediateSize, "shared_expert_intermediate_size", max: ConfigLimits.width)
        s.sharedExpertIntermediate = shared > 0 ? shared : nil
        s.sharedExpertGate = true
        s.names.sharedExpert = "shared_expert"
        s.slidingWindows = try common.slidingWindows(layers: s.layers, rule: .evenBelowMaxWindowLayers, path: path)
        return s
    }

    static func randomConfig(_ shape: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["num_experts_per_tok": shape.topK, "num_experts": shape.experts, "moe_intermediate_size": shape.expertSize, "intermediate_size": shape.denseSize,
         "decoder_sparse_step": 1, "mlp_only_layers": [Int](), "norm_topk_prob": false,
         "shared_expert_intermediate_size": shape.sharedSize, "qkv_bias": true]
    }
}
