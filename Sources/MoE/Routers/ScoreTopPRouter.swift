import MoECore

/// Dynamic top-p (ROUTING.md §3) for a scored, group-limited router (DeepSeek-V2/V3, GLM-4.5):
/// the experts of the token's chosen groups, their scores (softmax or sigmoid, without the
/// selection bias) normalised to sum to 1, taken in descending order until the sum passes p
/// (strictly, as the reference code does), clamped to [minExperts, maxExperts]. The kept
/// experts weigh what the router would give them: their scores, renormalised to 1 when it
/// renormalises, times its routed scaling.
public struct ScoreTopPRouter: Router {
    /// The router, choosing every candidate (k = its `candidateCount`, no renormalisation, no scaling).
    let candidates: TopKSigmoidRouter
    public let p: Float
    public let minExperts: Int, maxExperts: Int
    public let renormalize: Bool
    public let routedScaling: Float
    public var name: String { "top-p" }
    public var expertCount: Int { candidates.expertCount }
    public var renormalizesChosenWeights: Bool { renormalize }

    public init(_ router: TopKSigmoidRouter, p: Float, minExperts: Int = 1, maxExperts: Int? = nil, renormalize: Bool? = nil) {
        candidates = TopKSigmoidRouter(experts: router.expertCount, k: router.candidateCount, scoring: router.scoring, bias: router.bias,
                                       groups: router.groups, topkGroup: router.topkGroup, groupScore: router.groupScore,
                                       renormalize: false, routedScaling: 1, devices: router.devices)
        self.p = p
        self.minExperts = max(1, min(minExperts, router.candidateCount))
        self.maxExperts = max(self.minExperts, min(maxExperts ?? router.candidateCount, router.candidateCount))
        self.renormalize = renormalize ?? router.renormalize
        routedScaling = router.routedScaling
    }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        let all = candidates.route(logits, pool: pool)
        var out = Routing(expertCount: expertCount, reservingTokens: all.tokenCount)
        for t in 0..<all.tokenCount {
            let ids = Array(all.experts(of: t)), scores = Array(all.weights(of: t))  // descending score
            let total = scores.reduce(0, +)
            var count = ids.count, cumulative: Float = 0
            for (j, s) in scores.enumerated() {
                cumulative += total > 0 ? s / total : 0
                if cumulative > p { count = j + 1; break }
            }
            let n = min(maxExperts, max(minExperts, count))
            var w = Array(scores.prefix(n))
            if renormalize {
                let sum = w.reduce(0, +) + 1e-20
                w = w.map { $0 / sum }
            }
            out.append(zip(ids.prefix(n), w).map { ($0, $1 * routedScaling) })
        }
        return out
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] { candidates.auxLosses(logits, routing: routing) }
}
