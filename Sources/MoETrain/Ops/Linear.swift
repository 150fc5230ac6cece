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
        let y = Kernels.matmul(xT, wT, pool: pool)  // [M, N]
        if let bias {
            let b = bias.value.floats, p = y.mutableFloats, n = b.count
            for i in 0..<p.count { p[i] += b[i % n] }
        }
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            if let dx = x.gradSlot() { Kernels.gemm(dy, wT, transposeB: true, into: dx.tensor, accumulate: dx.accumulate, pool: pool) }
            if let dw = w.gradSlot() {
                Kernels.gemm(dy, xT, transposeA: true, transposeB: true, into: dw.tensor, accumulate: dw.accumulate, pool: pool)
            }
            if let bias, bias.requiresGrad {
                let n = bias.value.count, g = dy.floats
                var sums = [Float](repeating: 0, count: n)
                for i in 0..<g.count { sums[i % n] += g[i] }
                bias.accumulate(Tensor(shape: [n], values: sums))
            }
        }
        return out
    }

    /// `y = a + b` (same shape): the residual connection.
    public func add(_ a: Variable, _ b: Variable) -> Variable {
        let y = a.value.copied()
        let p = y.mutableFloats, q = b.value.floats
        for i in 0..<p.count { p[i] += q[i] }
        let out = Variable(y)
        record {
            guard let dy = out.grad else { return }
            a.accumulate(dy)
            b.accumulate(dy)
        }
        return out
    }

    /// Rows `ids` of `table` [V, d] -> [T, d]. Backward scatters dy into the chosen rows.
    public func embedding(_ table: Variable, ids: [Int]) -> Variable {
        let d = table.shape[1]
        let y = Tensor(zeros: [ids.count, d])
        let src = table.value.floats, dst = y.mutableFloats
        for (t, id) in ids.enumerated() { for j in 0..<d { dst[t * d + j] = src[id * d + j] } }
        let out = Variable(y)
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
