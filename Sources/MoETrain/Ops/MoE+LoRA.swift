import MoECore

// Dimension legend: T tokens, d hidden, I expert size, r an adapter's rank; n_e the rows
// routed to expert e.

/// LoRA adapters on a MoE layer's routed experts (PEFT's per-expert modules, as in Mixtral's
/// `experts.E.w1`): per expert and projection, A [r, in] and B [out, r] with their scale, or
/// nil where that projection of that expert has none.
public struct ExpertAdapters {
    public typealias Adapter = (a: Variable, b: Variable, scale: Float)
    public var gate: [Adapter?], up: [Adapter?], down: [Adapter?]
    /// Dropout on each adapter's input (PEFT's `lora_dropout`): probability and the seed its
    /// masks are drawn from (each projection and expert mixes in its own), or nil.
    public var dropout: (p: Float, seed: UInt64)?
    public init(gate: [Adapter?], up: [Adapter?], down: [Adapter?], dropout: (p: Float, seed: UInt64)? = nil) {
        self.gate = gate
        self.up = up
        self.down = down
        self.dropout = dropout.flatMap { $0.p > 0 ? $0 : nil }
    }
    var isEmpty: Bool { (gate + up + down).allSatisfy { $0 == nil } }
}

/// One projection's adapters on the experts that received rows: what the forward kept for the
/// backward.
struct ExpertLoRAPass {
    /// Per used expert with an adapter: the expert, and `scale · X_e Aᵀ` [n_e, r].
    var low: [(expert: Int, value: Tensor)] = []
    /// With dropout: per expert its input rows after dropout [n_e, in] (what A saw), and the mask's seed.
    var dropped: [Int: Tensor] = [:]
    var dropout: (p: Float, seed: UInt64)?

    /// The seed of expert e's dropout mask (`Kernels.dropout`): each expert draws its own, over
    /// its rows' elements in row-major order.
    static func seed(_ d: (p: Float, seed: UInt64), expert e: Int) -> UInt64 { d.seed &+ (UInt64(e) << 40) }

    /// Expert e's input rows (token rows of `input`, or its rows `span`) with dropout applied.
    static func droppedRows(_ input: Tensor, rows: [Int]?, span: Range<Int>, expert e: Int, _ d: (p: Float, seed: UInt64),
                            pool: ThreadPool) -> Tensor {
        let k = input.shape[1], out = Tensor(uninitialized: [span.count, k])
        guard let src = input.floats.baseAddress, let dst = out.mutableFloats.baseAddress else { return out }
        let s = seed(d, expert: e)
        Kernels.parallelRows(span.count, cost: k, pool: pool) { j in
            let from = (rows?[j] ?? (span.lowerBound + j)) * k
            Kernels.dropout(dst + j * k, src + from, count: k, seed: s, first: j * k, p: d.p)
        }
        return out
    }

    /// Adds each expert's `scale · (X_e Aᵀ) Bᵀ` into `out`'s rows of that expert. X_e is
    /// `input`'s rows `rows[e]` when given (token rows of x, read in place), else its rows
    /// `spans[e]` (the grouped rows).
    static func forward(_ adapters: [ExpertAdapters.Adapter?], input: Tensor, rows: [[Int]]?, spans: [Range<Int>], used: [Int],
                        into out: Tensor, dropout: (p: Float, seed: UInt64)? = nil, pool: ThreadPool) -> ExpertLoRAPass {
        var pass = ExpertLoRAPass(), jobs: [GemmJob] = []
        pass.dropout = dropout
        for e in used {
            guard let lora = adapters[e] else { continue }
            let low = Tensor(uninitialized: [spans[e].count, lora.a.shape[0]])
            if let dropout {
                let x = droppedRows(input, rows: rows?[e], span: spans[e], expert: e, dropout, pool: pool)
                pass.dropped[e] = x
                jobs.append(GemmJob(x, lora.a.value, into: low))
            } else {
                jobs.append(rows.map { GemmJob(input, lora.a.value, into: low, aRows: $0[e]) }
                    ?? GemmJob(input.rows(spans[e]), lora.a.value, into: low))
            }
            pass.low.append((e, low))
        }
        guard !jobs.isEmpty else { return pass }
        Kernels.gemmBatch(jobs, pool: pool)
        for (e, low) in pass.low {
            let p = low.mutableFloats, s = adapters[e]?.scale ?? 0
            for i in 0..<p.count { p[i] *= s }
        }
        Kernels.gemmBatch(pass.low.map { e, low in
            GemmJob(low, adapters[e]!.b.value, into: out.rows(spans[e]), accumulate: true)
        }, pool: pool)
        return pass
    }

    /// The backward of `forward`, given the gradient of its output (`outGrad`: rows `gradRows[e]`
    /// when given, else rows `spans[e]`): dB += dOᵀ low; g = scale · dO B; dA += gᵀ X_e; and
    /// g A added into `inputGrad`'s rows `spans[e]` (the grouped rows' input gradient).
    func backward(_ adapters: [ExpertAdapters.Adapter?], outGrad: Tensor, gradRows: [[Int]]?, input: Tensor, rows: [[Int]]?,
                  spans: [Range<Int>], inputGrad: Tensor, pool: ThreadPool) {
        guard !low.isEmpty else { return }
        var first: [GemmJob] = [], gs: [Tensor] = []
        for (e, low) in low {
            guard let lora = adapters[e] else { continue }
            let g = Tensor(uninitialized: [spans[e].count, lora.a.shape[0]])
            gs.append(g)
            first.append(gradRows.map { GemmJob(outGrad, lora.b.value, transposeB: true, into: g, aRows: $0[e]) }
                ?? GemmJob(outGrad.rows(spans[e]), lora.b.value, transposeB: true, into: g))
            if let db = lora.b.gradSlot() {
                first.append(gradRows.map {
                    GemmJob(outGrad, low, transposeA: true, transposeB: true, into: db.tensor, accumulate: db.accumulate, aRows: $0[e],
                            wholeRows: true)
                } ?? GemmJob(outGrad.rows(spans[e]), low, transposeA: true, transposeB: true, into: db.tensor, accumulate: db.accumulate))
            }
        }
        Kernels.gemmBatch(first, pool: pool)
        var second: [GemmJob] = [], masked: [(expert: Int, grad: Tensor)] = []
        for ((e, _), g) in zip(low, gs) {
            guard let lora = adapters[e] else { continue }
            let p = g.mutableFloats
            for i in 0..<p.count { p[i] *= lora.scale }
            if let da = lora.a.gradSlot() {
                if let x = dropped[e] {
                    second.append(GemmJob(g, x, transposeA: true, transposeB: true, into: da.tensor, accumulate: da.accumulate))
                } else {
                    second.append(rows.map {
                        GemmJob(g, input, transposeA: true, transposeB: true, into: da.tensor, accumulate: da.accumulate, bRows: $0[e],
                                wholeRows: true)
                    } ?? GemmJob(g, input.rows(spans[e]), transposeA: true, transposeB: true, into: da.tensor, accumulate: da.accumulate))
                }
            }
            if dropout != nil {  // through the mask: into a block of its own, masked, then added
                let dx = Tensor(uninitialized: [spans[e].count, lora.a.shape[1]])
                second.append(GemmJob(g, lora.a.value, transposeB: true, into: dx))
                masked.append((e, dx))
            } else {
                second.append(GemmJob(g, lora.a.value, transposeB: true, into: inputGrad.rows(spans[e]), accumulate: true))
            }
        }
        Kernels.gemmBatch(second, pool: pool)
        guard let dropout else { return }
        for (e, dx) in masked {
            let k = dx.shape[1], s = Self.seed(dropout, expert: e)
            guard let src = dx.floats.baseAddress, let dst = inputGrad.rows(spans[e]).mutableFloats.baseAddress else { continue }
            Kernels.parallelRows(dx.shape[0], cost: k, pool: pool) { j in
                Kernels.dropout(dst + j * k, src + j * k, count: k, seed: s, first: j * k, p: dropout.p, accumulate: true)
            }
        }
    }
}
