import MoECore

// Dimension legend: T tokens, d hidden size, L router logits, R routed rows, E experts.

/// A Mixture-of-Experts FFN layer: router gate -> router -> dispatch -> experts -> combine
/// (+ shared experts). DESIGN.md, "The MoE layer, as data flows".
///
/// ```swift
/// let layer = MoELayer(gate: .linear(weight: wRouter), router: TopKSoftmaxRouter(experts: 8, k: 2),
///                      experts: SwiGLUExperts(gate: w1, up: w3, down: w2))
/// var state = RouterState()
/// let y = layer.forward(x, state: &state).output      // x [T, d] -> y [T, d]
/// ```
public struct MoELayer: Sendable {
    public var gate: RouterGate
    public var router: any Router
    public var experts: any ExpertFFN
    public var shared: SharedExpert?
    /// Mixtral's training jitter: the layer input is multiplied by U(1 - ε, 1 + ε) (training only).
    public var jitter: Float

    public init(gate: RouterGate, router: any Router, experts: any ExpertFFN, shared: SharedExpert? = nil, jitter: Float = 0) {
        precondition(gate.logitCount == router.logitCount,
                     "MoELayer: the gate gives \(gate.logitCount) logits, the router reads \(router.logitCount)")
        precondition(router.expertCount == experts.expertCount,
                     "MoELayer: the router routes to \(router.expertCount) experts, there are \(experts.expertCount)")
        self.gate = gate
        self.router = router
        self.experts = experts
        self.shared = shared
        self.jitter = jitter
    }

    /// What a forward pass should do besides the output.
    public struct Options: Sendable {
        /// Training mode: applies jitter (seeded by `seed`).
        public var training = false
        /// Compute the router's auxiliary losses.
        public var auxLosses = false
        public var seed: UInt64 = 0
        /// Rows routed by routers of their own (several sequences in one pass, each with its own
        /// routing): the ranges cover the rows in order; empty, the layer's router routes all.
        /// The experts run over every row together.
        public var rowRouters: [(rows: Range<Int>, router: any Router)] = []
        /// Most bytes of gathered rows ([R, d] f32) one group of experts holds: a long prompt's
        /// experts run in groups of whole consecutive experts under it (`Dispatch.expertGroups`),
        /// so its buffers stay bounded. Every expert still sees all its rows at once, and each
        /// token's terms are added in expert order, so the output is the same bits for any value.
        public var groupRowBytes = 1 << 20
        public init(training: Bool = false, auxLosses: Bool = false, seed: UInt64 = 0) {
            self.training = training
            self.auxLosses = auxLosses
            self.seed = seed
        }
    }

    /// What a forward pass gives back.
    public struct Output: Sendable {
        /// [T, d] f32.
        public var output: Tensor
        /// The router logits [T, L].
        public var logits: Tensor
        /// Who went where, with weights and dropped assignments (the trace of this layer).
        public var routing: Routing
        /// Unscaled auxiliary losses by name (empty unless asked for).
        public var auxLosses: [String: Float]
    }

    /// Runs the layer on x [T, d] f32. `state` carries the recurrent router's state between
    /// layers of one forward pass.
    public func forward(_ x: Tensor, state: inout RouterState, options: Options = Options(),
                        pool: ThreadPool = .shared) -> Output {
        precondition(x.rank == 2 && x.shape[1] == experts.hiddenSize, "MoELayer: x \(x.shape), hidden \(experts.hiddenSize)")
        var input = x
        if options.training && jitter > 0 {
            input = x.copied()
            var rng = SplitMix64(seed: options.seed)
            let p = input.mutableFloats
            for i in 0..<p.count { p[i] *= 1 - jitter + 2 * jitter * rng.nextUnitFloat() }
        }
        // Decode: the experts' records land while the gate's pass runs.
        if x.shape[0] == 1 && !options.training { experts.prefetchTokenRecords() }
        let logits = gate.logits(input, state: &state, pool: pool)
        let routing = options.rowRouters.isEmpty ? router.route(logits, pool: pool) : route(logits, options.rowRouters, pool: pool)
        let out = Tensor(zeros: x.shape)
        // Decode: one token through its experts without gathering it (the same sums).
        let oneToken = x.shape[0] == 1 && !options.training && !experts.isCollective
            && experts.addToken(input, routing: routing, into: out, pool: pool)
        if !oneToken && (routing.assignmentCount > 0 || experts.isCollective) {
            let dispatch = Dispatch(routing)
            // A long prompt's experts run in groups, so the gathered rows stay bounded; a
            // collective runs once, as every rank must.
            let maxRows = experts.isCollective ? Int.max : max(1, options.groupRowBytes / (4 * max(1, experts.hiddenSize)))
            for group in dispatch.expertGroups(maxRows: maxRows)
            where experts.isCollective || dispatch.rowOffsets[group.upperBound] > dispatch.rowOffsets[group.lowerBound] {
                let rows = dispatch.gather(input, experts: group, pool: pool)
                let y = experts.forward(consuming: rows, rowOffsets: dispatch.rowOffsets(experts: group), pool: pool)
                dispatch.combine(y, experts: group, routing: routing, into: out, pool: pool)
            }
        }
        shared?.add(input, into: out, pool: pool)
        let losses = options.auxLosses ? router.auxLosses(logits, routing: routing) : [:]
        return Output(output: out, logits: logits, routing: routing, auxLosses: losses)
    }

    /// Each range of rows routed by its own router, the choices joined in row order.
    func route(_ logits: Tensor, _ rowRouters: [(rows: Range<Int>, router: any Router)], pool: ThreadPool) -> Routing {
        var merged = Routing(expertCount: router.expertCount, reservingTokens: logits.shape[0])
        for (rows, r) in rowRouters where !rows.isEmpty {
            let part = r.route(logits.rows(rows), pool: pool)
            for t in 0..<rows.count {
                merged.append(zip(part.experts(of: t), part.weights(of: t)).map { (expert: $0, weight: $1) }, dropped: part.dropped[t])
            }
        }
        return merged
    }

    /// Bytes of weights one token reads at decode with `activeExperts` experts chosen: gate,
    /// shared expert and that many routed experts (the average expert's size). The decode
    /// bandwidth ceiling is memory bandwidth over this. DESIGN.md, "Numbers".
    public func decodeBytes(activeExperts: Double) -> Double {
        let perExpert = Double((0..<experts.expertCount).reduce(0) { $0 + experts.weightBytes(expert: $1) })
            / Double(experts.expertCount)
        return Double(gate.weightBytes + (shared?.weightBytes ?? 0)) + activeExperts * perExpert
    }

    /// This layer with DeepSeekMoE fine-grained experts (ROUTING.md §8): every expert split into
    /// `segments` experts of I / segments, each router row repeated for its segments, and
    /// k * segments experts active. For a `topk-softmax` layer with a linear gate the result
    /// computes the same function (each segment gets weight w / segments, so down projections
    /// are scaled by `segments`); it is the starting point for training a fine-grained MoE.
    public func fineGrained(segments: Int) -> MoELayer? {
        guard let topk = router as? TopKSoftmaxRouter, let swiglu = experts as? SwiGLUExperts,
              swiglu.activation == .swiglu, swiglu.biases == nil, case let .linear(weight, bias) = gate else { return nil }
        let w = weight.toFloats(), d = weight.shape[1], e = weight.shape[0]
        var rows: [Float] = []
        for x in 0..<e { for _ in 0..<segments { rows += w[(x * d)..<((x + 1) * d)] } }
        let newWeight = Tensor(shape: [e * segments, d], values: rows, dtype: weight.dtype)
        let newBias = bias.map { b in
            Tensor(shape: [e * segments], values: b.toFloats().flatMap { [Float](repeating: $0, count: segments) }, dtype: b.dtype)
        }
        return MoELayer(gate: .linear(weight: newWeight, bias: newBias),
                        router: TopKSoftmaxRouter(experts: e * segments, k: topk.k * segments,
                                                  renormalize: topk.renormalize, devices: topk.devices),
                        experts: swiglu.segmented(segments, downScale: Float(segments)), shared: shared, jitter: jitter)
    }
}
