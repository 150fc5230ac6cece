import MoECore

// Dimension legend: R routed rows, d hidden size, I expert intermediate size, E experts.

/// SwiGLU experts whose projections are QMoE-coded ternary matrices (`TernaryMatrix`): gate and
/// up [I, d], down [d, I] per expert. The same computation as `SwiGLUExperts`, activation and
/// biases included, with each product decoding its codes in registers.
public struct TernaryExperts: ExpertFFN {
    public let gate: [TernaryMatrix], up: [TernaryMatrix], down: [TernaryMatrix]
    /// The activation between the projections.
    public var activation: ExpertActivation = .swiglu
    /// Biases on the projections, or nil.
    public var biases: ExpertBiases? = nil
    public var expertCount: Int { gate.count }
    public var hiddenSize: Int { gate.first?.cols ?? 0 }
    /// The intermediate size I.
    public var intermediateSize: Int { gate.first?.rows ?? 0 }

    public init(gate: [TernaryMatrix], up: [TernaryMatrix], down: [TernaryMatrix]) {
        precondition(!gate.isEmpty && gate.count == up.count && up.count == down.count, "TernaryExperts: E gate, up and down weights")
        let (i, d) = (gate[0].rows, gate[0].cols)
        for e in gate.indices {
            precondition(gate[e].rows == i && gate[e].cols == d && up[e].rows == i && up[e].cols == d && down[e].rows == d && down[e].cols == i,
                         "TernaryExperts: expert \(e)'s shapes differ from expert 0's")
        }
        self.gate = gate
        self.up = up
        self.down = down
    }

    public func forward(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let r = rows.shape[0], i = intermediateSize
        let g = Tensor(zeros: [r, i]), u = Tensor(zeros: [r, i]), out = Tensor(zeros: [r, hiddenSize])
        var jobs: [Kernels.TernaryJob] = []
        for e in 0..<expertCount where rowOffsets[e] < rowOffsets[e + 1] {
            let span = rowOffsets[e]..<rowOffsets[e + 1]
            jobs.append(.init(input: rows.rows(span), weight: gate[e], output: g.rows(span)))
            jobs.append(.init(input: rows.rows(span), weight: up[e], output: u.rows(span)))
        }
        Kernels.ternaryLinearBatch(jobs, pool: pool)
        SwiGLUExperts.activate(gate: g, up: u, activation: activation, biases: biases, rowOffsets: rowOffsets, pool: pool)
        jobs = []
        for e in 0..<expertCount where rowOffsets[e] < rowOffsets[e + 1] {
            let span = rowOffsets[e]..<rowOffsets[e + 1]
            jobs.append(.init(input: g.rows(span), weight: down[e], output: out.rows(span)))
        }
        Kernels.ternaryLinearBatch(jobs, pool: pool)
        if let b = biases { SwiGLUExperts.addBias(out, b.down, rowOffsets) }
        return out
    }

    public func weightBytes(expert e: Int) -> Int { gate[e].byteCount + up[e].byteCount + down[e].byteCount }
}
