import MoECore

// Dimension legend: M rows, K inputs, N outputs, r the adapter's rank.

extension Tape {
    /// A LoRA adapter's path added to a frozen projection's output:
    /// `y = base + scale · (x Aᵀ) Bᵀ`, with x [M, K] (the projection's input, after the
    /// adapter's dropout), A [r, K], B [N, r] and base [M, N] (the projection `x W_0ᵀ`, already
    /// recorded). PEFT's `lora_B(lora_A(dropout(x))) · scaling`.
    ///
    /// Forward keeps `l = scale · x Aᵀ` [M, r]. Backward: dbase = dy; dB += dyᵀ l;
    /// g = scale · dy B [M, r]; dA += gᵀ x; dx += g A. Every product is a batched GEMM; none
    /// is larger than the rank times the projection's size.
    public func lora(_ base: Variable, input x: Variable, a: Variable, b: Variable, scale: Float) -> Variable {
        let xT = x.value, aT = a.value, bT = b.value
        let m = xT.shape[0], r = aT.shape[0]
        precondition(xT.rank == 2 && aT.shape == [r, xT.shape[1]] && bT.shape == [base.shape[1], r] && base.shape[0] == m,
                     "lora: x \(xT.shape), A \(aT.shape), B \(bT.shape), base \(base.shape)")
        let low = Kernels.matmul(xT, aT, pool: pool)  // [M, r]
        let lp = low.mutableFloats
        for i in 0..<lp.count { lp[i] *= scale }
        let y = base.value  // base is the projection just recorded, read by nothing else: add in place
        Kernels.gemmBatch([GemmJob(low, bT, into: y, accumulate: true)], pool: pool)
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            let g = Tensor(uninitialized: [m, r])
            var first = [GemmJob(dy, bT, transposeB: true, into: g)]
            if let db = b.gradSlot() {
                first.append(GemmJob(dy, low, transposeA: true, transposeB: true, into: db.tensor, accumulate: db.accumulate))
            }
            Kernels.gemmBatch(first, pool: pool)
            let gp = g.mutableFloats
            for i in 0..<gp.count { gp[i] *= scale }
            var second: [GemmJob] = []
            if let da = a.gradSlot() {
                second.append(GemmJob(g, xT, transposeA: true, transposeB: true, into: da.tensor, accumulate: da.accumulate))
            }
            if let dx = x.gradSlot() { second.append(GemmJob(g, aT, transposeB: true, into: dx.tensor, accumulate: dx.accumulate)) }
            Kernels.gemmBatch(second, pool: pool)
            base.accumulate(owned: dy, pool: pool)
        }
        return out
    }

    /// Inverted dropout: each element of x kept with probability 1 - p and scaled by 1 / (1 - p),
    /// or zeroed. Element i's draw is a hash of (seed, i) alone, so a step replays exactly, the
    /// mask is made in parallel chunks, and backward draws it again rather than storing it.
    /// Backward adds dy times the same mask into x's gradient. p = 0 returns x itself.
    public func dropout(_ x: Variable, p: Float, seed: UInt64) -> Variable {
        precondition(p >= 0 && p < 1, "dropout: p \(p) outside [0, 1)")
        guard p > 0 else { return x }
        func masked(_ out: UnsafeMutableBufferPointer<Float>, _ src: UnsafeBufferPointer<Float>, accumulate: Bool) {
            guard let o = out.baseAddress, let s = src.baseAddress else { return }
            let chunk = 1 << 14
            Kernels.parallelRows((out.count + chunk - 1) / chunk, cost: chunk, pool: pool) { c in
                let from = c * chunk
                Kernels.dropout(o + from, s + from, count: min(chunk, out.count - from), seed: seed, first: from, p: p,
                                accumulate: accumulate)
            }
        }
        let y = Tensor(uninitialized: x.shape)
        masked(y.mutableFloats, x.value.floats, accumulate: false)
        let out = Variable(y, inputs: [x])
        record {
            // dy through the mask straight into x's gradient: one pass, no masked copy to add.
            guard let dy = out.grad, let dx = x.gradSlot() else { return }
            masked(dx.tensor.mutableFloats, dy.floats, accumulate: dx.accumulate)
        }
        return out
    }
}
