import _MoEKernels

// Dimension legend: R routed rows (token slots, grouped by expert), K input features,
// N output features, E groups (experts).

/// One linear layer in a batch: `output = input W^T` for a block of rows.
///
/// `input` is f32 [rows, K] and `output` f32 [rows, N] (row views of larger tensors are fine);
/// `weight` is [N, K] of any dtype. With `packedWeight` (the expert cache's packed form of a
/// bf16 weight), the product reads that instead, and `weight` (its source, of the same shape)
/// is never read.
public struct LinearJob: Sendable {
    public var input: Tensor
    public var weight: Tensor
    public var output: Tensor
    public var packedWeight: PackedBF16Matrix?

    public init(input: Tensor, weight: Tensor, output: Tensor, packedWeight: PackedBF16Matrix? = nil) {
        self.input = input
        self.weight = weight
        self.output = output
        self.packedWeight = packedWeight
    }
}

extension Kernels {
    /// Runs many independent linear layers in one parallel pass.
    ///
    /// Jobs of up to 4 rows stream their weight once (matrix-vector leaf); larger jobs are
    /// packed and use the matmul leaf. Every (job, weight-row slice) piece goes to the pool
    /// together, so small jobs (an expert with one token) share the threads with big ones and
    /// nothing waits on a per-job barrier. Jobs with no rows are skipped without reading their
    /// weight. This is how an MoE layer runs all its experts' projections at once.
    public static func linearBatch(_ jobs: [LinearJob], pool: ThreadPool = .shared) {
        if let observe = linearObserver { for job in jobs where job.input.rank == 2 && job.input.shape[0] > 0 { observe(job.input, job.weight) } }
        runLinearBatch(jobs, pool: pool)
    }

    static func runLinearBatch(_ jobs: [LinearJob], pool: ThreadPool) {
        if jobs.contains(where: { $0.packedWeight != nil }) {
            runPackedBatch(jobs, pool: pool)
            return
        }
        if PackedBF16Matrix.anyTwins {
            let twins = jobs.map { PackedBF16Matrix.twin(of: $0.weight) }
            if twins.contains(where: { $0 != nil }) {
                runPackedBatch(zip(jobs, twins).map { job, twin in
                    LinearJob(input: job.input, weight: job.weight, output: job.output, packedWeight: twin)
                }, pool: pool)
                return
            }
        }
        // One pass over the jobs (decode calls this a few times a layer): the ones with rows,
        // checked, and whether any needs its rows cut or runs outside the matmul leaves.
        var active: [LinearJob] = [], allActive = true, cuts = false, gemmOnly = true, anyGemm = false
        func gemm(_ job: LinearJob) -> Bool {
            job.weight.dtype.isElementFormat
                || usesBlockGemm(rows: job.input.shape[0], dtype: job.weight.dtype, k: job.input.shape[1])
        }
        for i in jobs.indices {
            guard jobs[i].input.rank == 2 && jobs[i].input.shape[0] > 0 else {
                if allActive { active = Array(jobs[..<i]); allActive = false }
                continue
            }
            if !allActive { active.append(jobs[i]) }
            precondition(jobs[i].input.dtype == .f32 && jobs[i].output.dtype == .f32, "linearBatch: activations must be f32")
            let (m, k, n) = (jobs[i].input.shape[0], jobs[i].input.shape[1], jobs[i].weight.shape[0])
            // Shapes compared by element: an array literal here was an allocation a job.
            let out = jobs[i].output
            precondition(jobs[i].weight.rank == 2 && jobs[i].weight.shape[1] == k && out.rank == 2 && out.shape[0] == m && out.shape[1] == n,
                         "linearBatch: input \(jobs[i].input.shape), weight \(jobs[i].weight.shape), output \(jobs[i].output.shape)")
            cuts = cuts || splitsForBlockGemm(rows: m, dtype: jobs[i].weight.dtype, k: k) != nil
            let leaf = gemm(jobs[i])
            gemmOnly = gemmOnly && leaf
            anyGemm = anyGemm || leaf
        }
        if allActive { active = jobs }
        if active.isEmpty { return }
        if cuts {
            runLinearBatch(active.flatMap { job -> [LinearJob] in
                guard let cut = splitsForBlockGemm(rows: job.input.shape[0], dtype: job.weight.dtype, k: job.input.shape[1]) else { return [job] }
                let m = job.input.shape[0]
                return [LinearJob(input: job.input.rows(0..<cut), weight: job.weight, output: job.output.rows(0..<cut)),
                        LinearJob(input: job.input.rows(cut..<m), weight: job.weight, output: job.output.rows(cut..<m))]
            }, pool: pool)
            return
        }
        if !gemmOnly {
            // Block-format weights with few rows: every job's pieces in one parallel pass of the
            // integer leaf (or the f32 block leaf for formats without one); the others (element
            // formats, and block formats with many rows) go on as one batch of matmul leaves.
            let blocks = quantizedLinearBatch(anyGemm ? active.filter { !gemm($0) } : active, pool: pool)
            // Without an integer leaf, jobs with many rows widen each panel of their weight once
            // (`blockMatmul`); the others take the f32 block leaf in one pass.
            for job in blocks where job.input.shape[0] > 16 { runMatmul(job.input, job.weight, into: job.output, pool: pool) }
            if blocks.contains(where: { $0.input.shape[0] <= 16 }) { blockLinearBatch(blocks.filter { $0.input.shape[0] <= 16 }, pool: pool) }
            if anyGemm { runLinearBatch(active.filter(gemm), pool: pool) }
            return
        }

        // Pieces: (job, first weight row, end weight row). About four pieces per thread overall,
        // in multiples of the leaf's tile, so every thread stays busy to the end.
        let step = max(4, moek_gemm_n_step())
        let slicesPerJob = max(1, (pool.threadCount * 4 + active.count - 1) / active.count)
        var pieces: [(job: Int, n0: Int, n1: Int)] = []
        for (i, job) in active.enumerated() {
            let n = job.weight.shape[0]
            let slice = max(step, ((n + slicesPerJob - 1) / slicesPerJob + step - 1) / step * step)
            var n0 = 0
            while n0 < n {
                pieces.append((i, n0, min(n, n0 + slice)))
                n0 += slice
            }
        }

        struct Raw {
            let x: UnsafePointer<Float>, w: UnsafeRawPointer, out: UnsafeMutablePointer<Float>
            /// rows: the exact row leaf; dotRows: bf16 dot products through that arithmetic's row leaf.
            let dtype: Int32, m: Int, k: Int, n: Int, rowBytes: Int, bf16: Bool, rows: Bool, dotRows: Bool
        }
        let raw = active.map { job in
            Raw(x: job.input.rawPointer.assumingMemoryBound(to: Float.self), w: job.weight.rawPointer,
                out: job.output.mutableRawPointer.assumingMemoryBound(to: Float.self), dtype: job.weight.dtype.cValue,
                m: job.input.shape[0], k: job.input.shape[1], n: job.weight.shape[0],
                rowBytes: job.input.shape[1] * job.weight.dtype.byteSize,
                bf16: usesBF16Dot(dtype: job.weight.dtype),
                rows: usesRowsLeaf(rows: job.input.shape[0], dtype: job.weight.dtype, k: job.input.shape[1]),
                dotRows: usesBF16Path(rows: job.input.shape[0], dtype: job.weight.dtype)
                    && usesBF16DotRows(rows: job.input.shape[0], k: job.input.shape[1]))
        }
        if pool.threadCount > 1 && raw.allSatisfy({ $0.m <= gemvMaxRows }) {
            streamGemvJobs(raw.map { ($0.x, $0.w, $0.out, $0.dtype, $0.m, $0.k, $0.n, $0.rowBytes, $0.bf16) }, pool: pool)
            return
        }
        // Packed-A offsets (in floats, 16-float aligned) for the jobs that take a matmul leaf;
        // jobs reading the same rows for the same leaf (an expert's gate and up) share one copy.
        struct PackKey: Hashable { let x: UnsafePointer<Float>, m: Int, k: Int, kind: Int }
        var packAt = [Int](repeating: 0, count: raw.count), firstAt: [PackKey: Int] = [:], toPack: [Int] = [], total = 0
        // (The row leaf reads f16 jobs' rows in place.)
        for (i, j) in raw.enumerated() where j.m > gemvMaxRows && !(j.rows && j.dtype != DType.bf16.cValue) {
            let key = PackKey(x: j.x, m: j.m, k: j.k, kind: j.rows ? 2 : j.dotRows ? 3 : j.bf16 ? 1 : 0)
            if let at = firstAt[key] {
                packAt[i] = at
                continue
            }
            let floats = j.rows ? j.m * j.k  // de-interleaved for the row leaf
                : j.dotRows ? (j.m * j.k + 1) / 2  // rounded to bf16 for its row leaf
                : j.bf16 ? (moek_gemm_bf16_packed_size(j.m, j.k) + 1) / 2 : moek_gemm_packed_size(j.m, j.k)
            packAt[i] = total
            firstAt[key] = total
            toPack.append(i)
            total += (floats + 15) / 16 * 16
        }
        withScratchFloats(total) { packed in
            pool.parallelFor(toPack.count) { i in
                let j = raw[toPack[i]], at = packed + packAt[toPack[i]]
                if j.rows {
                    moek_bf16_rows_permute(j.x, j.k, j.m, j.k, at)
                } else if j.dotRows {
                    moek_bf16_round_rows(j.x, j.k, j.m, j.k, UnsafeMutableRawPointer(at).assumingMemoryBound(to: UInt16.self))
                } else if j.bf16 {
                    let ap = UnsafeMutableRawPointer(at).assumingMemoryBound(to: UInt16.self)
                    moek_gemm_bf16_pack_a(j.x, j.k, j.m, j.k, 0, (j.m + 15) / 16, ap)
                } else {
                    let mr = moek_gemm_mr()
                    moek_gemm_pack_a(j.x, j.k, j.m, j.k, 0, (j.m + mr - 1) / mr, at)
                }
            }
            pieces.withUnsafeBufferPointer { pieces in
                pool.parallelFor(pieces.count) { p in
                    let (i, n0, n1) = pieces[p]
                    let j = raw[i]
                    if j.m <= gemvMaxRows {
                        gemvPiece(j.w, dtype: j.dtype, bf16Dot: j.bf16, k: j.k, x: j.x, ldx: j.k, m: j.m, out: j.out, ldo: j.n, n0: n0, n1: n1)
                    } else if j.rows {
                        let x = j.dtype == DType.bf16.cValue ? UnsafePointer(packed + packAt[i]) : j.x
                        _ = moek_gemm_rows(j.w, j.dtype, j.k, x, j.k, j.m, j.out, j.n, n0, n1, j.k)
                    } else if j.dotRows {
                        let xb = UnsafeRawPointer(packed + packAt[i]).assumingMemoryBound(to: UInt16.self)
                        _ = moek_gemm_bf16_dot_rows(j.w.assumingMemoryBound(to: UInt16.self), j.k, xb, j.m, j.out, j.n, n0, n1, j.k)
                    } else if j.bf16 {
                        let ap = UnsafeRawPointer(packed + packAt[i]).assumingMemoryBound(to: UInt16.self)
                        moek_gemm_bf16_packed(ap, j.m, j.w.assumingMemoryBound(to: UInt16.self), j.k, j.out, j.n, n0, n1, j.k)
                    } else {
                        moek_gemm_packed(packed + packAt[i], j.m, j.w, j.dtype, j.k, j.out, j.n, n0, n1, j.k)
                    }
                }
            }
        }
    }

    /// Many linear layers over one row-grouped input: rows `rowOffsets[e] ..< rowOffsets[e + 1]`
    /// of `x` go through `weights[e]`, and their results land in the same rows of `out`.
    ///
    /// - x: [R, K] f32, rows grouped by expert (the MoE dispatch permutation does this).
    /// - weights: E weights, each [N, K], of any dtype (they may differ); a weight whose group
    ///   is empty is never read.
    /// - rowOffsets: E + 1 non-decreasing offsets, from 0 to at most R.
    /// - out: [R, N] f32; rows outside every group are left as they are.
    public static func groupedMatmul(_ x: Tensor, weights: [Tensor], rowOffsets: [Int], into out: Tensor,
                                     pool: ThreadPool = .shared) {
        precondition(x.rank == 2 && out.rank == 2 && out.shape[0] == x.shape[0],
                     "groupedMatmul: x \(x.shape), out \(out.shape)")
        precondition(rowOffsets.count == weights.count + 1 && rowOffsets.first == 0
                     && (rowOffsets.last ?? 0) <= x.shape[0],
                     "groupedMatmul: \(rowOffsets.count) offsets for \(weights.count) weights, \(x.shape[0]) rows")
        var jobs: [LinearJob] = []
        for g in weights.indices {
            precondition(rowOffsets[g] <= rowOffsets[g + 1], "groupedMatmul: offsets must not decrease")
            let rows = rowOffsets[g]..<rowOffsets[g + 1]
            if rows.isEmpty { continue }
            jobs.append(LinearJob(input: x.rows(rows), weight: weights[g], output: out.rows(rows)))
        }
        linearBatch(jobs, pool: pool)
    }

    /// `groupedMatmul` with the experts' weights stacked in one tensor [E, N, K].
    public static func groupedMatmul(_ x: Tensor, stackedWeights: Tensor, rowOffsets: [Int], into out: Tensor,
                                     pool: ThreadPool = .shared) {
        precondition(stackedWeights.rank == 3, "groupedMatmul: stacked weights must be [E, N, K]")
        let views = (0..<stackedWeights.shape[0]).map { stackedWeights[$0] }
        groupedMatmul(x, weights: views, rowOffsets: rowOffsets, into: out, pool: pool)
    }

    /// A batch of matrix-vector jobs (decode), streamed (`StreamedRuns`): each thread walks its
    /// own run of the jobs' weight rows in order, telling the leaf which weight comes next so it
    /// can prefetch across the boundary (each job would otherwise start cold). bf16 weights under
    /// `bf16Activations` take the bf16 dot product (`bf16`, `usesBF16Dot`).
    static func streamGemvJobs(
        _ jobs: [(x: UnsafePointer<Float>, w: UnsafeRawPointer, out: UnsafeMutablePointer<Float>, dtype: Int32,
                  m: Int, k: Int, n: Int, rowBytes: Int, bf16: Bool)],
        pool: ThreadPool
    ) {
        StreamedRuns.cached(jobs.map { ($0.n, $0.rowBytes) }, threads: pool.threadCount).run(pool: pool) { piece, after in
            let job = jobs[piece.job]
            gemvPiece(job.w, dtype: job.dtype, bf16Dot: job.bf16, k: job.k, x: job.x, ldx: job.k, m: job.m, out: job.out, ldo: job.n,
                      n0: piece.n0, n1: piece.n1, next: after.map { jobs[$0.job].w + $0.n0 * jobs[$0.job].rowBytes })
        }
    }

    /// Linear jobs on block-format weights as one parallel pass: pieces of up to 4 activation
    /// rows against a run of weight rows (about 4 pieces per thread overall, runs of at least
    /// 16 rows), each through the block leaf (`moek_gemv_rows`), which reads the blocks once.
    static func blockLinearBatch(_ jobs: [LinearJob], pool: ThreadPool) {
        var pieces: [(job: Int, m0: Int, n0: Int, n1: Int)] = []
        let totalRows = jobs.reduce(0) { $0 + $1.weight.shape[0] * (($1.input.shape[0] + 3) / 4) }
        let run = max(16, totalRows / max(1, 4 * pool.threadCount))
        for (i, job) in jobs.enumerated() {
            let n = job.weight.shape[0]
            for m0 in stride(from: 0, to: job.input.shape[0], by: 4) {
                for n0 in stride(from: 0, to: n, by: run) { pieces.append((i, m0, n0, min(n, n0 + run))) }
            }
        }
        pool.parallelFor(pieces.count) { p in
            let (i, m0, n0, n1) = pieces[p]
            let job = jobs[i], k = job.input.shape[1], n = job.weight.shape[0], m = job.input.shape[0]
            let x = job.input.rawPointer.assumingMemoryBound(to: Float.self) + m0 * k
            let out = job.output.mutableRawPointer.assumingMemoryBound(to: Float.self) + m0 * n
            moek_gemv_rows(job.weight.rawPointer, job.weight.dtype.cValue, k, x, k, Int32(min(4, m - m0)), out, n, n0, n1, k)
        }
    }
}
