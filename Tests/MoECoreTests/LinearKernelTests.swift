import MoECore
import _TestSupport
import XCTest

/// matvec, matmul and grouped matmul against `Reference.matmul`, for every ISA path the CPU
/// supports, every weight dtype, 1 and 2 threads, on odd sizes.
///
/// Tolerance: |observed - reference| <= 1e-5 * sum_k |x_k w_k| + 1e-6. f32 accumulation of K
/// products errs by about sqrt(K) * 6e-8 of that sum (3.8e-6 at K = 4097), so 1e-5 passes any
/// correct kernel and fails any wrong index, dtype or edge case.
final class LinearKernelTests: XCTestCase {
    let relative: Float = 1e-5
    let absolute: Float = 1e-6

    func checkMatmul(m: Int, n: Int, k: Int, dtype: DType, pool: ThreadPool, label: String) {
        let x = Tensor(randomUniform: [m, k], seed: UInt64(m * 31 + k), dtype: .f32)
        let w = Tensor(randomUniform: [n, k], seed: UInt64(n * 17 + k + dtype.rawValue), dtype: dtype)
        let ref = Reference.matmul(x.toFloats(), w.toFloats(), m: m, n: n, k: k)
        let out = Kernels.matmul(x, w, pool: pool)
        XCTAssertEqual(out.shape, [m, n])
        assertClose(out.toFloats(), ref.out, absolute: absolute, relative: relative, scale: ref.scale,
                    "matmul m=\(m) n=\(n) k=\(k) \(dtype) threads=\(pool.threadCount) \(label)")
    }

    func testMatvecOddSizesEveryDtypeAndPath() {
        // Columns past and on the boundaries of the one-row 16-bit leaf (32-value steps, a
        // 16-value step, a masked tail, at most 4096 columns) and of the 4-row tiles.
        let shapes = [(1, 1), (3, 3), (1, 17), (17, 1), (4097, 17), (17, 4097), (3, 4097), (4097, 3), (5, 48), (9, 33), (6, 4096)]
        forEachISA { isa in
            for dtype in DType.elementFormats {
                for pool in testPools {
                    for (rows, cols) in shapes {
                        let w = Tensor(randomUniform: [rows, cols], seed: UInt64(rows + 7 * cols), dtype: dtype)
                        let x = Tensor(randomUniform: [cols], seed: UInt64(cols))
                        let ref = Reference.matmul(x.toFloats(), w.toFloats(), m: 1, n: rows, k: cols)
                        let y = Kernels.matvec(w, x, pool: pool)
                        XCTAssertEqual(y.shape, [rows])
                        assertClose(y.toFloats(), ref.out, absolute: absolute, relative: relative, scale: ref.scale,
                                    "matvec \(rows)x\(cols) \(dtype) threads=\(pool.threadCount) \(isa)")
                    }
                }
            }
        }
    }

    func testMatmulOddSizesEveryDtypeAndPath() {
        // M <= 4 takes the matrix-vector leaf, and so does N <= 8 (4 rows at a time, unless the
        // bf16 path takes it); larger products the matmul leaf, with row panels that are full,
        // short (<= 8 rows) and partial, N tiles that do not divide, and K past one reduction
        // block with a ragged last block.
        let shapes = [(1, 1, 1), (2, 3, 17), (4, 17, 3), (5, 3, 17), (17, 25, 3), (21, 7, 513),
                      (33, 49, 300), (3, 4097, 1), (17, 1, 4097), (40, 30, 1)]
        forEachISA { isa in
            for dtype in DType.elementFormats {
                for pool in testPools {
                    for (m, n, k) in shapes {
                        checkMatmul(m: m, n: n, k: k, dtype: dtype, pool: pool, label: isa)
                    }
                }
            }
        }
    }

    /// A matrix-vector total does not depend on the rows reduced beside it: 4 activation rows
    /// against f32 weights give each row's bits alone (AVX-512 sums a tile's 16 totals in one
    /// shuffle tree), and 16-bit weight rows short enough to be summed 16 at a time (attention's
    /// keys) give each weight row's bits alone.
    func testMatvecTotalsDoNotDependOnTheirNeighbours() {
        forEachISA { isa in
            for k in [64, 80, 256] {
                let w = Tensor(randomUniform: [37, k], seed: UInt64(k))
                let x = Tensor(randomUniform: [4, k], seed: UInt64(k + 1))
                let xs = x.toFloats(), together = Kernels.matmul(x, w, pool: ThreadPool(threads: 1)).toFloats()
                for r in 0..<4 {
                    let alone = Kernels.matmul(Tensor(shape: [1, k], values: Array(xs[(r * k)..<((r + 1) * k)])), w,
                                               pool: ThreadPool(threads: 1)).toFloats()
                    XCTAssertEqual(alone, Array(together[(r * 37)..<((r + 1) * 37)]), "f32 activation row \(r), k \(k), \(isa)")
                }
                for dtype in [DType.f16, .bf16] {  // pieces of hundreds of rows: 16-row blocks and a rest
                    let keys = Tensor(randomUniform: [1000, k], seed: UInt64(k + 2), dtype: dtype)
                    let q = Tensor(randomUniform: [k], seed: UInt64(k + 3))
                    let all = Kernels.matvec(keys, q, pool: ThreadPool(threads: 1)).toFloats()
                    let ws = keys.toFloats()
                    for r in Array(0..<40) + Array(490..<530) + [999] {
                        let row = Tensor(shape: [1, k], values: Array(ws[(r * k)..<((r + 1) * k)]), dtype: dtype)
                        XCTAssertEqual(Kernels.matvec(row, q, pool: ThreadPool(threads: 1)).toFloats(), [all[r]],
                                       "\(dtype) weight row \(r), k \(k), \(isa)")
                    }
                }
            }
        }
    }

    func testMatmulEmptyReductionGivesZeros() {
        for pool in testPools {
            let out = Kernels.matmul(Tensor(zeros: [6, 0]), Tensor(zeros: [5, 0], dtype: .bf16), pool: pool)
            XCTAssertEqual(out.toFloats(), [Float](repeating: 0, count: 30))
        }
    }

    func testMatmulIntoStridedViewOfLargerBuffer() {
        // Writing into a row view of a bigger tensor must touch only those rows.
        let x = Tensor(randomUniform: [6, 19], seed: 3)
        let w = Tensor(randomUniform: [11, 19], seed: 4, dtype: .bf16)
        let big = Tensor(shape: [10, 11], values: [Float](repeating: 7, count: 110))
        Kernels.matmul(x, w, into: big.rows(2..<8))
        let ref = Reference.matmul(x.toFloats(), w.toFloats(), m: 6, n: 11, k: 19)
        let all = big.toFloats()
        XCTAssertEqual(Array(all[0..<22]), [Float](repeating: 7, count: 22))
        XCTAssertEqual(Array(all[88..<110]), [Float](repeating: 7, count: 22))
        assertClose(Array(all[22..<88]), ref.out, absolute: absolute, relative: relative, scale: ref.scale)
    }

    func testGroupedMatmulMatchesPerGroupReference() {
        // Groups of 0, 1, 4, 5, 17, 0, 33 and 2 rows: both leaves, empty groups, ragged panels.
        let counts = [0, 1, 4, 5, 17, 0, 33, 2]
        let (n, k) = (29, 70)
        var offsets = [0]
        for c in counts { offsets.append(offsets[offsets.count - 1] + c) }
        let rows = offsets[offsets.count - 1] + 3  // 3 trailing rows belong to no group
        forEachISA { isa in
            for pool in testPools {
                let dtypes = counts.indices.map { DType.elementFormats[$0 % 3] }
                let weights = counts.indices.map {
                    Tensor(randomUniform: [n, k], seed: UInt64(50 + $0), dtype: dtypes[$0])
                }
                let x = Tensor(randomUniform: [rows, k], seed: 9)
                let out = Tensor(shape: [rows, n], values: [Float](repeating: -3, count: rows * n))
                Kernels.groupedMatmul(x, weights: weights, rowOffsets: offsets, into: out, pool: pool)
                let xs = x.toFloats(), got = out.toFloats()
                for g in counts.indices where counts[g] > 0 {
                    let r0 = offsets[g], r1 = offsets[g + 1]
                    let ref = Reference.matmul(Array(xs[(r0 * k)..<(r1 * k)]), weights[g].toFloats(),
                                               m: r1 - r0, n: n, k: k)
                    assertClose(Array(got[(r0 * n)..<(r1 * n)]), ref.out, absolute: absolute, relative: relative,
                                scale: ref.scale, "group \(g) (\(counts[g]) rows) threads=\(pool.threadCount) \(isa)")
                }
                let tail = Array(got[(offsets[counts.count] * n)...])
                XCTAssertEqual(tail, [Float](repeating: -3, count: 3 * n), "rows outside groups are untouched")
            }
        }
    }

    func testGroupedMatmulWithStackedWeights() {
        let stacked = Tensor(randomUniform: [3, 8, 12], seed: 21, dtype: .bf16)
        let x = Tensor(randomUniform: [9, 12], seed: 22)
        let offsets = [0, 6, 6, 9]
        let out = Tensor(zeros: [9, 8])
        Kernels.groupedMatmul(x, stackedWeights: stacked, rowOffsets: offsets, into: out)
        let xs = x.toFloats(), got = out.toFloats()
        for g in 0..<3 where offsets[g + 1] > offsets[g] {
            let (r0, r1) = (offsets[g], offsets[g + 1])
            let ref = Reference.matmul(Array(xs[(r0 * 12)..<(r1 * 12)]), stacked[g].toFloats(), m: r1 - r0, n: 8, k: 12)
            assertClose(Array(got[(r0 * 8)..<(r1 * 8)]), ref.out, absolute: absolute, relative: relative, scale: ref.scale)
        }
    }
}

/// `linearBatch`: independent jobs of different shapes and dtypes in one pass, including the
/// decode path where every job is a matrix-vector product and each thread streams a
/// contiguous run of the weights.
final class LinearBatchTests: XCTestCase {
    func run(_ shapes: [(m: Int, n: Int, k: Int, dtype: DType)], label: String) {
        for pool in testPools {
            let jobs = shapes.enumerated().map { i, s in
                LinearJob(input: Tensor(randomUniform: [s.m, s.k], seed: UInt64(10 + i)),
                          weight: Tensor(randomUniform: [s.n, s.k], seed: UInt64(20 + i), dtype: s.dtype),
                          output: Tensor(zeros: [s.m, s.n]))
            }
            Kernels.linearBatch(jobs, pool: pool)
            for (i, job) in jobs.enumerated() {
                let s = shapes[i]
                let ref = Reference.matmul(job.input.toFloats(), job.weight.toFloats(), m: s.m, n: s.n, k: s.k)
                assertClose(job.output.toFloats(), ref.out, absolute: 1e-6, relative: 1e-5, scale: ref.scale,
                            "\(label) job \(i) threads=\(pool.threadCount)")
            }
        }
    }

    func testMatvecOnlyBatchStreamsEveryJob() {
        run([(1, 37, 20, .bf16), (1, 5, 20, .f32), (2, 64, 33, .f16), (4, 3, 7, .bf16), (1, 130, 20, .bf16), (3, 1, 9, .f32)],
            label: "gemv batch")
    }

    func testMixedBatch() {
        run([(1, 37, 20, .bf16), (9, 30, 21, .f32), (0, 5, 4, .bf16), (17, 49, 300, .f16)], label: "mixed batch")
    }
}

/// The opt-in bf16 dot-product path: exact against a reference whose activations are rounded
/// to bf16 first (then the usual 1e-5 of sum |x w|), on odd K (a padded last pair), K past one
/// block (512), partial panels, matmul and linearBatch. Skipped where the CPU lacks AVX512-BF16.
final class BF16ComputeTests: XCTestCase {
    override func setUp() { Kernels.bf16Activations = true }
    override func tearDown() { Kernels.bf16Activations = false }

    func testMatchesReferenceWithBF16RoundedActivations() throws {
        try XCTSkipUnless(Kernels.bf16ComputeSupported, "no AVX512-BF16 on this CPU")
        for pool in testPools {
            // Up to 4 rows (decode) take the one-row bf16 leaf: a masked tail, runs of 32 and 64;
            // one row of K <= 1024 the f32 row leaf on the rounded values (1024 and 1025 its edge).
            // From 5 to 128 rows with K a multiple of 32, the bf16 row leaf: blocks of 8 rows and
            // their remainders, 3 weight rows and theirs, one and many 32-value runs.
            for (m, n, k) in [(5, 7, 3), (17, 25, 33), (33, 49, 513), (16, 24, 1024), (40, 3, 1),
                              (1, 7, 3), (1, 37, 100), (3, 25, 33), (4, 9, 64), (2, 5, 1), (1, 70, 2048),
                              (5, 2, 32), (9, 50, 64), (15, 13, 96), (128, 7, 128), (129, 7, 64), (7, 26, 4096),
                              (1, 9, 1024), (1, 5, 1025)] {
                let x = Tensor(randomUniform: [m, k], seed: UInt64(m + k))
                let w = Tensor(randomUniform: [n, k], seed: UInt64(n + 3 * k), dtype: .bf16)
                let rounded = x.converted(to: .bf16).toFloats()
                let ref = Reference.matmul(rounded, w.toFloats(), m: m, n: n, k: k)
                assertClose(Kernels.matmul(x, w, pool: pool).toFloats(), ref.out, absolute: 1e-6, relative: 1e-5,
                            scale: ref.scale, "bf16 matmul \(m)x\(n)x\(k)")
                let out = Tensor(zeros: [m, n])
                Kernels.linearBatch([LinearJob(input: x, weight: w, output: out)], pool: pool)
                assertClose(out.toFloats(), ref.out, absolute: 1e-6, relative: 1e-5, scale: ref.scale, "bf16 batch \(m)x\(n)x\(k)")
            }
        }
    }

    func testF32WeightsStayExact() {
        let x = Tensor(randomUniform: [9, 20], seed: 1)
        let w = Tensor(randomUniform: [6, 20], seed: 2, dtype: .f32)
        let ref = Reference.matmul(x.toFloats(), w.toFloats(), m: 9, n: 6, k: 20)
        assertClose(Kernels.matmul(x, w).toFloats(), ref.out, absolute: 1e-6, relative: 1e-5, scale: ref.scale)
        let x1 = Tensor(randomUniform: [1, 20], seed: 3)
        let r1 = Reference.matmul(x1.toFloats(), w.toFloats(), m: 1, n: 6, k: 20)
        assertClose(Kernels.matmul(x1, w).toFloats(), r1.out, absolute: 1e-6, relative: 1e-5, scale: r1.scale, "decode stays f32")
    }

    /// With `bf16Activations` off (the default), bf16 weights at decode keep f32 activations.
    func testDecodeKeepsF32ActivationsByDefault() {
        Kernels.bf16Activations = false
        let x1 = Tensor(randomUniform: [1, 20], seed: 3)
        let wb = Tensor(randomUniform: [6, 20], seed: 4, dtype: .bf16)
        let r1 = Reference.matmul(x1.toFloats(), wb.toFloats(), m: 1, n: 6, k: 20)
        assertClose(Kernels.matmul(x1, wb).toFloats(), r1.out, absolute: 1e-6, relative: 1e-5, scale: r1.scale, "decode stays f32")
    }
}
