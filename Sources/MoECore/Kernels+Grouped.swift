import _MoEKernels

// Dimension legend: R routed rows (token slots, grouped by expert), K input features,
// N output features, E groups (experts).

extension Kernels {
    /// Many linear layers in one call: rows `rowOffsets[e] ..< rowOffsets[e + 1]` of `x` go
    /// through `weights[e]`, and their results land in the same rows of `out`.
    ///
    /// - x: [R, K] f32, rows grouped by expert (the MoE dispatch permutation does this).
    /// - weights: E weights, each [N, K], of any dtype (they may differ); a weight whose group
    ///   is empty is never read.
    /// - rowOffsets: E + 1 non-decreasing offsets, from 0 to at most R.
    /// - out: [R, N] f32; rows outside every group are left as they are.
    ///
    /// Groups of up to 4 rows stream their weight once (matrix-vector leaf); larger groups are
    /// packed and use the matmul leaf. All (group, weight-row slice) pieces go to the pool in
    /// one parallel pass, so no group waits for another.
    public static func groupedMatmul(_ x: Tensor, weights: [Tensor], rowOffsets: [Int], into out: Tensor,
                                     pool: ThreadPool = .shared) {
        precondition(x.dtype == .f32 && out.dtype == .f32 && x.rank == 2 && out.rank == 2,
                     "groupedMatmul: x \(x.shape) \(x.dtype), out \(out.shape) \(out.dtype)")
        let e = weights.count
        let (r, k, n) = (x.shape[0], x.shape[1], out.shape[1])
        precondition(rowOffsets.count == e + 1 && rowOffsets.first == 0 && (rowOffsets.last ?? 0) <= r
                     && out.shape[0] == r, "groupedMatmul: \(rowOffsets.count) offsets for \(e) weights, \(r) rows")
        for g in 0..<e {
            precondition(rowOffsets[g] <= rowOffsets[g + 1], "groupedMatmul: offsets must not decrease")
            if rowOffsets[g] < rowOffsets[g + 1] {
                precondition(weights[g].shape == [n, k], "groupedMatmul: weight \(g) is \(weights[g].shape), want [\(n), \(k)]")
            }
        }
        let xp = x.rawPointer.assumingMemoryBound(to: Float.self)
        let op = out.mutableRawPointer.assumingMemoryBound(to: Float.self)
        let wps = weights.map { $0.rawPointer }
        let dts = weights.map { $0.dtype.cValue }

        // Packed-A offsets for the groups that take the matmul leaf.
        var packedOffset = [Int](repeating: 0, count: e + 1)
        for g in 0..<e {
            let rows = rowOffsets[g + 1] - rowOffsets[g]
            packedOffset[g + 1] = packedOffset[g] + (rows > gemvMaxRows ? moek_gemm_packed_size(rows, k) : 0)
        }

        // Pieces: (group, first weight row, end weight row). Slice each group's N so there are
        // about four pieces per thread overall, in multiples of the leaf's tile.
        let active = (0..<e).filter { rowOffsets[$0 + 1] > rowOffsets[$0] }
        if active.isEmpty { return }
        let step = max(4, moek_gemm_n_step())
        let slicesPerGroup = max(1, (pool.threadCount * 4 + active.count - 1) / active.count)
        let slice = max(step, ((n + slicesPerGroup - 1) / slicesPerGroup + step - 1) / step * step)
        var pieces: [(group: Int, n0: Int, n1: Int)] = []
        pieces.reserveCapacity(active.count * ((n + slice - 1) / slice))
        for g in active {
            var n0 = 0
            while n0 < n {
                pieces.append((g, n0, min(n, n0 + slice)))
                n0 += slice
            }
        }

        withScratchFloats(packedOffset[e]) { packed in
            let toPack = active.filter { rowOffsets[$0 + 1] - rowOffsets[$0] > gemvMaxRows }
            pool.parallelFor(toPack.count) { i in
                let g = toPack[i]
                let rows = rowOffsets[g + 1] - rowOffsets[g]
                let mr = moek_gemm_mr()
                moek_gemm_pack_a(xp + rowOffsets[g] * k, k, rows, k, 0, (rows + mr - 1) / mr,
                                 packed + packedOffset[g])
            }
            pieces.withUnsafeBufferPointer { pieces in
                pool.parallelFor(pieces.count) { i in
                    let (g, n0, n1) = pieces[i]
                    let row0 = rowOffsets[g]
                    let rows = rowOffsets[g + 1] - row0
                    if rows <= gemvMaxRows {
                        moek_gemv_rows(wps[g], dts[g], k, xp + row0 * k, k, Int32(rows), op + row0 * n, n, n0, n1, k)
                    } else {
                        moek_gemm_packed(packed + packedOffset[g], rows, wps[g], dts[g], k, op + row0 * n, n, n0, n1, k)
                    }
                }
            }
        }
    }

    /// `groupedMatmul` with the experts' weights stacked in one tensor [E, N, K].
    public static func groupedMatmul(_ x: Tensor, stackedWeights: Tensor, rowOffsets: [Int], into out: Tensor,
                                     pool: ThreadPool = .shared) {
        precondition(stackedWeights.rank == 3, "groupedMatmul: stacked weights must be [E, N, K]")
        let views = (0..<stackedWeights.shape[0]).map { stackedWeights[$0] }
        groupedMatmul(x, weights: views, rowOffsets: rowOffsets, into: out, pool: pool)
    }
}
