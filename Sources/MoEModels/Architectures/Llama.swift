import Foundation

/// Llama (`llama`; transformers' `modeling_llama.py`): the dense decoder every other family
/// grew from. A dense model is a decoder whose FFN kind is dense on every layer: the same code
/// path as an MoE model's dense layers. `attention_bias` puts biases on q, k, v and o.
enum Llama: ArchitectureFamily {
    static let modelTypes = ["llama"]
    static func className(_ modelType: String) -> String { "LlamaForCausalLM" }

    /// The dense families' FFN and bias fields, with transformers' defaults.
    struct DenseConfig: Decodable {
        var intermediateSize: Int
        var attentionBias: Bool
        var mlpBias: Bool
        enum CodingKeys: String, CodingKey {
            case intermediateSize = "intermediate_size", attentionBias = "attention_bias", mlpBias = "mlp_bias"
        }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 11008
            attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
            mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        }

        /// A dense spec: every layer's FFN of `intermediate_size`.
        func denseSpec(_ common: CommonConfig, path: String) throws(ModelError) -> DecoderSpec {
            var s = try common.base(path: path)
            s.denseIntermediate = try ConfigCheck(path: path).size(intermediateSize, "intermediate_size", max: ConfigLimits.width)
            if mlpBias { throw .invalidConfig(path: path, field: "mlp_bias", reason: "biases on the dense FFN are not supported") }
            return s
        }
    }

    static func spec(_ data: Data, common: CommonConfig, modelType: String, path: String) throws(ModelError) -> DecoderSpec {
        let x = try decodeConfig(DenseConfig.self, data, path: path)
        var s = try x.denseSpec(common, path: path)
        s.qkvBias = x.attentionBias
        s.outputBias = x.attentionBias
        return s
    }

    static func randomConfig(_ s: RandomCheckpoint.Shape, modelType: String) -> [String: Any] {
        ["intermediate_size": s.denseSize, "attention_bias": false, "mlp_bias": false]
    }
}
