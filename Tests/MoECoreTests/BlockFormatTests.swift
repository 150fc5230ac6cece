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
                        let bound = Self.activationQuantizationBound(x: x, dense: dense, block: Kernels.activationBlock(for: dtype, k: cols))
                        for (i, (a, b)) in zip(got, want).enumerated() {
                            XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, scale) + bound[i], "\(f.type) \(isa) m \(m)")
                        }
                    }
                }
            }
        }
    }

    /// The most that rounding the activations to 8-bit blocks of `block` values (scale
    /// amax / 127, so an error of at most amax / 254 per value) can move each product x W^T,
    /// [M * N]; zeros when the product runs in f32 (block 0).
    static func activationQuantizationBound(x: Tensor, dense: Tensor, block: Int) -> [Float] {
        let (m, k, n) = (x.shape[0], x.shape[1], dense.shape[0])
        if block == 0 { return Array(repeating: 0, count: m * n) }
        let xs = x.toFloats(), ws = dense.toFloats()
        var bound = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for b in stride(from: 0, to: k, by: block) {
                let amax = xs[(i * k + b)..<(i * k + b + block)].map(abs).max() ?? 0
                for r in 0..<n {
                    let wsum = ws[(r * k + b)..<(r * k + b + block)].reduce(Float(0)) { $0 + abs($1) }
                    bound[i * n + r] += amax / 254 * wsum * 1.001
                }
            }
        }
        return bound
    }

    /// The integer leaves at sizes the fixture blocks do not reach (rows of many blocks, an odd
    /// number of weight rows, up to 37 activation rows through the decode and prefill splits;
    /// 40 rows of 10 blocks against 13, 24 and 29 activation rows, where the rows-in-lanes leaf of
    /// Q4_K, Q5_K and Q6_K runs groups of 16 rows, repacks 8 blocks and then 2, and leaves a
    /// remainder to the row leaf): within the activation rounding bound of the f32 product, and strictly closer than
    /// it on average, so a leaf that dropped a block or a scale could not pass. One activation row
    /// runs twice where the VBMI builds of the one-row leaves run, with them and without.
    func testIntegerLeavesOnLargerRows() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/quant/vectors.json")
        let vectors = try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
        for f in vectors.formats {
            for (n, k, ms) in [(19, 1024, [1, 4, 5, 37]), (40, 2560, [13, 24, 29])] {
                let dtype = try XCTUnwrap(DType(name: f.type))
                guard Kernels.activationBlock(for: dtype, k: k) > 0 else { continue }
                let source = [UInt8](try XCTUnwrap(Data(base64Encoded: f.bytes)))
                let blockBytes = dtype.blockBytes, available = source.count / blockBytes
                let w = Tensor(uninitialized: [n, k], dtype: dtype)
                let count = n * k / dtype.blockElements
                let out = w.mutableRawPointer.assumingMemoryBound(to: UInt8.self)
                for b in 0..<count {  // blocks of the fixture in a scrambled order
                    let from = (b * 7 + b / available) % available
                    for j in 0..<blockBytes { out[b * blockBytes + j] = source[from * blockBytes + j] }
                }
                let dense = Tensor(shape: [n, k], values: w.toFloats())
                // The one-row leaves twice where the VBMI builds run: with them and without.
                let both = allowVBMI(true)
                let builds = ms.flatMap { m in m == 1 && both ? [(m, true), (m, false)] : [(m, true)] }
                defer { allowVBMI(true) }
                for (m, vbmi) in builds {
                    allowVBMI(vbmi)
                    let x = Tensor(randomUniform: [m, k], in: -2...2, seed: UInt64(100 + m))
                    let got = Kernels.matmul(x, w, pool: ThreadPool(threads: 2)).toFloats()
                    let want = Kernels.matmul(x, dense, pool: ThreadPool(threads: 1)).toFloats()
                    let bound = Self.activationQuantizationBound(x: x, dense: dense, block: Kernels.activationBlock(for: dtype, k: k))
                    var error: Float = 0, budget: Float = 0
                    let label = "\(f.type) m \(m)\(vbmi ? "" : " without vbmi")"
                    for i in 0..<want.count {
                        XCTAssertEqual(got[i], want[i], accuracy: bound[i] + 1e-4 * abs(want[i]), "\(label) at \(i)")
                        error += abs(got[i] - want[i])
                        budget += bound[i]
                    }
                    XCTAssertLessThan(error, budget / 4, "\(label): rounding errors should mostly cancel")
                }
            }
        }
    }
}

extension BlockFormatTests {
    /// A non-finite activation gives NaN through the integer leaves, as through f32, never a
    /// finite value computed from a clamped or zeroed activation.
    func testNonFiniteActivationsGiveNaNThroughIntegerLeaves() {
        for dtype in [DType.q8_0, .q4_K] where Kernels.activationBlock(for: dtype, k: 512) > 0 {
            let w = KernelBenchmark.randomWeight([8, 512], seed: 1, dtype: dtype)
            for bad in [Float.nan, .infinity] {
                var xs = [Float](repeating: 0.5, count: 512)
                xs[300] = bad
                let y = Kernels.matmul(Tensor(shape: [1, 512], values: xs), w).toFloats()
                XCTAssertTrue(y.allSatisfy(\.isNaN), "\(dtype) with \(bad): \(y)")
            }
        }
    }
}
