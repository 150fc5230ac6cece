import Foundation
import MoECore
import MoEModels
import MoEQuant
import XCTest

/// Split GGUF files as llama.cpp's llama-gguf-split writes them (scripts/make_split_gguf_fixture.sh:
/// the Qwen3-MoE Q8_0 fixture in three files, and again with no tensor in the first): opening the
/// first file opens the set, every tensor is the unsplit file's bytes, the model's logits equal
/// the unsplit file's bit for bit (resident and under an expert cache), quantizing writes one
/// file, and a set that is incomplete, out of order or opened at another file gives a typed
/// error naming the file.
final class GGUFSplitTests: XCTestCase {
    let fixtures = fixturesDirectory
    var unsplit: String { fixtures.appendingPathComponent("gguf_models/qwen3_moe.q8_0.gguf").path }
    func shard(_ set: String, _ k: Int) -> String { fixtures.appendingPathComponent("gguf_split/\(set)-0000\(k)-of-00003.gguf").path }
    let sets = ["qwen3_moe.q8_0", "qwen3_moe.q8_0.empty-first"]

    func testTheSetHoldsTheUnsplitTensors() throws {
        let whole = try GGUFFile(path: unsplit)
        for set in sets {
            let split = try GGUFFile(path: shard(set, 1))
            XCTAssertEqual(split.shardPaths, (1...3).map { shard(set, $0) }, set)
            XCTAssertEqual(split.tensorNames, whole.tensorNames, set)
            XCTAssertEqual(split.architecture, "qwen3moe")
            XCTAssertEqual(Set(split.tensors.values.map(\.shard)), set.hasSuffix("empty-first") ? [1, 2] : [0, 1, 2], set)
            for name in whole.tensorNames {
                let a = try whole.tensor(name), b = try split.tensor(name)
                XCTAssertEqual(a.shape, b.shape, name)
                XCTAssertEqual(a.dtype, b.dtype, name)
                XCTAssertEqual(Data(bytes: a.rawPointer, count: a.byteCount), Data(bytes: b.rawPointer, count: b.byteCount), "\(set): \(name)")
            }
        }
    }

    func testLogitsEqualTheUnsplitFile() throws {
        let want = try stepLogitBits(try DecoderModel(path: unsplit, pool: ThreadPool(threads: 2)))
        for set in sets {
            let model = try DecoderModel(path: shard(set, 1), pool: ThreadPool(threads: 2))
            XCTAssertEqual(try stepLogitBits(model), want, set)
            // Experts read with pread from the file of the set that holds them.
            let cached = try DecoderModel(path: shard(set, 1), pool: ThreadPool(threads: 2))
            let cache = try cached.useExpertCache(budget: try cached.storedBytes() - cached.routedExpertBytes + 3 * cached.largestExpertBytes)
            XCTAssertEqual(try stepLogitBits(cached), want, "\(set) under an expert cache")
            XCTAssertGreaterThan(cache.statistics.bytesRead, 0)
        }
    }

    /// `llama-gguf-split --merge` leaves `split.count` 0 in the file it writes: one file.
    func testAMergedSetIsOneFile() throws {
        let merged = fixtures.appendingPathComponent("gguf_split/qwen3_moe.q8_0.merged.gguf").path
        let file = try GGUFFile(path: merged)
        XCTAssertEqual(file.metadata["split.count"]?.int, 0)
        XCTAssertEqual(file.shardPaths, [merged])
        XCTAssertEqual(try stepLogitBits(try DecoderModel(path: merged)), try stepLogitBits(try DecoderModel(path: unsplit)))
    }

    func testQuantizingASetWritesOneFile() throws {
        let out = NSTemporaryDirectory() + "moekit-split-\(UUID().uuidString).gguf"
        defer { try? FileManager.default.removeItem(atPath: out) }
        try GGUFQuantizer.quantize(input: GGUFFile(path: shard(sets[0], 1)), preset: .q8_0, to: out)
        let written = try GGUFFile(path: out)
        XCTAssertEqual(written.shardPaths, [out])
        XCTAssertTrue(GGUFFile.splitKeys.isDisjoint(with: written.metadata.keys), "no split keys in one file")
        XCTAssertEqual(try stepLogitBits(try DecoderModel(path: out)), try stepLogitBits(try DecoderModel(path: unsplit)))
    }

    /// Quantizing into a split set (`--split-max-size`): files of at most the size, as
    /// llama-gguf-split names and types its keys (u16 `split.no` and `split.count`, i32
    /// `split.tensors.count`), the metadata in the first; the set opens and runs as one file.
    func testQuantizingIntoASplitSet() throws {
        let dir = NSTemporaryDirectory() + "moekit-split-out-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = try GGUFFile(path: unsplit)
        try GGUFQuantizer.quantize(input: input, preset: .q8_0, to: "\(dir)/one.gguf")
        let paths = try GGUFQuantizer.quantize(input: input, preset: .q8_0, to: "\(dir)/m.gguf", splitMaxBytes: 40_000)
        XCTAssertGreaterThan(paths.count, 2)
        XCTAssertEqual(paths, (0..<paths.count).map { String(format: "\(dir)/m-%05d-of-%05d.gguf", $0 + 1, paths.count) })
        let set = try GGUFFile(path: paths[0]), one = try GGUFFile(path: "\(dir)/one.gguf")
        XCTAssertEqual(set.shardPaths, paths)
        XCTAssertEqual(set.tensorNames, one.tensorNames)
        for (k, path) in paths.enumerated() {
            let file = try GGUFFile(path: path, alone: true)
            // Each file's own tensor data: at most the size, unless one tensor is larger.
            let own = Array(file.tensors.values)
            let bytes = own.reduce(0) { $0 + $1.dtype.storageBytes(elements: $1.shape.reduce(1, *)) }
            XCTAssertTrue(bytes <= 40_000 || own.count == 1, "\(path): \(bytes) bytes in \(own.count) tensors")
            func typeID(_ key: String) -> UInt32? {
                guard let r = file.records.first(where: { $0.key == key }) else { return nil }
                let raw = file.recordBytes(r)
                return raw.loadUnaligned(fromByteOffset: 8 + key.utf8.count, as: UInt32.self)
            }
            XCTAssertEqual(typeID("split.no"), 2, path)
            XCTAssertEqual(typeID("split.count"), 2, path)
            XCTAssertEqual(typeID("split.tensors.count"), 5, path)
            XCTAssertEqual(file.metadata["split.no"]?.int, k)
            XCTAssertEqual(file.architecture, k == 0 ? "qwen3moe" : nil, "the metadata in the first file only")
        }
        XCTAssertEqual(try stepLogitBits(try DecoderModel(path: paths[0])), try stepLogitBits(try DecoderModel(path: "\(dir)/one.gguf")))
        XCTAssertThrowsError(try GGUFQuantizer.quantize(input: input, preset: .q8_0, to: "\(dir)/m.bin", splitMaxBytes: 40_000)) { error in
            XCTAssertTrue("\(error)".contains(".gguf"), "\(error)")
        }
    }

    func testBadSetsNameTheFile() throws {
        let dir = NSTemporaryDirectory() + "moekit-split-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fm = FileManager.default
        func copy(_ k: Int, as name: String) throws { try fm.copyItem(atPath: shard(sets[0], k), toPath: "\(dir)/\(name)") }
        func expect(_ path: String, _ field: String?, mentioning text: String, line: UInt = #line) {
            XCTAssertThrowsError(try GGUFFile(path: path), line: line) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(text), message, line: line)
                if let field { XCTAssertTrue(message.contains(field), message, line: line) }
            }
        }
        // Opened at the second file: the error names the first.
        expect(shard(sets[0], 2), "split.no", mentioning: "qwen3_moe.q8_0-00001-of-00003.gguf")
        // The third file missing.
        try copy(1, as: "m-00001-of-00003.gguf")
        try copy(2, as: "m-00002-of-00003.gguf")
        expect("\(dir)/m-00001-of-00003.gguf", nil, mentioning: "m-00003-of-00003.gguf")
        // The second and third swapped.
        try copy(3, as: "m-00002-of-00003.gguf.tmp")
        try fm.removeItem(atPath: "\(dir)/m-00002-of-00003.gguf")
        try fm.moveItem(atPath: "\(dir)/m-00002-of-00003.gguf.tmp", toPath: "\(dir)/m-00002-of-00003.gguf")
        try copy(2, as: "m-00003-of-00003.gguf")
        expect("\(dir)/m-00001-of-00003.gguf", "split.no", mentioning: "m-00002-of-00003.gguf")
        // The same set under another name count: the others cannot be found.
        try copy(1, as: "renamed.gguf")
        expect("\(dir)/renamed.gguf", "split.count", mentioning: "-00001-of-00003.gguf")
        // Sets written here: a tensor in two files, and a tensor count that does not add up.
        func write(_ path: String, no: UInt32, count: UInt32, total: Int32, tensors: [String]) throws {
            let records: [GGUFWriter.Record] = [.value(key: "general.architecture", .string("qwen3moe")), .value(key: "split.no", .u32(no)),
                                                .value(key: "split.count", .u32(count)), .value(key: "split.tensors.count", .i32(total))]
            let values = Tensor(shape: [32], values: (0..<32).map(Float.init))
            try GGUFWriter.write(to: path, records: records, tensors: tensors.map { name in
                GGUFWriter.TensorEntry(name: name, shape: [32], dtype: .f32) { sink throws(ModelError) in
                    try sink.write(UnsafeRawBufferPointer(start: values.rawPointer, count: values.byteCount))
                }
            })
        }
        try write("\(dir)/d-00001-of-00002.gguf", no: 0, count: 2, total: 3, tensors: ["a.weight", "b.weight"])
        try write("\(dir)/d-00002-of-00002.gguf", no: 1, count: 2, total: 3, tensors: ["b.weight"])
        expect("\(dir)/d-00001-of-00002.gguf", "b.weight", mentioning: "d-00001-of-00002.gguf")
        try write("\(dir)/d-00002-of-00002.gguf", no: 1, count: 2, total: 3, tensors: ["c.weight", "e.weight"])
        expect("\(dir)/d-00001-of-00002.gguf", "split.tensors.count", mentioning: "hold 4 tensors")
        try write("\(dir)/d-00002-of-00002.gguf", no: 1, count: 3, total: 3, tensors: ["c.weight"])
        expect("\(dir)/d-00001-of-00002.gguf", "split.count", mentioning: "d-00002-of-00002.gguf")
        try write("\(dir)/d-00002-of-00002.gguf", no: 1, count: 2, total: 3, tensors: ["c.weight"])
        XCTAssertEqual(try GGUFFile(path: "\(dir)/d-00001-of-00002.gguf").tensorNames, ["a.weight", "b.weight", "c.weight"])
        // Put back in order, the first set opens.
        try fm.removeItem(atPath: "\(dir)/m-00003-of-00003.gguf")
        try fm.removeItem(atPath: "\(dir)/m-00002-of-00003.gguf")
        try copy(2, as: "m-00002-of-00003.gguf")
        try copy(3, as: "m-00003-of-00003.gguf")
        XCTAssertNoThrow(try GGUFFile(path: "\(dir)/m-00001-of-00003.gguf"), "the repaired set opens")
    }
}
