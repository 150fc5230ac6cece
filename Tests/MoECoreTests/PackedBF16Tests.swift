import Foundation
import MoECore
import _TestSupport
import XCTest

/// The expert cache's packed bf16 form (`PackedBF16Matrix`): lossless, and its products equal
/// the bf16 weight's bit for bit on every ISA, for 1 to 4 activation rows (decode's leaves), for
/// more (unpacked for the call), with f32 and with bf16 activations, rows packed and raw mixed.
final class PackedBF16Tests: XCTestCase {
    /// A bf16 weight [n, k] of normal values, with a zero in row 1 (its block then spans more
    /// than 16 exponents, so the row stays raw).
    func weight(_ n: Int, _ k: Int, seed: UInt64) -> Tensor {
        var v = Tensor(randomNormal: [n, k], std: 0.02, seed: seed).toFloats()
        v[k + 5] = 0
        return Tensor(shape: [n, k], values: v).converted(to: .bf16)
    }

    func testPackingIsLosslessAndSmaller() {
        for k in [32, 96, 768, 2048] {
            let w = weight(40, k, seed: UInt64(k))
            let p = PackedBF16Matrix.packing(w)
            XCTAssertEqual(p.unpacked().toFloats().map(\.bitPattern), w.toFloats().map(\.bitPattern), "k \(k)")
            XCTAssertLessThan(p.packedRows, 40, "the row with a zero stays raw")
            XCTAssertGreaterThan(p.packedRows, 30, "k \(k): most rows pack")
            XCTAssertEqual(p.byteCount, p.packedRows * k / 32 * 49 + (40 - p.packedRows) * 2 * k)
        }
        XCTAssertFalse(PackedBF16Matrix.canPack(Tensor(zeros: [4, 48], dtype: .bf16)), "rows of 48")
        XCTAssertFalse(PackedBF16Matrix.canPack(Tensor(zeros: [4, 64], dtype: .f16)))
    }

    /// Exponents 0 and 255 (zeros, subnormals, infinities, NaNs) within one block's window come
    /// back as they were.
    func testExtremeExponentsRoundTrip() {
        var bits = [UInt16](repeating: 0, count: 2 * 32)
        for i in 0..<32 { bits[i] = UInt16(i * 3) | (i % 2 == 0 ? 0x8000 : 0) }  // zeros and subnormals
        for i in 32..<64 { bits[i] = 0x7F80 | UInt16(i % 5) | (i % 3 == 0 ? 0x8000 : 0) }  // inf and NaN
        let w = Tensor(zeros: [2, 32], dtype: .bf16)
        bits.withUnsafeBytes { w.mutableRawPointer.copyMemory(from: $0.baseAddress!, byteCount: 128) }
        let p = PackedBF16Matrix.packing(w)
        XCTAssertEqual(p.packedRows, 2)
        let back = p.unpacked()
        XCTAssertEqual(Array(UnsafeBufferPointer(start: back.rawPointer.assumingMemoryBound(to: UInt16.self), count: 64)), bits)
    }

    func testProductsEqualTheBF16WeightsOnEveryISA() {
        let bf16Dot = Kernels.bf16Activations
        defer { Kernels.bf16Activations = bf16Dot }
        forEachISA { isa in
            for dot in [false, true] {
                Kernels.bf16Activations = dot
                for pool in testPools {
                    for (n, k) in [(37, 64), (24, 768), (19, 2048), (9, 4160)] {
                        let w = weight(n, k, seed: UInt64(n * k))
                        let p = PackedBF16Matrix.packing(w)
                        for m in [1, 2, 3, 4, 7] {
                            let x = Tensor(randomUniform: [m, k], in: -2...2, seed: UInt64(m + k))
                            let want = Tensor(zeros: [m, n]), got = Tensor(zeros: [m, n])
                            Kernels.linearBatch([LinearJob(input: x, weight: w, output: want)], pool: pool)
                            Kernels.linearBatch([LinearJob(input: x, weight: w, output: got, packedWeight: p)], pool: pool)
                            XCTAssertEqual(got.toFloats().map(\.bitPattern), want.toFloats().map(\.bitPattern),
                                           "\(isa) bf16 activations \(dot), \(pool.threadCount) threads, [\(n), \(k)], \(m) rows")
                        }
                    }
                }
            }
        }
    }

    /// Several packed jobs streamed together (an MoE layer's experts at decode), each piece
    /// prefetching the next job's rows.
    func testABatchOfPackedJobsEqualsTheBF16Batch() {
        let weights = (0..<5).map { weight(48, 256, seed: UInt64(40 + $0)) }
        let x = Tensor(randomUniform: [2, 256], in: -1...1, seed: 9)
        let want = weights.map { _ in Tensor(zeros: [2, 48]) }, got = weights.map { _ in Tensor(zeros: [2, 48]) }
        Kernels.linearBatch(weights.indices.map { LinearJob(input: x, weight: weights[$0], output: want[$0]) })
        Kernels.linearBatch(weights.indices.map {
            LinearJob(input: x, weight: weights[$0], output: got[$0], packedWeight: PackedBF16Matrix.packing(weights[$0]))
        })
        for i in weights.indices { XCTAssertEqual(got[i].toFloats().map(\.bitPattern), want[i].toFloats().map(\.bitPattern), "job \(i)") }
    }
}
