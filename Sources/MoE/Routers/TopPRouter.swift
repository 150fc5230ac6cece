import MoECore

/// Dynamic routing, "Harder Tasks Need More Experts" (Huang et al. 2024). ROUTING.md §3.
///
/// Experts in descending probability; keep the smallest prefix whose cumulative probability
/// passes p, strictly as the reference code does (`cumsum > p`, and the expert that crosses is
/// kept). With p >= 1 (or when rounding keeps the sum from passing p) every expert is kept. The
/// count is then clamped to [minExperts, maxExperts]. Weights are the probabilities, not
/// renormalised unless asked. Its own loss, `dynamic`, is the mean router entropy.
public struct TopPRouter: Router {
    public var name: String { "top-p" }
    public let expertCount: Int
    public let p: Float
    public let minExperts: Int
    public let maxExperts: Int
    public let renormalize: Bool
    public var renormalizesChosenWeights: Bool { renormalize }

    public init(experts: Int, p: Float = 0.4, minExperts: Int = 1, maxExperts: Int? = nil, renormalize: Bool = false) {
        precondition(experts > 0, "top-p: need at least one expert")
        expertCount = experts
        self.p = p
        self.minExperts = max(1, min(minExperts, experts))
        self.maxExperts = max(self.minExperts, min(maxExperts ?? experts, experts))
        self.renormalize = renormalize
    }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        RouterMath.routeSoftmaxRows(logits, width: expertCount, experts: expertCount, pool: pool) { row in
            let order = RouterMath.topK(row, expertCount)
            var cumulative: Float = 0
            var count = expertCount
            for (j, i) in order.enumerated() {
                cumulative += row[row.startIndex + i]
                if cumulative > p {
                    count = j + 1
                    break
                }
            }
            let idx = Array(order.prefix(min(maxExperts, max(minExperts, count))))
            return Array(zip(idx, RouterMath.renormalized(idx.map { row[row.startIndex + $0] }, renormalize)))
        }
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        let t = routing.tokenCount
        let k = t == 0 ? 1 : Double(routing.assignmentCount + routing.droppedCount) / Double(t)
        var losses = softmaxLosses(logits, routing: routing, experts: expertCount, k: k, devices: 1)
        losses["dynamic"] = AuxLoss.entropy(probs: RouterMath.softmax(logits), tokens: t, experts: expertCount)
        return losses
    }
}
