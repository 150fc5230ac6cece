import _MoEKernels
@testable import MoECore
import _TestSupport
import XCTest

/// The exact row leaf (`moek_gemm_rows`: bf16 and f16 weights, f32 activations, K a multiple
/// of 32) against `Reference.matmul` within 1e-5 of sum |x w|, through `matmul` and
/// `linearBatch`: activation rows around its blocks of 8 (5 to 17, and 40), weight rows around
/// its blocks of 3 and the 24-row tasks, K of one and of many 32-value runs; then every other
/// path the CPU has, where the leaf stands aside.
final class RowsLeafTests: XCTestCase {
    let shapes = [(5, 3, 32), (8, 1, 64), (9, 2, 96), (13, 7, 32), (16, 24, 128), (17, 50, 64), (40, 26, 1024), (7, 77, 4096),
                  (128, 9, 64), (129, 9, 64)]

    func check(label: String) {
        for pool in testPools {
            for dtype in [DType.bf16, .f16] { for (m, n, k) in shapes {
                let x = Tensor(randomUniform: [m, k], seed: UInt64(m * 7 + k))
                let w = Tensor(randomUniform: [n, k], seed: UInt64(n * 5 + k), dtype: dtype)
                let ref = Reference.matmul(x.toFloats(), w.toFloats(), m: m, n: n, k: k)
                assertClose(Kernels.matmul(x, w, pool: pool).toFloats(), ref.out, absolute: 1e-6, relative: 1e-5,
                            scale: ref.scale, "matmul \(m)x\(n)x\(k) \(dtype) threads=\(pool.threadCount) \(label)")
                // In a batch beside a job of another shape, as an MoE layer's experts run.
                let out = Tensor(zeros: [m, n]), other = Tensor(zeros: [6, 5])
                let x2 = Tensor(randomUniform: [6, 64], seed: 3), w2 = Tensor(randomUniform: [5, 64], seed: 4, dtype: dtype)
                Kernels.linearBatch([LinearJob(input: x, weight: w, output: out), LinearJob(input: x2, weight: w2, output: other)], pool: pool)
                assertClose(out.toFloats(), ref.out, absolute: 1e-6, relative: 1e-5, scale: ref.scale,
                            "batch \(m)x\(n)x\(k) \(dtype) threads=\(pool.threadCount) \(label)")
                let ref2 = Reference.matmul(x2.toFloats(), w2.toFloats(), m: 6, n: 5, k: 64)
                assertClose(other.toFloats(), ref2.out, absolute: 1e-6, relative: 1e-5, scale: ref2.scale, "batch's other job \(label)")
            } }
        }
    }

    func testLeafOnItsShapes() throws {
        try XCTSkipUnless(moek_rows_supported(DType.bf16.cValue) != 0, "the row leaf needs AVX-512")
        XCTAssertTrue(Kernels.usesRowsLeaf(rows: 5, dtype: .bf16, k: 64))
        XCTAssertTrue(Kernels.usesRowsLeaf(rows: Kernels.rowsLeafMaxRows, dtype: .bf16, k: 64))
        XCTAssertFalse(Kernels.usesRowsLeaf(rows: Kernels.rowsLeafMaxRows + 1, dtype: .bf16, k: 64), "the packed leaf's rows")
        XCTAssertFalse(Kernels.usesRowsLeaf(rows: 4, dtype: .bf16, k: 64), "decode's rows")
        XCTAssertFalse(Kernels.usesRowsLeaf(rows: 8, dtype: .bf16, k: 48), "K not a multiple of 32")
        XCTAssertTrue(Kernels.usesRowsLeaf(rows: 8, dtype: .f16, k: 64))
        XCTAssertFalse(Kernels.usesRowsLeaf(rows: 8, dtype: .f32, k: 64), "f32 weights stay packed")
        check(label: "row leaf")
    }

    func testEveryPathOnTheSameShapes() {
        forEachISA { isa in check(label: isa) }
    }
}
