import Foundation
import MoECore
import _TestSupport
import XCTest

/// Every block format's dequantization against the `gguf` Python package on committed random
/// blocks (scripts/make_quant_fixtures.py): bit for bit, through `Tensor.toFloats`.
final class BlockFormatTests: XCTestCase {
    struct Vectors: Decodable {
        struct Format: Decodable { var type: String, elements: Int, bytes: String, values: String }
        var formats: [Format]
    }

    func testDequantizationEqualsTheGGUFPackage() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/quant/vectors.json")
        let vectors = try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
        let blockFormats = DType.allCases.filter { !$0.isElementFormat }
        XCTAssertEqual(Set(vectors.formats.map(\.type)), Set(blockFormats.map(\.description)), "every block format has vectors")
        for f in vectors.formats {
            let dtype = try XCTUnwrap(DType(name: f.type), f.type)
            let bytes = try XCTUnwrap(Data(base64Encoded: f.bytes)), want = try XCTUnwrap(Data(base64Encoded: f.values))
            XCTAssertEqual(f.elements % dtype.blockElements, 0)
            XCTAssertEqual(bytes.count, dtype.storageBytes(elements: f.elements), "\(f.type) block size")
            let tensor = Tensor(uninitialized: [f.elements / dtype.blockElements, dtype.blockElements], dtype: dtype)
            XCTAssertEqual(tensor.byteCount, bytes.count)
            bytes.withUnsafeBytes { tensor.mutableRawPointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            let expected = want.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let got = tensor.toFloats()
            XCTAssertEqual(got.count, expected.count)
            let mismatches = zip(got, expected).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
            XCTAssertTrue(mismatches.isEmpty, "\(f.type): \(mismatches.count) values differ, first at \(mismatches.first.map { "\($0.offset): \($0.element.0) vs \($0.element.1)" } ?? "")")
            // A row view of block storage starts on its block.
            let second = tensor[1].toFloats()
            XCTAssertEqual(second, Array(expected[dtype.blockElements..<(2 * dtype.blockElements)]), f.type)
        }
    }

    /// The matrix-vector and matrix paths on block-format weights equal the same products on
    /// the dequantized weights (f32), for every format, 1 to 9 activation rows, 1 and 2 threads.
    func testProductsOnBlockWeightsEqualTheDequantizedProducts() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/quant/vectors.json")
        let vectors = try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
        for f in vectors.formats {
            let dtype = try XCTUnwrap(DType(name: f.type))
            let bytes = try XCTUnwrap(Data(base64Encoded: f.bytes))
            // Rows of 2 blocks of 32, or 1 block of 256: 6 or 3 weight rows.
            let cols = dtype.blockElements == 32 ? 64 : 256, rows = f.elements / cols
            let w = Tensor(uninitialized: [rows, cols], dtype: dtype)
            bytes.withUnsafeBytes { w.mutableRawPointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            let dense = Tensor(shape: [rows, cols], values: w.toFloats())
            try forEachISA { isa in
                for m in [1, 3, 9] {
                    let x = Tensor(randomUniform: [m, cols], in: -1...1, seed: UInt64(m))
                    for threads in [1, 2] {
                        let pool = ThreadPool(threads: threads)
                        let got = Kernels.matmul(x, w, pool: pool).toFloats(), want = Kernels.matmul(x, dense, pool: pool).toFloats()
                        let scale = want.map(abs).max() ?? 1
                        for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, scale), "\(f.type) \(isa) m \(m)") }
                    }
                }
            }
        }
    }
}
