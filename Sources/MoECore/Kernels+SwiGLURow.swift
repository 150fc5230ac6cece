import Synchronization
import _MoEKernels

// Dimension legend: d input width, I intermediate size, k FFNs summed.

/// One SwiGLU FFN, `W2 (silu(W1 x) * W3 x)`, as `Kernels.swiGLURow` reads it: its gate and up
/// [I, d] and down [d, I] matrices as `MatrixBytes`. Made once with the weights (decode's MoE
/// step reads a few of these contiguous records instead of walking each weight tensor's
/// objects, which a token's streamed weights have pushed out of the caches by then). The bytes
/// must outlive every call that reads them (the tensors keep them).
public struct SwiGLUWeights: Sendable {
    public let gate: MatrixBytes, up: MatrixBytes, down: MatrixBytes

    /// The matrices `gate`, `up` and `down`.
    public init(gate: Tensor, up: Tensor, down: Tensor) {
        (self.gate, self.up, self.down) = (MatrixBytes(gate), MatrixBytes(up), MatrixBytes(down))
    }
}

extension Kernels {
    /// Whether `swiGLURow` takes `ffn`: `tokenProducts` takes its three matrices.
    public static func takesSwiGLURow(_ ffn: SwiGLUWeights) -> Bool {
        takesTokenProducts(ffn.gate) && takesTokenProducts(ffn.up) && takesTokenProducts(ffn.down)
    }

    /// The weighted sum of SwiGLU FFNs of one activation row x [d] (decode's MoE step, over the
    /// experts a token chose): `out[0..<d] += sum over j of weights[j] *
    /// down_j(silu(gate_j x) * up_j x)`, the terms added in the order of `ffns`, each of which
    /// `takesSwiGLURow` takes, all of one shape.
    ///
    /// Bit for bit what `rowProducts` and `siluMul` give (the same leaves on the same quantized
    /// rows, the same activation on each element), in two streamed passes: each piece of the
    /// first runs an FFN's gate rows and the same up rows, then the activation on them, and the
    /// thread that finishes an FFN's rows quantizes its down input; so between the passes,
    /// while the other threads wait, the calling thread only sets up the down jobs.
    public static func swiGLURow(x: UnsafePointer<Float>, ffns: [SwiGLUWeights], weights: [Float],
                                 out: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        precondition(ffns.count == weights.count, "swiGLURow: \(ffns.count) FFNs, \(weights.count) weights")
        let k = ffns.count
        if k == 0 { return }
        let i = ffns[0].gate.rows, d = ffns[0].gate.columns
        for e in ffns {
            precondition(e.gate.rows == i && e.up.rows == i && e.down.columns == i && e.gate.columns == d && e.up.columns == d
                         && e.down.rows == d, "swiGLURow: FFNs of different shapes")
        }
        let (g, gCapacity) = ScratchBuffers.take(2 * k * i * 4 + k * d * 4)
        defer { ScratchBuffers.give(g, capacity: gCapacity) }
        let gp = g.assumingMemoryBound(to: Float.self), up = gp + k * i, yp = up + k * i
        var inputs = QuantizedInputs()
        defer { inputs.deallocate() }
        var gate: [QuantizedJob] = [], upJobs: [QuantizedJob] = []
        gate.reserveCapacity(k)
        upJobs.reserveCapacity(k)
        for (j, e) in ffns.enumerated() {
            let xg = inputs.filledRow(x, k: d, block: activationBlock(for: e.gate.dtype, k: d))
            let xu = inputs.filledRow(x, k: d, block: activationBlock(for: e.up.dtype, k: d))
            gate.append(QuantizedJob(w: e.gate.base, dtype: e.gate.dtype, n: i, k: d, x: xg, out: gp + j * i, ldo: i))
            upJobs.append(QuantizedJob(w: e.up.base, dtype: e.up.dtype, n: i, k: d, x: xu, out: up + j * i, ldo: i))
        }
        // Each FFN's down input, quantized in the first pass by the thread that finishes its
        // rows (the count of its rows left says which).
        var hidden: [QuantizedRows] = []
        hidden.reserveCapacity(k)
        for (j, e) in ffns.enumerated() {
            hidden.append(inputs.rows(for: UnsafeRawPointer(gp + j * i), rows: 1, k: i, block: activationBlock(for: e.down.dtype, k: i)).q)
        }
        let left = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: k)
        for j in 0..<k { (left + j).initialize(to: Atomic(i)) }
        defer { left.deinitialize(count: k); left.deallocate() }
        let pairShapes = (0..<k).map { (n: i, rowBytes: gate[$0].rowBytes + upJobs[$0].rowBytes) }
        StreamedRuns.cached(pairShapes, threads: pool.threadCount).run(pool: pool) { piece, after in
            let a = gate[piece.job], b = upJobs[piece.job]
            moek_prefetch_l2(b.w + piece.n0 * b.rowBytes, min(4096, (piece.n1 - piece.n0) * b.rowBytes))
            if let p = after {
                let next = gate[p.job]
                moek_prefetch_l2(next.w + p.n0 * next.rowBytes, min(4096, (p.n1 - p.n0) * next.rowBytes))
            }
            a.run(piece.n0, piece.n1)
            b.run(piece.n0, piece.n1)
            let j = piece.job, o = j * i + piece.n0
            moek_silu_mul_out(gp + o, gp + o, up + o, piece.n1 - piece.n0)
            // The last rows of FFN j: every other piece's writes are seen (acquire), and its
            // activation row goes to 8 bits here, while the memory streams on.
            if left[j].subtract(piece.n1 - piece.n0, ordering: .acquiringAndReleasing).newValue == 0 {
                let q = hidden[j]
                q.fill(from: gp + j * i, ldx: i, k: i, block: activationBlock(for: ffns[j].down.dtype, k: i), pool: nil)
            }
        }
        var down: [QuantizedJob] = []
        down.reserveCapacity(k)
        for (j, e) in ffns.enumerated() {
            down.append(QuantizedJob(w: e.down.base, dtype: e.down.dtype, n: d, k: i, x: hidden[j], out: yp + j * d, ldo: d))
        }
        streamQuantizedJobs(down, pool: pool)
        addWeightedRows(yp, weights: weights, width: d, into: out)
    }

    /// `out[0..<d] += weights[j] * y[j]` for the rows y[j] (d apart), in order (an MoE layer's
    /// combine for one token adds its terms so).
    public static func addWeightedRows(_ y: UnsafePointer<Float>, weights: [Float], width d: Int, into out: UnsafeMutablePointer<Float>) {
        let rows = (0..<weights.count).map { $0 }
        moek_combine_rows(out, y, d, rows, weights, weights.count, 1)
    }
}
