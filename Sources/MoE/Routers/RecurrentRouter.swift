import MoECore

/// RMoE: a layerwise recurrent router (Qiu et al. 2024). ROUTING.md §7.
///
/// Selection is Mixtral's (softmax, top k, renormalised); what is recurrent is how the logits
/// come about: `RouterGate.recurrent` runs one GRU cell, shared by every layer, over depth and
/// carries its state from layer to layer in `RouterState`. Given logits (as `moe route` gives
/// them), it routes exactly as `topk-softmax` with renormalisation.
public struct RecurrentRouter: Router {
    public var name: String { "recurrent" }
    public var expertCount: Int { selection.expertCount }
    public var k: Int { selection.k }
    public var renormalizesChosenWeights: Bool { selection.renormalizesChosenWeights }
    let selection: TopKSoftmaxRouter

    public init(experts: Int, k: Int) {
        selection = TopKSoftmaxRouter(experts: experts, k: k, renormalize: true)
    }

    public func route(_ logits: Tensor) -> Routing { selection.route(logits) }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        selection.auxLosses(logits, routing: routing)
    }
}
