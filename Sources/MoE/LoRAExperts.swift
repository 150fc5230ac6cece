import MoECore

/// A low-rank adapter on one projection: `delta(x) = scale * B (A x)`, A [r, in], B [out, r].
public struct LoRAAdapter: Sendable {
    public let a: Tensor, b: Tensor
    public init(a: Tensor, b: Tensor) {
        precondition(a.rank == 2 && b.rank == 2 && b.shape[1] == a.shape[0], "LoRAAdapter: A \(a.shape), B \(b.shape)")
        self.a = a
        self.b = b
    }
}

/// LoRA experts on a frozen dense SwiGLU FFN (MixLoRA, MoLE; ROUTING.md §9): expert e is the
/// base projection plus its own adapter, `W_j + scale * B_{e,j} A_{e,j}`, for each projection j
/// that has one (`nil`: the base alone). Fine-tuning trains only the adapters and the router.
public struct LoRAExperts: ExpertFFN {
    /// The frozen base: gate and up [I, d], down [d, I].
    public let baseGate: Tensor, baseUp: Tensor, baseDown: Tensor
    /// Per expert: adapters for gate, up and down.
    public let gateAdapters: [LoRAAdapter?], upAdapters: [LoRAAdapter?], downAdapters: [LoRAAdapter?]
    /// alpha / r.
    public let scale: Float

    public init(baseGate: Tensor, baseUp: Tensor, baseDown: Tensor, gateAdapters: [LoRAAdapter?],
                upAdapters: [LoRAAdapter?], downAdapters: [LoRAAdapter?], scale: Float) {
        precondition(gateAdapters.count == upAdapters.count && upAdapters.count == downAdapters.count && !gateAdapters.isEmpty,
                     "LoRAExperts: one adapter list entry per expert")
        self.baseGate = baseGate
        self.baseUp = baseUp
        self.baseDown = baseDown
        self.gateAdapters = gateAdapters
        self.upAdapters = upAdapters
        self.downAdapters = downAdapters
        self.scale = scale
    }

    public var expertCount: Int { gateAdapters.count }
    public var hiddenSize: Int { baseGate.shape[1] }

    public func weightBytes(expert e: Int) -> Int {
        let lora = [gateAdapters[e], upAdapters[e], downAdapters[e]].reduce(0) { $0 + ($1.map { $0.a.byteCount + $0.b.byteCount } ?? 0) }
        return baseGate.byteCount + baseUp.byteCount + baseDown.byteCount + lora
    }

    /// `rows W^T + scale * B_e (A_e rows)` for each expert's rows.
    func project(_ rows: Tensor, base: Tensor, adapters: [LoRAAdapter?], rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let out = Kernels.matmul(rows, base, pool: pool)
        var jobs: [LinearJob] = [], deltas: [(Range<Int>, Tensor)] = []
        for e in 0..<expertCount where rowOffsets[e] < rowOffsets[e + 1] {
            guard let lora = adapters[e] else { continue }
            let span = rowOffsets[e]..<rowOffsets[e + 1]
            let low = Tensor(zeros: [span.count, lora.a.shape[0]])
            jobs.append(LinearJob(input: rows.rows(span), weight: lora.a, output: low))
            deltas.append((span, low))
        }
        Kernels.linearBatch(jobs, pool: pool)
        let n = base.shape[0]
        let delta = Tensor(zeros: [rows.shape[0], n])
        jobs = []
        var k = 0
        for e in 0..<expertCount where rowOffsets[e] < rowOffsets[e + 1] {
            guard let lora = adapters[e] else { continue }
            jobs.append(LinearJob(input: deltas[k].1, weight: lora.b, output: delta.rows(deltas[k].0)))
            k += 1
        }
        Kernels.linearBatch(jobs, pool: pool)
        let op = out.mutableFloats, dp = delta.floats
        for i in 0..<op.count { op[i] += scale * dp[i] }
        return out
    }

    public func forward(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let g = project(rows, base: baseGate, adapters: gateAdapters, rowOffsets: rowOffsets, pool: pool)
        let u = project(rows, base: baseUp, adapters: upAdapters, rowOffsets: rowOffsets, pool: pool)
        Kernels.siluMul(gate: g, up: u, pool: pool)
        return project(g, base: baseDown, adapters: downAdapters, rowOffsets: rowOffsets, pool: pool)
    }
}
