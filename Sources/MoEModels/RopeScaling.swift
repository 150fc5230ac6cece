import Foundation
import MoECore

/// RoPE as a config.json describes it: the base, and a scaling recipe for longer contexts.
///
/// Both spellings load: the newer `rope_parameters` object, and the older top-level `rope_theta`
/// with a `rope_scaling` object (`type` or `rope_type`). Recipes: `default`, `linear`
/// (frequencies divided by the factor) and `yarn` (Peng et al. 2023, as transformers'
/// `_compute_yarn_parameters`: a ramp between interpolated and extrapolated frequencies, and an
/// attention factor on cos and sin). Others are refused with an error naming the field.
public struct RopeConfig: Sendable, Equatable {
    public enum Kind: String, Sendable { case `default`, linear, yarn, llama3 }
    public var theta: Double
    public var kind: Kind
    public var factor: Double
    public var originalMaxPositions: Int
    public var betaFast: Double, betaSlow: Double
    public var mscale: Double?, mscaleAllDim: Double?
    public var attentionFactor: Double?
    public var truncate: Bool
    /// Llama 3's wavelength bands (`low_freq_factor`, `high_freq_factor`).
    public var lowFreqFactor: Double = 1, highFreqFactor: Double = 4

    /// The RoPE of `dim` rotary dimensions this config describes.
    public func rotary(headDim: Int, rotaryDim: Int? = nil, layout: RotaryEmbedding.Layout) -> RotaryEmbedding {
        let dim = rotaryDim ?? headDim
        // pos_freqs = base^(2i / dim), in f32 as transformers computes it.
        let pos = (0..<(dim / 2)).map { i in Float(Foundation.pow(theta, Double(Float(2 * i) / Float(dim)))) }
        switch kind {
        case .default:
            return RotaryEmbedding(headDim: headDim, invFreq: pos.map { 1 / $0 }, layout: layout)
        case .linear:
            return RotaryEmbedding(headDim: headDim, invFreq: pos.map { 1 / $0 / Float(factor) }, layout: layout)
        case .llama3:
            // transformers' `_compute_llama3_parameters`, in f32 as torch computes it: long
            // wavelengths divided by the factor, short ones kept, the band between smoothed.
            let f = Float(factor), old = Float(originalMaxPositions), low = Float(lowFreqFactor), high = Float(highFreqFactor)
            let inv: [Float] = pos.map { p in
                let base = 1 / p, wavelen = 2 * Float.pi / base
                let scaled = wavelen > old / low ? base / f : base
                guard !(wavelen < old / high) && !(wavelen > old / low) else { return scaled }
                let smooth = (old / wavelen - low) / (high - low)
                return (1 - smooth) * scaled / f + smooth * scaled
            }
            return RotaryEmbedding(headDim: headDim, invFreq: inv, layout: layout)
        case .yarn:
            func correctionDim(_ rotations: Double) -> Double {
                Double(dim) * Foundation.log(Double(originalMaxPositions) / (rotations * 2 * Double.pi)) / (2 * Foundation.log(theta))
            }
            var low = correctionDim(betaFast), high = correctionDim(betaSlow)
            if truncate {
                low = low.rounded(.down)
                high = high.rounded(.up)
            }
            low = max(low, 0)
            high = min(high, Double(dim - 1))
            if low == high { high += 0.001 }
            let inv: [Float] = (0..<(dim / 2)).map { i in
                let ramp = Float(min(1, max(0, (Double(i) - low) / (high - low))))
                let extrapolation = 1 - ramp
                let interp = 1 / (Float(factor) * pos[i]), extrap = 1 / pos[i]
                return interp * (1 - extrapolation) + extrap * extrapolation
            }
            return RotaryEmbedding(headDim: headDim, invFreq: inv, layout: layout, attentionScaling: Float(yarnAttentionFactor))
        }
    }

    /// YaRN's factor on cos and sin: given, or from `mscale` / `mscale_all_dim`, or from `factor`.
    var yarnAttentionFactor: Double {
        if let attentionFactor { return attentionFactor }
        if let m = mscale, let a = mscaleAllDim, m != 0, a != 0 { return Self.mscale(factor, m) / Self.mscale(factor, a) }
        return Self.mscale(factor, 1)
    }

    /// DeepSeek's extra softmax-scale factor under YaRN: mscale(factor, mscale_all_dim)^2.
    public var deepseekSoftmaxScale: Double {
        guard kind != .default, let a = mscaleAllDim, a != 0 else { return 1 }
        let m = Self.mscale(factor, a)
        return m * m
    }

    static func mscale(_ scale: Double, _ m: Double) -> Double { scale <= 1 ? 1 : 0.1 * m * Foundation.log(scale) + 1 }
}

/// The raw `rope_parameters` / `rope_scaling` object.
struct RopeFields: Decodable {
    var ropeTheta: Double?
    var ropeType: String?
    var type: String?
    var factor: Double?
    var originalMaxPositionEmbeddings: Int?
    var betaFast: Double?
    var betaSlow: Double?
    var mscale: Double?
    var mscaleAllDim: Double?
    var attentionFactor: Double?
    var truncate: Bool?
    /// GLM's share of each head that rotates (newer configs keep it here, older ones top-level).
    var partialRotaryFactor: Double?
    var lowFreqFactor: Double?, highFreqFactor: Double?
    enum CodingKeys: String, CodingKey {
        case ropeTheta = "rope_theta", ropeType = "rope_type", type, factor
        case originalMaxPositionEmbeddings = "original_max_position_embeddings", betaFast = "beta_fast", betaSlow = "beta_slow"
        case mscale, mscaleAllDim = "mscale_all_dim", attentionFactor = "attention_factor", truncate
        case partialRotaryFactor = "partial_rotary_factor", lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
    }

    /// The config, from the newer object or the older top-level theta plus scaling object.
    static func resolve(parameters: RopeFields?, scaling: RopeFields?, topLevelTheta: Double?, maxPositions: Int?,
                        path: String) throws(ModelError) -> RopeConfig {
        let source = parameters ?? scaling
        let field = parameters != nil ? "rope_parameters" : "rope_scaling"
        let raw = (source?.ropeType ?? source?.type ?? "default").lowercased()
        guard let kind = RopeConfig.Kind(rawValue: raw) else {
            throw .invalidConfig(path: path, field: "\(field).rope_type", reason: "'\(raw)' RoPE scaling is not supported (default, linear, yarn, llama3 are)")
        }
        let theta = parameters?.ropeTheta ?? topLevelTheta ?? scaling?.ropeTheta ?? 10_000
        guard theta.isFinite, theta > 1 else {
            throw .invalidConfig(path: path, field: parameters?.ropeTheta != nil ? "rope_parameters.rope_theta" : "rope_theta",
                                 reason: "must be a finite number above 1, got \(theta)")
        }
        let factor = source?.factor ?? 1
        if kind != .default {
            guard factor.isFinite, factor > 0, factor <= 1e6 else {
                throw .invalidConfig(path: path, field: "\(field).factor", reason: "must be in (0, 1e6], got \(factor)")
            }
        }
        if let m = maxPositions, m < 1 || m > 1 << 40 {
            throw .invalidConfig(path: path, field: "max_position_embeddings", reason: "must be in 1...\(1 << 40), got \(m)")
        }
        let original = source?.originalMaxPositionEmbeddings ?? maxPositions ?? 4096
        guard original >= 1, original <= 1 << 40 else {
            throw .invalidConfig(path: path, field: "\(field).original_max_position_embeddings", reason: "must be in 1...\(1 << 40), got \(original)")
        }
        for (name, value) in [("beta_fast", source?.betaFast), ("beta_slow", source?.betaSlow), ("mscale", source?.mscale),
                              ("mscale_all_dim", source?.mscaleAllDim), ("attention_factor", source?.attentionFactor)] {
            if let value, !value.isFinite || value < 0 || value > 1e6 {
                throw .invalidConfig(path: path, field: "\(field).\(name)", reason: "must be in 0...1e6, got \(value)")
            }
        }
        let low = source?.lowFreqFactor ?? 1, high = source?.highFreqFactor ?? 4
        if kind == .llama3 {
            guard low.isFinite, high.isFinite, low > 0, high > low else {
                throw .invalidConfig(path: path, field: "\(field).high_freq_factor", reason: "need 0 < low_freq_factor < high_freq_factor, got \(low), \(high)")
            }
        }
        return RopeConfig(theta: theta, kind: kind, factor: factor, originalMaxPositions: original,
                          betaFast: source?.betaFast ?? 32, betaSlow: source?.betaSlow ?? 1, mscale: source?.mscale,
                          mscaleAllDim: source?.mscaleAllDim, attentionFactor: source?.attentionFactor,
                          truncate: source?.truncate ?? true, lowFreqFactor: low, highFreqFactor: high)
    }
}
