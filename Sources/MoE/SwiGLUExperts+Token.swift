import MoECore

// Dimension legend: d hidden size, I intermediate size, k experts the token chose.

extension SwiGLUExperts {
    /// Every expert's `SwiGLUWeights` record (`tokenRows`, three matrices' addresses and
    /// shapes an expert), which `addToken` reads for the experts a token chose.
    public func prefetchTokenRecords() {
        tokenRows.withUnsafeBytes { if let base = $0.baseAddress { Kernels.prefetch(base, bytes: $0.count) } }
    }

    /// Decode's MoE step for one token whose experts' weights `Kernels.takesRowProducts` takes
    /// (block formats with an integer leaf; f32, f16 and bf16 on more than one thread):
    /// `out[0] += sum over the token's choices of weight * E(x)`, computed as `MoELayer`'s
    /// gathered path computes it, bit for bit (the same activations and leaves, the outputs
    /// added in expert order), without gathering the token into one row per expert. Block
    /// formats run from the experts' flat records (`tokenRows`) through `Kernels.swiGLURow`,
    /// the token quantized once for every gate and up product and the activation inside their
    /// pass; element formats through `Kernels.rowProducts`, the products' bookkeeping a few
    /// arrays, not a tensor a job. Returns false,
    /// touching nothing, where it does not apply (biases, packed experts, GPT-OSS's activation,
    /// other weights, an expert chosen twice, more than one token): the gathered path runs
    /// those.
    public func addToken(_ x: Tensor, routing: Routing, into out: Tensor, pool: ThreadPool) -> Bool {
        guard biases == nil, packed.isEmpty, activation == .swiglu, routing.tokenCount == 1,
              x.rank == 2, x.shape[0] == 1, x.shape[1] == hiddenSize, out.rank == 2, out.shape[0] == 1, out.shape[1] == hiddenSize,
              x.dtype == .f32, out.dtype == .f32
        else { return false }
        // The gathered path's row order: by expert.
        let order = (routing.offsets[0]..<routing.offsets[1]).sorted { routing.experts[$0] < routing.experts[$1] }
        if order.isEmpty { return true }
        // An expert listed twice gets two rows there, which its leaf takes together (the same
        // sums in another order): the gathered path keeps those bits.
        for j in 1..<max(1, order.count) where routing.experts[order[j - 1]] == routing.experts[order[j]] { return false }
        let k = order.count, i = intermediateSize, d = hiddenSize
        // Block formats: from the experts' flat records, not their tensors.
        if order.allSatisfy({ Kernels.takesSwiGLURow(tokenRows[routing.experts[$0]]) }) {
            withExtendedLifetime((x, out, self)) {
                Kernels.swiGLURow(x: x.floats.baseAddress!, ffns: order.map { tokenRows[routing.experts[$0]] },
                                 weights: order.map { routing.weights[$0] }, out: out.mutableFloats.baseAddress!, pool: pool)
            }
            return true
        }
        for a in order {
            let e = routing.experts[a]
            guard Kernels.takesRowProducts(gate[e], pool: pool) && Kernels.takesRowProducts(up[e], pool: pool)
                && Kernels.takesRowProducts(down[e], pool: pool)
            else { return false }
        }
        let g = Tensor(uninitialized: [k, i]), u = Tensor(uninitialized: [k, i]), y = Tensor(uninitialized: [k, d])
        withExtendedLifetime((x, g, u, y, out)) {
            let xp = x.floats.baseAddress!, gp = g.mutableFloats.baseAddress!, upp = u.mutableFloats.baseAddress!
            let yp = y.mutableFloats.baseAddress!
            var products: [RowProduct] = []
            products.reserveCapacity(2 * k)
            for (j, a) in order.enumerated() {
                let e = routing.experts[a]
                products.append(RowProduct(input: xp, weight: gate[e], output: gp + j * i))
                products.append(RowProduct(input: xp, weight: up[e], output: upp + j * i))
            }
            Kernels.rowProducts(products, pool: pool)
            Kernels.siluMul(gate: g, up: u, pool: pool)
            products.removeAll(keepingCapacity: true)
            for (j, a) in order.enumerated() {
                products.append(RowProduct(input: UnsafePointer(gp + j * i), weight: down[routing.experts[a]], output: yp + j * d))
            }
            Kernels.rowProducts(products, pool: pool)
            Kernels.addWeightedRows(yp, weights: order.map { routing.weights[$0] }, width: d, into: out.mutableFloats.baseAddress!)
        }
        return true
    }
}
