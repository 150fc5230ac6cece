import _MoEKernels

// Dimension legend: M activation rows (tokens), K input features, N output features.

/// Activation rows quantized to 8 bits for the integer block leaves: `rows` rows of
/// `moek_q8_row_bytes(K, block)` bytes each, in one 64-byte-aligned allocation.
struct QuantizedRows {
    let base: UnsafeMutableRawPointer
    let rowBytes: Int
    let rows: Int
    /// Bytes at `base` (`ScratchBuffers`).
    private let capacity: Int

    /// Quantizes rows [0, m) of x (row stride ldx) against `block`-element scales; rows are
    /// split over the pool when there are many.
    init(x: UnsafePointer<Float>, ldx: Int, rows m: Int, k: Int, block: Int, pool: ThreadPool) {
        self.init(rows: m, k: k, block: block)
        fill(from: x, ldx: ldx, k: k, block: block, pool: pool)
    }

    /// Room for `m` rows, not yet written (`fill` writes them).
    init(rows m: Int, k: Int, block: Int) {
        rowBytes = moek_q8_row_bytes(k, Int32(block))
        rows = m
        (base, capacity) = ScratchBuffers.take(m * rowBytes)
    }

    /// Quantizes the rows from x, over `pool` when there are many (nil: on this thread).
    func fill(from x: UnsafePointer<Float>, ldx: Int, k: Int, block: Int, pool: ThreadPool?) {
        let (base, rowBytes) = (base, rowBytes)
        guard let pool else {
            for i in 0..<rows { moek_q8_quantize(x + i * ldx, k, Int32(block), base + i * rowBytes) }
            return
        }
        Kernels.parallelChunks(rows, grain: max(1, (1 << 16) / max(1, k)), pool: pool) { r in
            for i in r { moek_q8_quantize(x + i * ldx, k, Int32(block), base + i * rowBytes) }
        }
    }

    func row(_ i: Int) -> UnsafeRawPointer { UnsafeRawPointer(base + i * rowBytes) }
    func deallocate() { ScratchBuffers.give(base, capacity: capacity) }
}

/// The quantized copies of a batch's activation inputs, one for each distinct input (by
/// address, rows, K and block): an expert's gate and up projections read the same rows and
/// share one copy. `deallocate()` returns them all.
struct QuantizedInputs {
    private(set) var made: [(x: UnsafeRawPointer, rows: Int, k: Int, block: Int, q: QuantizedRows)] = []

    /// The copy for `rows` rows of K at x against `block`, made (room only, not yet filled)
    /// the first time x is asked for; `isNew` says it was.
    mutating func rows(for x: UnsafeRawPointer, rows: Int, k: Int, block: Int) -> (q: QuantizedRows, isNew: Bool) {
        if let done = made.first(where: { $0.x == x && $0.rows == rows && $0.k == k && $0.block == block }) {
            return (done.q, false)
        }
        let q = QuantizedRows(rows: rows, k: k, block: block)
        made.append((x, rows, k, block, q))
        return (q, true)
    }

    /// The one row of K at x quantized against `block`, made and filled on this thread the first
    /// time it is asked for.
    mutating func filledRow(_ x: UnsafePointer<Float>, k: Int, block: Int) -> QuantizedRows {
        let (q, isNew) = rows(for: UnsafeRawPointer(x), rows: 1, k: k, block: block)
        if isNew { q.fill(from: x, ldx: k, k: k, block: block, pool: nil) }
        return q
    }

    func deallocate() { for m in made { m.q.deallocate() } }
}

extension Kernels {
    /// Whether block-format weights multiply 8-bit quantized activations in integers (the
    /// default, as llama.cpp does: about twice the speed) or f32 activations against each block
    /// widened in registers (exact to the dequantized weights, up to summation order). Set it
    /// before running a model, not while one runs.
    nonisolated(unsafe) public static var integerActivations = true

    /// The activation block (32 or 256) that a block-format weight of `dtype` with rows of `k`
    /// elements multiplies against in 8-bit integers on this machine, or 0 where its products
    /// run in f32 (element formats, formats without an integer leaf, other instruction sets).
    public static func activationBlock(for dtype: DType, k: Int) -> Int {
        if dtype.isElementFormat || !integerActivations { return 0 }
        let block = Int(moek_q8_block(dtype.cValue))
        return block > 0 && k % block == 0 ? block : 0
    }

    /// `out = x W^T` for a block-format W through the integer leaves: the activation rows are
    /// quantized once, then each weight row's blocks are multiplied against 4 of them at a
    /// time. At decode (a few rows), weight rows are split over the threads; at prefill, each
    /// task takes a tile of weight rows small enough to stay in L1 and runs it against every
    /// activation row. Returns false, computing nothing, where `dtype` has no integer leaf.
    static func quantizedLinear(x: UnsafePointer<Float>, ldx: Int, rows m: Int, w: UnsafeRawPointer, dtype: DType,
                                n: Int, k: Int, out: UnsafeMutablePointer<Float>, ldo: Int, pool: ThreadPool) -> Bool {
        let block = activationBlock(for: dtype, k: k)
        if block == 0 { return false }
        let xq = QuantizedRows(x: x, ldx: ldx, rows: m, k: k, block: block, pool: pool)
        defer { xq.deallocate() }
        let rowBytes = dtype.storageBytes(elements: k)
        if m <= gemvMaxRows && pool.threadCount > 1 {  // decode: streamed runs, as a batch of one
            streamQuantizedJobs([QuantizedJob(w: w, dtype: dtype, n: n, k: k, x: xq, out: out, ldo: ldo)], pool: pool)
            return true
        }
        // Decode on one thread: about 4 runs of weight rows. Prefill: tiles of ~24 KB of weight.
        // A leaf that repacks weight rows in groups (the K-quants' rows in lanes) gets whole
        // multiples of `moek_q8_row_group` (4 groups of 16, so it can fetch a group's weights
        // while the one before computes), and every activation row in one pass, so each group is
        // repacked once.
        let group = m <= gemvMaxRows ? 1 : Int(moek_q8_row_group(dtype.cValue, Int32(clamping: m), k))
        let tile = m <= gemvMaxRows ? max(1, (n + pool.threadCount * 4 - 1) / (pool.threadCount * 4))
                                    : roundedToGroup(min((n + pool.threadCount - 1) / pool.threadCount, (24 << 10) / max(1, rowBytes)), group)
        let tiles = (n + tile - 1) / tile
        let chunk = group > 1 ? m : 32  // activation rows per pass over a tile: their quantized rows stay in L2
        pool.parallelFor(tiles) { t in
            let n0 = t * tile, n1 = min(n, n0 + tile)
            for m0 in stride(from: 0, to: m, by: chunk) {
                _ = moek_gemv_rows_q8(w, dtype.cValue, k, xq.row(m0), xq.rowBytes, Int32(min(chunk, m - m0)),
                                      out + m0 * ldo, ldo, n0, n1, k)
            }
        }
        return true
    }

    /// Linear jobs on block-format weights with integer leaves, as one parallel pass: each
    /// distinct input is quantized once, then pieces of (all a job's rows, a run of its weight
    /// rows) go to the pool together, so an MoE layer's experts share one barrier whatever
    /// their row counts. Returns the jobs it did not take (no integer leaf for their format).
    ///
    /// Decode calls this a few times a layer with one row a job, so the jobs are read once into
    /// plain descriptors (no copies of their tensors, no hashing): the calls' own cost was about
    /// a tenth of a small model's decode step, most of it while the other threads waited.
    static func quantizedLinearBatch(_ jobs: [LinearJob], pool: ThreadPool) -> [LinearJob] {
        var taken: [QuantizedJob] = [], rest: [LinearJob] = []
        var inputs = QuantizedInputs()
        defer { inputs.deallocate() }
        taken.reserveCapacity(jobs.count)
        for i in jobs.indices {
            let k = jobs[i].input.shape[1], dtype = jobs[i].weight.dtype
            let block = activationBlock(for: dtype, k: k)
            if block == 0 {
                rest.append(jobs[i])
                continue
            }
            let q = inputs.rows(for: jobs[i].input.rawPointer, rows: jobs[i].input.shape[0], k: k, block: block).q
            let n = jobs[i].weight.shape[0]
            taken.append(QuantizedJob(w: jobs[i].weight.rawPointer, dtype: dtype, n: n, k: k, x: q,
                                      out: jobs[i].output.mutableRawPointer.assumingMemoryBound(to: Float.self), ldo: n))
        }
        if taken.isEmpty { return rest }
        let made = inputs.made
        // Decode's inputs (an expert's row each) are a microsecond each: one parallel pass over
        // them, where each alone is too small to split; prefill's split their rows.
        if made.count > 1 && made.allSatisfy({ $0.rows <= gemvMaxRows }) {
            pool.parallelFor(made.count) { i in
                made[i].q.fill(from: made[i].x.assumingMemoryBound(to: Float.self), ldx: made[i].k, k: made[i].k,
                               block: made[i].block, pool: nil)
            }
        } else {
            for m in made { m.q.fill(from: m.x.assumingMemoryBound(to: Float.self), ldx: m.k, k: m.k, block: m.block, pool: pool) }
        }
        if pool.threadCount > 1 && taken.allSatisfy({ $0.xRows <= gemvMaxRows }) {
            streamQuantizedJobs(taken, pool: pool)
            return rest
        }
        // Runs of weight rows: about 4 pieces per thread, at least 16 rows, and (for jobs of many
        // activation rows) at most ~24 KB of weight, which stays in L1 across the row groups, or
        // a whole multiple of the K-quant lanes leaf's `moek_q8_row_group`.
        let totalRows = taken.reduce(0) { $0 + $1.n }
        let share = max(16, totalRows / max(1, 4 * pool.threadCount))
        var pieces: [(job: Int, n0: Int, n1: Int)] = []
        for (i, job) in taken.enumerated() {
            let run = job.xRows <= gemvMaxRows ? share
                : roundedToGroup(min(share, (24 << 10) / max(1, job.rowBytes)),
                                 Int(moek_q8_row_group(job.dtype.cValue, Int32(clamping: job.xRows), job.k)))
            for n0 in stride(from: 0, to: job.n, by: run) { pieces.append((i, n0, min(job.n, n0 + run))) }
        }
        pool.parallelFor(pieces.count) { p in
            let (i, n0, n1) = pieces[p]
            taken[i].run(n0, n1)
        }
        return rest
    }

    /// A piece of `rows` weight rows (at least 4) as a whole number of the leaf's row groups.
    static func roundedToGroup(_ rows: Int, _ group: Int) -> Int {
        group > 1 ? max(group, rows / group * group) : max(4, rows)
    }

    /// One decode product for `streamQuantizedJobs`: out[i, r] (rows ldo apart) = x's row i
    /// times weight row r, for W [n, k] of block format `dtype`.
    struct QuantizedJob {
        let w: UnsafeRawPointer, dtype: DType, n: Int, k: Int
        /// The quantized activation rows: `xRows` rows `xRowBytes` apart from `x`.
        let x: UnsafeRawPointer, xRowBytes: Int, xRows: Int
        let out: UnsafeMutablePointer<Float>, ldo: Int
        var rowBytes: Int { dtype.storageBytes(elements: k) }

        init(w: UnsafeRawPointer, dtype: DType, n: Int, k: Int, x: QuantizedRows, out: UnsafeMutablePointer<Float>, ldo: Int) {
            self.init(w: w, dtype: dtype, n: n, k: k, x: x.row(0), xRowBytes: x.rowBytes, xRows: x.rows, out: out, ldo: ldo)
        }

        init(w: UnsafeRawPointer, dtype: DType, n: Int, k: Int, x: UnsafeRawPointer, xRowBytes: Int, xRows: Int,
             out: UnsafeMutablePointer<Float>, ldo: Int) {
            (self.w, self.dtype, self.n, self.k, self.x, self.xRowBytes, self.xRows, self.out, self.ldo)
                = (w, dtype, n, k, x, xRowBytes, xRows, out, ldo)
        }

        /// Output rows [n0, n1) of this product, through the integer leaf.
        func run(_ n0: Int, _ n1: Int) {
            _ = moek_gemv_rows_q8(w, dtype.cValue, k, x, xRowBytes, Int32(xRows), out, ldo, n0, n1, k)
        }
    }

    /// Decode's quantized products, streamed (`StreamedRuns`): before each piece the thread
    /// prefetches the first 4 KB of its next one, which the leaf's own look-ahead (within a
    /// piece) does not reach, so an MoE layer's small experts stream without a cold start each.
    static func streamQuantizedJobs(_ jobs: [QuantizedJob], pool: ThreadPool) {
        let shapes = jobs.map { (n: $0.n, rowBytes: $0.rowBytes) }
        StreamedRuns.cached(shapes, threads: pool.threadCount).run(pool: pool) { piece, after in
            if let p = after {
                moek_prefetch_l2(jobs[p.job].w + p.n0 * shapes[p.job].rowBytes, min(4096, (p.n1 - p.n0) * shapes[p.job].rowBytes))
            }
            jobs[piece.job].run(piece.n0, piece.n1)
        }
    }
}
