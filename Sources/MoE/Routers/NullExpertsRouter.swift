import MoECore

/// AdaMoE: token-adaptive routing with null experts (Zeng et al. 2024). ROUTING.md §4.
///
/// Logits are the E true experts followed by M null experts; softmax over all E + M, then
/// top-k'. Null experts output zero and cost nothing, so they are left out of the routing: a
/// token keeps between 0 and k' true experts, whose weights are renormalised among themselves
/// (the sum clamped away from 0). Its `load_balance` is AdaMoE's: the transformers form over
/// all E + M experts, with the null experts' load fractions replaced by their mean (one
/// averaged bucket), as the reference `exp_1` code does.
public struct NullExpertsRouter: Router {
    public var name: String { "null-experts" }
    public let expertCount: Int
    public let nullCount: Int
    public let k: Int
    public var logitCount: Int { expertCount + nullCount }
    /// The weights of the chosen true experts always sum to 1 (null experts take none).
    public var renormalizesChosenWeights: Bool { true }

    public init(experts: Int, nullExperts: Int, k: Int) {
        precondition(experts > 0 && nullExperts >= 0 && k >= 1 && k <= experts + nullExperts,
                     "null-experts: need 1 <= k <= experts + null experts")
        expertCount = experts
        nullCount = nullExperts
        self.k = k
    }

    /// Top-k' over all E + M, per token.
    func choices(_ probs: [Float], tokens: Int) -> [[Int]] {
        let c = logitCount
        return (0..<tokens).map { tok in RouterMath.topK(probs[(tok * c)..<((tok + 1) * c)], k) }
    }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        RouterMath.routeSoftmaxRows(logits, width: logitCount, experts: expertCount, pool: pool) { row in
            let real = RouterMath.topK(row, k).filter { $0 < expertCount }
            let w = real.map { row[row.startIndex + $0] }
            let sum = max(w.reduce(0, +), 1e-20)  // clamped away from 0, as the reference code
            return zip(real, w).map { ($0, $1 / sum) }
        }
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        let c = logitCount, t = routing.tokenCount
        let probs = RouterMath.softmax(logits)
        var f = [Double](repeating: 0, count: c)
        for idx in choices(probs, tokens: t) { for i in idx { f[i] += 1 } }
        if t > 0 { f = f.map { $0 / Double(t) } }
        if nullCount > 0 {
            let mean = f[expertCount...].reduce(0, +) / Double(nullCount)
            for i in expertCount..<c { f[i] = mean }
        }
        return ["load_balance": AuxLoss.loadBalance(probs: probs, tokens: t, experts: c, fractions: f),
                "z_loss": AuxLoss.zLoss(logits: logits)]
    }
}
