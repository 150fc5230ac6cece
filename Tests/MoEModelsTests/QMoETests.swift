import Foundation
@testable import MoE
@testable import MoECore
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
        // Mostly zeros code well: far fewer codes than pairs, and some codes run past the 28
        // weights the masks cover, on zeros.
        XCTAssertLessThan(m.codeCount * 4, rows * cols / 2)
        XCTAssertTrue(m.parts.codes.contains { TernaryDictionary.fields(dictionary.entries[Int($0)]).length > TernaryDictionary.maskedRun })
        let sparse = ternaryRows(rows: rows, cols: cols, zeros: 0.99, seed: 5)
        XCTAssertEqual(try matrix(sparse, rows: rows, cols: cols, dictionary: dictionary).ternary(rows: 0..<rows), sparse)
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
        for entry: UInt64 in [0, 3 << 56, 58 << 56, 1 | 1 << 28 | 2 << 56, 1 << 5 | 4 << 56, 1 << 62 | 2 << 56] {
            var entries = dictionary.entries
            entries[77] = entry
            XCTAssertThrowsError(try TernaryDictionary(entries: entries, path: "d")) { XCTAssertTrue("\($0)".contains("dictionary[77]"), "\($0)") }
        }
        XCTAssertThrowsError(try TernaryDictionary(entries: [UInt64](repeating: 1 << 57, count: TernaryDictionary.maxSize + 1), path: "d"))
        XCTAssertThrowsError(try TernaryDictionary(entries: [], path: "d"))
    }

    /// Without stored offsets, each row's first code is found by walking the codes: the same
    /// offsets the encoder gave, and codes that do not split into rows of K are refused.
    func testRowOffsetsFoundFromTheCodes() throws {
        let values = ternaryRows(rows: 5, cols: 60, zeros: 0.85, seed: 4)
        let dictionary = try TernaryCodebook.dictionary(rows: (0..<5).map { values[($0 * 60)..<(($0 + 1) * 60)] })
        let c = try TernaryCodebook.encode(values, rows: 5, cols: 60, dictionary: dictionary)
        let scales = [UInt16](repeating: 0x3C00, count: 10)
        func walked(_ codes: [UInt16], rows: Int = 5, cols: Int = 60, _ d: TernaryDictionary? = nil) throws -> TernaryMatrix {
            let storage = TernaryMatrix.copy(codes), s = TernaryMatrix.copy(scales)
            return try TernaryMatrix(rows: rows, cols: cols, codes: UnsafePointer(storage.base.assumingMemoryBound(to: UInt16.self)),
                                     codeCount: codes.count, scales: UnsafePointer(s.base.assumingMemoryBound(to: UInt16.self)),
                                     owners: [storage, s], dictionary: d ?? dictionary)
        }
        let m = try walked(c.codes)
        XCTAssertEqual(m.parts.offsets, c.offsets)
        XCTAssertEqual(m.ternary(rows: 0..<5), values)
        XCTAssertThrowsError(try walked(c.codes + [c.codes[0]])) { XCTAssertTrue("\($0)".contains("past the last row"), "\($0)") }
        XCTAssertThrowsError(try walked(Array(c.codes.dropLast()))) { XCTAssertTrue("\($0)".contains("codes of row 4"), "\($0)") }
        XCTAssertThrowsError(try walked(c.codes, cols: 62)) { XCTAssertTrue("\($0)".contains("codes of row"), "\($0)") }
        // A code past a short dictionary's entries.
        let short = try TernaryDictionary(entries: Array(dictionary.entries.prefix(9)))
        XCTAssertThrowsError(try walked(c.codes.map { max($0, 9) }, short)) { XCTAssertTrue("\($0)".contains("past the dictionary"), "\($0)") }
    }

    /// The dictionary is sized for the model: a few thousand weights get a short one (its
    /// entries would cost more than they save), a large model the full 65536, and both code
    /// every row exactly.
    func testTheDictionaryIsSizedForTheModel() throws {
        let (rows, cols) = (64, 512)
        let values = ternaryRows(rows: rows, cols: cols, zeros: 0.9, seed: 9)
        let sample = (0..<rows).map { values[($0 * cols)..<(($0 + 1) * cols)] }
        let small = try TernaryCodebook.dictionary(rows: sample, weights: values.count)
        let large = try TernaryCodebook.dictionary(rows: sample, weights: 1 << 34)
        XCTAssertEqual(small.entries.count, 512)
        XCTAssertGreaterThan(large.entries.count, 4096)
        for d in [small, large] {
            let c = try TernaryCodebook.encode(values, rows: rows, cols: cols, dictionary: d)
            XCTAssertLessThan(Int(c.codes.max() ?? 0), d.entries.count)
            XCTAssertEqual(try matrix(values, rows: rows, cols: cols, dictionary: d).ternary(rows: 0..<rows), values)
        }
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
        let target = good.names.filter { $0.hasSuffix(".qmoe_codes") }[1]
        let stem = target.replacingOccurrences(of: ".qmoe_codes", with: "")
        let loaded = try DecoderModel(directory: out)
        let layer = try XCTUnwrap(loaded.spec.moeLayers.firstIndex(of: true))
        let experts = try XCTUnwrap({ if case let .moe(m) = loaded.layers[layer].ffn { return m.experts as? TernaryExperts }; return nil }())
        // The codes of the second coded tensor, whichever projection it is.
        let targetCodes: [UInt16] = Data(try good.files[target]!.bytes(target)).withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        let coded = try XCTUnwrap((experts.gate + experts.up + experts.down).first { $0.parts.codes == targetCodes })
        let offsets = coded.parts.offsets
        // Corrupt codes, a wrong dtype, and the offsets tensor of an earlier MoEKit: right
        // (it loads) and wrong (refused).
        for (corrupt, expected) in [("shift", "codes"), ("dtype", "U16"), ("offsets", ""), ("bad offsets", "codes of row 0")] {
            var entries: [SafetensorsWriter.RawEntry] = []
            for name in good.names {
                let f = good.files[name]!, e = f.entries[name]!
                var data = Data(try f.bytes(name)), dtype = e.dtypeName
                if name == target {
                    if corrupt == "shift" { data.append(contentsOf: [0, 0]) } else if corrupt == "dtype" { dtype = "I16" }
                }
                let shape = name == target && corrupt == "shift" ? [e.shape[0] + 1] : e.shape
                entries.append(.init(name: name, dtype: dtype, shape: shape) { data })
            }
            if corrupt.hasSuffix("offsets") {
                var o = offsets
                if corrupt == "bad offsets" { o[1] += 1 }
                entries.append(.init(name: "\(stem).qmoe_offsets", dtype: "U32", shape: [o.count]) { o.withUnsafeBytes { Data($0) } })
            }
            try SafetensorsWriter.write(raw: entries, to: file)
            if expected.isEmpty {
                XCTAssertNoThrow(try DecoderModel(directory: out), corrupt)
                continue
            }
            XCTAssertThrowsError(try DecoderModel(directory: out)) { error in
                XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(stem), "\(corrupt) \(target) \(error)")
            }
        }
        // A dictionary of no entries, of more than 65536, of another dtype, or too short for the codes.
        let name = TernaryCheckpoint.dictionaryName
        for (count, dtype, expected) in [(0, "U64", "U64 [1 to 65536]"), (65537, "U64", "U64 [1 to 65536]"), (16, "U32", "U64 [1 to 65536]"),
                                         (9, "U64", "past the dictionary")] {
            var entries: [SafetensorsWriter.RawEntry] = []
            for n in good.names where n != name {
                let f = good.files[n]!, e = f.entries[n]!
                let data = Data(try f.bytes(n))
                entries.append(.init(name: n, dtype: e.dtypeName, shape: e.shape) { data })
            }
            var singles: [UInt64] = []
            for s in 0..<9 {
                let pair: [Int8] = [Int8(s / 3 - 1), Int8(s % 3 - 1)]
                singles.append(TernaryDictionary.entry(pair[...]))
            }
            let d: [UInt64] = (0..<count).map { singles[$0 % 9] }
            let bytes: Data = dtype == "U64" ? d.withUnsafeBytes { Data($0) } : Data(count: 4 * count)
            entries.append(.init(name: name, dtype: dtype, shape: [count]) { bytes })
            try SafetensorsWriter.write(raw: entries, to: file)
            XCTAssertThrowsError(try DecoderModel(directory: out)) { error in
                XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(file), "\(count) \(dtype): \(error)")
            }
        }
    }
}

extension SplitMix64 {
    /// A uniform value in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(UInt64(1) << 53) }
}
