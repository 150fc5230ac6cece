import Foundation
import MoECore
import MoEModels
import XCTest

/// The GGUF reader against the `gguf` Python package (scripts/make_gguf_fixtures.py): every
/// metadata value and every tensor (F32, F16, BF16, Q8_0, Q4_K, Q6_K, MXFP4, stacked experts);
/// then broken files, each a typed error naming the file and the key or tensor.
final class GGUFTests: XCTestCase {
    let folder = fixturesDirectory.appendingPathComponent("gguf")
    var fixture: URL { folder.appendingPathComponent("tiny.gguf") }

    struct Expected: Decodable {
        struct TensorValues: Decodable { var shape: [Int], type: String, values: String }
        var version: Int, alignment: Int
        var tensors: [String: TensorValues]
    }

    func testReadsWhatTheGGUFPackageWrote() throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: folder.appendingPathComponent("expected.json")))
        let file = try GGUFFile(path: fixture.path)
        XCTAssertEqual(file.version, expected.version)
        XCTAssertEqual(file.alignment, expected.alignment)
        XCTAssertEqual(file.architecture, "olmoe")
        let m = file.metadata
        XCTAssertEqual(m["olmoe.block_count"], .uint(2))
        XCTAssertEqual(m["olmoe.context_length"]?.int, 4096)
        XCTAssertEqual(m["test.int32"], .int(-5))
        XCTAssertEqual(m["test.int8"], .int(-7))
        XCTAssertEqual(m["test.uint8"], .uint(200))
        XCTAssertEqual(m["test.int16"], .int(-300))
        XCTAssertEqual(m["test.uint16"], .uint(60000))
        XCTAssertEqual(m["test.int64"], .int(-(1 << 40)))
        XCTAssertEqual(m["olmoe.rope.freq_base"]?.double, 10000)
        XCTAssertEqual(m["test.float64"], .float(0.125))
        XCTAssertEqual(m["test.bool"], .bool(true))
        XCTAssertEqual(m["test.string"]?.string, "héllo 世界")
        XCTAssertEqual(m["tokenizer.ggml.tokens"], .array([.string("a"), .string("b"), .string("<|endoftext|>")]))
        XCTAssertEqual(m["test.ints"]?.array?.compactMap(\.int), [1, 2, 3])
        XCTAssertEqual(m["test.nested"], .array([.array([.int(1), .int(2)]), .array([.int(3)])]))
        XCTAssertEqual(Set(file.tensorNames), Set(expected.tensors.keys))
        for (name, want) in expected.tensors {
            let t = try file.tensor(name)
            XCTAssertEqual(t.shape, want.shape, name)
            XCTAssertEqual(t.dtype.description, want.type, name)
            XCTAssertTrue(t.isMapped, "\(name) is a view of the file")
            let values = try XCTUnwrap(Data(base64Encoded: want.values)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            XCTAssertEqual(t.toFloats().map(\.bitPattern), values.map(\.bitPattern), name)
        }
        // Stacked experts: expert 1 of [2, 3, 256] is its own zero-copy view.
        let experts = try file.tensor("blk.0.ffn_down_exps.weight")
        XCTAssertEqual(experts[1].toFloats(), Array(experts.toFloats()[(3 * 256)...]))
    }

    /// A copy of the fixture with `edit` applied to its bytes.
    func edited(_ edit: (inout [UInt8]) -> Void) throws -> String {
        var bytes = [UInt8](try Data(contentsOf: fixture))
        edit(&bytes)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-gguf-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: url)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url.path
    }

    func expectError(_ path: String, _ check: (ModelError) -> Bool, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try GGUFFile(path: path), what, file: file, line: line) { error in
            guard let e = error as? ModelError else { return XCTFail("\(what): untyped \(error)", file: file, line: line) }
            XCTAssertTrue(check(e) && e.description.contains(path), "\(what): \(e)", file: file, line: line)
        }
    }

    func put64(_ bytes: inout [UInt8], _ at: Int, _ v: UInt64) { for i in 0..<8 { bytes[at + i] = UInt8((v >> (8 * UInt64(i))) & 0xff) } }

    func testVersion2ReadsTheSame() throws {
        let v2 = try edited { $0[4] = 2 }
        let a = try GGUFFile(path: fixture.path), b = try GGUFFile(path: v2)
        XCTAssertEqual(b.version, 2)
        XCTAssertEqual(a.metadata, b.metadata)
        XCTAssertEqual(try a.tensor("blk.0.attn_q.weight").toFloats(), try b.tensor("blk.0.attn_q.weight").toFloats())
    }

    func testBrokenHeadersAreTypedErrors() throws {
        expectError(try edited { $0[0] = 0x58 }, { if case let .invalidFile(_, f, _) = $0 { return f == "magic" }; return false }, "bad magic")
        expectError(try edited { $0[4] = 4 }, { if case let .invalidFile(_, f, _) = $0 { return f == "version" }; return false }, "version 4")
        expectError(try edited { self.put64(&$0, 8, 1 << 40) }, { if case let .invalidFile(_, f, _) = $0 { return f == "tensor_count" }; return false },
                    "a tensor count past the file")
        expectError(try edited { self.put64(&$0, 16, UInt64.max) }, { if case let .invalidFile(_, f, _) = $0 { return f == "metadata_kv_count" }; return false },
                    "a metadata count past the file")
        expectError(try edited { self.put64(&$0, 24, 1 << 50) }, { if case let .invalidFile(_, f, _) = $0 { return f == "metadata[0].key" }; return false },
                    "a key length past the file")
        expectError(try edited { $0[24 + 8 + 20] = 99 }, { if case let .invalidFile(_, f, r) = $0 { return f == "general.architecture" && r.contains("type 99") }; return false },
                    "an unknown metadata type")
        expectError(try edited { $0.removeLast(200) }, { if case let .invalidFile(_, _, r) = $0 { return r.contains("past the end") }; return false },
                    "truncated data")
    }

    /// Each tensor's type, shape and offset broken in turn, found through the tensor table.
    func testBrokenTensorEntriesNameTheTensor() throws {
        let bytes = [UInt8](try Data(contentsOf: fixture))
        // The Q8_0 tensor's entry: its name, then n_dims u32, dims u64 x 2, type u32, offset u64.
        let name = Array("blk.0.attn_q.weight".utf8)
        let at = try XCTUnwrap((0..<(bytes.count - name.count)).first { Array(bytes[$0..<($0 + name.count)]) == name }) + name.count
        let dims = at + 4, type = dims + 16, offset = type + 4
        expectError(try edited { $0[type] = 77 }, { if case let .unsupportedDType(_, n, d) = $0 { return n == "blk.0.attn_q.weight" && d.contains("77") }; return false },
                    "an unsupported tensor type")
        expectError(try edited { self.put64(&$0, dims, 33) }, { if case let .invalidFile(_, n, r) = $0 { return n == "blk.0.attn_q.weight" && r.contains("blocks") }; return false },
                    "rows that are not whole blocks")
        expectError(try edited { self.put64(&$0, offset, 1 << 30) }, { if case let .invalidFile(_, n, _) = $0 { return n == "blk.0.attn_q.weight" }; return false },
                    "an offset past the end")
        expectError(try edited { self.put64(&$0, dims + 8, 1 << 31) }, { if case let .invalidFile(_, n, _) = $0 { return n == "blk.0.attn_q.weight" }; return false },
                    "a dimension whose data is not there")
        expectError(try edited { $0[at] = 9 }, { if case let .invalidFile(_, n, _) = $0 { return n == "blk.0.attn_q.weight" }; return false },
                    "nine dimensions")
    }

    /// Every truncation and 2,000 seeded random byte changes: a parsed file or a typed error,
    /// never a crash (scripts/fuzz-gguf.sh runs the same under libFuzzer for longer).
    func testTruncationsAndRandomCorruptionNeverCrash() throws {
        let bytes = [UInt8](try Data(contentsOf: fixture))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-gguf-fuzz-\(UUID().uuidString).gguf")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        func check(_ b: [UInt8]) throws {
            try Data(b).write(to: url)
            do {
                let f = try GGUFFile(path: url.path)
                for name in f.tensorNames { _ = try? f.tensor(name).toFloats() }
            } catch is ModelError {
            } catch {
                XCTFail("untyped \(error)")
            }
        }
        for n in stride(from: 0, to: bytes.count, by: 7) { try check(Array(bytes[0..<n])) }
        var rng = SplitMix64(seed: 42)
        for _ in 0..<2000 {
            var b = bytes
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let i = Int(rng.next() % UInt64(min(b.count, 1200)))  // the header and tables, mostly
                b[i] = UInt8(truncatingIfNeeded: rng.next())
            }
            try check(b)
        }
    }

    /// A metadata key or tensor written twice is refused before anything is written.
    func testWriterRefusesAKeyWrittenTwice() {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-dup-\(getpid()).gguf").path
        XCTAssertThrowsError(try GGUFWriter.write(to: path, records: [.value(key: "a.b", .u32(1)), .value(key: "a.b", .u32(2))], tensors: [])) { error in
            XCTAssertTrue("\(error)".contains("a.b"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }
}
