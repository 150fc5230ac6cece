import MoE

/// What one forward call may change about how the model routes, and what it reports: the seam
/// through which routing overrides (a different top-k, top-p on a top-k checkpoint, dropped
/// experts) and routing traces reach every MoE layer of any family.
///
/// ```swift
/// var options = ForwardOptions()
/// options.router = { layer, own in TopKSoftmaxRouter(experts: own.expertCount, k: 4) }  // 4 experts per token
/// options.trace = { layer, routing in print(layer, routing.experts) }
/// let logits = try model.forward(tokens, cache: &cache, options: options)
/// ```
public struct ForwardOptions {
    /// For each MoE layer (its index) and its own router, the router to use in this call; nil:
    /// the layer's own everywhere. The replacement must read the same logits (`logitCount`) and
    /// route to the same experts; a mismatch is a `ModelError.invalidConfig`.
    public var router: ((_ layer: Int, _ own: any Router) -> any Router)?
    /// Called with each MoE layer's index and routing, in layer order.
    public var trace: ((_ layer: Int, _ routing: Routing) -> Void)?
    /// Whether `trace` may see a long prompt in pieces (`DecoderModel.prefillChunk`): once per
    /// layer and piece, each routing covering that piece's tokens. Set it for a trace that only
    /// adds up (counts of assignments); by default a traced prompt runs in one pass, so each
    /// routing covers all of the call's tokens.
    public var traceTakesPieces = false

    public init(router: ((Int, any Router) -> any Router)? = nil, trace: ((Int, Routing) -> Void)? = nil) {
        self.router = router
        self.trace = trace
    }
}
