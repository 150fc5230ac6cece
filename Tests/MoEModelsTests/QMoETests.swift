import Foundation
@testable import MoE
import MoECore
@testable import MoEModels
import MoEQuant
import XCTest
import _TestSupport

/// QMoE's coded ternary experts: the dictionary code round-trips, the fused products equal
/// decode-then-multiply on every instruction set, bad codes are refused, and a quantized
/// checkpoint runs exactly as its decoded weights would.
final class QMoETests: XCTestCase {
    /// Ternary rows with about `zeros` of their weights at 0.
    func ternaryRows(rows: Int, cols: Int, zeros: Double, seed: UInt64) -> [Int8] {
        var rng = SplitMix64(seed: seed)
        return (0..<(rows * cols)).map { _ in
            let u = rng.unit()
            return u < zeros ? 0 : u < zeros + (1 - zeros) / 2 ? 1 : -1
        }
    }

    func matrix(_ values: [Int8], rows: Int, cols: Int, dictionary: TernaryDictionary) throws -> TernaryMatrix {
        let c = try TernaryCodebook.encode(values, rows: rows, cols: cols, dictionary: dictionary)
        var pairs: [Float] = []
        for r in 0..<rows {
            pairs.append(-0.5 - Float(r) / 16)
            pairs.append(0.25 + Float(r) / 8)
        }
        let scales = TernaryMatrix.f16Bits(pairs)
        return try TernaryMatrix(rows: rows, cols: cols, codes: c.codes, offsets: c.offsets, scales: scales, dictionary: dictionary)
    }

    func testCodesRoundTripThroughTheDictionary() throws {
        let (rows, cols) = (40, 132)
        let values = ternaryRows(rows: rows, cols: cols, zeros: 0.9, seed: 1)
        let dictionary = try TernaryCodebook.dictionary(rows: (0..<rows).map { values[($0 * cols)..<(($0 + 1) * cols)] })
        let m = try matrix(values, rows: rows, cols: cols, dictionary: dictionary)
        XCTAssertEqual(m.ternary(rows: 0..<rows), values)
        XCTAssertEqual(m.ternary(rows: 7..<9), Array(values[(7 * cols)..<(9 * cols)]))
        // Mostly zeros code well: far fewer codes than pairs.
        XCTAssertLessThan(m.codeCount * 4, rows * cols / 2)
        // Rows the dictionary never saw still encode (the single pairs are always in it).
        let other = ternaryRows(rows: 5, cols: cols, zeros: 0.2, seed: 2)
        XCTAssertEqual(try matrix(other, rows: 5, cols: cols, dictionary: dictionary).ternary(rows: 0..<5), other)
    }

    /// Every path's product against decode-then-multiply: the scalar leaf adds in the same order
    /// (bitwise equal); the vector leaves add in lanes, and 8 or more activation rows go through
    /// widened tiles and the GEMM (within f32 rounding).
    func testFusedProductsEqualDecodeThenMultiply() throws {
        for (rows, cols) in [(9, 100), (33, 256), (4, 30)] {
            let values = ternaryRows(rows: rows, cols: cols, zeros: 0.8, seed: UInt64(cols))
            let dictionary = try TernaryCodebook.dictionary(rows: (0..<rows).map { values[($0 * cols)..<(($0 + 1) * cols)] })
            let m = try matrix(values, rows: rows, cols: cols, dictionary: dictionary)
            for tokens in [1, 3, 6, 9, 40] {  // from 8 rows on, tiles widened and the GEMM
                var rng = SplitMix64(seed: UInt64(tokens))
                let x = Tensor(shape: [tokens, cols], values: (0..<(tokens * cols)).map { _ in Float(rng.unit() * 2 - 1) })
                let xs = x.toFloats()
                var want = [Float](repeating: 0, count: tokens * rows)
                for t in 0..<tokens {
                    for r in 0..<rows {
                        var p: Float = 0, n: Float = 0
                        for j in 0..<cols {
                            if values[r * cols + j] > 0 { p += xs[t * cols + j] } else if values[r * cols + j] < 0 { n += xs[t * cols + j] }
                        }
                        let (lo, hi) = m.scales(row: r)
                        want[t * rows + r] = hi * p + lo * n
                    }
                }
                try forEachISA { isa in
                    let got = Kernels.ternaryLinear(x, m, pool: ThreadPool(threads: 2))
                    if isa == "scalar" && tokens < 8 {
                        XCTAssertEqual(got.toFloats(), want, "\(isa) [\(rows), \(cols)] x \(tokens)")
                    } else {
                        assertClose(got.toFloats(), want, absolute: 1e-5, relative: 1e-5, "\(isa) [\(rows), \(cols)] x \(tokens)")
                    }
                }
                // And the dense product of the decoded weights.
                assertClose(Kernels.ternaryLinear(x, m, pool: .shared).toFloats(), Kernels.matmul(x, m.dequantized()).toFloats(),
                            absolute: 1e-5, relative: 1e-5)
            }
        }
    }

    func testBadCodesAreRefusedBeforeAnyProduct() throws {
        let values = ternaryRows(rows: 3, cols: 40, zeros: 0.8, seed: 3)
        let dictionary = try TernaryCodebook.dictionary(rows: [values[0..<40]])
        let c = try TernaryCodebook.encode(values, rows: 3, cols: 40, dictionary: dictionary)
        let scales = [UInt16](repeating: 0x3C00, count: 6)
        // A row whose runs add up to more or fewer weights than K.
        XCTAssertThrowsError(try TernaryMatrix(rows: 3, cols: 42, codes: c.codes, offsets: c.offsets, scales: scales, dictionary: dictionary)) {
            XCTAssertTrue("\($0)".contains("codes of row 0"), "\($0)")
        }
        // Offsets past the codes, or going backwards.
        var bad = c.offsets
        bad[3] += 1
        XCTAssertThrowsError(try TernaryMatrix(rows: 3, cols: 40, codes: c.codes, offsets: bad, scales: scales, dictionary: dictionary)) {
            XCTAssertTrue("\($0)".contains("offsets"), "\($0)")
        }
        bad = c.offsets
        (bad[1], bad[2]) = (bad[2], bad[1])
        XCTAssertThrowsError(try TernaryMatrix(rows: 3, cols: 40, codes: c.codes, offsets: bad, scales: scales, dictionary: dictionary))
        // Dictionary entries that are not runs of 2...28 weights, or mark a weight both ways.
        for entry: UInt64 in [0, 3 << 56, 30 << 56, 1 | 1 << 28 | 2 << 56, 1 << 5 | 4 << 56] {
            var entries = dictionary.entries
            entries[77] = entry
            XCTAssertThrowsError(try TernaryDictionary(entries: entries, path: "d")) { XCTAssertTrue("\($0)".contains("dictionary[77]"), "\($0)") }
        }
        XCTAssertThrowsError(try TernaryDictionary(entries: [1 << 57], path: "d"))
    }

    /// `moe quantize --type qmoe` on fixture checkpoints of several families: the folder it
    /// writes loads with coded experts, keeps every other tensor byte for byte, and its logits
    /// equal those of the same model with the experts' decoded weights in f32.
    func testAQuantizedCheckpointRunsAsItsDecodedWeights() throws {
        for family in ["mixtral", "qwen2_moe", "gpt_oss", "deepseek_v2"] {
            let source = fixturesDirectory.appendingPathComponent(family).path
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("qmoe-\(family)-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: out) }
            var options = QMoEQuantizer.Options()
            options.minTokens = 4
            let tokens = (0..<96).map { ($0 * 37 + 11) % 256 }
            let report = try QMoEQuantizer.quantize(directory: source, calibration: tokens, options: options, out: out)
            XCTAssertGreaterThan(report.expertParameters, 0)
            XCTAssertLessThan(report.expertsRoundedToNearest, report.expertParameters)
            let coded = try DecoderModel(directory: out)
            let decoded = try DecoderModel(directory: out)
            var sawCoded = false
            for (i, layer) in decoded.layers.enumerated() {
                guard case var .moe(moe) = layer.ffn else { continue }
                let t = try XCTUnwrap(moe.experts as? TernaryExperts, "\(family) layer \(i)")
                var dense = SwiGLUExperts(gate: t.gate.map { $0.dequantized() }, up: t.up.map { $0.dequantized() },
                                          down: t.down.map { $0.dequantized() })
                dense.activation = t.activation
                dense.biases = t.biases
                moe.experts = dense
                decoded.layers[i] = .init(inputNorm: layer.inputNorm, postNorm: layer.postNorm, attention: layer.attention, ffn: .moe(moe))
                sawCoded = true
            }
            XCTAssertTrue(sawCoded, family)
            XCTAssertThrowsError(try coded.useExpertCache(budget: 1 << 30)) { XCTAssertTrue("\($0)".contains("QMoE"), "\($0)") }
            var c1 = coded.makeCache(), c2 = decoded.makeCache()
            let ids = (0..<40).map { ($0 * 7 + 1) % 256 }  // enough rows per expert for the tiled products too
            assertClose(try coded.forward(ids, cache: &c1).toFloats(), try decoded.forward(ids, cache: &c2).toFloats(),
                        absolute: 1e-4, relative: 1e-4, family)
            // Every tensor but the experts' is copied as it was; the experts' are not.
            let before = try Checkpoint(directory: source), after = try Checkpoint(directory: out)
            let moeLayer = try XCTUnwrap(coded.spec.moeLayers.firstIndex(of: true))
            let expert = coded.spec.names.expert(moeLayer, 0)
            for name in [expert.gate, expert.up, expert.down] { XCTAssertFalse(after.files[name] != nil, "\(family): \(name) copied") }
            for name in after.names where !name.contains("qmoe") {
                XCTAssertEqual(try after.files[name]!.bytes(name).elementsEqual(before.files[name]!.bytes(name)), true, name)
            }
        }
    }

    /// A coded checkpoint with a corrupt part names the file and tensor.
    func testACorruptCodedCheckpointGivesATypedError() throws {
        let source = fixturesDirectory.appendingPathComponent("mixtral").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("qmoe-bad-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        _ = try QMoEQuantizer.quantize(directory: source, calibration: Array(0..<64), out: out)
        let file = (out as NSString).appendingPathComponent("model.safetensors")
        let good = try Checkpoint(directory: out)
        let target = good.names.filter { $0.hasSuffix(".qmoe_offsets") }[1]
        for (corrupt, expected) in [("shift", "codes of row 0"), ("dtype", "U32")] {
            var entries: [SafetensorsWriter.RawEntry] = []
            for name in good.names {
                let f = good.files[name]!, e = f.entries[name]!
                var data = Data(try f.bytes(name)), dtype = e.dtypeName
                if name == target {
                    if corrupt == "shift" { data[4] = data[4] &+ 1 } else { dtype = "I32" }
                }
                entries.append(.init(name: name, dtype: dtype, shape: e.shape) { data })
            }
            try SafetensorsWriter.write(raw: entries, to: file)
            XCTAssertThrowsError(try DecoderModel(directory: out)) { error in
                XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(target.replacingOccurrences(of: ".qmoe_offsets", with: "")), "\(corrupt) \(target) \(error)")
            }
        }
    }
}

extension SplitMix64 {
    /// A uniform value in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(UInt64(1) << 53) }
}
