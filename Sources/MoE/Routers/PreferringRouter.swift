import MoECore

/// Top-k softmax routing that breaks near-ties toward preferred experts (cache-aware routing,
/// for an expert cache: the preferred experts are the ones already in memory). For selection
/// only, a preferred expert's probability counts `1 + margin` times, so it displaces the k-th
/// choice when within that factor of it; the weights are the chosen experts' true
/// probabilities (renormalized over the chosen when the base renormalizes). With margin 0, or
/// every expert preferred, or none, it routes exactly as `base`.
public struct PreferringRouter: Router {
    public let base: TopKSoftmaxRouter
    /// How much a preferred expert's probability is raised for selection (0.1: 10%).
    public let margin: Float
    /// Per expert: whether it is preferred.
    public let preferred: [Bool]

    public init(base: TopKSoftmaxRouter, margin: Float, preferred: [Bool]) {
        precondition(margin >= 0 && margin.isFinite && preferred.count == base.expertCount,
                     "PreferringRouter: margin \(margin), \(preferred.count) flags for \(base.expertCount) experts")
        self.base = base
        self.margin = margin
        self.preferred = preferred
    }

    public var name: String { base.name }
    public var expertCount: Int { base.expertCount }
    public var logitCount: Int { base.logitCount }
    public var isCausal: Bool { true }
    public var renormalizesChosenWeights: Bool { base.renormalize }
    public var topK: Int? { base.k }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        let e = expertCount, t = logits.count / e, k = base.k, renormalize = base.renormalize
        let probs = RouterMath.softmax(logits, pool: pool)
        let boost = 1 + margin, preferred = self.preferred
        return probs.withUnsafeBufferPointer { p in
            RouterMath.routeFixedK(tokens: t, experts: e, k: k, pool: pool) { tok, ids, weights in
                let row = UnsafeBufferPointer(rebasing: p[(tok * e)..<((tok + 1) * e)])
                let scores = (0..<e).map { preferred[$0] ? row[$0] * boost : row[$0] }
                scores.withUnsafeBufferPointer { Kernels.topKRow($0, into: ids) }
                var sum: Float = 0
                for i in 0..<k { weights[i] = row[ids[i]]; sum += weights[i] }
                if renormalize && sum > 0 { for i in 0..<k { weights[i] /= sum } }
            }
        }
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] { base.auxLosses(logits, routing: routing) }
}
