import MoECore

/// Another router's choices with the weak ones dropped: every chosen expert whose weight is
/// below `threshold` is left out (a token always keeps its strongest), so easy tokens read fewer
/// experts. With `renormalize`, the kept weights are scaled back up to the sum the token's
/// choices had before the drop (1 for a renormalising top-k, the routed scaling for DeepSeek-V3),
/// as the checkpoint's own renormalisation would have made them.
public struct ThresholdRouter: Router {
    public let base: any Router
    public let threshold: Float
    public let renormalize: Bool
    public var name: String { base.name }
    public var expertCount: Int { base.expertCount }
    public var logitCount: Int { base.logitCount }
    public var isCausal: Bool { base.isCausal }
    public var renormalizesChosenWeights: Bool { renormalize }

    public init(_ base: any Router, threshold: Float, renormalize: Bool) {
        self.base = base
        self.threshold = threshold
        self.renormalize = renormalize
    }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        let full = base.route(logits, pool: pool)
        var out = Routing(expertCount: full.expertCount, reservingTokens: full.tokenCount)
        for t in 0..<full.tokenCount {
            let ids = full.experts(of: t), ws = full.weights(of: t)
            var kept: [(expert: Int, weight: Float)] = []
            for (e, w) in zip(ids, ws) where kept.isEmpty || w >= threshold { kept.append((e, w)) }
            if renormalize, kept.count < ids.count {
                let before = ws.reduce(0, +), after = kept.reduce(0) { $0 + $1.weight }
                if after > 0 { kept = kept.map { ($0.expert, $0.weight * before / after) } }
            }
            out.append(kept, dropped: full.dropped[t])
        }
        return out
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        base.auxLosses(logits, routing: routing)
    }
}

extension TopKSigmoidRouter {
    /// The same router choosing `k` experts (renormalising as given, else as it did).
    public func withK(_ k: Int, renormalize: Bool? = nil) -> TopKSigmoidRouter {
        TopKSigmoidRouter(experts: expertCount, k: k, scoring: scoring, bias: bias, groups: groups, topkGroup: topkGroup,
                          groupScore: groupScore, renormalize: renormalize ?? self.renormalize, routedScaling: routedScaling,
                          devices: devices)
    }

    /// The most experts a token can get: those of its `topkGroup` best groups.
    public var candidateCount: Int { topkGroup * (expertCount / groups) }

    /// The same router never choosing `skipped`: their selection bias becomes −∞, so a group's
    /// score and the top-k see only the rest, as if they were deleted.
    public func excluding(_ skipped: Set<Int>) -> TopKSigmoidRouter {
        var b = bias ?? [Float](repeating: 0, count: expertCount)
        for e in skipped where e < expertCount { b[e] = -.infinity }
        return withBias(b)
    }
}

/// Another router with some experts removed: their logits become −∞ before it routes, so a
/// softmax router renormalises over the rest exactly as if their rows were deleted from the
/// gate, and a sigmoid one scores them 0 (never chosen while k others remain). Expert pruning
/// at load (`--skip-experts`) without writing a smaller checkpoint.
public struct MaskedRouter: Router {
    public let base: any Router
    /// The experts removed, ids in `0 ..< expertCount`.
    public let skipped: Set<Int>
    public var name: String { base.name }
    public var expertCount: Int { base.expertCount }
    public var logitCount: Int { base.logitCount }
    public var isCausal: Bool { base.isCausal }
    public var renormalizesChosenWeights: Bool { base.renormalizesChosenWeights }
    public var topK: Int? { base.topK }

    public init(_ base: any Router, skipped: Set<Int>) {
        self.base = base
        self.skipped = skipped
    }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        let masked = logits.converted(to: .f32).copied()
        let w = logits.shape[1], p = masked.mutableFloats
        for t in 0..<logits.shape[0] { for e in skipped { p[t * w + e] = -.infinity } }
        let r = base.route(masked, pool: pool)
        // A router that must fill k slots (sigmoid scores of 0) could still pick a skipped
        // expert when fewer than k remain: drop it.
        guard r.experts.contains(where: skipped.contains) else { return r }
        var out = Routing(expertCount: r.expertCount, reservingTokens: r.tokenCount)
        for t in 0..<r.tokenCount {
            out.append(zip(r.experts(of: t), r.weights(of: t)).filter { !skipped.contains($0.0) }.map { ($0.0, $0.1) }, dropped: r.dropped[t])
        }
        return out
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] { base.auxLosses(logits, routing: routing) }
}
