import _MoEKernels

// Dimension legend: M activation rows (tokens), K input features, N output features.
// Weights are [N, K] (Hugging Face Linear layout); y = x W^T.

extension Kernels {
    /// Up to this many activation rows, a linear layer streams the weight once through the
    /// matrix-vector leaf (memory-bound); above it, activations are packed for the matmul leaf.
    static let gemvMaxRows = 4

    /// Up to this many output features, a linear layer of many rows takes the matrix-vector leaf
    /// 4 rows at a time: the matmul leaf's 32-wide tile would be a quarter full or less.
    static let narrowMaxColumns = 8

    /// The block formats that, against many activation rows, run faster through the f32 matmul
    /// leaf on dequantized tiles than through the integer leaf: those with a scale per 32
    /// values, Q3_K and Q6_K (1.1-2.3x at 128 rows here, `moe bench-kernels`). Q4_K, Q5_K, Q2_K
    /// and IQ4_XS, whose integer leaves apply scales per 256 values, stay on the integer leaf
    /// (1.0-1.4x faster there).
    static let blockGemmFormats: Set<DType> = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_NL, .mxfp4, .q3_K, .q6_K]

    /// From this fraction of a panel of activation rows (12 of 16 on AVX2), a block-format weight
    /// of `blockGemmFormats` takes the f32 matmul leaf, each weight tile dequantized into L1 once
    /// and reused by every panel: a padded panel costs less than that many rows through the
    /// integer leaf (1.3x slower per row for Q8_0).
    static func blockGemmMinRows() -> Int { max(1, Int(moek_gemm_mr()) * 3 / 4) }

    /// Whether `rows` activation rows against a block-format weight of `dtype` take the f32
    /// matmul leaf (`blockGemmFormats`, `blockGemmMinRows`, where the path can dequantize
    /// weight tiles).
    /// A K-quant block wider than the path's reduction block (AVX-512's is 128) would be widened
    /// twice; there the integer leaf is faster (Mixtral-shaped Q4_K_M prefill 0.90-0.97x with its
    /// Q6_K on the f32 leaf, measured against the integer leaf in one sitting).
    /// Where the AVX-512 VNNI integer leaves take the format (`moek_q8_interleaved`), they are
    /// faster than both (Mixtral-shaped Q8_0 prefill 1.6-1.8x the f32 leaf's here, one sitting).
    static func usesBlockGemm(rows: Int, dtype: DType, k: Int) -> Bool {
        guard blockGemmFormats.contains(dtype), rows >= blockGemmMinRows(), moek_gemm_blocks_supported() != 0 else { return false }
        if integerActivations && moek_q8_interleaved(dtype.cValue, k) != 0 { return false }
        let block = Int(moek_block_elements(dtype.cValue))
        return k % block == 0 && block <= Int(moek_gemm_kc())
    }

    /// Where `rows` rows against a block-format weight split so that whole panels of the
    /// matmul leaf take the first part and the integer leaf the few rows left (a last panel
    /// mostly padding would cost more): the row count of the first part, or nil when the rows
    /// do not split.
    static func splitsForBlockGemm(rows: Int, dtype: DType, k: Int) -> Int? {
        let mr = moek_gemm_mr(), cut = rows / mr * mr
        return cut == 0 || cut == rows || rows - cut >= blockGemmMinRows() || !usesBlockGemm(rows: rows, dtype: dtype, k: k) ? nil : cut
    }

    /// How many leading rows of `rows` take the f32 matmul leaf (the rest, the integer leaf).
    static func blockGemmRows(rows: Int, dtype: DType, k: Int) -> Int {
        guard usesBlockGemm(rows: rows, dtype: dtype, k: k) else { return 0 }
        return splitsForBlockGemm(rows: rows, dtype: dtype, k: k) ?? rows
    }

    /// `y = W x`: W [N, K] of any dtype, x [K] f32; returns y [N] f32.
    public static func matvec(_ w: Tensor, _ x: Tensor, pool: ThreadPool = .shared) -> Tensor {
        precondition(w.rank == 2 && x.count == w.shape[1], "matvec: W \(w.shape) and x \(x.shape)")
        let y = Tensor(zeros: [w.shape[0]])
        matmul(x.reshaped([1, x.count]), w, into: y.reshaped([1, w.shape[0]]), pool: pool)
        return y
    }

    /// `x W^T`: x [M, K] f32, W [N, K] of any dtype; returns [M, N] f32.
    public static func matmul(_ x: Tensor, _ w: Tensor, pool: ThreadPool = .shared) -> Tensor {
        precondition(x.rank == 2 && w.rank == 2, "matmul: x \(x.shape), W \(w.shape)")
        // Every path overwrites the output, except an empty reduction.
        let out = x.shape[1] == 0 ? Tensor(zeros: [x.shape[0], w.shape[0]]) : Tensor(uninitialized: [x.shape[0], w.shape[0]])
        matmul(x, w, into: out, pool: pool)
        return out
    }

    /// Sees the input and weight of every linear product run through `matmul`, `matvec` and
    /// `linearBatch` (each once, before it runs, on the calling thread): calibration installs
    /// one to gather importance statistics. Nil, the default, costs one load per call. Set it
    /// only while no model runs concurrently.
    nonisolated(unsafe) public static var linearObserver: ((_ input: Tensor, _ weight: Tensor) -> Void)?

    /// `out = x W^T`: x [M, K] f32, W [N, K] of any dtype, out [M, N] f32 (overwritten).
    public static func matmul(_ x: Tensor, _ w: Tensor, into out: Tensor, pool: ThreadPool = .shared) {
        if let observe = linearObserver, x.rank == 2, x.shape[0] > 0 { observe(x, w) }
        runMatmul(x, w, into: out, pool: pool)
    }

    static func runMatmul(_ x: Tensor, _ w: Tensor, into out: Tensor, pool: ThreadPool) {
        precondition(x.dtype == .f32 && out.dtype == .f32, "matmul: activations must be f32")
        precondition(x.rank == 2 && w.rank == 2 && out.rank == 2, "matmul: x \(x.shape), W \(w.shape), out \(out.shape)")
        let (m, k, n) = (x.shape[0], x.shape[1], w.shape[0])
        precondition(w.shape[1] == k && out.shape == [m, n], "matmul: x \(x.shape), W \(w.shape), out \(out.shape)")
        if let twin = PackedBF16Matrix.twin(of: w) {
            runPackedBatch([LinearJob(input: x, weight: w, output: out, packedWeight: twin)], pool: pool)
            return
        }
        linear(x: x.rawPointer.assumingMemoryBound(to: Float.self), ldx: k, rows: m,
               w: w.rawPointer, dtype: w.dtype, n: n, k: k,
               out: out.mutableRawPointer.assumingMemoryBound(to: Float.self), ldo: n, pool: pool)
    }

    /// The shared linear path on raw pointers: out[M, N] = x[M, K] W[N, K]^T.
    static func linear(x: UnsafePointer<Float>, ldx: Int, rows m: Int, w: UnsafeRawPointer, dtype: DType,
                       n: Int, k: Int, out: UnsafeMutablePointer<Float>, ldo: Int, pool: ThreadPool) {
        if m == 0 || n == 0 { return }
        if let cut = splitsForBlockGemm(rows: m, dtype: dtype, k: k) {
            linear(x: x, ldx: ldx, rows: cut, w: w, dtype: dtype, n: n, k: k, out: out, ldo: ldo, pool: pool)
            linear(x: x + cut * ldx, ldx: ldx, rows: m - cut, w: w, dtype: dtype, n: n, k: k, out: out + cut * ldo, ldo: ldo, pool: pool)
            return
        }
        let blockGemm = usesBlockGemm(rows: m, dtype: dtype, k: k)
        if !dtype.isElementFormat && !blockGemm
            && quantizedLinear(x: x, ldx: ldx, rows: m, w: w, dtype: dtype, n: n, k: k, out: out, ldo: ldo, pool: pool) {
            return
        }
        if !dtype.isElementFormat && m > gemvMaxRows && !blockGemm && moek_gemm_blocks_supported() == 0 {
            blockMatmul(x: x, ldx: ldx, rows: m, w: w, dtype: dtype, n: n, k: k, out: out, ldo: ldo, pool: pool)
            return
        }
        if !dtype.isElementFormat && !blockGemm {
            // Block formats at decode: the block leaf (each block widened in registers and
            // multiplied at once), 4 activation rows at a time, weight rows split over threads.
            let groups = (m + 3) / 4
            let chunks = max(1, min(n, pool.threadCount * 4 / max(1, groups)))
            let chunk = (n + chunks - 1) / chunks
            pool.parallelFor(groups * chunks) { task in
                let g = task / chunks, c = task % chunks, r0 = g * 4
                let rows = min(n, c * chunk)..<min(n, (c + 1) * chunk)
                if rows.isEmpty { return }
                moek_gemv_rows(w, dtype.cValue, k, x + r0 * ldx, ldx, Int32(min(4, m - r0)), out + r0 * ldo, ldo,
                               rows.lowerBound, rows.upperBound, k)
            }
            return
        }
        if m <= gemvMaxRows {
            // Memory-bound: streamed runs of weight rows (one per thread, walked in order, the
            // tail shared out), each piece prefetching the next's start; small matrices on
            // fewer threads.
            let rowBytes = k * dtype.byteSize
            let tasks = max(1, min(pool.threadCount, n / max(4, (64 << 10) / max(1, rowBytes))))
            let bf16Dot = usesBF16Dot(dtype: dtype)
            StreamedRuns.cached([(n, rowBytes)], threads: tasks).run(pool: pool) { piece, after in
                gemvPiece(w, dtype: dtype.cValue, bf16Dot: bf16Dot, k: k, x: x, ldx: ldx, m: m, out: out, ldo: ldo,
                          n0: piece.n0, n1: piece.n1, next: after.map { w + $0.n0 * rowBytes })
            }
            return
        }
        if usesBF16Path(rows: m, dtype: dtype) && usesBF16DotRows(rows: m, k: k) {
            // Up to 128 rows: the rows rounded to bf16 once, then runs of weight rows per task.
            withScratchFloats((m * k + 1) / 2) { raw in
                let xb = UnsafeMutableRawPointer(raw).assumingMemoryBound(to: UInt16.self)
                parallelChunks(m, grain: max(1, 4096 / k), pool: pool) { r in
                    moek_bf16_round_rows(x + r.lowerBound * ldx, ldx, r.count, k, xb + r.lowerBound * k)
                }
                let wp = w.assumingMemoryBound(to: UInt16.self)
                rowLeafRuns(n: n, m: m, k: k, pool: pool) { n0, n1 in
                    _ = moek_gemm_bf16_dot_rows(wp, k, xb, m, out, ldo, n0, n1, k)
                }
            }
            return
        }
        if usesBF16Path(rows: m, dtype: dtype) {
            withScratchFloats((moek_gemm_bf16_packed_size(m, k) + 1) / 2) { raw in
                let ap = UnsafeMutableRawPointer(raw).assumingMemoryBound(to: UInt16.self)
                let panels = (m + 15) / 16
                parallelChunks(panels, grain: max(1, 4096 / max(1, k)), pool: pool) { t in
                    moek_gemm_bf16_pack_a(x, ldx, m, k, t.lowerBound, t.upperBound, ap)
                }
                let step = Int(MOEK_GEMM_BF16_NR), tiles = (n + step - 1) / step
                let wp = w.assumingMemoryBound(to: UInt16.self)
                parallelChunks(tiles, grain: max(1, (1 << 22) / max(1, 2 * m * k * step)), pool: pool) { t in
                    moek_gemm_bf16_packed(ap, m, wp, k, out, ldo, t.lowerBound * step, min(n, t.upperBound * step), k)
                }
            }
            return
        }
        if n <= narrowMaxColumns {
            // A narrow output (an MoE router over a few experts) would fill a sliver of each
            // matmul tile, one block on one thread: every 4 rows instead take the
            // matrix-vector leaf against the whole (small) weight, rows split over threads.
            let groups = (m + 3) / 4
            parallelChunks(groups, grain: max(1, parallelThreshold / max(1, 4 * n * k)), pool: pool) { range in
                for g in range {
                    let r0 = g * 4
                    moek_gemv_rows(w, dtype.cValue, k, x + r0 * ldx, ldx, Int32(min(4, m - r0)), out + r0 * ldo, ldo, 0, n, k)
                }
            }
            return
        }
        if usesRowsLeaf(rows: m, dtype: dtype, k: k) {
            // Exact 16-bit weights: runs of weight rows per task, against x as it is (f16) or
            // de-interleaved once (bf16).
            let run = { (xp: UnsafePointer<Float>, ldxp: Int) in
                rowLeafRuns(n: n, m: m, k: k, pool: pool) { n0, n1 in
                    _ = moek_gemm_rows(w, dtype.cValue, k, xp, ldxp, m, out, ldo, n0, n1, k)
                }
            }
            if dtype != .bf16 { run(x, ldx); return }
            withScratchFloats(m * k) { xp in
                parallelChunks(m, grain: max(1, 4096 / k), pool: pool) { r in
                    moek_bf16_rows_permute(x + r.lowerBound * ldx, ldx, r.count, k, xp + r.lowerBound * k)
                }
                run(xp, k)
            }
            return
        }
        if readsAUnpacked(k: k, n: n) {  // the leaf reads x as it is: no packing pass
            // Blocks of >= ~0.5 MFLOP, about eight per thread, over rows as well as columns.
            let wanted = max(1, min(pool.threadCount * 8, 2 * m * n * k / (1 << 19)))
            let blocks = outputBlocks(m: m, n: n, count: wanted)
            pool.parallelFor(blocks.count) { i in
                let b = blocks[i]
                moek_gemm_direct(x + b.m0 * ldx, ldx, 0, b.m1 - b.m0, w, dtype.cValue, k, 0, 0, out + b.m0 * ldo, ldo,
                                 b.n0, b.n1, k)
            }
            return
        }
        withScratchFloats(moek_gemm_packed_size(m, k)) { ap in
            let mr = moek_gemm_mr()
            let panels = (m + mr - 1) / mr
            parallelChunks(panels, grain: max(1, 4096 / max(1, k)), pool: pool) { t in
                moek_gemm_pack_a(x, ldx, m, k, t.lowerBound, t.upperBound, ap)
            }
            let step = moek_gemm_n_step()
            let tiles = (n + step - 1) / step
            // Each task is a run of weight-row tiles; aim for >= ~2 MFLOP per task.
            let grain = max(1, (1 << 21) / max(1, 2 * m * k * step))
            parallelChunks(tiles, grain: grain, pool: pool) { t in
                moek_gemm_packed(ap, m, w, dtype.cValue, k, out, ldo,
                                 t.lowerBound * step, min(n, t.upperBound * step), k)
            }
        }
    }

    /// The row leaves' tasks over weight rows [0, n): runs of whole 24-row tiles of at least
    /// ~2 MFLOP each (m activation rows, k inputs), `body(n0, n1)` for each.
    static func rowLeafRuns(n: Int, m: Int, k: Int, pool: ThreadPool, _ body: (Int, Int) -> Void) {
        let step = 24, tiles = (n + step - 1) / step
        parallelChunks(tiles, grain: max(1, (1 << 21) / max(1, 2 * m * k * step)), pool: pool) { t in
            body(t.lowerBound * step, min(n, t.upperBound * step))
        }
    }

    /// Block-format weights against many activation rows (prefill): A is packed once; each task
    /// widens a panel of weight rows (about 64 KB of f32, in cache) into its own scratch and runs
    /// the f32 matmul leaf on it, so each block is widened once per panel rather than once per
    /// 4 activation rows. The scratch is per task and short-lived: no dequantized copy of the
    /// weight is kept.
    static func blockMatmul(x: UnsafePointer<Float>, ldx: Int, rows m: Int, w: UnsafeRawPointer, dtype: DType,
                            n: Int, k: Int, out: UnsafeMutablePointer<Float>, ldo: Int, pool: ThreadPool) {
        let step = moek_gemm_n_step(), rowBytes = dtype.storageBytes(elements: k)
        let panel = max(step, (1 << 14) / max(1, k) / step * step)
        let tiles = (n + panel - 1) / panel
        withScratchFloats(moek_gemm_packed_size(m, k)) { ap in
            let mr = moek_gemm_mr(), panels = (m + mr - 1) / mr
            parallelChunks(panels, grain: max(1, 4096 / max(1, k)), pool: pool) { t in
                moek_gemm_pack_a(x, ldx, m, k, t.lowerBound, t.upperBound, ap)
            }
            pool.parallelFor(tiles) { t in
                let n0 = t * panel, rows = min(panel, n - n0)
                withScratchFloats(rows * k) { wp in
                    moek_dequantize(w + n0 * rowBytes, dtype.cValue, wp, rows * k)
                    moek_gemm_packed(ap, m, wp, DType.f32.cValue, k, out + n0, ldo, 0, rows, k)
                }
            }
        }
    }
}
