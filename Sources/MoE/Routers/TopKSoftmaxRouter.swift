import MoECore

/// Softmax over the experts, then the top k (GShard, Mixtral, Qwen-MoE, OLMoE). ROUTING.md §1-2.
///
/// Weights are the chosen probabilities, renormalised to sum to 1 when `renormalize` is set
/// (Mixtral always; Qwen and OLMoE by `norm_topk_prob`). Ties go to the lower expert id.
public struct TopKSoftmaxRouter: Router {
    public var name: String { "topk-softmax" }
    public let expertCount: Int
    public let k: Int
    public var topK: Int? { k }
    public let renormalize: Bool
    public var renormalizesChosenWeights: Bool { renormalize }
    /// Experts per device for DeepSeekMoE's device-level balance loss (1: not reported).
    public let devices: Int

    public init(experts: Int, k: Int, renormalize: Bool = true, devices: Int = 1) {
        precondition(experts > 0 && k >= 1 && k <= experts, "topk-softmax: need 1 <= k <= experts, got k=\(k), experts=\(experts)")
        expertCount = experts
        self.k = k
        self.renormalize = renormalize
        self.devices = devices
    }

    public func route(_ logits: Tensor) -> Routing { route(logits, pool: nil) }

    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing {
        let e = expertCount, t = logits.count / e
        let probs = RouterMath.softmax(logits, pool: pool)
        return probs.withUnsafeBufferPointer { p in
            RouterMath.routeFixedK(tokens: t, experts: e, k: k, pool: pool) { tok, ids, weights in
                let row = UnsafeBufferPointer(rebasing: p[(tok * e)..<((tok + 1) * e)])
                Kernels.topKRow(row, into: ids)
                var sum: Float = 0  // summed in order, as `RouterMath.renormalized` does
                for i in 0..<k { weights[i] = row[ids[i]]; sum += weights[i] }
                if renormalize && sum > 0 { for i in 0..<k { weights[i] /= sum } }
            }
        }
    }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        softmaxLosses(logits, routing: routing, experts: expertCount, k: Double(k), devices: devices)
    }
}

/// The losses every softmax token-choice router reports.
func softmaxLosses(_ logits: Tensor, routing: Routing, experts: Int, k: Double, devices: Int) -> [String: Float] {
    let t = routing.tokenCount
    let probs = RouterMath.softmax(logits)
    let counts = routing.chosenPerExpert
    var losses: [String: Float] = [
        "load_balance": AuxLoss.loadBalance(probs: probs, tokens: t, experts: experts, counts: counts),
        "z_loss": AuxLoss.zLoss(logits: logits),
        "expert_balance": AuxLoss.expertBalance(probs: probs, tokens: t, experts: experts, counts: counts, k: k),
    ]
    if devices > 1 {
        losses["device_balance"] = AuxLoss.deviceBalance(probs: probs, tokens: t, experts: experts, counts: counts,
                                                         k: k, devices: devices)
    }
    return losses
}

/// Switch Transformer routing: top-1 softmax, the raw probability as the weight, and expert
/// capacity with token dropping (default capacity factor 1.25, priority by position).
/// ROUTING.md §1.
public struct SwitchRouter: Router {
    public var name: String { "switch" }
    public var expertCount: Int { base.expertCount }
    public let capacity: Capacity
    let base: TopKSoftmaxRouter

    public init(experts: Int, capacity: Capacity = Capacity(factor: 1.25)) {
        base = TopKSoftmaxRouter(experts: experts, k: 1, renormalize: false)
        self.capacity = capacity
    }

    public func route(_ logits: Tensor) -> Routing { capacity.apply(to: base.route(logits)) }
    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing { capacity.apply(to: base.route(logits, pool: pool)) }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        base.auxLosses(logits, routing: routing)
    }
}

/// Any token-choice router with expert capacity and token dropping applied after it.
public struct CapacityLimitedRouter: Router {
    public let base: any Router
    public let capacity: Capacity
    public var name: String { base.name }
    public var expertCount: Int { base.expertCount }
    public var logitCount: Int { base.logitCount }
    public var isCausal: Bool { base.isCausal }

    public init(_ base: any Router, capacity: Capacity) {
        self.base = base
        self.capacity = capacity
    }

    public func route(_ logits: Tensor) -> Routing { capacity.apply(to: base.route(logits)) }
    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing { capacity.apply(to: base.route(logits, pool: pool)) }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        base.auxLosses(logits, routing: routing)
    }
}
