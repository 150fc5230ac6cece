import Foundation
import MoE
import MoEDistributed
import MoECore
import _MoEKernels

// Dimension legend: T tokens, d hidden, E experts, I expert intermediate size.

/// How a trainable MoE layer computes its router logits.
public enum RouterParameters {
    /// `z = x W^T`, W [L, d] (the usual router; L = E, or E + M with AdaMoE's null experts).
    case linear(Variable)
    /// RMoE: `z = W2 GRU(W1 x, r)` with W1 [h, d] and W2 [L, h] per layer; the GRU cell and
    /// the state r it carries across layers belong to the model.
    case recurrent(input: Variable, output: Variable)

    /// Every parameter.
    public var all: [Variable] {
        switch self {
        case let .linear(w): return [w]
        case let .recurrent(input, output): return [input, output]
        }
    }
}

/// The weights of a trainable MoE layer: the router's, and per expert gate and up [I, d] and
/// down [d, I] (SwiGLU experts); GPT-OSS adds a router bias [L], per-expert biases (gate and
/// up [I], down [d]) and its clamped activation.
public struct MoEParameters {
    public var router: RouterParameters
    public var gate: [Variable], up: [Variable], down: [Variable]
    /// The linear router's bias [L], or nil.
    public var routerBias: Variable? = nil
    /// Per-expert biases, or nil.
    public var gateBias: [Variable]? = nil, upBias: [Variable]? = nil, downBias: [Variable]? = nil
    /// The activation between the projections.
    public var activation: ExpertActivation = .swiglu
    public init(router: RouterParameters, gate: [Variable], up: [Variable], down: [Variable]) {
        self.router = router
        self.gate = gate
        self.up = up
        self.down = down
    }
    /// A layer with a linear router W [L, d].
    public init(router: Variable, gate: [Variable], up: [Variable], down: [Variable]) {
        self.init(router: .linear(router), gate: gate, up: up, down: down)
    }
    /// Every parameter.
    public var all: [Variable] { decayed.map(\.variable) }
    /// Every parameter with whether weight decay applies (the weights yes, the biases no).
    var decayed: [(variable: Variable, decay: Bool)] {
        router.all.map { ($0, true) } + (routerBias.map { [($0, false)] } ?? []) + (gate + up + down).map { ($0, true) }
            + ((gateBias ?? []) + (upBias ?? []) + (downBias ?? [])).map { ($0, false) }
    }
    /// Whether the experts are SwiGLU without biases (the fused fast path).
    var plainSwiGLU: Bool { activation == .swiglu && gateBias == nil && upBias == nil && downBias == nil }
}

/// The weights of the MoE layer's auxiliary losses in training (0 turns one off). ROUTING.md
/// §1, §3, §8.
public struct AuxLossCoefficients: Sendable, Equatable {
    /// Switch / GShard load balance, `E sum_i f_i P_i`.
    public var loadBalance: Float
    /// ST-MoE router z-loss, `mean_t lse_t^2`.
    public var zLoss: Float
    /// The top-p router's dynamic loss: the mean per-token router entropy.
    public var entropy: Float
    /// DeepSeekMoE expert-level balance, `sum_i f_i P_i` with `f_i = E counts_i / (k T)`.
    public var expertBalance: Float
    /// DeepSeekMoE device-level balance over `devices` contiguous groups of experts.
    public var deviceBalance: Float
    public var devices: Int

    public init(loadBalance: Float = 0, zLoss: Float = 0, entropy: Float = 0, expertBalance: Float = 0,
                deviceBalance: Float = 0, devices: Int = 1) {
        self.loadBalance = loadBalance
        self.zLoss = zLoss
        self.entropy = entropy
        self.expertBalance = expertBalance
        self.deviceBalance = deviceBalance
        self.devices = devices
    }

    /// Multiplies every weight by `w` (a micro-batch's share of an accumulated step).
    public mutating func scale(by w: Float) {
        loadBalance *= w
        zLoss *= w
        entropy *= w
        expertBalance *= w
        deviceBalance *= w
    }
}

/// Expert parallelism for the MoE op (`Tape.moe`): the ranks of a data-parallel run and which
/// experts each runs. Each rank runs only its experts, on the rows every rank routed to them.
///
/// `replicated` (forward only: evaluation): every rank runs the same tokens, each runs its
/// experts on them, and one `allGatherV` gives every rank every expert's output, so the output
/// is the single process's bit for bit on every rank.
public struct ExpertParallelGroup {
    public let communicator: any Communicator
    public let shard: ExpertShard
    /// Where the op's exchanges add their bytes and time, or nil.
    public let statistics: ExchangeStatistics?
    /// Every rank runs the same tokens (forward only), rather than its own.
    public let replicated: Bool
    /// Chunks the forward's and backward's all-to-alls are pipelined in (`Tape.pipelinedExperts`,
    /// `Tape.pipelinedExpertBackward`); 1: none.
    public let chunks: Int
    public init(communicator: any Communicator, shard: ExpertShard, statistics: ExchangeStatistics? = nil, replicated: Bool = false,
                chunks: Int = 1) {
        self.communicator = communicator
        self.shard = shard
        self.statistics = statistics
        self.replicated = replicated
        self.chunks = chunks
    }
}

/// What the MoE op returns: the layer output, the routing it used, and the weighted auxiliary
/// loss (load balance and z-loss), already part of the gradient.
public struct MoEStep {
    public var output: Variable
    public var routing: Routing
    /// The weighted sum of the auxiliary losses, as a value (their gradients are applied inside).
    public var auxLoss: Float
}

extension Tape {
    /// One MoE layer, forward and backward, for softmax-family routers (`topk-softmax`, `top-p`,
    /// `switch`, `expert-choice`, with or without renormalisation of the chosen weights) and
    /// `topk-sigmoid` (its own renormalisation and routed scaling; bias and groups only steer
    /// the choice, so gradients flow through the sigmoid scores alone), and `null-experts`
    /// (the router has E + M logits; a null expert outputs zero, so only the softmax over all
    /// E + M and the renormalisation over the chosen true experts carry its gradient).
    ///
    /// Forward: z = x Wr^T; p = softmax(z); the router picks experts; w = p of the chosen
    /// (divided by their sum when the router `renormalizesChosenWeights`); y_t = sum_j w_tj E_j(x_t),
    /// computed as sum_j h_j D_j^T with the weight in the hidden activation,
    /// h_j = w_tj silu(x_t G_j^T) (x_t U_j^T). Backward: dh_j = dy_t D_j, the SwiGLU backward
    /// takes w_tj dh_j, and dw_tj = dy_t . E_j(x_t) = (dy_t D_j) . silu(g) u; through the renormalisation
    /// dp_i = (dw_i - sum_j dw_j w_j) / S; through the softmax dz = p (dp - sum dp p); then the
    /// logits (whatever made them: a linear router, or RMoE's GRU). The experts backpropagate as
    /// SwiGLU. Every balance loss holds f constant and is linear in P_i = mean_t p_ti, so it
    /// adds a constant c_i / T to dp (load balance E f_i, expert balance f_i, device balance the
    /// mean f of i's device); the entropy loss adds -(log p + 1) / T; for sigmoid scores these
    /// act on the normalised scores and pass through the normalisation. The z-loss
    /// mean_t lse_t^2 adds coefZ 2 lse_t softmax(z_t) / T to dz.
    ///
    /// With `batch` (a batch run as shards on replicas, `MoEBatchStatistics`), the auxiliary
    /// losses are those of the whole batch: this shard's layer records its part, the step's
    /// `auxLoss` is 0 (the merge gives the value), and the backward takes the whole batch's
    /// counts and token count.
    public func moe(_ x: Variable, logits: Variable, _ params: MoEParameters, router: any Router,
                    aux: AuxLossCoefficients = AuxLossCoefficients(),
                    batch: (shard: MoEBatchStatistics.Shard, layer: Int)? = nil,
                    adapters: ExpertAdapters? = nil, expertParallel: ExpertParallelGroup? = nil) -> MoEStep {
        let adapters = adapters?.isEmpty == false ? adapters : nil
        let (coefLB, coefZ) = (aux.loadBalance, aux.zLoss)
        let (t, d) = (x.shape[0], x.shape[1]), e = params.gate.count
        let l = logits.shape[1]  // router logits: the experts, plus AdaMoE's null experts
        precondition(logits.shape[0] == t && l == router.logitCount, "moe: logits [\(t), \(router.logitCount)] expected")
        let xT = x.value
        let z = logits.value  // [T, L]
        let routing = router.route(z, pool: pool)
        let zs = z.toFloats()
        // Scores the chosen weights come from: softmax probabilities, or (DeepSeek-V3) sigmoids
        // whose per-token normalisation feeds the load-balance loss.
        let sigmoidRouter = router as? TopKSigmoidRouter
        let sigmoid = sigmoidRouter?.scoring == .sigmoid
        let renormalize = router.renormalizesChosenWeights
        let scale = sigmoidRouter?.routedScaling ?? 1
        var probs = zs
        probs.withUnsafeMutableBufferPointer { probs in
            guard let base = probs.baseAddress else { return }
            Kernels.parallelRows(t, cost: l * 8, pool: pool) { r in
                if sigmoid {
                    for i in 0..<l { probs[r * l + i] = 1 / (1 + Foundation.exp(-zs[r * l + i])) }
                } else {
                    moek_softmax_rows(base + r * l, l, l, 1)  // as the routers' `Kernels.softmax`
                }
            }
        }
        var balanceProbs = probs
        var scoreSums = [Float](repeating: 1, count: t)
        if sigmoid {
            for r in 0..<t {
                scoreSums[r] = probs[(r * l)..<((r + 1) * l)].reduce(0, +)
                for i in 0..<l { balanceProbs[r * l + i] /= scoreSums[r] }
            }
        }
        // Expert forward: every expert's rows at once (one batched product per projection),
        // keeping what backward needs, then the scatter-add back to tokens. The experts read
        // their token rows of x in place, through the row index (no gathered copy). Each row's
        // routing weight w is applied to its hidden activation, h_w = w silu(g) u, so the down
        // projection gives the weighted output E' = w E and the combine is a plain sum; the
        // backward then needs neither E nor a row-by-row copy of dy.
        let dispatch = Dispatch(routing)
        // Expert parallelism: this rank's experts run on the rows every rank routed to them. x's
        // rows and their weights travel there first (`RowExchange`); the rows below are then
        // that rank-wide set, read in order rather than through the token index.
        // With chunks, rows travel chunk by chunk while other chunks' experts run, forward
        // (`pipelinedExperts`) and backward (`pipelinedExpertBackward`), in the unchunked layout
        // of `pipeline.whole`, which also carries the routing weights.
        let pipeline = expertParallel.flatMap { g in
            g.replicated || g.chunks <= 1 ? nil : ChunkedExchange(communicator: g.communicator, shard: g.shard, rowOffsets: dispatch.rowOffsets,
                                                                  chunks: g.chunks, statistics: g.statistics)
        }
        let exchange = pipeline?.whole ?? expertParallel.flatMap { g in
            g.replicated ? nil : RowExchange(communicator: g.communicator, shard: g.shard, rowOffsets: dispatch.rowOffsets, statistics: g.statistics)
        }
        // Replicated (evaluation): every rank has every token; it runs its experts' rows only.
        let replicated = expertParallel?.replicated == true ? expertParallel : nil
        let mine = replicated.map { $0.shard.experts(of: $0.communicator.rank) } ?? 0..<e
        precondition(expertParallel == nil || (params.plainSwiGLU && adapters == nil),
                     "moe: expert parallelism runs plain SwiGLU experts without adapters (TrainingConfig.validate refuses the rest)")
        let localWeight = dispatch.rowAssignment.map { routing.weights[$0] }
        let groupedX = pipeline.map { _ in dispatch.gather(xT, pool: pool) }
        let expertInput = pipeline.map { Tensor(uninitialized: [$0.whole.ownedRows, d]) }  // filled chunk by chunk
            ?? exchange.map { $0.dispatch(dispatch.gather(xT, pool: pool)) } ?? xT
        let rowWeight = exchange.map { $0.dispatch(Tensor(shape: [localWeight.count, 1], values: localWeight)).toFloats() } ?? localWeight
        let offsets = exchange?.ownedOffsets ?? dispatch.rowOffsets
        let r = offsets[e], inner = params.gate.first?.shape[0] ?? 0
        let spans = (0..<e).map { offsets[$0]..<offsets[$0 + 1] }
        let used = (0..<e).filter { !spans[$0].isEmpty && mine.contains($0) }
        let tokens = exchange == nil ? spans.map { Array(dispatch.rowToken[$0]) } : spans.map { _ in [] }  // per expert: its rows' tokens
        // What expert i reads of a row source (x, or dy in backward): its token rows, or its own
        // block of the received rows.
        func rowsOf(_ i: Int) -> [Int]? { exchange == nil ? tokens[i] : nil }
        func source(_ all: Tensor, _ i: Int) -> Tensor { exchange == nil ? all : all.rows(spans[i]) }
        // Every grouped row belongs to one used expert, so the products overwrite these completely.
        let gateOut = Tensor(uninitialized: [r, inner]), upOut = Tensor(uninitialized: [r, inner])
        let expertOut = Tensor(uninitialized: [r, d])  // w E per row
        // With many experts, gate and up run as one group per expert, and each finished block
        // gets its SwiGLU while in cache (OLMoE shape, with the same in backward: 4% faster).
        // With few, the groups are too coarse to balance two threads (default shape: 6% slower),
        // so SwiGLU is a pass of its own.
        let hidden = Tensor(uninitialized: [r, inner])
        let gp = gateOut.mutableFloats.baseAddress, upp = upOut.mutableFloats.baseAddress
        // A frozen expert weight in a block format (a quantized base, QLoRA) is widened for the
        // products, and dropped after them: the backward widens it again rather than keep it.
        var blockWide: [ObjectIdentifier: Tensor] = [:]
        func readable(_ v: Variable) -> Tensor {
            if v.value.dtype.isElementFormat { return v.value }
            if let t = blockWide[ObjectIdentifier(v)] { return t }
            let t = v.f32Value
            blockWide[ObjectIdentifier(v)] = t
            return t
        }
        let hp = hidden.mutableFloats.baseAddress
        let pipelined = pipeline.map { Self.pipelinedExperts($0, grouped: groupedX!, params: params, rowWeight: rowWeight, spans: spans,
                                                             expertInput: expertInput, gateOut: gateOut, upOut: upOut, hidden: hidden,
                                                             expertOut: expertOut, pool: pool) }
        let fused = used.count >= 4 * pool.threadCount && params.plainSwiGLU && adapters == nil
        var gateUpJobs: [GemmJob] = []  // appended, not flat-mapped: a batch's jobs are built serially
        gateUpJobs.reserveCapacity(2 * used.count)
        for i in used {
            gateUpJobs.append(GemmJob(source(expertInput, i), readable(params.gate[i]), into: gateOut.rows(spans[i]), group: fused ? i : nil, aRows: rowsOf(i)))
            gateUpJobs.append(GemmJob(source(expertInput, i), readable(params.up[i]), into: upOut.rows(spans[i]), group: fused ? i : nil, aRows: rowsOf(i)))
        }
        if pipelined == nil { Kernels.gemmBatch(gateUpJobs, pool: pool, finish: !fused ? nil : { job, block, columns in
            let first = spans[used[job / 2]].lowerBound  // jobs come in (gate, up) pairs
            for row in block {
                let o = (first + row) * inner + columns.lowerBound
                moek_silu_mul_scaled(hp! + o, gp! + o, upp! + o, rowWeight[first + row], columns.count)
            }
        }) }
        // LoRA experts (`ExpertAdapters`): each adapted expert's gate and up gain scale (X_e Aᵀ) Bᵀ.
        func drop(_ a: ExpertAdapters, _ projection: UInt64) -> (p: Float, seed: UInt64)? {
            a.dropout.map { ($0.p, $0.seed &+ projection &* 0x2545_F491_4F6C_DD1D) }
        }
        let gateLoRA = adapters.map { ExpertLoRAPass.forward($0.gate, input: xT, rows: tokens, spans: spans, used: used, into: gateOut,
                                                             dropout: drop($0, 1), pool: pool) }
        let upLoRA = adapters.map { ExpertLoRAPass.forward($0.up, input: xT, rows: tokens, spans: spans, used: used, into: upOut,
                                                           dropout: drop($0, 2), pool: pool) }
        let biases = params.plainSwiGLU ? nil : ExpertBiasValues(params)
        let rowExpert = biases == nil ? [] : Self.rowExperts(spans, rows: r)  // read only with biases
        let mineRows = offsets[mine.lowerBound]..<offsets[mine.upperBound]  // all rows unless replicated
        if !fused && pipelined == nil {
            Kernels.parallelRows(r, cost: 8 * inner, pool: pool) { row in
                guard mineRows.contains(row) else { return }
                if let biases {
                    biases.activate(row: row, expert: rowExpert[row], gate: gp! + row * inner, up: upp! + row * inner,
                                    weight: rowWeight[row], into: hp! + row * inner, inner: inner, activation: params.activation)
                } else {
                    moek_silu_mul_scaled(hp! + row * inner, gp! + row * inner, upp! + row * inner, rowWeight[row], inner)
                }
            }
        }
        if pipelined == nil {
            Kernels.gemmBatch(used.map { GemmJob(hidden.rows(spans[$0]), readable(params.down[$0]), into: expertOut.rows(spans[$0])) },
                              pool: pool)
        }
        let downLoRA = adapters.map { ExpertLoRAPass.forward($0.down, input: hidden, rows: nil, spans: spans, used: used, into: expertOut,
                                                             dropout: drop($0, 3), pool: pool) }
        if let down = biases?.down {  // E' = w (h D^T + b_down)
            let op = expertOut.mutableFloats
            for row in 0..<r { for j in 0..<d { op[row * d + j] += rowWeight[row] * down[rowExpert[row]][j] } }
        }
        var rowsOut = expertOut
        if let replicated {  // every expert's rows, from the ranks that ran them
            let counts = replicated.shard.rowCounts(offsets).map { $0 * d }
            let all = Tensor(uninitialized: [r, d])
            withExtendedLifetime(expertOut) {
                replicated.communicator.allGatherV(send: UnsafeBufferPointer(rebasing: expertOut.floats[(mineRows.lowerBound * d)..<(mineRows.upperBound * d)]),
                                                   receive: all.mutableFloats, counts: counts)
            }
            rowsOut = all
        }
        let y = Tensor(uninitialized: [t, d])
        dispatch.combine(pipelined ?? exchange.map { $0.collect(expertOut) } ?? rowsOut, routing: routing, into: y, weighted: false, accumulate: false,
                         pool: pool)
        // Auxiliary losses (values; their gradients are added in backward), from the layer's
        // statistics; a shard records its part of the batch's instead (the merge gives the value).
        let counts = Self.balanceCounts(routing, probs: probs, router: router, logits: l)
        let statistics = MoEBatchStatistics.Part(
            counts: counts, probSums: AuxLoss.sumPerExpert(balanceProbs, tokens: t, experts: l),
            entropySum: aux.entropy == 0 ? 0 : AuxLoss.entropySum(probs: balanceProbs),
            zSum: coefZ == 0 ? 0 : AuxLoss.zLossSum(logits: z),  // serial, in f64: only when it counts
            tokens: t, assignments: routing.assignmentCount)
        let meanK = statistics.meanK
        if let batch { batch.shard.record(layer: batch.layer, statistics) }
        let auxLoss = batch == nil ? statistics.value(aux) : 0
        let out = Variable(y)
        record { [pool] in
            guard let dyT = out.grad else { return }
            precondition(replicated == nil, "moe: replicated expert parallelism runs forward only (evaluation)")
            let dpT = Tensor(zeros: [t, l])
            let dp = dpT.mutableFloats
            // Frozen f16 or bf16 expert weights, widened once each for the products that read
            // them transposed (a mixture's experts share one).
            var wide: [ObjectIdentifier: Tensor] = [:]
            func widened(_ v: Variable) -> Tensor {
                if v.value.dtype == .f32 { return v.value }
                if let t = wide[ObjectIdentifier(v)] { return t }
                let t = v.f32Value
                wide[ObjectIdentifier(v)] = t
                return t
            }
            // Experts, batched over experts: down first. With E' = h_w D^T and y_t the plain sum of
            // its rows' E', dE' = dy_t: so dh_w = dy_t D and dD += dy^T h_w read dy's token rows
            // in place through the row index. Then, per row, SwiGLU's backward with the weight:
            // dw = dh_w . silu(g) u (the routing weight's gradient), and dg, du from w dh_w, on
            // whole rows (the dh_w products are split by rows only), so dw is one sum in a fixed
            // order whatever the threads. With many experts on the direct path (as in the forward)
            // it runs on each finished block of dh_w, in cache: OLMoE shape 1.6% faster; default
            // shape 2% slower.
            let dh = Tensor(uninitialized: [r, inner])
            let (dg, du) = (Tensor(uninitialized: [r, inner]), Tensor(uninitialized: [r, inner]))
            let dhp = dh.mutableFloats.baseAddress, dgp = dg.mutableFloats.baseAddress, dup = du.mutableFloats.baseAddress
            let gatep = gateOut.floats.baseAddress, upp = upOut.floats.baseAddress
            // Per assignment (nulls stay 0); under expert parallelism first per received row.
            var dwAll = [Float](repeating: 0, count: exchange == nil ? routing.assignmentCount : r)
            let dwSlot = exchange == nil ? dispatch.rowAssignment : Array(0..<r)
            // Pipelined (expert parallelism with chunks): the experts' whole backward, chunk by chunk.
            let piped = pipeline.map { Self.pipelinedExpertBackward(
                $0, groupedOutGrad: dispatch.gather(dyT, pool: pool), params: params, spans: spans, rowWeight: rowWeight,
                expertInput: expertInput, gateOut: gateOut, upOut: upOut, hidden: hidden, dySource: Tensor(uninitialized: [r, d]),
                dh: dh, dg: dg, du: du, widened: widened, pool: pool) }
            let dySource = piped != nil ? dyT : exchange.map { $0.dispatch(dispatch.gather(dyT, pool: pool)) } ?? dyT  // the rows' output gradients
            // The expert weights' gradients are written whole by the batches below, so their sums
            // of squares (for clipping) are taken there, block by block while in cache.
            let downSquares = GradientSquares(), gateUpSquares = GradientSquares()
            if piped == nil { dwAll.withUnsafeMutableBufferPointer { buffer in
                let dw = buffer  // a copy of the pointer, for the escaping closures below
                func swigluBackward(_ row: Int) {
                    let o = row * inner
                    if let biases {
                        dw[dispatch.rowAssignment[row]] = biases.activationBackward(
                            dh: dhp! + o, gate: gatep! + o, up: upp! + o, weight: rowWeight[row], dgate: dgp! + o, dup: dup! + o,
                            inner: inner, activation: params.activation)
                    } else {
                        dw[dwSlot[row]] = moek_silu_mul_backward_scaled(dhp! + o, gatep! + o, upp! + o, rowWeight[row],
                                                                        dgp! + o, dup! + o, inner)
                    }
                }
                var downJobs: [GemmJob] = [], dhJobExpert: [Int?] = []  // per job: the expert whose dh it writes, or nil
                downJobs.reserveCapacity(2 * used.count)
                dhJobExpert.reserveCapacity(2 * used.count)
                for i in used {
                    let s = spans[i]
                    downJobs.append(GemmJob(source(dySource, i), widened(params.down[i]), transposeB: true, into: dh.rows(s), aRows: rowsOf(i),
                                            wholeRows: true))
                    dhJobExpert.append(i)
                    if let g = params.down[i].gradSlot() {
                        if !g.accumulate { downSquares.track(params.down[i], grad: g.tensor, job: downJobs.count) }
                        downJobs.append(GemmJob(source(dySource, i), hidden.rows(s), transposeA: true, transposeB: true, into: g.tensor,
                                                accumulate: g.accumulate, aRows: rowsOf(i), wholeRows: true))
                        dhJobExpert.append(nil)
                    }
                }
                downSquares.start()
                Kernels.gemmBatch(downJobs, pool: pool) { job, block, _ in
                    if let i = dhJobExpert[job] {
                        if fused { for row in block { swigluBackward(spans[i].lowerBound + row) } }
                    } else {
                        downSquares.record(job: job, rows: block)
                    }
                }
                downSquares.deliver()
                if let adapters, let downLoRA {
                    downLoRA.backward(adapters.down, outGrad: dyT, gradRows: tokens, input: hidden, rows: nil, spans: spans,
                                      inputGrad: dh, pool: pool)
                }
                if !fused { Kernels.parallelRows(r, cost: 16 * inner, pool: pool) { swigluBackward($0) } }
                // The down bias: E' = w (h D^T + b), so dw gains dy . b and db gains w dy.
                if let down = biases?.down {
                    let g = dyT.floats
                    for row in 0..<r {
                        let tok = dispatch.rowToken[row], b = down[rowExpert[row]]
                        var dot: Float = 0
                        for j in 0..<d { dot += g[tok * d + j] * b[j] }
                        dw[dispatch.rowAssignment[row]] += dot
                    }
                }
            } }
            if let biases { Self.biasGradients(params, biases: biases, spans: spans, used: used, dg: dg, du: du, dy: dyT,
                                               rowToken: dispatch.rowToken, rowWeight: rowWeight) }
            if let exchange {  // each row's weight gradient back to its rank, to its assignment
                let back = piped?.dw ?? exchange.collect(Tensor(shape: [r, 1], values: dwAll)).toFloats()  // (an array: a temporary's floats dangle)
                dwAll = [Float](repeating: 0, count: routing.assignmentCount)
                for (row, a) in dispatch.rowAssignment.enumerated() { dwAll[a] = back[row] }
            }
            // Per token, the chosen weights -> scores (through the renormalisation).
            dwAll.withUnsafeMutableBufferPointer { dw in
                Kernels.parallelRows(t, cost: 8 * max(1, routing.assignmentCount / max(1, t)), pool: pool) { tok in
                    let lo = routing.offsets[tok], hi = routing.offsets[tok + 1]
                    if renormalize {
                        let sum = (lo..<hi).reduce(Float(0)) { $0 + probs[tok * l + routing.experts[$1]] }
                        let inner = (lo..<hi).reduce(Float(0)) { $0 + dw[$1] * routing.weights[$1] }
                        for a in lo..<hi where sum > 0 { dp[tok * l + routing.experts[a]] += (scale * dw[a] - inner) / sum }
                    } else {
                        for a in lo..<hi { dp[tok * l + routing.experts[a]] += scale * dw[a] }
                    }
                }
            }
            // One batch: per expert, dx's rows chain gate's product (overwriting) and up's (adding).
            let dxRows = Tensor(uninitialized: [r, d])
            var dxJobs: [GemmJob] = []
            dxJobs.reserveCapacity(4 * used.count)
            func addJobs(_ projection: Variable, _ grads: Tensor, into dxBlock: Tensor, adding: Bool, rows: [Int]?, input: Tensor) {
                dxJobs.append(GemmJob(grads, widened(projection), transposeB: true, into: dxBlock, accumulate: adding))
                if let g = projection.gradSlot() {
                    if !g.accumulate { gateUpSquares.track(projection, grad: g.tensor, job: dxJobs.count) }
                    dxJobs.append(GemmJob(grads, input, transposeA: true, transposeB: true, into: g.tensor, accumulate: g.accumulate,
                                          bRows: rows, wholeRows: true))
                }
            }
            for i in used where piped == nil {
                let s = spans[i], dxBlock = dxRows.rows(s)
                addJobs(params.gate[i], dg.rows(s), into: dxBlock, adding: false, rows: rowsOf(i), input: source(expertInput, i))
                addJobs(params.up[i], du.rows(s), into: dxBlock, adding: true, rows: rowsOf(i), input: source(expertInput, i))
            }
            gateUpSquares.start()
            Kernels.gemmBatch(dxJobs, pool: pool) { job, block, _ in gateUpSquares.record(job: job, rows: block) }
            gateUpSquares.deliver()
            if let adapters, let gateLoRA, let upLoRA {
                gateLoRA.backward(adapters.gate, outGrad: dg, gradRows: nil, input: xT, rows: tokens, spans: spans, inputGrad: dxRows, pool: pool)
                upLoRA.backward(adapters.up, outGrad: du, gradRows: nil, input: xT, rows: tokens, spans: spans, inputGrad: dxRows, pool: pool)
            }
            let dx = Tensor(uninitialized: [t, d])  // each token's rows summed
            dispatch.combine(piped?.dx ?? exchange.map { $0.collect(dxRows) } ?? dxRows, routing: routing, into: dx, weighted: false, accumulate: false,
                             pool: pool)
            // Balance losses, linear in P_i = mean_t p_ti: a constant c_i per score; plus the
            // entropy's -(log p + 1). For sigmoid scores P averages the normalised scores
            // s_ti / sum_j s_tj, so the gradient passes through that normalisation.
            // The batch's counts, token count and experts per token: this op's own, or (shards)
            // the whole batch's.
            let (counts, batchTokens, meanK) = batch.map { b in
                let g = b.shard.global(layer: b.layer)
                return (g.counts, g.tokens, g.meanK)
            } ?? (counts, t, meanK)
            if t > 0 && (coefLB != 0 || aux.expertBalance != 0 || aux.deviceBalance != 0 || aux.entropy != 0) {
                let tf = Float(batchTokens), f = (0..<l).map { Float(l) * counts[$0] / (Float(meanK) * tf) }  // DeepSeekMoE's f_i
                var c = (0..<l).map { (coefLB * Float(l) * counts[$0] / tf + aux.expertBalance * f[$0]) / tf }
                if aux.deviceBalance != 0 {
                    let per = l / max(1, aux.devices)
                    for dev in 0..<aux.devices {
                        let group = (dev * per)..<(dev == aux.devices - 1 ? l : (dev + 1) * per)
                        let mean = group.reduce(Float(0)) { $0 + f[$1] } / Float(group.count)
                        for i in group { c[i] += aux.deviceBalance * mean / tf }
                    }
                }
                Kernels.parallelRows(t, cost: l * 8, pool: pool) { tok in
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: l) { g in
                        var inner: Float = 0
                        for i in 0..<l {
                            let bp = balanceProbs[tok * l + i]
                            g[i] = c[i] + (aux.entropy != 0 && bp > 0 ? -aux.entropy * (Foundation.log(bp) + 1) / tf : 0)
                            inner += g[i] * bp
                        }
                        for i in 0..<l { dp[tok * l + i] += sigmoid ? (g[i] - inner) / scoreSums[tok] : g[i] }
                    }
                }
            }
            // Score backward (softmax or sigmoid), plus the z-loss on the logits.
            let dzT = Tensor(uninitialized: [t, l])
            let dz = dzT.mutableFloats
            Kernels.parallelRows(t, cost: l * 8, pool: pool) { tok in
                var inner: Float = 0
                for i in 0..<l { inner += dp[tok * l + i] * probs[tok * l + i] }
                var mx = -Float.infinity, sum: Float = 0
                for i in 0..<l { mx = max(mx, zs[tok * l + i]) }
                if coefZ != 0 { for i in 0..<l { sum += Foundation.exp(zs[tok * l + i] - mx) } }
                let lse = mx + Foundation.log(sum)  // used only with the z-loss
                for i in 0..<l {
                    let p = probs[tok * l + i]
                    dz[tok * l + i] = sigmoid ? dp[tok * l + i] * p * (1 - p) : p * (dp[tok * l + i] - inner)
                    if coefZ != 0 {
                        let softmax = Foundation.exp(zs[tok * l + i] - lse)
                        dz[tok * l + i] += coefZ * 2 * lse * softmax / Float(batchTokens)
                    }
                }
            }
            logits.accumulate(owned: dzT)
            x.accumulate(owned: dx, pool: pool)
        }
        return MoEStep(output: out, routing: routing, auxLoss: auxLoss)
    }

    /// The MoE layer with a linear router: its logits `x W^T` recorded as a `linear` op, then
    /// `moe(_:logits:_:router:)`.
    public func moe(_ x: Variable, _ params: MoEParameters, router: any Router,
                    aux: AuxLossCoefficients = AuxLossCoefficients()) -> MoEStep {
        guard case let .linear(w) = params.router else { preconditionFailure("moe: a recurrent router needs its logits passed in") }
        return moe(x, logits: linear(x, w, bias: params.routerBias), params, router: router, aux: aux)
    }

    /// How many tokens chose each router logit (T f_i of the load-balance loss). For AdaMoE's
    /// null experts the k choices include the null slots, and the nulls share their mean count,
    /// as `NullExpertsRouter.auxLosses` computes it.
    static func balanceCounts(_ routing: Routing, probs: [Float], router: any Router, logits l: Int) -> [Float] {
        guard let null = router as? NullExpertsRouter, null.nullCount > 0 else { return routing.chosenPerExpert.map(Float.init) }
        var counts = [Float](repeating: 0, count: l)
        for tok in 0..<routing.tokenCount {
            for i in probs[(tok * l)..<((tok + 1) * l)].withUnsafeBufferPointer({ Kernels.topKRow($0, k: null.k) }) { counts[i] += 1 }
        }
        let mean = counts[null.expertCount...].reduce(0, +) / Float(null.nullCount)
        for i in null.expertCount..<l { counts[i] = mean }
        return counts
    }
}
