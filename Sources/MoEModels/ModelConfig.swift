import Foundation
import MoE

/// What a decoder-only MoE transformer is, independent of how its config.json spells it.
/// Each architecture file turns its config into one of these.
public struct DecoderSpec: Sendable, Equatable {
    /// config.json's `model_type` (`mixtral`, `qwen2_moe`, `qwen3_moe`, `olmoe`, ...).
    public var modelType: String
    public var vocabSize: Int, hiddenSize: Int, layers: Int
    public var heads: Int, kvHeads: Int, headDim: Int
    public var rmsNormEps: Float
    public var rope: RopeConfig
    public var tieWordEmbeddings: Bool
    /// Attention variants.
    public enum QKNorm: Sendable, Equatable {
        case none
        /// RMSNorm over each head's D values (Qwen3).
        case perHead
        /// RMSNorm over the whole projected q and k before the head split (OLMoE).
        case full
    }
    public var qkvBias: Bool
    public var outputBias: Bool
    public var qkNorm: QKNorm
    /// Clamp q, k and v to [-c, c] (OLMoE's `clip_qkv`).
    public var clipQKV: Float?
    /// Per layer: true for an MoE FFN, false for a dense one.
    public var moeLayers: [Bool]
    public var experts: Int, topK: Int
    /// Routed experts' intermediate size, and the dense layers'.
    public var expertIntermediate: Int, denseIntermediate: Int
    /// Top-k weights renormalised to sum to 1.
    public var normTopKProb: Bool
    /// Qwen2-MoE's shared expert (its intermediate size) and whether a sigmoid gate scales it.
    public var sharedExpertIntermediate: Int?
    public var sharedExpertGate: Bool
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]

    /// Multi-head latent attention (DeepSeek-V2/V3) instead of grouped-query attention.
    public struct Latent: Sendable, Equatable {
        public var qLoraRank: Int?
        public var kvLoraRank: Int, nopeDim: Int, ropeDim: Int, valueDim: Int
        /// RoPE on interleaved pairs (DeepSeek) rather than rotate-half.
        public var interleave: Bool
    }
    public var latent: Latent? = nil

    /// Which router the MoE layers use.
    public enum RouterKind: Sendable, Equatable {
        /// Softmax then top-k, renormalised when `normTopKProb` (Mixtral, Qwen, OLMoE).
        case softmaxTopK
        /// DeepSeek-V3: sigmoid, correction bias, groups by sum of top-2, `routedScaling`.
        case deepseekV3
        /// DeepSeek-V2: softmax, groups by max (group-limited greedy) or none, `routedScaling`.
        case deepseekV2
    }
    public var routerKind: RouterKind = .softmaxTopK
    public var groups = 1, topkGroup = 1
    public var routedScaling: Float = 1
    /// DeepSeek's shared experts: one SwiGLU of `sharedExperts * expertIntermediate`, no gate.
    public var sharedExperts = 0
    /// A router other than the architecture's own, from config.json's `moekit_router` (models
    /// trained by MoEKit with, say, top-p routing).
    public var routerOverride: RouterConfig? = nil
}

/// The fields every supported config.json shares (Hugging Face spelling), with both spellings
/// of the RoPE base accepted: top-level `rope_theta`, or the newer `rope_parameters` object.
struct CommonConfig: Decodable {
    var modelType: String?
    var architectures: [String]?
    var vocabSize: Int
    var hiddenSize: Int
    var numHiddenLayers: Int
    var numAttentionHeads: Int
    var numKeyValueHeads: Int?
    var headDim: Int?
    var rmsNormEps: Float?
    var ropeTheta: Double?
    var ropeParameters: RopeFields?
    var ropeScaling: RopeFields?
    var maxPositionEmbeddings: Int?
    var tieWordEmbeddings: Bool?
    var bosTokenId: Int?
    var eosTokenId: IntOrList?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", architectures, vocabSize = "vocab_size", hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeParameters = "rope_parameters", ropeScaling = "rope_scaling"
        case tieWordEmbeddings = "tie_word_embeddings", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case maxPositionEmbeddings = "max_position_embeddings"
    }

    func base(path: String) throws(ModelError) -> DecoderSpec {
        guard vocabSize > 0, hiddenSize > 0, numHiddenLayers > 0, numAttentionHeads > 0 else {
            throw .invalidConfig(path: path, field: "vocab_size/hidden_size/num_hidden_layers/num_attention_heads", reason: "must be positive")
        }
        let kv = numKeyValueHeads ?? numAttentionHeads
        guard kv > 0, numAttentionHeads % kv == 0 else {
            throw .invalidConfig(path: path, field: "num_key_value_heads", reason: "\(kv) does not divide \(numAttentionHeads) heads")
        }
        let hd = headDim ?? hiddenSize / numAttentionHeads
        guard hd > 0, hd % 2 == 0 else { throw .invalidConfig(path: path, field: "head_dim", reason: "must be a positive even number, got \(hd)") }
        return DecoderSpec(modelType: modelType ?? "", vocabSize: vocabSize, hiddenSize: hiddenSize, layers: numHiddenLayers,
                           heads: numAttentionHeads, kvHeads: kv, headDim: hd, rmsNormEps: rmsNormEps ?? 1e-6,
                           rope: try RopeFields.resolve(parameters: ropeParameters, scaling: ropeScaling, topLevelTheta: ropeTheta,
                                                        maxPositions: maxPositionEmbeddings, path: path),
                           tieWordEmbeddings: tieWordEmbeddings ?? false,
                           qkvBias: false, outputBias: false, qkNorm: .none, clipQKV: nil,
                           moeLayers: [Bool](repeating: true, count: numHiddenLayers), experts: 0, topK: 0,
                           expertIntermediate: 0, denseIntermediate: 0, normTopKProb: true,
                           sharedExpertIntermediate: nil, sharedExpertGate: false,
                           bosTokenID: bosTokenId, eosTokenIDs: eosTokenId?.values ?? [])
    }
}

/// A JSON value that is an integer or a list of integers (`eos_token_id`).
struct IntOrList: Decodable {
    var values: [Int]
    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let one = try? c.decode(Int.self) { values = [one] } else { values = try c.decode([Int].self) }
    }
}

/// Decodes `T` from JSON, mapping errors to `ModelError.invalidConfig` naming the field.
func decodeConfig<T: Decodable>(_ type: T.Type, _ data: Data, path: String) throws(ModelError) -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let DecodingError.keyNotFound(key, ctx) {
        throw .invalidConfig(path: path, field: (ctx.codingPath + [key]).map(\.stringValue).joined(separator: "."), reason: "missing")
    } catch let DecodingError.typeMismatch(t, ctx) {
        throw .invalidConfig(path: path, field: ctx.codingPath.map(\.stringValue).joined(separator: "."), reason: "expected \(t)")
    } catch let DecodingError.valueNotFound(t, ctx) {
        throw .invalidConfig(path: path, field: ctx.codingPath.map(\.stringValue).joined(separator: "."), reason: "expected \(t), found null")
    } catch let DecodingError.dataCorrupted(ctx) {
        let field = ctx.codingPath.map(\.stringValue).joined(separator: ".")
        throw .invalidConfig(path: path, field: field.isEmpty ? "(json)" : field, reason: "malformed JSON: \(ctx.debugDescription)")
    } catch {
        throw .invalidConfig(path: path, field: "(json)", reason: "\(error)")
    }
}
