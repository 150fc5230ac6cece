import _MoEKernels
import Foundation
@testable import MoECore
import _TestSupport
import XCTest

/// Block-format weights against many activation rows: for the formats where it is faster, whole
/// panels of rows take the f32 matmul leaf on weight tiles dequantized in L1, the few rows left
/// the integer leaf. The vectorised
/// dequantizers equal the scalar reference bit for bit, and the matmul rows equal the same
/// product on the dequantized f32 weight bit for bit, alone and inside a grouped (MoE) batch.
final class BlockGemmTests: XCTestCase {
    /// Every format's weight [n, k], its blocks drawn from the committed fixture in a scrambled
    /// order (the fixture holds real `gguf`-package blocks, finite scales included).
    static func weights(n: Int, k: Int) throws -> [(DType, Tensor)] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/quant/vectors.json")
        let vectors = try JSONDecoder().decode(BlockFormatTests.Vectors.self, from: Data(contentsOf: url))
        return try vectors.formats.map { f in
            let dtype = try XCTUnwrap(DType(name: f.type))
            let source = [UInt8](try XCTUnwrap(Data(base64Encoded: f.bytes)))
            let blockBytes = dtype.blockBytes, available = source.count / blockBytes
            let w = Tensor(uninitialized: [n, k], dtype: dtype)
            let out = w.mutableRawPointer.assumingMemoryBound(to: UInt8.self)
            for b in 0..<(n * k / dtype.blockElements) {
                let from = (b * 5 + b / available) % available
                for j in 0..<blockBytes { out[b * blockBytes + j] = source[from * blockBytes + j] }
            }
            return (dtype, w)
        }
    }

    func testVectorisedDequantizationEqualsTheReference() throws {
        for (dtype, w) in try Self.weights(n: 3, k: 512) {
            var want = [Float](repeating: 0, count: 3 * 512)
            moek_dequantize_reference(w.rawPointer, dtype.cValue, &want, want.count)
            try forEachISA { isa in
                var got = [Float](repeating: .nan, count: 3 * 512)
                moek_dequantize(w.rawPointer, dtype.cValue, &got, got.count)
                XCTAssertEqual(got.map(\.bitPattern), want.map(\.bitPattern), "\(dtype) \(isa)")
            }
        }
    }

    func testMatmulRowsEqualTheDequantizedProduct() throws {
        let (n, k) = (23, 512)
        for (dtype, w) in try Self.weights(n: n, k: k) {
            let dense = Tensor(shape: [n, k], values: w.toFloats())
            try forEachISA { isa in
                guard moek_gemm_blocks_supported() != 0 else { return }
                if dtype == .q8_0 {  // where the VNNI integer leaves run, they take every row
                    let panels = moek_q8_interleaved(dtype.cValue, k) != 0 ? 0 : 37 / moek_gemm_mr() * moek_gemm_mr()
                    XCTAssertEqual(Kernels.blockGemmRows(rows: 37, dtype: dtype, k: k), panels, isa)
                }
                for m in [16, 37] {
                    let x = Tensor(randomUniform: [m, k], in: -2...2, seed: UInt64(m))
                    for threads in [1, 2] {
                        let pool = ThreadPool(threads: threads)
                        let got = Kernels.matmul(x, w, pool: pool).toFloats(), want = Kernels.matmul(x, dense, pool: pool).toFloats()
                        let cut = Kernels.blockGemmRows(rows: m, dtype: dtype, k: k)
                        XCTAssertEqual(got[..<(cut * n)].map(\.bitPattern), want[..<(cut * n)].map(\.bitPattern),
                                       "\(dtype) \(isa) m \(m) threads \(threads): the matmul rows")
                        let bound = BlockFormatTests.activationQuantizationBound(
                            x: x.rows(cut..<m), dense: dense, block: Kernels.activationBlock(for: dtype, k: k))
                        for i in (cut * n)..<(m * n) {
                            XCTAssertEqual(got[i], want[i], accuracy: bound[i - cut * n] + 1e-4 * abs(want[i]),
                                           "\(dtype) \(isa) m \(m): the rows past the last panel")
                        }
                    }
                }
            }
        }
    }

    /// An MoE-like batch: groups of 0, 3, 16, 21 and 40 rows through experts of every format at
    /// once; each group's panel rows equal its own dense product bit for bit.
    func testGroupedBatchMixesBothLeaves() throws {
        let (n, k) = (17, 256)
        let experts = try Self.weights(n: n, k: k)
        let counts = (0..<experts.count).map { [0, 3, 16, 21, 40][$0 % 5] }
        var offsets = [0]
        for c in counts { offsets.append(offsets[offsets.count - 1] + c) }
        let x = Tensor(randomUniform: [offsets.last!, k], in: -1...1, seed: 7)
        let out = Tensor(zeros: [offsets.last!, n])
        Kernels.groupedMatmul(x, weights: experts.map(\.1), rowOffsets: offsets, into: out, pool: ThreadPool(threads: 2))
        let got = out.toFloats()
        for (e, (dtype, w)) in experts.enumerated() where counts[e] > 0 {
            let rows = x.rows(offsets[e]..<offsets[e + 1])
            let want = Kernels.matmul(rows, Tensor(shape: [n, k], values: w.toFloats()), pool: ThreadPool(threads: 1)).toFloats()
            let mine = Array(got[(offsets[e] * n)..<(offsets[e + 1] * n)])
            let exact = Kernels.blockGemmRows(rows: counts[e], dtype: dtype, k: k) * n
            XCTAssertEqual(mine[..<exact].map(\.bitPattern), want[..<exact].map(\.bitPattern), "\(dtype): \(counts[e]) rows")
            let bound = BlockFormatTests.activationQuantizationBound(x: rows, dense: Tensor(shape: [n, k], values: w.toFloats()),
                                                                    block: Kernels.activationBlock(for: dtype, k: k))
            for i in exact..<mine.count {
                XCTAssertEqual(mine[i], want[i], accuracy: bound[i] + 1e-4 * abs(want[i]), "\(dtype): \(counts[e]) rows at \(i)")
            }
        }
    }

    /// Decode's batch (every job a few rows): each thread streams one contiguous run of the
    /// jobs' weight rows, cut inside jobs; every output equals the one-thread pass bit for bit
    /// (the same leaf on the same rows), with runs that start and end mid-job at 2 and 3 threads.
    func testDecodeBatchStreamedOverThreadsEqualsOneThread() throws {
        let (n, k) = (44, 512)
        let experts = try Self.weights(n: n, k: k)
        let rows = (0..<experts.count).map { 1 + $0 % 3 }
        func run(_ threads: Int) -> [[UInt32]] {
            let jobs = experts.enumerated().map { e, expert in
                LinearJob(input: Tensor(randomUniform: [rows[e], k], in: -1...1, seed: UInt64(30 + e)), weight: expert.1,
                          output: Tensor(zeros: [rows[e], n]))
            }
            Kernels.linearBatch(jobs, pool: ThreadPool(threads: threads))
            return jobs.map { $0.output.toFloats().map(\.bitPattern) }
        }
        let one = run(1)
        for threads in [2, 3] {
            for (e, got) in run(threads).enumerated() {
                XCTAssertEqual(got, one[e], "\(experts[e].0), \(rows[e]) rows, \(threads) threads")
            }
        }
        // One product alone (an attention projection, the LM head) streams the same way.
        for (e, expert) in experts.enumerated() {
            let x = Tensor(randomUniform: [rows[e], k], in: -1...1, seed: UInt64(30 + e))
            let alone = Kernels.matmul(x, expert.1, pool: ThreadPool(threads: 1)).toFloats().map(\.bitPattern)
            for threads in [2, 3] {
                XCTAssertEqual(Kernels.matmul(x, expert.1, pool: ThreadPool(threads: threads)).toFloats().map(\.bitPattern), alone,
                               "\(expert.0) alone, \(threads) threads")
            }
        }
    }
}
