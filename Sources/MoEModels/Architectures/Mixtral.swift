import Foundation

/// Mixtral (`mixtral`; transformers' `modeling_mixtral.py`): every layer an MoE of SwiGLU
/// experts under `block_sparse_moe` (`w1` gate, `w3` up, `w2` down), softmax top-k always
/// renormalised, sliding-window attention on every layer when `sliding_window` is set.
enum Mixtral: ArchitectureFamily {
    static let modelTypes = ["mixtral"]
    static func className(_ modelType: String) -> String { "MixtralForCausalLM" }

    /// Mixtral's own config.json fields (`num_experts` is an older spelling of `num_local_experts`).
    struct Config: Decodable {
        var numLocalExperts: Int
        var numExpertsPerTok: Int
        var intermediateSize: Int
        enum CodingKeys: String, CodingKey {
            case numLocalExperts = "num_local_experts", numExperts = "num_experts", numExpertsPerTok = "num_experts_per_tok"
            case intermediateSize = "intermediate_size"
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            numLocalExperts = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 8
            numExpertsPerTok = try c.decodeIfPresent(Int.self, forKey: .numExpertsPerTok) ?? 2
            intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 14336
        }
    }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(Config.self, data, path: path), c = ConfigCheck(path: path)
        var s = try common.base(path: path)
        (s.experts, s.topK) = try c.routing(experts: x.numLocalExperts, "num_local_experts", k: x.numExpertsPerTok)
        s.expertIntermediate = try c.size(x.intermediateSize, "intermediate_size", max: ConfigLimits.width)
        s.moeLayers = [Bool](repeating: true, count: s.layers)
        s.normTopKProb = true
        s.slidingWindows = try common.slidingWindows(layers: s.layers, rule: .everyLayer, path: path)
        s.names.moeBlock = "block_sparse_moe"
        (s.names.expertGate, s.names.expertUp, s.names.expertDown) = ("w1", "w3", "w2")
        return s
    }

    static func randomConfig(_ shape: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["num_experts_per_tok": shape.topK, "num_local_experts": shape.experts, "intermediate_size": shape.expertSize]
    }
}
