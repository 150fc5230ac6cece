import Foundation
@testable import MoECore
import XCTest

/// Resident bf16 matrices with packed twins (`PackedBF16Matrix.attachTwin`): every product
/// with the mapped matrix reads the twin and equals the product with the stored bf16 bits, for
/// decode's rows and for a prompt's (unpacked for the call, a large weight in pieces).
final class PackedBF16TwinTests: XCTestCase {
    /// A file of two bf16 matrices (a [n, k] one at `offset`, a [40, 64] one after it), mapped.
    func mappedWeights(n: Int, k: Int, offset: Int = 64) throws -> (Tensor, Tensor) {
        let big = Tensor(randomNormal: [n, k], std: 0.02, seed: 3).converted(to: .bf16)
        let small = Tensor(randomNormal: [40, 64], std: 0.5, seed: 4).converted(to: .bf16)
        var bytes = Data(count: offset)
        bytes.append(Data(bytes: big.rawPointer, count: big.byteCount))
        bytes.append(Data(bytes: small.rawPointer, count: small.byteCount))
        let path = NSTemporaryDirectory() + "moekit-twin-\(UUID().uuidString).bin"
        try bytes.write(to: URL(fileURLWithPath: path))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        let file = try MappedFile(path: path)
        return (try Tensor(mapping: file, byteOffset: offset, shape: [n, k], dtype: .bf16),
                try Tensor(mapping: file, byteOffset: offset + big.byteCount, shape: [40, 64], dtype: .bf16))
    }

    func bits(_ t: Tensor) -> [UInt32] { t.toFloats().map(\.bitPattern) }

    func testProductsWithATwinEqualTheStoredMatrix() throws {
        let bf16Dot = Kernels.bf16Activations
        defer { Kernels.bf16Activations = bf16Dot }
        let (w, other) = try mappedWeights(n: 300, k: 256)
        let rows = [1, 3, 9, 130]
        var want: [Bool: [[UInt32]]] = [:]
        for dot in [false, true] {
            Kernels.bf16Activations = dot
            want[dot] = rows.map { m in
                let x = Tensor(randomUniform: [m, 256], in: -1...1, seed: UInt64(m))
                return bits(Kernels.matmul(x, w))
            }
        }
        XCTAssertNil(PackedBF16Matrix.twin(of: w))
        let twin = PackedBF16Matrix.attachTwin(to: w)
        XCTAssertLessThan(twin.byteCount, w.byteCount * 8 / 10)
        XCTAssertNotNil(PackedBF16Matrix.twin(of: w))
        XCTAssertNil(PackedBF16Matrix.twin(of: other), "a neighbour in the same file has none")
        XCTAssertNil(PackedBF16Matrix.twin(of: w.reshaped([150, 512])), "nor a view of another shape")
        XCTAssertEqual(PackedBF16Matrix.attachTwin(to: w).rowOffsets, twin.rowOffsets, "attaching twice keeps the one twin")
        if !PackedBF16Matrix.isFast { return }  // elsewhere the same leaves run on unpacked rows: checked by PackedBF16Tests
        for dot in [false, true] {
            Kernels.bf16Activations = dot
            for (i, m) in rows.enumerated() {
                let x = Tensor(randomUniform: [m, 256], in: -1...1, seed: UInt64(m))
                XCTAssertEqual(bits(Kernels.matmul(x, w)), want[dot]![i], "matmul, \(m) rows, bf16 activations \(dot)")
                let x2 = Tensor(randomUniform: [m, 64], in: -1...1, seed: 7)
                let y = Tensor(uninitialized: [m, 300]), z = Tensor(uninitialized: [m, 40])
                Kernels.linearBatch([LinearJob(input: x, weight: w, output: y), LinearJob(input: x2, weight: other, output: z)])
                XCTAssertEqual(bits(y), want[dot]![i], "linearBatch, \(m) rows, bf16 activations \(dot)")
                XCTAssertEqual(bits(z), bits(Kernels.matmul(x2, other)), "the job without a twin")
            }
        }
    }

    /// A prompt's product with a packed weight larger than the unpacking bound runs in pieces of
    /// its rows and equals the whole weight's product on every path a prompt takes.
    func testLargePackedWeightInPiecesEqualsTheWhole() {
        let bf16Dot = Kernels.bf16Activations
        defer { Kernels.bf16Activations = bf16Dot }
        // K 128 takes the direct matmul leaf above 128 rows, K 640 the packed one. A 1 KB bound
        // makes every piece the fewest rows one can have (`unpackedPieceRows`; pieces of 4 rows
        // were seen to change bits here).
        for (k, rows) in [(128, [5, 40, 129, 200]), (640, [200])] {
            let n = 1000
            let w = Tensor(randomNormal: [n, k], std: 0.02, seed: 8).converted(to: .bf16)
            let p = PackedBF16Matrix.packing(w)
            for dot in [false, true] {
                Kernels.bf16Activations = dot
                for pool in testPools {
                    for m in rows {
                        let x = Tensor(randomUniform: [m, k], in: -1...1, seed: UInt64(m))
                        let want = Kernels.matmul(x, w, pool: pool), got = Tensor(uninitialized: [m, n])
                        Kernels.runPackedBatch([LinearJob(input: x, weight: w, output: got, packedWeight: p)], pool: pool,
                                               unpackBytes: 1 << 10)
                        XCTAssertEqual(bits(got), bits(want), "K \(k), \(m) rows, \(pool.threadCount) threads, bf16 activations \(dot)")
                    }
                }
            }
        }
    }
}
