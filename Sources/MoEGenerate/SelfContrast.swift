import Foundation
import MoE
import MoECore
import MoEModels

/// SCMoE, self-contrast decoding with unchosen experts (ROUTING.md §5): every step runs the
/// model twice, each pass with its own KV cache: the strong pass routes as the checkpoint does
/// (or as the generation's `routing` says), the weak pass sends each token to the single
/// expert ranked `weakRank` by its router, with weight 1. The next token is chosen from
/// (1 + β)·z_s − β·z_w over the plausible tokens { v : z_s(v) ≥ log α + max z_s } (−∞
/// elsewhere), each z divided by its temperature; greedy takes the argmax, sampling draws from
/// the softmax of these scores with the generation's sampling options.
public struct SelfContrast: Sendable, Equatable {
    /// The weak pass's expert rank (0-based; the paper's Mixtral example uses 2, the
    /// third-ranked expert).
    public var weakRank: Int
    /// Plausibility: tokens below α times the strong pass's most likely one are excluded.
    public var alpha: Float
    /// How strongly the weak pass is subtracted.
    public var beta: Float
    /// Temperatures of the strong and weak logits (`cd_st`, `cd_tt`).
    public var strongTemperature: Float, weakTemperature: Float

    /// The reference code's defaults: α 0.1, β 0.5, temperatures 1, and the given weak rank.
    public init(weakRank: Int = 2, alpha: Float = 0.1, beta: Float = 0.5, strongTemperature: Float = 1, weakTemperature: Float = 1) {
        self.weakRank = weakRank
        self.alpha = alpha
        self.beta = beta
        self.strongTemperature = strongTemperature
        self.weakTemperature = weakTemperature
    }

    /// The weak pass's options for `model`: every MoE layer routes to its `weakRank`-th expert.
    func weakOptions(for model: DecoderModel) throws(ModelError) -> ForwardOptions {
        let routers = model.moeRouters
        guard let experts = routers.values.map(\.expertCount).min() else {
            throw .invalidConfig(path: model.checkpoint.weightsPath, field: "--decoding", reason: "scmoe needs an MoE model; this one has no MoE layer")
        }
        guard weakRank >= 0, weakRank < experts else {
            throw .invalidConfig(path: model.checkpoint.weightsPath, field: "--scmoe-rank", reason: "must be in 0..<\(experts) (the model's experts), got \(weakRank)")
        }
        let rank = weakRank
        return ForwardOptions(router: { _, own in RankRouter(experts: own.expertCount, rank: rank) })
    }

    /// The contrast scores of one step from the strong and weak logits.
    public func scores(strong: UnsafeBufferPointer<Float>, weak: UnsafeBufferPointer<Float>) -> [Float] {
        let st = strongTemperature, wt = weakTemperature
        var best = -Float.infinity
        for z in strong where z / st > best { best = z / st }
        let floor = Float(log(Double(alpha))) + best
        var out = [Float](repeating: -.infinity, count: strong.count)
        for v in 0..<strong.count {
            let zs = strong[v] / st
            if zs >= floor { out[v] = (1 + beta) * zs - beta * (weak[v] / wt) }
        }
        return out
    }
}
