import _MoEKernels
import MoECore
import MoEDistributed

// Dimension legend: R this rank's routed rows (grouped by expert), R' the rows of this rank's
// experts from every rank, d hidden size, I expert inner size, E experts.

extension Tape {
    /// The expert-parallel forward's experts, pipelined (FSMoE): chunk k's rows travel to their
    /// experts' ranks while chunk k-1's experts run and chunk k-2's outputs travel back
    /// (`ChunkedExchange`, non-blocking all-to-alls). Each chunk's received rows land in their
    /// place in `expertInput` ([R', d], the unchunked layout, which the backward reads as
    /// usual), its products fill `gateOut`, `upOut` and `hidden` ([R', I]) and `expertOut`
    /// ([R', d], w E per row) exactly as the unchunked pass does (each expert's rows in one
    /// product; SwiGLU row by row); returns the outputs back on this rank, [R, d], in its
    /// grouped order. Only for plain SwiGLU experts without adapters.
    static func pipelinedExperts(_ pipeline: ChunkedExchange, grouped x: Tensor, params: MoEParameters, rowWeight: [Float],
                                 spans: [Range<Int>], expertInput: Tensor, gateOut: Tensor, upOut: Tensor, hidden: Tensor,
                                 expertOut: Tensor, pool: ThreadPool) -> Tensor {
        let d = x.rowStride, inner = gateOut.rowStride
        func readable(_ v: Variable) -> Tensor { v.value.dtype.isElementFormat ? v.value : v.f32Value }
        let gp = gateOut.mutableFloats.baseAddress, upp = upOut.mutableFloats.baseAddress, hp = hidden.mutableFloats.baseAddress
        var outgoing = [pipeline.plans[0].startDispatch(pipeline.input(0, of: x))], returning: [PendingRows] = []
        for k in 0..<pipeline.chunks {
            if k + 1 < pipeline.chunks { outgoing.append(pipeline.plans[k + 1].startDispatch(pipeline.input(k + 1, of: x))) }
            let arrived = outgoing[k].finish()
            let range = pipeline.ownedRange(k)
            if !range.isEmpty {
                withExtendedLifetime(arrived) {
                    (expertInput.mutableFloats.baseAddress! + range.lowerBound * d).update(from: arrived.floats.baseAddress!, count: range.count * d)
                }
            }
            let used = pipeline.experts(k).filter { !spans[$0].isEmpty }
            var jobs: [GemmJob] = []
            jobs.reserveCapacity(2 * used.count)
            for i in used {
                jobs.append(GemmJob(expertInput.rows(spans[i]), readable(params.gate[i]), into: gateOut.rows(spans[i])))
                jobs.append(GemmJob(expertInput.rows(spans[i]), readable(params.up[i]), into: upOut.rows(spans[i])))
            }
            Kernels.gemmBatch(jobs, pool: pool)
            let first = range.lowerBound
            Kernels.parallelRows(range.count, cost: 8 * inner, pool: pool) { j in
                let o = (first + j) * inner
                moek_silu_mul_scaled(hp! + o, gp! + o, upp! + o, rowWeight[first + j], inner)
            }
            Kernels.gemmBatch(used.map { GemmJob(hidden.rows(spans[$0]), readable(params.down[$0]), into: expertOut.rows(spans[$0])) },
                              pool: pool)
            returning.append(pipeline.plans[k].startCollect(expertOut.rows(range)))
        }
        let back = Tensor(uninitialized: [pipeline.whole.localRows, d])
        for k in 0..<pipeline.chunks { pipeline.place(k, collected: returning[k].finish(), into: back) }
        return back
    }
}
