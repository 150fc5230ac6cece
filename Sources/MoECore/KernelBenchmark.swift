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
    public static func run(pool: ThreadPool = .shared, quick: Bool = false,
                           sections: Set<Section> = Set(Section.allCases)) -> Report {
        let bandwidth = measureReadBandwidth(pool: pool, quick: quick)
        let peak = measureFMAPeak(pool: pool, quick: quick)
        var matvecs: [Matvec] = []
        let matvecShapes: [(Int, Int, DType)] = [
            (4096, 14336, .bf16), (14336, 4096, .bf16), (4096, 14336, .f16), (4096, 14336, .f32), (1024, 512, .bf16),
        ]
        for (rows, cols, dtype) in !sections.contains(.matvec) ? [] : quick ? [(1024, 512, .bf16)] : matvecShapes {
            // Cycle through copies totalling >= 256 MiB, so the weights come from DRAM as a
            // model's layers do, not from the last-level cache.
            let bytes = rows * cols * dtype.byteSize
            let copies = quick ? 1 : max(1, (256 << 20) / bytes + 1)
            let ws = (0..<copies).map { Tensor(randomUniform: [rows, cols], seed: UInt64(1 + $0), dtype: dtype) }
            let x = Tensor(randomUniform: [1, cols], seed: 2)
            let y = Tensor(zeros: [1, rows])
            var next = 0
            let seconds = medianSeconds(reps: quick ? 3 : max(30, copies)) {
                Kernels.matmul(x, ws[next], into: y, pool: pool)
                next = (next + 1) % copies
            }
            let gbs = Double(bytes) / seconds / 1e9
            matvecs.append(Matvec(rows: rows, cols: cols, dtype: dtype.description, gbs: gbs,
                                  fractionOfBandwidth: gbs / bandwidth))
        }
        var matmuls: [Matmul] = []
        var shapes: [(Int, Int, Int)] = [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (128, 14336, 4096)]
        if quick { shapes = [(64, 64, 64)] }
        if !sections.contains(.matmul) { shapes = [] }
        for dtype in [DType.f32, .bf16] {
            for (m, n, k) in shapes {
                let x = Tensor(randomUniform: [m, k], seed: 3)
                let w = Tensor(randomUniform: [n, k], seed: 4, dtype: dtype)
                let out = Tensor(zeros: [m, n])
                let seconds = medianSeconds(reps: quick ? 2 : (m * n * k > 1 << 30 ? 5 : 10)) {
                    Kernels.matmul(x, w, into: out, pool: pool)
                }
                let gflops = 2 * Double(m) * Double(n) * Double(k) / seconds / 1e9
                matmuls.append(Matmul(m: m, n: n, k: k, dtype: dtype.description, gflops: gflops,
                                      fractionOfPeak: gflops / peak))
            }
        }
        var grouped: [GroupedMatmul] = []
        let groupedShapes: [(Int, Int, Int, Int, Int)] = quick
            ? [(8, 8, 2, 64, 64)]
            : [(64, 128, 8, 512, 1024), (8, 128, 2, 3584, 1024), (64, 1, 8, 512, 1024), (8, 1, 2, 3584, 1024)]
        for (experts, tokens, topK, rows, cols) in sections.contains(.grouped) ? groupedShapes : [] {
            grouped.append(measureGrouped(experts: experts, tokens: tokens, topK: topK, rows: rows, cols: cols,
                                          peak: peak, pool: pool, quick: quick))
        }
        return Report(isa: Kernels.isaName, threads: pool.threadCount, readBandwidthGbs: bandwidth,
                      fmaPeakGflops: peak, matvec: matvecs, matmul: matmuls, groupedMatmul: grouped)
    }

    /// Seconds of the median of `reps` runs of `body`, after one warm-up run.
    public static func medianSeconds(reps: Int, _ body: () -> Void) -> Double {
        body()
        var times: [Double] = []
        for _ in 0..<max(1, reps) {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        times.sort()
        return times[times.count / 2]
    }

    /// Read bandwidth in GB/s: every thread sums its share of a buffer far larger than the caches.
    public static func measureReadBandwidth(pool: ThreadPool = .shared, quick: Bool = false) -> Double {
        let count = quick ? (16 << 20) : (256 << 20)  // floats: 64 MiB or 1 GiB
        return withScratchFloats(count) { buffer in
            let threads = pool.threadCount
            let share = (count / threads) & ~63
            pool.parallelFor(threads) { t in
                for i in (t * share)..<((t + 1) * share) { buffer[i] = Float(i & 7) }
            }
            let sink = UnsafeMutablePointer<Float>.allocate(capacity: threads)
            defer { sink.deallocate() }
            let seconds = medianSeconds(reps: quick ? 3 : 10) {
                pool.parallelFor(threads) { t in sink[t] = moek_read_probe(buffer + t * share, share) }
            }
            return Double(share * threads * 4) / seconds / 1e9
        }
    }

    /// FMA peak in GFLOP/s: every thread runs independent FMA chains held in registers.
    public static func measureFMAPeak(pool: ThreadPool = .shared, quick: Bool = false) -> Double {
        let iters = quick ? 200_000 : 4_000_000
        let threads = pool.threadCount
        let flops = UnsafeMutablePointer<Double>.allocate(capacity: threads)
        defer { flops.deallocate() }
        let seconds = medianSeconds(reps: quick ? 2 : 5) {
            pool.parallelFor(threads) { t in flops[t] = moek_fma_probe(iters) }
        }
        return (0..<threads).reduce(0) { $0 + flops[$1] } / seconds / 1e9
    }

    static func measureGrouped(experts: Int, tokens: Int, topK: Int, rows: Int, cols: Int, peak: Double,
                               pool: ThreadPool, quick: Bool) -> GroupedMatmul {
        // Route each token to topK distinct experts, uniformly at random (seeded).
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
        let weights = (0..<experts).map { Tensor(randomUniform: [rows, cols], seed: UInt64(100 + $0), dtype: .bf16) }
        let x = Tensor(randomUniform: [slots, cols], seed: 5)
        let out = Tensor(zeros: [slots, rows])
        let seconds = medianSeconds(reps: quick ? 2 : 20) {
            Kernels.groupedMatmul(x, weights: weights, rowOffsets: offsets, into: out, pool: pool)
        }
        let gflops = 2 * Double(slots) * Double(rows) * Double(cols) / seconds / 1e9
        let touched = counts.filter { $0 > 0 }.count * rows * cols * DType.bf16.byteSize
        return GroupedMatmul(experts: experts, tokens: tokens, topK: topK, rows: rows, cols: cols, dtype: "bf16",
                             gflops: gflops, fractionOfPeak: gflops / peak, gbs: Double(touched) / seconds / 1e9)
    }
}
