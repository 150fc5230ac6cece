import _MoEKernels

// Dimension legend: M output rows, N output columns, K the reduction.

/// One product in a `Kernels.gemmBatch`: `out = A B^T` (or `out += A B^T` with `accumulate`),
/// reducing over K; out is f32 [M, N].
///
/// A is [M, K]: `a` itself, or with `transposeA` `a` [K, M] read transposed. B is [N, K]: `b`
/// itself (any dtype), or with `transposeB` `b` [K, N] (f32) read transposed. Row views of larger
/// tensors are fine (each operand is read with its own row length as stride).
public struct GemmJob: Sendable {
    public var a: Tensor, b: Tensor, out: Tensor
    public var transposeA: Bool, transposeB: Bool, accumulate: Bool
    /// Jobs of a batch given the same group (their outputs all the same shape) run together on
    /// each block of output, in the order given, and `gemmBatch`'s `finish` then sees the block
    /// of all of them: an MoE expert's gate and up products, so SwiGLU runs on each block while
    /// it is in cache. Nil: the job's group is its output (see `gemmBatch`).
    public var group: Int?
    /// Row indices into `a`: A's row i is row `aRows[i]` of `a`, or with `transposeA` (A
    /// stored [K, M]) its reduction row k is row `aRows[k]` of `a`. With `bRows` (and
    /// `transposeB`), B's reduction row k is row `bRows[k]` of `b`. The rows are read in place
    /// where the leaf can (an MoE's token rows grouped by expert, with no gathered copy), else
    /// gathered first. Nil: the rows in order.
    public var aRows: [Int]?, bRows: [Int]?
    /// Whether every block of this job's output (and so of its chain or group) spans all its
    /// columns: split across threads by rows only, so `gemmBatch`'s `finish` sees whole rows
    /// (for a step that needs a row at once, such as a row's dot product).
    public var wholeRows: Bool

    public init(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false, into out: Tensor,
                accumulate: Bool = false, group: Int? = nil, aRows: [Int]? = nil, bRows: [Int]? = nil,
                wholeRows: Bool = false) {
        self.a = a
        self.b = b
        self.out = out
        self.transposeA = transposeA
        self.transposeB = transposeB
        self.accumulate = accumulate
        self.group = group
        self.aRows = aRows
        self.bRows = bRows
        self.wholeRows = wholeRows
    }

    /// (M, N, K), after checking the shapes, dtypes and row indices agree.
    var dimensions: (m: Int, n: Int, k: Int) { withUnsafePointer(to: self) { Self.dimensions(of: $0) } }

    /// `dimensions`, reading the job where it is. A batch's jobs are not copied (each holds
    /// three tensors and two row lists), so the failure messages are built only on failure: a
    /// message closure that captured the job would copy it.
    static func dimensions(of job: UnsafePointer<GemmJob>) -> (m: Int, n: Int, k: Int) {
        let (a, b, out) = (job.pointee.a, job.pointee.b, job.pointee.out)  // (no copies: borrowed)
        if !(a.dtype == .f32 && out.dtype == .f32 && a.rank == 2 && b.rank == 2 && out.rank == 2) {
            invalid("a \(a.shape) \(a.dtype), b \(b.shape), out \(out.shape) \(out.dtype)")
        }
        let (transposeA, transposeB) = (job.pointee.transposeA, job.pointee.transposeB)
        if transposeB && b.dtype != .f32 { invalid("a transposed b must be f32") }
        if job.pointee.bRows != nil && !transposeB { invalid("bRows index b's rows, so B must be transposed ([K, N])") }
        let (aCount, bCount) = (a.shape[0], b.shape[0])
        if let rows = job.pointee.aRows, !rows.allSatisfy({ $0 >= 0 && $0 < aCount }) { invalid("a row index outside 0..<\(aCount)") }
        if let rows = job.pointee.bRows, !rows.allSatisfy({ $0 >= 0 && $0 < bCount }) { invalid("a row index outside 0..<\(bCount)") }
        let (aRowCount, bRowCount) = (job.pointee.aRows?.count ?? aCount, job.pointee.bRows?.count ?? bCount)
        let (m, k) = transposeA ? (a.shape[1], aRowCount) : (aRowCount, a.shape[1])
        let (n, kb) = transposeB ? (b.shape[1], bRowCount) : (bCount, b.shape[1])
        if !(k == kb && out.shape[0] == m && out.shape[1] == n) { invalid("A [\(m), \(k)], B [\(n), \(kb)], out \(out.shape)") }
        return (m, n, k)
    }

    @inline(never)
    private static func invalid(_ problem: String) -> Never { preconditionFailure("gemm: \(problem)") }
}

extension Kernels {
    /// One `GemmJob`: so a backward pass gets `dx += dy W` as
    /// `gemm(dy, W, transposeB: true, into: dx, accumulate: true)` and `dW += dy^T x` as
    /// `gemm(dy, x, transposeA: true, transposeB: true, into: dW, accumulate: true)`, with no
    /// transposed copies: the packing that the matmul leaf does anyway reads either layout.
    public static func gemm(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false,
                            into out: Tensor, accumulate: Bool = false, pool: ThreadPool = .shared) {
        let job = GemmJob(a, b, transposeA: transposeA, transposeB: transposeB, into: out, accumulate: accumulate)
        if !transposeA && !transposeB && !accumulate {
            _ = job.dimensions
            matmul(a, b, into: out, pool: pool)  // keeps the matrix-vector and bf16 leaves
            return
        }
        gemmBatch([job], pool: pool)
    }

    /// `gemm` into a new tensor.
    public static func gemm(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false,
                            pool: ThreadPool = .shared) -> Tensor {
        let out = Tensor(uninitialized: [transposeA ? a.shape[1] : a.shape[0], transposeB ? b.shape[1] : b.shape[0]])
        gemm(a, b, transposeA: transposeA, transposeB: transposeB, into: out, pool: pool)
        return out
    }

    /// Runs many products in two parallel passes: every job's A is packed (in pieces of
    /// panels), then every block of every output is computed, all from one shared queue. So an
    /// MoE backward's per-expert products share the threads without a barrier per expert, and a
    /// single big product still splits across threads. Jobs with no output are skipped; one with
    /// an empty reduction zeroes its output (or leaves it, accumulating). Jobs reading the same A
    /// (same memory, shape and layout) pack it once.
    ///
    /// Outputs must be disjoint, except that jobs writing the very same output (same memory and
    /// shape) form a chain: each block of that output runs the chain's products in the order
    /// given, so later jobs may add to earlier ones (`dx = dq Wq + dk Wk + dv Wv` as one
    /// overwriting job then two accumulating ones). Jobs can also be grouped explicitly
    /// (`GemmJob.group`), and then run together on each block the same way.
    ///
    /// `finish(job, rows, columns)`, when given, runs once each block of a chain or group is
    /// done, on the thread that did it, with the index (in `jobs`) of the chain's or group's
    /// first job: an elementwise step on that block of the outputs then finds it in cache.
    /// Blocks of different chains may finish at the same time on different threads.
    public static func gemmBatch(_ jobs: [GemmJob], pool: ThreadPool = .shared,
                                 finish: ((Int, Range<Int>, Range<Int>) -> Void)? = nil) {
        // The jobs are read where they are: each holds three tensors and two row lists, and
        // copying them (then releasing the copies) cost an MoE layer's 256-job batch about
        // 100 us, on one thread while the others waited.
        jobs.withUnsafeBufferPointer { jobs in gemmBatch(jobs, pool: pool, finish: finish) }
    }

    private static func gemmBatch(_ jobs: UnsafeBufferPointer<GemmJob>, pool: ThreadPool,
                                  finish: ((Int, Range<Int>, Range<Int>) -> Void)?) {
        var live: [(index: Int, m: Int, n: Int, k: Int)] = []
        live.reserveCapacity(jobs.count)
        for index in jobs.indices {
            let (m, n, k) = GemmJob.dimensions(of: jobs.baseAddress! + index)
            if m == 0 || n == 0 || (k == 0 && jobs[index].accumulate) { continue }
            live.append((index, m, n, k))
        }
        if live.isEmpty { return }
        // The leaf reads A as it is (no packing pass), and indexed rows in place; otherwise the
        // indexed rows are gathered first (and the gathered copies live until the batch is done).
        let direct = live.allSatisfy { readsAUnpacked(k: $0.k, n: $0.n, transposed: jobs[$0.index].transposeA) }
        var indices: [Int] = []
        func place(_ rows: [Int]?) -> Int {
            guard let rows else { return -1 }
            indices += rows
            return indices.count - rows.count
        }
        struct Gathered: Hashable { let source: UInt, rows: UInt, count: Int }
        var gathered: [Gathered: Tensor] = [:]  // jobs with the same rows (gate and up) share one copy
        var rowCopies: [(from: UnsafePointer<Float>, to: UnsafeMutablePointer<Float>, count: Int)] = []
        func materialize(_ t: Tensor, _ rows: [Int]?) -> UnsafeRawPointer {
            guard let rows else { return t.rawPointer }
            let key = Gathered(source: UInt(bitPattern: t.rawPointer),
                               rows: rows.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }, count: rows.count)
            if let copy = gathered[key] { return copy.rawPointer }
            let d = t.shape[1], copy = Tensor(uninitialized: [rows.count, d])  // every row is copied below
            let from = t.rawPointer.assumingMemoryBound(to: Float.self), to = copy.mutableRawPointer.assumingMemoryBound(to: Float.self)
            for (r, row) in rows.enumerated() { rowCopies.append((from + row * d, to + r * d, d)) }
            gathered[key] = copy
            return copy.rawPointer
        }
        var raw: [PreparedGemm] = []
        raw.reserveCapacity(live.count)
        for (index, m, n, k) in live {
            precondition(jobs[index].b.dtype.isElementFormat, "gemm: \(jobs[index].b.dtype) weights need the block formats' fused kernels")
            let a = direct ? jobs[index].a.rawPointer : materialize(jobs[index].a, jobs[index].aRows)
            let b = direct ? jobs[index].b.rawPointer : materialize(jobs[index].b, jobs[index].bRows)
            raw.append(PreparedGemm(a: a.assumingMemoryBound(to: Float.self), b: b,
                           out: jobs[index].out.mutableRawPointer.assumingMemoryBound(to: Float.self), m: m, n: n, k: k,
                           dtype: jobs[index].b.dtype.cValue, transposeA: jobs[index].transposeA,
                           wt: jobs[index].transposeB ? 1 : 0, acc: jobs[index].accumulate ? 1 : 0,
                           group: jobs[index].group, index: index,
                           aRows: direct ? place(jobs[index].aRows) : -1, bRows: direct ? place(jobs[index].bRows) : -1,
                           wholeRows: jobs[index].wholeRows))
        }
        defer { withExtendedLifetime(gathered) {} }  // the copies `raw` points into
        // Every job's gathered rows in one parallel pass (one pass per job cost a barrier each: an
        // MoE layer's 64 experts made the AVX2 training step 8% slower).
        rowCopies.withUnsafeBufferPointer { copies in
            parallelRows(copies.count, cost: copies.first?.count ?? 1, pool: pool) { c in
                copies[c].to.update(from: copies[c].from, count: copies[c].count)
            }
        }
        let chains = outputChains(raw)
        if direct {
            indices.withUnsafeBufferPointer { ix in gemmDirect(raw, chains: chains, rows: ix.baseAddress, pool: pool, finish: finish) }
            return
        }
        // Jobs that read the same A (an MoE expert's gate and up projections) share one packing.
        struct PackKey: Hashable { let a: UInt, m: Int, k: Int, transposeA: Bool }
        var slotIndex: [PackKey: Int] = [:], slotOf: [Int] = [], slotJob: [Int] = []
        for (i, j) in raw.enumerated() {
            let key = PackKey(a: UInt(bitPattern: j.a), m: j.m, k: j.k, transposeA: j.transposeA)
            if let slot = slotIndex[key] {
                slotOf.append(slot)
            } else {
                slotIndex[key] = slotJob.count
                slotOf.append(slotJob.count)
                slotJob.append(i)
            }
        }
        let mr = moek_gemm_mr()
        var packPieces: [(job: Int, t0: Int, t1: Int)] = []
        var packedOffset = [Int](repeating: 0, count: slotJob.count + 1)
        for (slot, i) in slotJob.enumerated() {
            let j = raw[i]
            packedOffset[slot + 1] = packedOffset[slot] + (moek_gemm_packed_size(j.m, j.k) + 15) / 16 * 16
            let panels = (j.m + mr - 1) / mr, panelChunk = max(1, (1 << 14) / max(1, mr * j.k))
            for t0 in stride(from: 0, to: panels, by: panelChunk) { packPieces.append((i, t0, min(panels, t0 + panelChunk))) }
        }
        let pieces = outputPieces(raw, chains: chains, pool: pool)
        withScratchFloats(packedOffset[slotJob.count]) { packed in
            packPieces.withUnsafeBufferPointer { packPieces in
                pool.parallelFor(packPieces.count) { p in
                    let (i, t0, t1) = packPieces[p]
                    let j = raw[i]
                    let dst = packed + packedOffset[slotOf[i]]
                    if j.transposeA {
                        moek_gemm_pack_a_t(j.a, j.m, j.m, j.k, t0, t1, dst)
                    } else {
                        moek_gemm_pack_a(j.a, j.k, j.m, j.k, t0, t1, dst)
                    }
                }
            }
            chains.withBuffers { order, start in
                pieces.withUnsafeBufferPointer { pieces in
                    pool.parallelFor(pieces.count) { p in
                        let (c, n0, n1) = pieces[p]
                        for q in start[c]..<start[c + 1] {
                            let i = order[q], j = raw[i]
                            moek_gemm_packed_ex(packed + packedOffset[slotOf[i]], j.m, j.b, j.dtype, j.wt != 0 ? j.n : j.k, j.wt,
                                                j.acc, j.out, j.n, n0, n1, j.k)
                        }
                        let first = raw[order[start[c]]]
                        finish?(first.index, 0..<first.m, n0..<n1)
                    }
                }
            }
        }
    }

    /// Rows `rows` of x [R, d] as a new [rows.count, d] tensor, copied in parallel on `pool`.
    public static func gatherRows(_ x: Tensor, _ rows: [Int], pool: ThreadPool? = nil) -> Tensor {
        let d = x.shape[1]
        let out = Tensor(uninitialized: [rows.count, d])  // every row is copied below
        let src = x.rawPointer.assumingMemoryBound(to: Float.self), dst = out.mutableFloats
        guard let base = dst.baseAddress else { return out }
        rows.withUnsafeBufferPointer { rows in
            parallelRows(rows.count, cost: d, pool: pool) { row in
                (base + row * d).update(from: src + rows[row] * d, count: d)
            }
        }
        return out
    }

    /// Whether a product skips packing A (`moek_gemm_direct`): where the path has the leaf, for
    /// A stored transposed (each k is a contiguous run of rows), for row-major A up to K 1536
    /// unless its rows are a multiple of 4 KiB apart, and for any K when N is at most two tiles
    /// wide. The leaf reads a panel's 12 rows at once: rows 4 KiB apart (K 1024, 2048, 3072 in
    /// f32) all fall in one L1 set and evict each other (one thread, [512 x 1024] x [1024 x
    /// 1024]: 65 against 89 GFLOP/s packed), and past K 1536 the rows' slices sit so far apart
    /// that the reads stall when many column tiles reread them (f32 [128 x 4096] x [4096 x
    /// 14336]: 129 against 172 GFLOP/s packed, 2 threads). Elsewhere packing costs 3-10% of the
    /// product (K 688 and 1376, a dense FFN's down product and its backward: 101-105 against
    /// 92-102 GFLOP/s), or as much as the product itself for an A read by one or two tiles (a
    /// LoRA's rank-16 products).
    static func readsAUnpacked(k: Int, n: Int = .max, transposed: Bool = false) -> Bool {
        (transposed || n <= 64 || (k <= 1536 && k % 1024 != 0)) && moek_gemm_direct_supported() != 0
    }

    /// The jobs grouped, in order: by `GemmJob.group` where given, else one chain per distinct
    /// output (see `gemmBatch`).
    private static func outputChains(_ jobs: [PreparedGemm]) -> Chains {
        enum Key: Hashable { case group(Int), output(UInt) }
        var chainOf: [Key: Int] = [:], jobChain: [Int] = [], first: [Int] = []  // per chain: its first job
        chainOf.reserveCapacity(jobs.count)
        jobChain.reserveCapacity(jobs.count)
        for (i, j) in jobs.enumerated() {
            let key = j.group.map(Key.group) ?? .output(UInt(bitPattern: j.out))
            if let c = chainOf[key] {
                precondition(jobs[first[c]].m == j.m && jobs[first[c]].n == j.n,
                             "gemmBatch: jobs of one output or group must have one shape")
                jobChain.append(c)
            } else {
                chainOf[key] = first.count
                jobChain.append(first.count)
                first.append(i)
            }
        }
        // Each chain's jobs in the order given, chains one after another (a counting sort).
        var start = [Int](repeating: 0, count: first.count + 1)
        for c in jobChain { start[c + 1] += 1 }
        for c in first.indices { start[c + 1] += start[c] }
        var next = start, order = [Int](repeating: 0, count: jobs.count)
        for (i, c) in jobChain.enumerated() {
            order[next[c]] = i
            next[c] += 1
        }
        return Chains(order: order, start: start)
    }

    /// The (chain, run of B rows) pieces of a batch for the packed path: about eight per thread
    /// overall, none under ~0.5 MFLOP, in whole leaf tiles; largest first, so the threads finish
    /// together (an MoE's experts get uneven rows). Every chain writes its own output, so the
    /// order does not change any result.
    private static func outputPieces(_ jobs: [PreparedGemm], chains: Chains, pool: ThreadPool) -> [(chain: Int, n0: Int, n1: Int)] {
        let step = moek_gemm_n_step()
        let target = pieceFlops(jobs, pool: pool)
        var pieces: [(chain: Int, n0: Int, n1: Int)] = []
        var rowCost: [Int] = []  // per chain: the flops of one output column
        for c in 0..<chains.count {
            let chain = chains[c], j = jobs[chain.first!], cost = chain.reduce(0) { $0 + 2 * jobs[$1].m * jobs[$1].k }
            rowCost.append(cost)
            let whole = chain.contains { jobs[$0].wholeRows }
            let slice = whole ? max(1, j.n) : max(1, target / max(1, cost * step)) * step
            for n0 in stride(from: 0, to: j.n, by: slice) { pieces.append((c, n0, min(j.n, n0 + slice))) }
        }
        return largestFirst(pieces) { rowCost[$0.chain] * ($0.n1 - $0.n0) }
    }

    /// The work a piece of a batch should hold: about an eighth of a thread's share (the last
    /// piece is the other threads' wait), at least ~0.5 MFLOP (below that the hand-out costs
    /// more than it balances).
    private static func pieceFlops(_ jobs: [PreparedGemm], pool: ThreadPool) -> Int {
        let total = jobs.reduce(0) { $0 + 2 * $1.m * $1.n * $1.k }
        return max(1 << 19, total / max(1, pool.threadCount * 8))
    }

    /// `pieces` sorted by `cost`, largest first; ties keep their order.
    private static func largestFirst<P>(_ pieces: [P], cost: (P) -> Int) -> [P] {
        pieces.enumerated().sorted { (x, y) in
            let (cx, cy) = (cost(x.element), cost(y.element))
            return cx != cy ? cx > cy : x.offset < y.offset
        }.map(\.element)
    }

    /// Splits an [m, n] output into about `count` blocks of whole leaf tiles: runs of column
    /// tiles first (each run packs its weight blocks once for all rows), then, when there are
    /// fewer column tiles than blocks wanted, runs of row panels too. A linear layer with 96
    /// outputs has only 3 column tiles: split by columns alone, one of 2 threads did 2 of them
    /// while the other waited. With `wholeRows`, by rows only.
    static func outputBlocks(m: Int, n: Int, count: Int, wholeRows: Bool = false) -> [(m0: Int, m1: Int, n0: Int, n1: Int)] {
        let nStep = moek_gemm_n_step(), mStep = moek_gemm_mr()
        let nTiles = (n + nStep - 1) / nStep, mPanels = (m + mStep - 1) / mStep
        let nRuns = wholeRows ? 1 : max(1, min(count, nTiles))
        let mRuns = max(1, min(mPanels, (count + nRuns - 1) / nRuns))
        var blocks: [(m0: Int, m1: Int, n0: Int, n1: Int)] = []
        for a in 0..<mRuns {
            let m0 = min(m, a * mPanels / mRuns * mStep), m1 = min(m, (a + 1) * mPanels / mRuns * mStep)
            for b in 0..<nRuns {
                let n0 = min(n, b * nTiles / nRuns * nStep), n1 = min(n, (b + 1) * nTiles / nRuns * nStep)
                if m0 < m1 && n0 < n1 { blocks.append((m0, m1, n0, n1)) }
            }
        }
        return blocks
    }

    /// `gemmBatch` on a path whose leaf reads A unpacked: one parallel pass over blocks of the
    /// outputs (`outputBlocks`), largest first, each block running its chain's products in
    /// order. A block of rows reads its rows of A and writes its rows of the output, so it needs
    /// no packing pass and no copy.
    private static func gemmDirect(_ jobs: [PreparedGemm], chains: Chains, rows: UnsafePointer<Int>?, pool: ThreadPool,
                                   finish: ((Int, Range<Int>, Range<Int>) -> Void)?) {
        let target = pieceFlops(jobs, pool: pool)
        var pieces: [(chain: Int, m0: Int, m1: Int, n0: Int, n1: Int)] = []
        var depth: [Int] = []  // per chain: the summed reduction length
        for c in 0..<chains.count {
            let chain = chains[c], j = jobs[chain.first!], k = chain.reduce(0) { $0 + jobs[$1].k }
            depth.append(k)
            let wanted = (2 * j.m * j.n * k + target - 1) / target
            let whole = chain.contains { jobs[$0].wholeRows }
            for b in outputBlocks(m: j.m, n: j.n, count: wanted, wholeRows: whole) { pieces.append((c, b.m0, b.m1, b.n0, b.n1)) }
        }
        let sorted = largestFirst(pieces) { ($0.m1 - $0.m0) * ($0.n1 - $0.n0) * depth[$0.chain] }
        chains.withBuffers { order, start in
            sorted.withUnsafeBufferPointer { pieces in
                jobs.withUnsafeBufferPointer { jobs in
                    pool.parallelFor(pieces.count) { p in
                        let (c, m0, m1, n0, n1) = pieces[p]
                        for q in start[c]..<start[c + 1] {
                            let j = jobs[order[q]]
                            // Row m0 of A: row m0 of a [M, K] matrix (or through the index), or column m0 of
                            // one stored [K, M].
                            let aix = j.aRows < 0 ? nil : rows.map { $0 + j.aRows + (j.transposeA ? 0 : m0) }
                            let wix = j.bRows < 0 ? nil : rows.map { $0 + j.bRows }
                            let a = j.transposeA ? j.a + m0 : aix != nil ? j.a : j.a + m0 * j.k
                            moek_gemm_direct_indexed(a, j.transposeA ? j.m : j.k, aix, j.transposeA ? 1 : 0, m1 - m0, j.b, j.dtype,
                                                     j.wt != 0 ? j.n : j.k, j.wt, wix, j.acc, j.out + m0 * j.n, j.n, n0, n1, j.k)
                        }
                        finish?(jobs[order[start[c]]].index, m0..<m1, n0..<n1)
                    }
                }
            }
        }
    }
}

/// A batch's jobs grouped into chains (see `gemmBatch`), flat: chain c is the jobs
/// `order[start[c]..<start[c + 1]]`, in the order given. (Nested arrays cost a retain and a
/// release per block of work, on every thread.)
private struct Chains {
    let order: [Int], start: [Int]
    var count: Int { start.count - 1 }
    /// Chain c's jobs (indices into the batch).
    subscript(c: Int) -> ArraySlice<Int> { order[start[c]..<start[c + 1]] }

    /// `body(order, start)` over the arrays' memory, for loops run by many threads.
    func withBuffers<R>(_ body: (UnsafeBufferPointer<Int>, UnsafeBufferPointer<Int>) -> R) -> R {
        order.withUnsafeBufferPointer { order in start.withUnsafeBufferPointer { start in body(order, start) } }
    }
}

/// A `GemmJob` checked and reduced to what the C leaves take.
private struct PreparedGemm {
    let a: UnsafePointer<Float>, b: UnsafeRawPointer, out: UnsafeMutablePointer<Float>
    let m: Int, n: Int, k: Int, dtype: Int32, transposeA: Bool, wt: Int32, acc: Int32
    /// The job's group, and its index in the caller's list.
    let group: Int?, index: Int
    /// Where the job's A and B row indices start in the batch's index list (-1: none).
    let aRows: Int, bRows: Int
    /// `GemmJob.wholeRows`.
    let wholeRows: Bool
}

