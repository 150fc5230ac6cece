/// Expert capacity and token dropping, for any token-choice router.
///
/// Each expert takes at most `C = max(minimum, ceil(factor * A / E))` assignments, where A is the
/// number of (token, expert) assignments the router made (k * T for top-k) and E the experts.
/// Assignments past capacity are dropped: the token keeps its other experts, and a token with
/// none left passes through on the residual connection (zero MoE output). ROUTING.md §1.
public struct Capacity: Sendable, Equatable, Codable {
    /// Which assignments keep their slot when an expert is full.
    public enum DropPriority: String, Sendable, Codable, CaseIterable {
        /// Sequence order, first choices before second choices (GShard, Switch, DeepSpeed):
        /// later tokens drop first, which is OpenMoE's drop-towards-the-end.
        case position
        /// Highest router weight first (batch-prioritised routing).
        case score
    }

    public var factor: Float
    public var dropBy: DropPriority
    /// A floor on C (OpenMoE's `router_min_capacity`).
    public var minimum: Int

    public init(factor: Float, dropBy: DropPriority = .position, minimum: Int = 0) {
        self.factor = factor
        self.dropBy = dropBy
        self.minimum = minimum
    }

    /// C for `assignments` assignments over `experts` experts.
    public func capacity(assignments: Int, experts: Int) -> Int {
        if experts == 0 { return 0 }
        let c = (Double(factor) * Double(assignments) / Double(experts)).rounded(.up)
        return max(minimum, Int(c))
    }

    /// `routing` with the assignments past capacity moved to `dropped`.
    public func apply(to routing: Routing) -> Routing {
        let e = routing.expertCount, t = routing.tokenCount
        let cap = capacity(assignments: routing.assignmentCount, experts: e)
        // (token, rank) pairs in priority order.
        var order: [(token: Int, rank: Int)] = []
        order.reserveCapacity(routing.assignmentCount)
        switch dropBy {
        case .position:
            let maxRank = (0..<t).map { routing.offsets[$0 + 1] - routing.offsets[$0] }.max() ?? 0
            for r in 0..<maxRank {
                for tok in 0..<t where routing.offsets[tok] + r < routing.offsets[tok + 1] { order.append((tok, r)) }
            }
        case .score:
            for tok in 0..<t { for r in 0..<(routing.offsets[tok + 1] - routing.offsets[tok]) { order.append((tok, r)) } }
            let w = routing.weights, off = routing.offsets
            order.sort { a, b in
                let (wa, wb) = (w[off[a.token] + a.rank], w[off[b.token] + b.rank])
                return wa > wb || (wa == wb && (a.rank, a.token) < (b.rank, b.token))
            }
        }
        var load = [Int](repeating: 0, count: e)
        var kept = [Bool](repeating: false, count: routing.assignmentCount)
        for (tok, r) in order {
            let i = routing.offsets[tok] + r
            let expert = routing.experts[i]
            if load[expert] < cap {
                load[expert] += 1
                kept[i] = true
            }
        }
        var out = Routing(expertCount: e, reservingTokens: t)
        for tok in 0..<t {
            var choices: [(expert: Int, weight: Float)] = [], dropped = routing.dropped[tok]
            for i in routing.offsets[tok]..<routing.offsets[tok + 1] {
                if kept[i] { choices.append((routing.experts[i], routing.weights[i])) } else { dropped.append(routing.experts[i]) }
            }
            out.append(choices, dropped: dropped)
        }
        return out
    }
}
