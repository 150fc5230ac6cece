import Foundation
import MoECore
import MoEModels
import MoEQuant
import _TestSupport
import XCTest

/// Importance matrices (`moe imatrix`, `moe quantize --imatrix|--calibration`): what the
/// collector sums against the model computed by hand and its routing, the files llama.cpp
/// reads (GGUF, written and read back; the older .dat, read), and llama-quantize's weights.
/// scripts/check-imatrix.sh compares with llama-imatrix and llama-quantize themselves.
final class ImportanceMatrixTests: XCTestCase {
    let models = fixturesDirectory.appendingPathComponent("gguf_models")

    func tokens(_ n: Int, vocab: Int) -> [Int] { (0..<n).map { ($0 * 7919 + 13) % vocab } }

    func testCollectorSumsEachWeightsSquaredInputsAndCountsRoutedTokens() throws {
        let path = models.appendingPathComponent("olmoe.f32.gguf").path
        let model = try DecoderModel(path: path)
        let s = model.spec, chunk = 16
        let ids = tokens(3 * chunk + 5, vocab: min(256, s.vocabSize))  // the folder and its GGUF share 256 ids
        let matrix = try ImportanceCollector.collect(path: path, tokens: ids, bos: 1, chunkSize: chunk, maxChunks: 2, dataset: "ids")
        XCTAssertEqual(matrix.chunkCount, 2)
        XCTAssertEqual(matrix.chunkSize, chunk)
        XCTAssertNil(matrix.entries["output.weight"], "the output projection only on request, as llama-imatrix")
        for name in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] {
            XCTAssertNotNil(matrix.entries["blk.1.\(name).weight"], name)
        }
        // Routed experts: each slice counts exactly the tokens the router sent to it.
        var routed = [[Int]](repeating: [Int](repeating: 0, count: s.experts), count: s.layers)
        var firstInput = [Double](repeating: 0, count: s.hiddenSize)
        let file = try GGUFFile(path: path)
        let (embed, norm) = (try file.tensor("token_embd.weight"), try file.tensor("blk.0.attn_norm.weight"))
        for c in 0..<2 {
            var chunkIDs = Array(ids[(c * chunk)..<((c + 1) * chunk)])
            chunkIDs[0] = 1
            var cache = model.makeCache()
            _ = try model.forward(chunkIDs, cache: &cache, options: ForwardOptions(trace: { layer, routing in
                for (e, n) in routing.tokensPerExpert.enumerated() { routed[layer][e] += n }
            }))
            // The first layer's attention input, by hand: the embedding rows, RMS-normed.
            let rows = Tensor(shape: [chunk, s.hiddenSize], values: chunkIDs.flatMap { embed[$0].toFloats() })
            let x = Kernels.rmsNorm(rows, weight: norm, eps: s.rmsNormEps).toFloats()
            for (i, v) in x.enumerated() { firstInput[i % s.hiddenSize] += Double(v * v) }
        }
        for layer in 0..<s.layers {
            let e = try XCTUnwrap(matrix.entries["blk.\(layer).ffn_down_exps.weight"])
            XCTAssertEqual(e.counts, routed[layer].map(Float.init), "layer \(layer)")
            XCTAssertEqual(e.sums.count, s.experts * s.expertIntermediate)
        }
        let q = try XCTUnwrap(matrix.entries["blk.0.attn_q.weight"])
        XCTAssertEqual(q.counts, [Float(2 * chunk)])
        for (got, want) in zip(q.sums, firstInput) { XCTAssertEqual(Double(got), want, accuracy: 1e-5 * max(1, want)) }
        // A checkpoint folder gives the entries its GGUF conversion gives, under llama.cpp's names.
        let folder = fixturesDirectory.appendingPathComponent("olmoe").path
        let converted = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-imatrix-olmoe-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: converted) }
        try GGUFConverter.convert(directory: folder, preset: .f32, to: converted)
        let (fromFolder, fromFile) = (try ImportanceCollector.collect(path: folder, tokens: ids, bos: 1, chunkSize: chunk, dataset: "ids"),
                                      try ImportanceCollector.collect(path: converted, tokens: ids, bos: 1, chunkSize: chunk, dataset: "ids"))
        XCTAssertEqual(Set(fromFolder.entries.keys), Set(fromFile.entries.keys))
        for (name, e) in fromFile.entries {
            XCTAssertEqual(fromFolder.entries[name]?.counts, e.counts, name)
            for (a, b) in zip(fromFolder.entries[name]?.sums ?? [], e.sums) { XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(b)), name) }
        }
        let withOutput = try ImportanceCollector.collect(path: path, tokens: ids, bos: nil, chunkSize: chunk, maxChunks: 1,
                                                         includeOutput: true, dataset: "ids")
        XCTAssertEqual(withOutput.entries["output.weight"]?.counts, [Float(chunk)])
        XCTAssertNil(Kernels.linearObserver, "the observer is removed after collecting")
    }

    func testGGUFFileRoundTripsAndWeightsAreLlamaQuantizes() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-imatrix-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let m = ImportanceMatrix(entries: ["blk.0.ffn_up_exps.weight": .init(sums: [2, 4, 6, 8, 1, 1], counts: [2, 0, 4]),
                                           "blk.0.attn_q.weight": .init(sums: [3, 6], counts: [3])],
                                 datasets: ["text.txt"], chunkCount: 7, chunkSize: 512)
        try m.write(to: path)
        let back = try ImportanceMatrix(path: path)
        XCTAssertEqual(back.entries, m.entries)
        XCTAssertEqual(back.datasets, ["text.txt"])
        XCTAssertEqual([back.chunkCount, back.chunkSize], [7, 512])
        // Each slice over its count; a slice no token reached weighs 1.
        XCTAssertEqual(try back.weights(for: "blk.0.ffn_up_exps.weight", columns: 2, slices: 3, path: path), [1, 2, 1, 1, 0.25, 0.25])
        XCTAssertEqual(try back.weights(for: "blk.0.attn_q.weight", columns: 2, slices: 1, path: path), [1, 2])
        XCTAssertNil(try back.weights(for: "blk.0.attn_k.weight", columns: 2, slices: 1, path: path))
        XCTAssertThrowsError(try back.weights(for: "blk.0.attn_q.weight", columns: 4, slices: 1, path: path)) { error in
            XCTAssertTrue("\(error)".contains("blk.0.attn_q.weight"), "\(error)")
        }
        let keys = m.quantizeRecords(path: "m.gguf").map(\.key)
        XCTAssertEqual(keys, ["quantize.imatrix.file", "quantize.imatrix.dataset", "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count"])
    }

    /// A GGUF imatrix without its metadata, with sums but no counts, or with counts in another
    /// type is a typed error naming the file and the key or tensor.
    func testMalformedGGUFImatrixIsATypedError() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-badimatrix-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let meta: [GGUFWriter.Record] = [.value(key: "imatrix.datasets", .stringArray(["t"])), .value(key: "imatrix.chunk_count", .u32(1)),
                                         .value(key: "imatrix.chunk_size", .u32(512))]
        func tensor(_ name: String, _ values: [Float], _ dtype: DType = .f32) -> GGUFWriter.TensorEntry {
            let t = Tensor(shape: [values.count], values: values, dtype: dtype)
            return GGUFWriter.TensorEntry(name: name, shape: [values.count], dtype: dtype) { sink throws(ModelError) in
                try sink.write(UnsafeRawBufferPointer(start: t.rawPointer, count: t.byteCount))
            }
        }
        let cases: [([GGUFWriter.Record], [GGUFWriter.TensorEntry], String)] = [
            (Array(meta.dropLast()), [tensor("w.in_sum2", [1, 2]), tensor("w.counts", [1])], "imatrix.chunk_size"),
            (meta, [tensor("w.in_sum2", [1, 2])], "w.counts"),
            (meta, [tensor("w.counts", [1])], "w.in_sum2"),
            (meta, [tensor("w.in_sum2", [1, 2], .f16), tensor("w.counts", [1])], "w.in_sum2"),
            (meta, [tensor("w.in_sum2", [1, 2, 3]), tensor("w.counts", [1, 1])], "w.in_sum2"),
        ]
        for (records, tensors, field) in cases {
            try GGUFWriter.write(to: path, records: records, tensors: tensors)
            XCTAssertThrowsError(try ImportanceMatrix(path: path), field) { error in
                XCTAssertTrue("\(error)".contains(path) && "\(error)".contains(field), "\(error)")
            }
        }
    }

    func testLegacyDatFileIsRead() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-imatrix-\(getpid()).dat").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var d = Data()
        func i32(_ v: Int32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func f32(_ v: Float) { withUnsafeBytes(of: v.bitPattern.littleEndian) { d.append(contentsOf: $0) } }
        i32(1)
        let name = "blk.0.attn_v.weight"
        i32(Int32(name.utf8.count)); d.append(contentsOf: Array(name.utf8))
        i32(4); i32(2); f32(8); f32(2)  // 4 calls: stored means times the calls
        i32(9); i32(4); d.append(contentsOf: Array("wiki".utf8))
        try d.write(to: URL(fileURLWithPath: path))
        let m = try ImportanceMatrix(path: path)
        XCTAssertTrue(m.isLegacy)
        XCTAssertEqual(m.datasets, ["wiki"])
        XCTAssertEqual(m.chunkCount, 9)
        XCTAssertEqual(try m.weights(for: name, columns: 2, slices: 1, path: path), [2, 0.5])
        // Cut anywhere, it is a typed error naming the file, never a read past the end.
        for cut in stride(from: 1, to: d.count - 12, by: 3) {
            try d.prefix(cut).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try ImportanceMatrix(path: path), "cut at \(cut)") { error in
                XCTAssertTrue("\(error)".contains(path), "\(error)")
            }
        }
    }

    /// llama-quantize keeps the first eighth of ffn_down in Q4_1 / Q5_1 for Q4_0 / Q5_0 with an imatrix.
    func testQ4_0WithAnImatrixKeepsEarlyFFNDownInQ4_1() {
        let names = (0..<8).flatMap { ["blk.\($0).ffn_down.weight", "blk.\($0).ffn_up.weight"] } + ["output.weight", "token_embd.weight"]
        for (preset, early) in [(QuantizationPreset.q4_0, DType.q4_1), (.q5_0, .q5_1)] {
            var with = QuantizationPlan(preset: preset, names: names, layers: 8, experts: 0, hasImportance: true)
            var without = QuantizationPlan(preset: preset, names: names, layers: 8, experts: 0)
            for name in QuantizationPlan.fileOrder(names) {
                let (a, b) = (with.type(for: name, shape: [64, 256], stored: .f32), without.type(for: name, shape: [64, 256], stored: .f32))
                XCTAssertEqual(a, name == "blk.0.ffn_down.weight" ? early : b, name)
            }
        }
        // IQ4_NL and IQ4_XS move the first eighth of ffn_down to Q5_K only without an imatrix.
        for preset in [QuantizationPreset.iq4_nl, .iq4_xs] {
            var with = QuantizationPlan(preset: preset, names: names, layers: 8, experts: 0, hasImportance: true)
            var without = QuantizationPlan(preset: preset, names: names, layers: 8, experts: 0)
            for name in QuantizationPlan.fileOrder(names) {
                let (a, b) = (with.type(for: name, shape: [64, 256], stored: .f32), without.type(for: name, shape: [64, 256], stored: .f32))
                XCTAssertEqual(b, name == "blk.0.ffn_down.weight" ? .q5_K : a, "\(preset) \(name)")
            }
        }
    }
}
