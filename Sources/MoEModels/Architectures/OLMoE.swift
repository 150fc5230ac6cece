import Foundation

/// OLMoE (`olmoe`; transformers' `modeling_olmoe.py`): QK-norm over the whole projection before
/// the head split, optional `clip_qkv`, softmax top-k renormalised only with `norm_topk_prob`.
enum OLMoE: ArchitectureFamily {
    static let modelTypes = ["olmoe"]
    static func className(_ modelType: String) -> String { "OlmoeForCausalLM" }

    /// OLMoE's own config.json fields.
    struct Config: Decodable {
        var numExperts: Int, numExpertsPerTok: Int, intermediateSize: Int
        var normTopKProb: Bool, attentionBias: Bool
        var clipQkv: Double?
        enum CodingKeys: String, CodingKey {
            case numExperts = "num_experts", numExpertsPerTok = "num_experts_per_tok", intermediateSize = "intermediate_size"
            case normTopKProb = "norm_topk_prob", attentionBias = "attention_bias", clipQkv = "clip_qkv"
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            numExperts = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 64
            numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 8
            intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 2048
            normTopKProb = try c.decodeIfPresent(Bool.self, forKey: .normTopKProb) ?? false
            attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
            clipQkv = try c.decodeIfPresent(Double.self, forKey: .clipQkv)
        }
    }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Config.self, data, path: path), c = ConfigCheck(path: path)
        var s = try common.base(path: path)
        (s.experts, s.topK) = try c.routing(experts: x.numExperts, "num_experts", k: x.numExpertsPerTok)
        s.expertIntermediate = try c.size(x.intermediateSize, "intermediate_size", max: ConfigLimits.width)
        s.moeLayers = [Bool](repeating: true, count: s.layers)
        s.normTopKProb = x.normTopKProb
        s.qkvBias = x.attentionBias
        s.outputBias = x.attentionBias
        s.qkNorm = .full
        if let clip = x.clipQkv { s.clipQKV = Float(try c.real(clip, "clip_qkv", 1e-6...1e30)) }
        return s
    }

    static func randomConfig(_ shape: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["num_experts_per_tok": shape.topK, "num_experts": shape.experts, "intermediate_size": shape.expertSize, "norm_topk_prob": false, "attention_bias": false]
    }
}
