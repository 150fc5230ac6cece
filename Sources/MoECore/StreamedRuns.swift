import Synchronization

/// How decode's matrix-vector jobs share the threads: each thread gets one contiguous run of
/// the jobs' weight rows, of about equal bytes, cut into a few pieces that it streams in order
/// (so the hardware prefetcher and the leaf's look-ahead follow one stream, and each piece's
/// successor can be prefetched across a job boundary). A thread that finishes its run takes the
/// next pieces of the runs still going, so a thread that started late or ran slow does not hold
/// the others at the barrier.
struct StreamedRuns {
    /// A run of weight rows [n0, n1) of job `job`.
    typealias Piece = (job: Int, n0: Int, n1: Int)
    /// Per thread, its pieces in order.
    let runs: [[Piece]]

    /// Splits jobs of `n` weight rows (`rowBytes` bytes each) into one run per thread of about
    /// equal bytes, in job order, cut at multiples of 4 rows, each run in at least
    /// `piecesPerRun` pieces where its rows allow, and tapering: a piece holds at most half the
    /// bytes left in its run from its start (but at least `minPieceBytes`), so the pieces a
    /// thread is still running when another runs out of work are small. Whole runs as the last
    /// pieces left the first thread done waiting a quarter of a run at the barrier (an LM head's
    /// 3 MB, 150 us, in a 2 ms decode step).
    init(_ jobs: [(n: Int, rowBytes: Int)], threads: Int, piecesPerRun: Int = 4, minPieceBytes: Int = 32 << 10) {
        let total = jobs.reduce(0) { $0 + $1.n * $1.rowBytes }
        var runs = [[Piece]](repeating: [], count: max(1, threads))
        var t = 0, done = 0
        for (j, job) in jobs.enumerated() {
            var n0 = 0
            while n0 < job.n {
                let goal = total * (t + 1) / runs.count  // bytes thread t should have reached
                var take = job.n - n0
                if t < runs.count - 1 {
                    let fit = (goal - done + job.rowBytes - 1) / job.rowBytes
                    take = min(take, max(4, (fit + 3) / 4 * 4))
                }
                runs[t].append((j, n0, n0 + take))
                done += take * job.rowBytes
                n0 += take
                if t < runs.count - 1 && done >= goal { t += 1 }
            }
        }
        self.runs = runs.map { run in
            guard !run.isEmpty else { return run }
            var left = run.reduce(0) { $0 + ($1.n1 - $1.n0) * jobs[$1.job].rowBytes }
            // Uneven runs of few pieces get at least `piecesPerRun`, in whole 4-row tiles.
            let rows = run.reduce(0) { $0 + $1.n1 - $1.n0 }
            let most = run.count < piecesPerRun ? max(4, (rows / piecesPerRun + 3) / 4 * 4) : Int.max
            var out: [Piece] = []
            out.reserveCapacity(run.count + 12)
            for p in run {
                let bytes = jobs[p.job].rowBytes
                var n0 = p.n0
                while n0 < p.n1 {
                    let cap = max(minPieceBytes, left / 2) / max(1, bytes) / 4 * 4
                    let take = min(p.n1 - n0, max(4, min(most, cap)))
                    out.append((p.job, n0, n0 + take))
                    left -= take * bytes
                    n0 += take
                }
            }
            return out
        }
    }

    /// The runs for these jobs and threads, made once: decode splits the same products the same
    /// way every token (an MoE layer's expert products, attention's, the LM head), and building
    /// the pieces was a few hundred small allocations a token on the calling thread while the
    /// others waited. Keeps up to `cachedPlans` splits, placed by a hash of the shapes in the
    /// first free of `probes` slots from the hash's own: a lookup compares an entry or two,
    /// where a scan of them all had read a dozen lines the token's streamed weights had evicted,
    /// and two shapes a layer uses that hash to one slot do not evict each other every token (a
    /// Qwen3-MoE-shaped Q4_K_M file's Q6_K down pass and its attention output did: two splits
    /// rebuilt a layer).
    static func cached(_ jobs: [(n: Int, rowBytes: Int)], threads: Int) -> StreamedRuns {
        let home = homeSlot(jobs, threads: threads)
        if let hit = held(jobs, threads: threads, home: home) { return hit }
        let made = StreamedRuns(jobs, threads: threads)
        plans.withLock { plans in
            // The first free slot of the probes; all taken, the home slot's entry goes.
            let slot = (0..<probes).lazy.map { (home + $0) % cachedPlans }.first { plans[$0] == nil } ?? home
            plans[slot] = (jobs: jobs, threads: threads, runs: made)
        }
        return made
    }

    /// The cached split for these jobs and threads, if one is held (probing from `home`).
    static func held(_ jobs: [(n: Int, rowBytes: Int)], threads: Int, home: Int) -> StreamedRuns? {
        plans.withLock { plans -> StreamedRuns? in
            for probe in 0..<probes {
                guard let entry = plans[(home + probe) % cachedPlans] else { return nil }
                if entry.threads == threads, entry.jobs.count == jobs.count,
                   zip(entry.jobs, jobs).allSatisfy({ $0.n == $1.n && $0.rowBytes == $1.rowBytes }) { return entry.runs }
            }
            return nil
        }
    }

    /// The slot a split of these shapes is looked for first (a hash of them, mod `cachedPlans`).
    static func homeSlot(_ jobs: [(n: Int, rowBytes: Int)], threads: Int) -> Int {
        var h = UInt64(truncatingIfNeeded: threads) &* 0x9E37_79B9_7F4A_7C15
        for job in jobs {
            h = (h ^ UInt64(truncatingIfNeeded: job.n)) &* 0x100_0000_01B3
            h = (h ^ UInt64(truncatingIfNeeded: job.rowBytes)) &* 0x100_0000_01B3
        }
        return Int(truncatingIfNeeded: (h ^ (h >> 29)) % UInt64(cachedPlans))
    }

    /// Empties the cache (tests start from it).
    static func forgetCached() { plans.withLock { $0 = Array(repeating: nil, count: cachedPlans) } }

    static let cachedPlans = 61, probes = 4
    private static let plans = Mutex<[(jobs: [(n: Int, rowBytes: Int)], threads: Int, runs: StreamedRuns)?]>(
        Array(repeating: nil, count: cachedPlans))

    /// Runs `body(piece, next)` for every piece once, over `pool`: thread t walks its own run,
    /// then takes pieces from the front of the others' (next: the piece after it in its run,
    /// for prefetching, or nil).
    func run(pool: ThreadPool, _ body: (Piece, Piece?) -> Void) {
        // Each run's index of its next unclaimed piece, a cache line apart (one allocation, not
        // an object a run, and no line two threads' counters share).
        let stride = 8, cursors = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: runs.count * stride)
        for u in 0..<runs.count { (cursors + u * stride).initialize(to: Atomic(0)) }
        defer {
            for u in 0..<runs.count { (cursors + u * stride).deinitialize(count: 1) }
            cursors.deallocate()
        }
        pool.parallelFor(runs.count) { t in
            for step in 0..<runs.count {
                let u = (t + step) % runs.count, run = runs[u]
                while true {
                    let i = cursors[u * stride].wrappingAdd(1, ordering: .relaxed).oldValue
                    if i >= run.count { break }
                    body(run[i], i + 1 < run.count ? run[i + 1] : nil)
                }
            }
        }
    }
}
