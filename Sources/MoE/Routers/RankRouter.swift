import MoECore

/// One expert per token, the one ranked `rank` (0-based) by the router logits, with weight 1:
/// SCMoE's "rank-k" weak activation (ROUTING.md §5: `student_routed_tok`, its weight
/// renormalised to 1.0). Logits rank experts as softmax and sigmoid scores do (both are
/// monotone); ties go to the lower id.
public struct RankRouter: Router {
    public var name: String { "rank" }
    public let expertCount: Int
    public let rank: Int
    public var topK: Int? { 1 }

    public init(experts: Int, rank: Int) {
        precondition(experts > 0 && rank >= 0 && rank < experts, "rank router: need 0 <= rank < experts")
        expertCount = experts
        self.rank = rank
    }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        let z = logits.converted(to: .f32).toFloats(), e = expertCount
        return RouterMath.routeRows(tokens: logits.shape[0], experts: e, pool: pool) { t in
            let row = z[(t * e)..<((t + 1) * e)]
            let order = RouterMath.topK(row, rank + 1)
            return [(order[rank], 1)]
        }
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] { [:] }
}
