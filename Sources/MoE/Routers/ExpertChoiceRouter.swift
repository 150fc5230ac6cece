import MoECore

/// Expert Choice routing (Zhou et al. 2022; flaxformer `ExpertsChooseMaskedRouter`).
/// ROUTING.md §6.
///
/// Softmax over the experts for every token; then each expert takes its C best tokens by that
/// probability, C = ceil(T * capacityFactor / E) (at most T), ties to the earlier token. A token
/// may be taken by several experts or by none; its weights are the probabilities. Choosing
/// among all T tokens looks at future tokens, so this router is **not causal**: use it for
/// encoders, training experiments and analysis, not for autoregressive decoding. As in
/// flaxformer it needs no balance loss: the losses it reports are zero.
public struct ExpertChoiceRouter: Router {
    public var name: String { "expert-choice" }
    public let expertCount: Int
    public let capacityFactor: Float
    public var isCausal: Bool { false }

    public init(experts: Int, capacityFactor: Float = 2) {
        precondition(experts > 0 && capacityFactor > 0, "expert-choice: need experts > 0 and a positive capacity factor")
        expertCount = experts
        self.capacityFactor = capacityFactor
    }

    /// Tokens each expert takes for a batch of `tokens`.
    public func capacity(tokens: Int) -> Int {
        min(tokens, Int((Double(tokens) * Double(capacityFactor) / Double(expertCount)).rounded(.up)))
    }

    public func route(_ logits: Tensor) -> Routing {
        let e = expertCount
        let t = logits.count / max(1, e)
        let probs = RouterMath.softmax(logits)
        let c = capacity(tokens: t)
        var perToken = [[(expert: Int, weight: Float)]](repeating: [], count: t)
        for expert in 0..<e {
            let column = (0..<t).map { probs[$0 * e + expert] }
            for tok in RouterMath.topK(column[...], c) { perToken[tok].append((expert, column[tok])) }
        }
        return Routing(expertCount: e, tokens: perToken)
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        ["load_balance": 0, "z_loss": 0]
    }
}
