import Foundation

/// GPT-OSS 20B and 120B (`gpt_oss`; transformers' `modeling_gpt_oss.py`): attention with biases
/// and a learned sink logit per head, sliding-window and full layers alternating
/// (`layer_types`, `sliding_window`), YaRN, and MoE layers whose router (`mlp.router`, with a
/// bias) takes the top-k logits and softmaxes them (the same as a softmax over all experts
/// renormalised over the top k), and whose experts are stored stacked (`gate_up_proj`
/// [E, d, 2I] with gate and up interleaved, `down_proj` [E, I, d], and biases) with the clamped
/// SwiGLU (`swiglu_alpha`, `swiglu_limit`).
enum GPTOSS: ArchitectureFamily {
    static let modelTypes = ["gpt_oss"]
    static func className(_ modelType: String) -> String { "GptOssForCausalLM" }

    /// GPT-OSS's own config.json fields, with transformers' defaults.
    struct Config: Decodable {
        var numLocalExperts: Int, numExpertsPerTok: Int, intermediateSize: Int
        var swigluAlpha: Double, swigluLimit: Double
        var attentionBias: Bool
        enum CodingKeys: String, CodingKey {
            case numLocalExperts = "num_local_experts", numExpertsPerTok = "num_experts_per_tok", intermediateSize = "intermediate_size"
            case swigluAlpha = "swiglu_alpha", swigluLimit = "swiglu_limit", attentionBias = "attention_bias"
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            numLocalExperts = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 128
            numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 4
            intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 2880
            swigluAlpha = try c.decodeIfPresent(Double.self, forKey: .swigluAlpha) ?? 1.702
            swigluLimit = try c.decodeIfPresent(Double.self, forKey: .swigluLimit) ?? 7
            attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? true
        }
    }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Config.self, data, path: path), c = ConfigCheck(path: path)
        var common = common
        if common.ropeParameters == nil && common.ropeScaling == nil {
            // transformers' default for GPT-OSS: YaRN x32 over 4096 positions, not truncated.
            common.ropeParameters = RopeFields(ropeTheta: common.ropeTheta ?? 150_000, ropeType: "yarn", factor: 32,
                                               originalMaxPositionEmbeddings: 4096, betaFast: 32, betaSlow: 1, truncate: false)
        }
        var s = try common.base(path: path)
        (s.experts, s.topK) = try c.routing(experts: x.numLocalExperts, "num_local_experts", k: x.numExpertsPerTok)
        s.expertIntermediate = try c.size(x.intermediateSize, "intermediate_size", max: ConfigLimits.width)
        s.moeLayers = [Bool](repeating: true, count: s.layers)
        s.normTopKProb = true
        s.expertActivation = .clampedSwiGLU(alpha: Float(try c.real(x.swigluAlpha, "swiglu_alpha", 0...1e6)),
                                            limit: Float(try c.real(x.swigluLimit, "swiglu_limit", 0...1e30)))
        s.expertBias = true
        s.routerBias = true
        s.qkvBias = x.attentionBias
        s.outputBias = x.attentionBias
        s.attentionSinks = true
        s.slidingWindows = try common.slidingWindows(layers: s.layers, rule: .alternating, path: path)
        s.names.router = "router"
        s.names.stackedLayout = .interleavedInputMajor
        return s
    }

    static func randomConfig(_ s: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        // swiglu_alpha and swiglu_limit stay at their defaults: 7.0 would be written as 7, which transformers refuses.
        ["num_experts_per_tok": s.topK, "num_local_experts": s.experts, "intermediate_size": s.expertSize,
         "attention_bias": true, "sliding_window": s.slidingWindow ?? 128,
         "layer_types": (0..<s.layers).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" }]
    }
}
