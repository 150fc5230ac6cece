import _MoEKernels
import MoECore
import MoEDistributed

// Dimension legend: R this rank's routed rows (grouped by expert), R' the rows of this rank's
// experts from every rank, d hidden size, I expert inner size, E experts.

extension Tape {
    /// The expert-parallel forward's experts, pipelined (FSMoE): chunk k's rows travel to their
    /// experts' ranks while chunk k-1's experts run and chunk k-2's outputs travel back
    /// (`ChunkedExchange`, non-blocking all-to-alls). Each chunk's received rows land in their
    /// place in `expertInput` ([R', d], the unchunked layout, which the backward reads), its
    /// products fill `gateOut`, `upOut` and `hidden` ([R', I]) and `expertOut`
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
            pipeline.receive(k, outgoing[k], into: expertInput)
            let range = pipeline.ownedRange(k)
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

extension Tape {
    /// The expert-parallel backward's experts, pipelined as the forward is: chunk k's output
    /// gradients travel to their experts' ranks while chunk k-1's experts backpropagate, and
    /// each chunk's input gradients and routing-weight gradients travel back while later chunks
    /// run. Per chunk, as the unchunked backward does per expert: dh = dy D and dD += dyᵀ h,
    /// SwiGLU's backward row by row (dg, du and the weight's gradient dw), then dx = dg G + du U
    /// and dG += dgᵀ x, dU += duᵀ x, each expert's rows in one product, and each expert weight
    /// gradient's sum of squares taken as it is written. `dySource`, `dh`, `dg` and `du` are
    /// [R', ·] buffers in the unchunked layout. Returns, back on this rank in its grouped order,
    /// each row's input gradient [R, d] and routing-weight gradient [R].
    static func pipelinedExpertBackward(_ pipeline: ChunkedExchange, groupedOutGrad dy: Tensor, params: MoEParameters,
                                        spans: [Range<Int>], rowWeight: [Float], expertInput: Tensor, gateOut: Tensor, upOut: Tensor,
                                        hidden: Tensor, dySource: Tensor, dh: Tensor, dg: Tensor, du: Tensor,
                                        widened: (Variable) -> Tensor, pool: ThreadPool) -> (dx: Tensor, dw: [Float]) {
        let d = dy.rowStride, inner = gateOut.rowStride, r = pipeline.whole.ownedRows
        let dxRows = Tensor(uninitialized: [r, d]), dwRows = Tensor(uninitialized: [r, 1])
        let dhp = dh.mutableFloats.baseAddress, dgp = dg.mutableFloats.baseAddress, dup = du.mutableFloats.baseAddress
        let gatep = gateOut.floats.baseAddress, upp = upOut.floats.baseAddress, dwp = dwRows.mutableFloats.baseAddress
        var outgoing = [pipeline.plans[0].startDispatch(pipeline.input(0, of: dy))], returning: [(dx: PendingRows, dw: PendingRows)] = []
        for k in 0..<pipeline.chunks {
            if k + 1 < pipeline.chunks { outgoing.append(pipeline.plans[k + 1].startDispatch(pipeline.input(k + 1, of: dy))) }
            pipeline.receive(k, outgoing[k], into: dySource)
            let range = pipeline.ownedRange(k)
            let used = pipeline.experts(k).filter { !spans[$0].isEmpty }
            // Down: dh = dy D, dD += dyᵀ h.
            let downSquares = GradientSquares()
            var downJobs: [GemmJob] = []
            for i in used {
                let s = spans[i]
                downJobs.append(GemmJob(dySource.rows(s), widened(params.down[i]), transposeB: true, into: dh.rows(s), wholeRows: true))
                if let g = params.down[i].gradSlot() {
                    if !g.accumulate { downSquares.track(params.down[i], grad: g.tensor, job: downJobs.count) }
                    downJobs.append(GemmJob(dySource.rows(s), hidden.rows(s), transposeA: true, transposeB: true, into: g.tensor,
                                            accumulate: g.accumulate, wholeRows: true))
                }
            }
            downSquares.start()
            Kernels.gemmBatch(downJobs, pool: pool) { job, block, _ in downSquares.record(job: job, rows: block) }
            downSquares.deliver()
            // SwiGLU's backward with the routing weight, row by row.
            let first = range.lowerBound
            Kernels.parallelRows(range.count, cost: 16 * inner, pool: pool) { j in
                let o = (first + j) * inner
                dwp![first + j] = moek_silu_mul_backward_scaled(dhp! + o, gatep! + o, upp! + o, rowWeight[first + j], dgp! + o, dup! + o, inner)
            }
            // Gate and up: dx = dg G + du U (one chain per expert), dG += dgᵀ x, dU += duᵀ x.
            let gateUpSquares = GradientSquares()
            var dxJobs: [GemmJob] = []
            func addJobs(_ projection: Variable, _ grads: Tensor, into block: Tensor, adding: Bool, input: Tensor) {
                dxJobs.append(GemmJob(grads, widened(projection), transposeB: true, into: block, accumulate: adding))
                if let g = projection.gradSlot() {
                    if !g.accumulate { gateUpSquares.track(projection, grad: g.tensor, job: dxJobs.count) }
                    dxJobs.append(GemmJob(grads, input, transposeA: true, transposeB: true, into: g.tensor, accumulate: g.accumulate,
                                          wholeRows: true))
                }
            }
            for i in used {
                let s = spans[i]
                addJobs(params.gate[i], dg.rows(s), into: dxRows.rows(s), adding: false, input: expertInput.rows(s))
                addJobs(params.up[i], du.rows(s), into: dxRows.rows(s), adding: true, input: expertInput.rows(s))
            }
            gateUpSquares.start()
            Kernels.gemmBatch(dxJobs, pool: pool) { job, block, _ in gateUpSquares.record(job: job, rows: block) }
            gateUpSquares.deliver()
            returning.append((pipeline.plans[k].startCollect(dxRows.rows(range)), pipeline.plans[k].startCollect(dwRows.rows(range))))
        }
        let dx = Tensor(uninitialized: [pipeline.whole.localRows, d]), dw = Tensor(uninitialized: [pipeline.whole.localRows, 1])
        for k in 0..<pipeline.chunks {
            pipeline.place(k, collected: returning[k].dx.finish(), into: dx)
            pipeline.place(k, collected: returning[k].dw.finish(), into: dw)
        }
        return (dx, dw.toFloats())
    }
}
