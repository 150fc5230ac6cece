import Foundation
import MoE

/// The fields every supported config.json shares (Hugging Face spelling), with both spellings
/// of the RoPE base accepted: top-level `rope_theta`, or the newer `rope_parameters` object.
/// Each architecture file decodes this plus its own fields, then builds a `DecoderSpec` with
/// `base(path:)`.
struct CommonConfig: Decodable {
    var modelType: String?
    var architectures: [String]?
    var vocabSize: Int
    var hiddenSize: Int
    var numHiddenLayers: Int
    var numAttentionHeads: Int
    var numKeyValueHeads: Int?
    var headDim: Int?
    var rmsNormEps: Double?
    var ropeTheta: Double?
    var ropeParameters: RopeFields?
    var ropeScaling: RopeFields?
    var partialRotaryFactor: Double?
    var maxPositionEmbeddings: Int?
    var tieWordEmbeddings: Bool?
    var bosTokenId: Int?
    var eosTokenId: IntOrList?
    var slidingWindow: Int?
    var useSlidingWindow: Bool?
    var maxWindowLayers: Int?
    var layerTypes: [String]?
    var moekitRouter: RouterConfig?

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type", architectures, vocabSize = "vocab_size", hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeParameters = "rope_parameters", ropeScaling = "rope_scaling"
        case partialRotaryFactor = "partial_rotary_factor"
        case tieWordEmbeddings = "tie_word_embeddings", bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
        case maxPositionEmbeddings = "max_position_embeddings"
        case slidingWindow = "sliding_window", useSlidingWindow = "use_sliding_window", maxWindowLayers = "max_window_layers"
        case layerTypes = "layer_types", moekitRouter = "moekit_router"
    }

    /// The spec's shared part, every size range-checked (`ConfigLimits`): a dense model with
    /// full attention; the architecture file fills in the rest.
    func base(path: String) throws(ModelError) -> DecoderSpec {
        let c = ConfigCheck(path: path)
        let layers = try c.size(numHiddenLayers, "num_hidden_layers", max: ConfigLimits.layers)
        let hidden = try c.size(hiddenSize, "hidden_size", max: ConfigLimits.width)
        let vocab = try c.size(vocabSize, "vocab_size", max: ConfigLimits.vocabulary)
        let heads = try c.size(numAttentionHeads, "num_attention_heads", max: ConfigLimits.heads)
        let kv = try c.size(numKeyValueHeads ?? heads, "num_key_value_heads", max: heads)
        guard heads % kv == 0 else {
            throw .invalidConfig(path: path, field: "num_key_value_heads", reason: "\(kv) does not divide \(heads) heads")
        }
        let hd = try c.size(headDim ?? hidden / heads, "head_dim", max: ConfigLimits.headDim)
        guard hd % 2 == 0 else { throw .invalidConfig(path: path, field: "head_dim", reason: "must be even, got \(hd)") }
        let eps = rmsNormEps ?? 1e-6
        guard eps.isFinite, eps > 0, eps < 1 else { throw .invalidConfig(path: path, field: "rms_norm_eps", reason: "must be in (0, 1), got \(eps)") }
        let rope = try RopeFields.resolve(parameters: ropeParameters, scaling: ropeScaling, topLevelTheta: ropeTheta,
                                          maxPositions: maxPositionEmbeddings, path: path)
        var rotaryDim: Int?
        if let factor = ropeParameters?.partialRotaryFactor ?? partialRotaryFactor, factor != 1 {
            // The range first: a factor of 1e300 would trap in the conversion to Int.
            let dim = factor.isFinite && factor > 0 && factor < 1 ? Int((Double(hd) * factor).rounded(.down)) : 0
            guard dim >= 2, dim % 2 == 0 else {
                throw .invalidConfig(path: path, field: "partial_rotary_factor", reason: "must give an even rotary dim in 2...\(hd), got \(factor)")
            }
            rotaryDim = dim
        }
        // Ids past the vocabulary are kept, as transformers keeps them (OLMoE's class default,
        // 50279, outlives a smaller vocabulary): they only ever fail to match.
        if let b = bosTokenId, b < 0 { throw .invalidConfig(path: path, field: "bos_token_id", reason: "must not be negative, got \(b)") }
        for e in eosTokenId?.values ?? [] where e < 0 {
            throw .invalidConfig(path: path, field: "eos_token_id", reason: "must not be negative, got \(e)")
        }
        return DecoderSpec(modelType: modelType ?? "", vocabSize: vocab, hiddenSize: hidden, layers: layers,
                           heads: heads, kvHeads: kv, headDim: hd, rmsNormEps: Float(eps), rope: rope, rotaryDim: rotaryDim,
                           tieWordEmbeddings: tieWordEmbeddings ?? false,
                           qkvBias: false, outputBias: false, qkNorm: .none, clipQKV: nil,
                           slidingWindows: [Int?](repeating: nil, count: layers),
                           moeLayers: [Bool](repeating: false, count: layers), experts: 0, topK: 0,
                           expertIntermediate: 0, denseIntermediate: 0, normTopKProb: true,
                           sharedExpertIntermediate: nil, sharedExpertGate: false,
                           routerOverride: moekitRouter, bosTokenID: bosTokenId, eosTokenIDs: eosTokenId?.values ?? [])
    }

    /// How a family places sliding-window layers when config.json has no `layer_types`.
    enum WindowRule {
        /// Every layer, when `sliding_window` is set (Mistral, Mixtral).
        case everyLayer
        /// Layers from `max_window_layers` on, when `use_sliding_window` (Qwen2, Qwen3).
        case fromMaxWindowLayers
        /// Even layers below `max_window_layers`, when `use_sliding_window` (transformers' Qwen2-MoE).
        case evenBelowMaxWindowLayers
        /// Every layer when `use_sliding_window` (Qwen3-MoE).
        case everyLayerWhenUsed
        /// Even layers (GPT-OSS).
        case alternating
    }

    /// Each layer's sliding window: from `layer_types` when present (transformers 5 writes it),
    /// else by the family's rule. Families with a `use_sliding_window` switch honour it both ways.
    func slidingWindows(layers: Int, rule: WindowRule, path: String) throws(ModelError) -> [Int?] {
        let switched: Bool
        switch rule {
        case .everyLayer, .alternating: switched = true
        default: switched = useSlidingWindow ?? false
        }
        if let w = slidingWindow, w < 0 { throw .invalidConfig(path: path, field: "sliding_window", reason: "must not be negative, got \(w)") }
        if let m = maxWindowLayers, m < 0 { throw .invalidConfig(path: path, field: "max_window_layers", reason: "must not be negative, got \(m)") }
        guard switched, let w = slidingWindow, w > 0 else { return [Int?](repeating: nil, count: layers) }
        if let types = layerTypes {
            guard types.count == layers else {
                throw .invalidConfig(path: path, field: "layer_types", reason: "\(types.count) entries for \(layers) layers")
            }
            var out: [Int?] = []
            for (i, t) in types.enumerated() {
                switch t {
                case "sliding_attention": out.append(w)
                case "full_attention": out.append(nil)
                default: throw .invalidConfig(path: path, field: "layer_types[\(i)]", reason: "'\(t)' is not sliding_attention or full_attention")
                }
            }
            return out
        }
        let maxLayers = maxWindowLayers ?? 28
        return (0..<layers).map { i in
            switch rule {
            case .everyLayer, .everyLayerWhenUsed: return w
            case .fromMaxWindowLayers: return i >= maxLayers ? w : nil
            case .evenBelowMaxWindowLayers: return i % 2 == 0 && i < maxLayers ? w : nil
            case .alternating: return i % 2 == 0 ? w : nil
            }
        }
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
        if field.isEmpty, let key = hugeNumberField(data) {
            throw .invalidConfig(path: path, field: key, reason: "the number does not fit (beyond 2^53)")
        }
        throw .invalidConfig(path: path, field: field.isEmpty ? "(json)" : field, reason: "malformed JSON: \(ctx.debugDescription)")
    } catch {
        throw .invalidConfig(path: path, field: "(json)", reason: "\(error)")
    }
}

/// The first top-level key of a JSON object whose number is too large for an exact integer
/// (Foundation's decoder rejects such a number as corrupt data without naming the key).
private func hugeNumberField(_ data: Data) -> String? {
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
    return object.keys.sorted().first { key in
        guard let n = object[key] as? NSNumber, !(object[key] is Bool) else { return false }
        return !n.doubleValue.isFinite || abs(n.doubleValue) >= 9_007_199_254_740_992
    }
}
