import MoECore

// Dimension legend: T tokens, d hidden, I expert size, r an adapter's rank; n_e the rows
// routed to expert e.

/// LoRA adapters on a MoE layer's routed experts (PEFT's per-expert modules, as in Mixtral's
/// `experts.E.w1`): per expert and projection, A [r, in] and B [out, r] with their scale, or
/// nil where that projection of that expert has none.
public struct ExpertAdapters {
    public typealias Adapter = (a: Variable, b: Variable, scale: Float)
    public var gate: [Adapter?], up: [Adapter?], down: [Adapter?]
    public init(gate: [Adapter?], up: [Adapter?], down: [Adapter?]) {
        self.gate = gate
        self.up = up
        self.down = down
    }
    var isEmpty: Bool { (gate + up + down).allSatisfy { $0 == nil } }
}

/// One projection's adapters on the experts that received rows: what the forward kept for the
/// backward.
struct ExpertLoRAPass {
    /// Per used expert with an adapter: the expert, and `scale · X_e Aᵀ` [n_e, r].
    var low: [(expert: Int, value: Tensor)] = []

    /// Adds each expert's `scale · (X_e Aᵀ) Bᵀ` into `out`'s rows of that expert. X_e is
    /// `input`'s rows `rows[e]` when given (token rows of x, read in place), else its rows
    /// `spans[e]` (the grouped rows).
    static func forward(_ adapters: [ExpertAdapters.Adapter?], input: Tensor, rows: [[Int]]?, spans: [Range<Int>], used: [Int],
                        into out: Tensor, pool: ThreadPool) -> ExpertLoRAPass {
        var pass = ExpertLoRAPass(), jobs: [GemmJob] = []
        for e in used {
            guard let lora = adapters[e] else { continue }
            let low = Tensor(uninitialized: [spans[e].count, lora.a.shape[0]])
            jobs.append(rows.map { GemmJob(input, lora.a.value, into: low, aRows: $0[e]) }
                ?? GemmJob(input.rows(spans[e]), lora.a.value, into: low))
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
        var second: [GemmJob] = []
        for ((e, _), g) in zip(low, gs) {
            guard let lora = adapters[e] else { continue }
            let p = g.mutableFloats
            for i in 0..<p.count { p[i] *= lora.scale }
            if let da = lora.a.gradSlot() {
                second.append(rows.map {
                    GemmJob(g, input, transposeA: true, transposeB: true, into: da.tensor, accumulate: da.accumulate, bRows: $0[e],
                            wholeRows: true)
                } ?? GemmJob(g, input.rows(spans[e]), transposeA: true, transposeB: true, into: da.tensor, accumulate: da.accumulate))
            }
            second.append(GemmJob(g, lora.a.value, transposeB: true, into: inputGrad.rows(spans[e]), accumulate: true))
        }
        Kernels.gemmBatch(second, pool: pool)
    }
}
