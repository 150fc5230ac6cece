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
    public var topK: Int? { k }
    public var renormalizesChosenWeights: Bool { selection.renormalizesChosenWeights }
    /// The GRU state size d_r its gates are built with (what a model to train or load needs).
    public let stateSize: Int
    let selection: TopKSoftmaxRouter

    public init(experts: Int, k: Int, stateSize: Int = 256) {
        selection = TopKSoftmaxRouter(experts: experts, k: k, renormalize: true)
        self.stateSize = stateSize
    }

    public func route(_ logits: Tensor) -> Routing { selection.route(logits) }
    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing { selection.route(logits, pool: pool) }

    public func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float] {
        selection.auxLosses(logits, routing: routing)
    }
}
