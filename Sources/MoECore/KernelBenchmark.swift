import Foundation
import _MoEKernels

/// Measures the machine's limits (read bandwidth, FMA peak) and the kernels against them.
///
/// This is what `moe bench-kernels` prints. Each figure is the median of several timed runs
/// after a warm-up. Decode-style kernels (matvec) are judged against `readBandwidthGBs`;
/// compute-bound ones (matmul, grouped matmul) against `fmaPeakGFlops`.
public enum KernelBenchmark {
    /// One matrix-vector shape: W [rows, cols] of `dtype` times a vector.
    public struct Matvec: Codable, Sendable {
        public var rows: Int, cols: Int, dtype: String
        /// Weight bytes read per second, in GB/s (1e9).
        public var gbs: Double
        /// `gbs` over the measured read bandwidth.
        public var fractionOfBandwidth: Double
    }

    /// One matmul shape: x [m, k] f32 times W [n, k] of `dtype`.
    public struct Matmul: Codable, Sendable {
        public var m: Int, n: Int, k: Int, dtype: String
        public var gflops: Double
        /// `gflops` over the measured FMA peak.
        public var fractionOfPeak: Double
    }

    /// One grouped matmul: `tokens` tokens each routed to `topK` of `experts` experts whose
    /// weights are [rows, cols] bf16.
    public struct GroupedMatmul: Codable, Sendable {
        public var experts: Int, tokens: Int, topK: Int, rows: Int, cols: Int, dtype: String
        public var gflops: Double
        public var fractionOfPeak: Double
        /// Bytes of the experts' weights that were touched, per second (GB/s).
        public var gbs: Double
    }

    /// Everything `moe bench-kernels` prints.
    public struct Report: Codable, Sendable {
        public var isa: String
        public var threads: Int
        public var readBandwidthGbs: Double
        public var fmaPeakGflops: Double
        public var matvec: [Matvec]
        public var matmul: [Matmul]
        public var groupedMatmul: [GroupedMatmul]
    }

    /// The sections of the benchmark; the machine probes always run.
    public enum Section: String, CaseIterable, Sendable {
        case matvec, matmul, grouped
    }

    /// Runs the benchmark on `pool`: the machine probes and the chosen `sections`. `quick` uses
    /// fewer repetitions and small shapes (for smoke tests; the figures mean little).
    ///
    /// On a shared machine both limits come and go (memory bandwidth, and FMA throughput when a
    /// neighbour shares the core), so each probe runs interleaved with the kernels it judges:
    /// a read-probe pass over the same weight memory before each block of matvec calls (so
    /// placement in the host's memory is the same for both), an FMA-probe pass before each
    /// matmul and grouped-matmul run. `readBandwidthGbs` and `fmaPeakGflops` are the medians
    /// over those passes, so every fraction compares figures taken in the same conditions.
    public static func run(pool: ThreadPool = .shared, quick: Bool = false,
                           sections: Set<Section> = Set(Section.allCases)) -> Report {
        let fma = FMAProbe(iterations: quick ? 20_000 : 1_000_000, pool: pool)
        var fmaSeconds: [Double] = []
        var probeGBs: [Double] = []
        var matvecSeconds: [(rows: Int, cols: Int, dtype: DType, seconds: Double)] = []
        let matvecShapes: [(Int, Int, DType)] = [
            (4096, 14336, .bf16), (14336, 4096, .bf16), (4096, 14336, .f16), (4096, 14336, .f32), (1024, 512, .bf16),
            (4096, 14336, .q8_0), (4096, 14336, .q4_K), (4096, 14336, .q6_K),
        ]
        for (rows, cols, dtype) in !sections.contains(.matvec) ? [] : quick ? [(1024, 512, .bf16)] : matvecShapes {
            // A ring of weight copies (>= 256 MiB), so each call reads DRAM as a model's layers
            // do. Each rep: the read probe over one block of the ring (half the ring away, so
            // neither finds the other's bytes in cache), then a block of back-to-back matvec
            // calls over >= 64 MiB of distinct weights; seconds per call.
            let bytes = rows * dtype.storageBytes(elements: cols)
            let copies = quick ? 2 : max(4, (256 << 20) / bytes + 1)
            let ws = (0..<copies).map { randomWeight([rows, cols], seed: UInt64(1 + $0), dtype: dtype) }
            let x = Tensor(randomUniform: [1, cols], seed: 2)
            let y = Tensor(zeros: [1, rows])
            let block = quick ? 1 : max(1, min(copies / 4, (64 << 20) / bytes))
            var next = 0
            let seconds = medianSeconds(reps: quick ? 3 : max(12, 2 * copies / block)) {
                let probed = (0..<block).map { ws[(next + copies / 2 + $0) % copies] }
                probeGBs.append(Double(bytes * block) / readProbeSeconds(probed, pool: pool) / 1e9)
                let start = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<block {
                    Kernels.matmul(x, ws[next], into: y, pool: pool)
                    next = (next + 1) % copies
                }
                return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(block)
            }
            matvecSeconds.append((rows, cols, dtype, seconds))
        }
        if probeGBs.isEmpty {
            probeGBs = [measureReadBandwidth(pool: pool, quick: quick)]
        }
        let bandwidth = median(probeGBs)
        let matvecs = matvecSeconds.map { m in
            let gbs = Double(m.rows * m.dtype.storageBytes(elements: m.cols)) / m.seconds / 1e9
            return Matvec(rows: m.rows, cols: m.cols, dtype: m.dtype.description, gbs: gbs,
                          fractionOfBandwidth: gbs / bandwidth)
        }
        var matmulSeconds: [(m: Int, n: Int, k: Int, dtype: DType, seconds: Double)] = []
        var shapes: [(Int, Int, Int)] = [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (128, 14336, 4096)]
        if quick { shapes = [(64, 64, 64)] }
        if !sections.contains(.matmul) { shapes = [] }
        for dtype in [DType.f32, .bf16, .q8_0, .q4_K, .q6_K] {
            // The block formats at the prefill shape only (their square shapes add nothing).
            for (m, n, k) in dtype.isElementFormat ? shapes : shapes.filter({ $0.0 == 128 || quick }) {
                let x = Tensor(randomUniform: [m, k], seed: 3)
                let w = randomWeight([n, k], seed: 4, dtype: dtype)
                let out = Tensor(zeros: [m, n])
                let seconds = medianSeconds(reps: quick ? 2 : (m * n * k > 1 << 30 ? 5 : 10)) {
                    fmaSeconds.append(fma.passSeconds())
                    return timeSeconds { Kernels.matmul(x, w, into: out, pool: pool) }
                }
                matmulSeconds.append((m, n, k, dtype, seconds))
            }
        }
        var groupedRuns: [GroupedRun] = []
        let groupedShapes: [(Int, Int, Int, Int, Int)] = quick
            ? [(8, 8, 2, 64, 64)]
            : [(64, 128, 8, 512, 1024), (8, 128, 2, 3584, 1024), (64, 1, 8, 512, 1024), (8, 1, 2, 3584, 1024)]
        for (experts, tokens, topK, rows, cols) in sections.contains(.grouped) ? groupedShapes : [] {
            groupedRuns.append(measureGrouped(experts: experts, tokens: tokens, topK: topK, rows: rows, cols: cols,
                                              pool: pool, quick: quick) { fmaSeconds.append(fma.passSeconds()) })
        }
        if fmaSeconds.isEmpty {
            fmaSeconds = (0..<(quick ? 2 : 10)).map { _ in fma.passSeconds() }
        }
        let peak = fma.flops / median(fmaSeconds) / 1e9
        let matmuls = matmulSeconds.map { r in
            let gflops = 2 * Double(r.m) * Double(r.n) * Double(r.k) / r.seconds / 1e9
            return Matmul(m: r.m, n: r.n, k: r.k, dtype: r.dtype.description, gflops: gflops,
                          fractionOfPeak: gflops / peak)
        }
        let grouped = groupedRuns.map { r in
            GroupedMatmul(experts: r.experts, tokens: r.tokens, topK: r.topK, rows: r.rows, cols: r.cols,
                          dtype: "bf16", gflops: r.flops / r.seconds / 1e9, fractionOfPeak: r.flops / r.seconds / 1e9 / peak,
                          gbs: Double(r.bytesTouched) / r.seconds / 1e9)
        }
        return Report(isa: Kernels.isaName, threads: pool.threadCount, readBandwidthGbs: bandwidth,
                      fmaPeakGflops: peak, matvec: matvecs, matmul: matmuls, groupedMatmul: grouped)
    }

    /// A random weight of any dtype: uniform values for the element formats; for the block
    /// formats, random bytes with every block's scales set to small finite values, which is
    /// what a matrix-vector product's speed depends on.
    public static func randomWeight(_ shape: [Int], seed: UInt64, dtype: DType) -> Tensor {
        if dtype.isElementFormat { return Tensor(randomUniform: shape, seed: seed, dtype: dtype) }
        let t = Tensor(uninitialized: shape, dtype: dtype)
        var rng = SplitMix64(seed: seed)
        let p = t.mutableRawPointer.assumingMemoryBound(to: UInt8.self)
        for i in 0..<t.byteCount { p[i] = UInt8(truncatingIfNeeded: rng.next()) }
        // Offsets of each block's f16 scales (Q8_0, Q4_0, IQ4_NL: d; Q4_1, Q5_*, Q4_K, Q5_K: d
        // and the minimum's scale; Q6_K: d at the end; Q2_K, Q3_K: at the end) or e8m0 (MXFP4).
        let scaleOffsets: [Int]
        switch dtype {
        case .q6_K: scaleOffsets = [208]
        case .q2_K: scaleOffsets = [80, 82]
        case .q3_K: scaleOffsets = [108]
        case .q4_1, .q5_1, .q4_K, .q5_K: scaleOffsets = [0, 2]
        case .mxfp4: scaleOffsets = []
        default: scaleOffsets = [0]
        }
        let blocks = t.byteCount / dtype.blockBytes
        for b in 0..<blocks {
            for o in scaleOffsets { p[b * dtype.blockBytes + o] = 0x00; p[b * dtype.blockBytes + o + 1] = 0x20 }  // 2^-7
            if dtype == .mxfp4 { p[b * dtype.blockBytes] = 120 }
        }
        return t
    }

    /// Seconds of the median of `reps` runs of `body`, after one warm-up run.
    public static func medianSeconds(reps: Int, _ body: () -> Void) -> Double {
        medianSeconds(reps: reps) { () -> Double in
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
    }

    /// The median of `reps` values of `timed` (each the seconds of one run it timed itself),
    /// after one warm-up call.
    public static func medianSeconds(reps: Int, _ timed: () -> Double) -> Double {
        _ = timed()
        return median((0..<max(1, reps)).map { _ in timed() })
    }

    /// The median of `values` (NaN when empty).
    public static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
    }

    /// Read bandwidth in GB/s: the median of `reps` passes of the read probe over a buffer far
    /// larger than the caches (1 GiB; 64 MiB when `quick`).
    public static func measureReadBandwidth(pool: ThreadPool = .shared, quick: Bool = false) -> Double {
        ReadBandwidthSampler(bytes: quick ? (64 << 20) : (1 << 30), pool: pool).sample(passes: quick ? 3 : 10)
    }

    /// FMA peak in GFLOP/s: the median of several passes of the FMA probe.
    public static func measureFMAPeak(pool: ThreadPool = .shared, quick: Bool = false) -> Double {
        let fma = FMAProbe(iterations: quick ? 200_000 : 4_000_000, pool: pool)
        return fma.flops / median((0..<(quick ? 2 : 5)).map { _ in fma.passSeconds() }) / 1e9
    }

    /// Seconds for the read probe to read every byte of `tensors`, split across the pool in
    /// chunks of about 1 MiB.
    public static func readProbeSeconds(_ tensors: [Tensor], pool: ThreadPool) -> Double {
        var chunks: [(UnsafeRawPointer, Int)] = []
        for t in tensors {
            let words = t.byteCount / 4
            var start = 0
            while start < words {
                let n = min(1 << 18, words - start)
                chunks.append((t.rawPointer + start * 4, n))
                start += n
            }
        }
        let sink = UnsafeMutablePointer<Float>.allocate(capacity: max(1, chunks.count))
        defer { sink.deallocate() }
        return chunks.withUnsafeBufferPointer { chunks in
            timeSeconds {
                pool.parallelFor(chunks.count) { i in
                    sink[i] = moek_read_probe(chunks[i].0.assumingMemoryBound(to: Float.self), chunks[i].1)
                }
            }
        }
    }

    /// Wall-clock seconds of one call of `body`.
    public static func timeSeconds(_ body: () -> Void) -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// The timing of one grouped-matmul shape, before it is judged against the peak.
    struct GroupedRun {
        var experts: Int, tokens: Int, topK: Int, rows: Int, cols: Int
        var flops: Double, bytesTouched: Int, seconds: Double
    }

    /// Times the grouped matmul for `tokens` tokens routed (seeded, uniformly) to `topK` of
    /// `experts` bf16 experts. Each run uses the next of several copies of the experts
    /// (>= 256 MiB in all), so the weights come from DRAM as they do in a model. `beforeRun`
    /// runs before each timed run (the FMA probe).
    static func measureGrouped(experts: Int, tokens: Int, topK: Int, rows: Int, cols: Int, pool: ThreadPool,
                               quick: Bool, beforeRun: () -> Void) -> GroupedRun {
        var rng = SplitMix64(seed: 7)
        var counts = [Int](repeating: 0, count: experts)
        for _ in 0..<tokens {
            var chosen = Set<Int>()
            while chosen.count < topK { chosen.insert(Int(rng.next() % UInt64(experts))) }
            for e in chosen { counts[e] += 1 }
        }
        var offsets = [0], total = 0
        for c in counts {
            total += c
            offsets.append(total)
        }
        let slots = tokens * topK
        let setBytes = experts * rows * cols * DType.bf16.byteSize
        let copies = quick ? 1 : max(1, (256 << 20) / setBytes + 1)
        let weightSets = (0..<copies).map { c in
            (0..<experts).map { Tensor(randomUniform: [rows, cols], seed: UInt64(100 + c * experts + $0), dtype: .bf16) }
        }
        let x = Tensor(randomUniform: [slots, cols], seed: 5)
        let out = Tensor(zeros: [slots, rows])
        var next = 0
        let seconds = medianSeconds(reps: quick ? 2 : max(20, copies)) {
            beforeRun()
            let weights = weightSets[next]
            next = (next + 1) % copies
            return timeSeconds { Kernels.groupedMatmul(x, weights: weights, rowOffsets: offsets, into: out, pool: pool) }
        }
        return GroupedRun(experts: experts, tokens: tokens, topK: topK, rows: rows, cols: cols,
                          flops: 2 * Double(slots) * Double(rows) * Double(cols),
                          bytesTouched: counts.filter { $0 > 0 }.count * rows * cols * DType.bf16.byteSize,
                          seconds: seconds)
    }
}

/// The read probe kept ready through a run, for samples of the read bandwidth between a
/// benchmark's timed parts. This VM's memory holds one rate for seconds at a time (44-56 GB/s in
/// one stretch, 30-35 in the next), so one probe after a run can fall in another stretch than
/// the run; samples after every repetition bracket the timed ones. Its buffer (256 MiB) stays
/// resident while the sampler lives: a caller reporting peak RSS takes `bytes` off.
public final class ReadBandwidthSampler {
    private let probe: ReadProbe
    /// Bytes of the resident buffer, which one pass reads.
    public var bytes: Int { probe.bytes }

    public init(bytes: Int = 256 << 20, pool: ThreadPool) {
        probe = ReadProbe(floats: bytes / 4, pool: pool)
    }

    /// GB/s of the median of `passes` passes (3: about 25 ms at 30 GB/s).
    public func sample(passes: Int = 3) -> Double {
        Double(probe.bytes) / KernelBenchmark.median((0..<max(1, passes)).map { _ in probe.passSeconds() }) / 1e9
    }
}

/// A buffer far larger than the caches, split between the pool's threads; each pass has every
/// thread sum its share with the read-probe leaf.
final class ReadProbe {
    private let buffer: UnsafeMutablePointer<Float>
    private let sink: UnsafeMutablePointer<Float>
    private let share: Int
    private let pool: ThreadPool
    /// Bytes one pass reads.
    var bytes: Int { share * pool.threadCount * 4 }

    init(floats: Int, pool: ThreadPool) {
        self.pool = pool
        let threads = pool.threadCount
        share = (floats / threads) & ~63
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(64, share * threads * 4), alignment: 64)
        buffer = raw.bindMemory(to: Float.self, capacity: share * threads)
        sink = .allocate(capacity: threads)
        // Distinct, pseudo-random contents: pages that repeat one pattern can be merged by the
        // host (same-page merging) and then read from cache, which inflates the probe.
        let (b, s) = (buffer, share)
        pool.parallelFor(threads) { t in
            var rng = SplitMix64(seed: UInt64(t + 1))
            for i in (t * s)..<((t + 1) * s) { b[i] = rng.nextUnitFloat() }
        }
    }

    deinit {
        UnsafeMutableRawPointer(buffer).deallocate()
        sink.deallocate()
    }

    /// Seconds of one pass over the whole buffer.
    func passSeconds() -> Double {
        let (b, s, out) = (buffer, share, sink)
        let start = DispatchTime.now().uptimeNanoseconds
        pool.parallelFor(pool.threadCount) { t in out[t] = moek_read_probe(b + t * s, s) }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}

/// Every thread of the pool runs independent FMA chains held in registers for `iterations`
/// rounds; a pass's floating-point operations over its seconds is the FMA peak.
public struct FMAProbe: Sendable {
    public let iterations: Int
    public let pool: ThreadPool

    public init(iterations: Int, pool: ThreadPool) {
        self.iterations = iterations
        self.pool = pool
    }

    /// Floating-point operations in one pass (all threads): one probe iteration's count (the
    /// leaf reports it) times the iterations and threads.
    public var flops: Double { moek_fma_probe(1) * Double(iterations) * Double(pool.threadCount) }

    /// Seconds of one pass.
    public func passSeconds() -> Double {
        let iters = iterations
        return KernelBenchmark.timeSeconds {
            pool.parallelFor(pool.threadCount) { _ in _ = moek_fma_probe(iters) }
        }
    }
}
