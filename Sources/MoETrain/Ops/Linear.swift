import MoECore

// Dimension legend: M rows, K inputs, N outputs. W is [N, K] (Hugging Face Linear layout).

extension Tape {
    /// `y = x W^T (+ b)`: x [M, K], W [N, K], b [N] -> y [M, N].
    ///
    /// Backward, with the same fast matmul kernels reading the operands transposed where needed
    /// and adding into the gradients in place: dx += dy W ([M, N] x [N, K]),
    /// dW += dy^T x ([N, M] x [M, K]), db += column sums of dy.
    public func linear(_ x: Variable, _ w: Variable, bias: Variable? = nil) -> Variable {
        let (xT, wT) = (x.value, w.value)  // the closure keeps these alive
        // A frozen weight in a block format (QLoRA's base) is widened for the product, as
        // bitsandbytes dequantizes before its matmul, and dropped after it.
        let y = Kernels.matmul(xT, wT.dtype.isElementFormat ? wT : w.f32Value, pool: pool)  // [M, N]
        if let bias {
            let b = bias.value.floats, p = y.mutableFloats, n = b.count
            for i in 0..<p.count { p[i] += b[i % n] }
        }
        let out = Variable(y, inputs: [x, w, bias])
        record { [pool] in
            guard let dy = out.grad else { return }
            // Both products in one batch: one barrier, and the threads share their pieces.
            var jobs: [GemmJob] = []
            if let dx = x.gradSlot() { jobs.append(GemmJob(dy, w.f32Value, transposeB: true, into: dx.tensor, accumulate: dx.accumulate)) }
            if let dw = w.gradSlot() {
                jobs.append(GemmJob(dy, xT, transposeA: true, transposeB: true, into: dw.tensor, accumulate: dw.accumulate))
            }
            Kernels.gemmBatch(jobs, pool: pool)
            if let bias, bias.requiresGrad {
                let n = bias.value.count, g = dy.floats
                var sums = [Float](repeating: 0, count: n)
                for i in 0..<g.count { sums[i % n] += g[i] }
                bias.accumulate(Tensor(shape: [n], values: sums))
            }
        }
        return out
    }

    /// Linear maps of one input, `x W_i^T` for each W_i [N_i, K] in `ws` (attention's q, k and v
    /// projections): the values of separate `linear` calls, each pass running all of them as
    /// one batch of products (one barrier, the threads sharing every piece).
    ///
    /// Backward: dW_i (+)= dy_i^T x for each map, and dx (+)= sum_i dy_i W_i as a chain of
    /// products into dx (see `Kernels.gemmBatch`), all in one batch. The chain runs the maps in
    /// reverse, the order in which separate `linear` steps would add into dx.
    public func linears(_ x: Variable, _ ws: [Variable]) -> [Variable] {
        let xT = x.value, m = xT.shape[0]
        precondition(xT.rank == 2 && ws.allSatisfy { $0.value.rank == 2 && $0.shape[1] == xT.shape[1] },
                     "linears: x \(xT.shape), W \(ws.map(\.shape))")
        let ys = ws.map { Tensor(uninitialized: [m, $0.shape[0]]) }  // each product overwrites its own
        // A frozen weight in a block format (QLoRA's base) is widened for the product and dropped after it.
        Kernels.gemmBatch(zip(ws, ys).map { w, y in GemmJob(xT, w.value.dtype.isElementFormat ? w.value : w.f32Value, into: y) }, pool: pool)
        let outs = ys.map { Variable($0, inputs: [x] + ws) }
        record { [pool] in
            let flowing = zip(ws, outs).reversed().compactMap { w, out in out.grad.map { (w, $0) } }
            if flowing.isEmpty { return }
            var jobs: [GemmJob] = []
            let dx = x.gradSlot()
            for (n, (w, dy)) in flowing.enumerated() {
                if let dx { jobs.append(GemmJob(dy, w.f32Value, transposeB: true, into: dx.tensor, accumulate: dx.accumulate || n > 0)) }
                if let dw = w.gradSlot() {
                    jobs.append(GemmJob(dy, xT, transposeA: true, transposeB: true, into: dw.tensor, accumulate: dw.accumulate))
                }
            }
            Kernels.gemmBatch(jobs, pool: pool)
        }
        return outs
    }

    /// `y = a + b` (same shape): the residual connection.
    public func add(_ a: Variable, _ b: Variable) -> Variable {
        precondition(a.shape == b.shape, "add: \(a.shape) and \(b.shape)")
        let y = Tensor(uninitialized: a.shape)
        let p = y.mutableFloats, q = a.value.floats, r = b.value.floats
        let chunk = 1 << 14
        Kernels.parallelRows((p.count + chunk - 1) / chunk, cost: chunk, pool: pool) { c in
            for i in (c * chunk)..<min(p.count, (c + 1) * chunk) { p[i] = q[i] + r[i] }
        }
        let out = Variable(y, inputs: [a, b])
        record { [pool] in
            guard let dy = out.grad else { return }
            // `out` is done with dy, so the first input may take it as its gradient (in place
            // later, even when a and b are one variable: dy += dy). The second gets a copy.
            a.accumulate(owned: dy, pool: pool)
            b.accumulate(dy, pool: pool)
        }
        return out
    }

    /// Rows `ids` of `table` [V, d] -> [T, d]. Backward scatters dy into the chosen rows.
    public func embedding(_ table: Variable, ids: [Int]) -> Variable {
        let d = table.shape[1]
        let y = Tensor(uninitialized: [ids.count, d])
        let src = table.value.floats, dst = y.mutableFloats
        Kernels.parallelRows(ids.count, cost: d, pool: pool) { t in
            for j in 0..<d { dst[t * d + j] = src[ids[t] * d + j] }
        }
        let out = Variable(y, inputs: [table])
        record {
            guard let dy = out.grad, table.requiresGrad else { return }
            let g = Tensor(zeros: table.shape)
            let gp = g.mutableFloats, dp = dy.floats
            for (t, id) in ids.enumerated() { for j in 0..<d { gp[id * d + j] += dp[t * d + j] } }
            table.accumulate(g)
        }
        return out
    }
}
