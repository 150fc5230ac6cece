import Foundation
import MoECore
import MoEModels
import XCTest

/// Bad checkpoints, corrupted on purpose: each gives a typed error naming the file and field.
final class LoadingErrorTests: XCTestCase {
    var folder: URL!

    /// A copy of the Mixtral fixture to damage.
    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-ckpt-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: fixturesDirectory.appendingPathComponent("mixtral"), to: folder)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

    var weights: URL { folder.appendingPathComponent("model.safetensors") }
    var config: URL { folder.appendingPathComponent("config.json") }

    func expect(_ check: (ModelError) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try DecoderModel(directory: folder.path), file: file, line: line) { error in
            guard let e = error as? ModelError else { return XCTFail("untyped error \(error)", file: file, line: line) }
            XCTAssertTrue(check(e), "unexpected \(e)", file: file, line: line)
        }
    }

    /// Rewrites the safetensors header (keeping the data) with `edit` applied to its JSON.
    func editHeader(_ edit: (inout [String: Any]) -> Void) throws {
        let data = try Data(contentsOf: weights)
        let n = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        var header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as! [String: Any]
        edit(&header)
        var json = try JSONSerialization.data(withJSONObject: header)
        while json.count < n { json.append(0x20) }
        XCTAssertEqual(json.count, n, "edits must not grow the header")
        try (data.prefix(8) + json + data.suffix(from: 8 + n)).write(to: weights)
    }

    func testTruncatedFile() throws {
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count - 100).write(to: weights)
        expect { if case let .invalidFile(path, field, _) = $0 { return path.hasSuffix("model.safetensors") && field.hasSuffix("data_offsets") }; return false }
    }

    func testHeaderLengthPastTheEnd() throws {
        var data = try Data(contentsOf: weights)
        data.replaceSubrange(0..<8, with: [0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0])
        try data.write(to: weights)
        expect { if case let .invalidFile(_, field, _) = $0 { return field == "header length" }; return false }
        try Data([1, 2, 3]).write(to: weights)
        expect { if case let .invalidFile(_, field, reason) = $0 { return field == "header length" && reason.contains("too short") }; return false }
    }

    func testMalformedHeaderJSON() throws {
        var data = try Data(contentsOf: weights)
        data[8] = UInt8(ascii: "]")
        try data.write(to: weights)
        expect { if case let .invalidFile(path, _, reason) = $0 { return path.hasSuffix("model.safetensors") && reason.contains("JSON") }; return false }
    }

    func testOffsetsThatDisagreeWithShape() throws {
        try editHeader { h in
            var e = h["model.norm.weight"] as! [String: Any]
            e["shape"] = [63]
            h["model.norm.weight"] = e
        }
        expect { if case let .invalidFile(_, field, _) = $0 { return field == "model.norm.weight.data_offsets" }; return false }
    }

    /// Tensors must tile the data exactly: an overlap (two tensors sharing bytes), a gap, or a
    /// header length a few bytes short of a space-padded header (everything read shifted) is an
    /// error naming the tensor or the header length, never garbage weights.
    func testOverlapsGapsAndAShiftedHeaderAreRejected() throws {
        let original = try Data(contentsOf: weights)
        try editHeader { h in  // the final norm points at the embedding's first bytes
            var e = h["model.norm.weight"] as! [String: Any]
            let size = ((e["data_offsets"] as! [Int])[1] - (e["data_offsets"] as! [Int])[0])
            let embed = (h["model.embed_tokens.weight"] as! [String: Any])["data_offsets"] as! [Int]
            e["data_offsets"] = [embed[0], embed[0] + size]
            h["model.norm.weight"] = e
        }
        expect { if case let .invalidFile(_, field, reason) = $0 { return field.hasSuffix(".data_offsets") && (reason.contains("overlap") || reason.contains("gap")) }; return false }
        try original.write(to: weights)
        // Space-pad the header by 8 bytes and say it is 2 bytes shorter than that.
        let n = original.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        var padded = original.subdata(in: 8..<(8 + n)) + Data(repeating: 0x20, count: 8)
        let short = n + 6
        var head = Data((0..<8).map { UInt8(truncatingIfNeeded: short >> (8 * $0)) })
        head.append(padded)
        padded = head + original.suffix(from: 8 + n)
        try padded.write(to: weights)
        expect { if case let .invalidFile(_, field, _) = $0 { return field == "header length" || field.hasSuffix(".data_offsets") }; return false }
    }

    func testBooleanShapeIsRejected() throws {
        try editHeader { h in
            var e = h["model.norm.weight"] as! [String: Any]
            e["shape"] = [true]
            h["model.norm.weight"] = e
        }
        expect { if case let .invalidFile(_, field, _) = $0 { return field.hasPrefix("model.norm.weight.shape") }; return false }
    }

    func testMissingTensor() throws {
        try editHeader { h in h["model.norm.w"] = h.removeValue(forKey: "model.norm.weight") }
        expect { $0 == .missingTensor(path: self.folder.path, name: "model.norm.weight") }
    }

    func testWrongShapeFromConfig() throws {
        var c = try JSONSerialization.jsonObject(with: Data(contentsOf: config)) as! [String: Any]
        c["hidden_size"] = 32
        try JSONSerialization.data(withJSONObject: c).write(to: config)
        expect { if case let .wrongShape(_, name, expected, found) = $0 { return name == "model.embed_tokens.weight" && expected == [256, 32] && found == [256, 64] }; return false }
    }

    func testUnsupportedDType() throws {
        try editHeader { h in
            var e = h["model.norm.weight"] as! [String: Any]
            e["dtype"] = "I32"
            h["model.norm.weight"] = e
        }
        expect { $0 == .unsupportedDType(path: self.weights.path, name: "model.norm.weight", dtype: "I32") }
    }

    func testUnknownArchitectureAndMalformedConfig() throws {
        var c = try JSONSerialization.jsonObject(with: Data(contentsOf: config)) as! [String: Any]
        c["model_type"] = "gpt2"
        c["architectures"] = ["GPT2LMHeadModel"]
        try JSONSerialization.data(withJSONObject: c).write(to: config)
        expect { $0 == .unknownArchitecture(path: self.config.path, name: "gpt2") && $0.description.contains("model_type") }
        try Data("{\"model_type\": \"mixtral\", ".utf8).write(to: config)
        expect { if case let .invalidConfig(path, _, reason) = $0 { return path == self.config.path && reason.contains("malformed") }; return false }
        c["model_type"] = "mixtral"
        c["num_attention_heads"] = "four"
        try JSONSerialization.data(withJSONObject: c).write(to: config)
        expect { if case let .invalidConfig(_, field, _) = $0 { return field == "num_attention_heads" }; return false }
        c.removeValue(forKey: "num_attention_heads")
        try JSONSerialization.data(withJSONObject: c).write(to: config)
        expect { if case let .invalidConfig(_, field, reason) = $0 { return field == "num_attention_heads" && reason == "missing" }; return false }
    }

    func testShardedCheckpointLoadsThroughItsIndex() throws {
        // Split the fixture into two shards plus an index, and check the logits are unchanged.
        let ck = try Checkpoint(directory: folder.path)
        let names = ck.names
        let half = names.count / 2
        try SafetensorsWriter.write(try names[..<half].map { ($0, try ck.tensor($0)) }, to: folder.appendingPathComponent("model-00001-of-00002.safetensors").path)
        try SafetensorsWriter.write(try names[half...].map { ($0, try ck.tensor($0)) }, to: folder.appendingPathComponent("model-00002-of-00002.safetensors").path)
        var map: [String: String] = [:]
        for (i, n) in names.enumerated() { map[n] = i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors" }
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map]).write(to: folder.appendingPathComponent("model.safetensors.index.json"))
        let reference = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("mixtral").path)
        try FileManager.default.removeItem(at: weights)
        let sharded = try DecoderModel(directory: folder.path)
        var c1 = reference.makeCache(), c2 = sharded.makeCache()
        XCTAssertEqual(try sharded.forward([5, 6, 7], cache: &c2).toFloats(), try reference.forward([5, 6, 7], cache: &c1).toFloats())
        // An index naming a missing shard is an error naming the index.
        try FileManager.default.removeItem(at: folder.appendingPathComponent("model-00002-of-00002.safetensors"))
        expect { if case let .invalidFile(path, field, _) = $0 { return path.hasSuffix("index.json") && field == "weight_map" }; return false }
    }

    func testTokenOutOfRange() throws {
        let model = try DecoderModel(directory: folder.path)
        var cache = model.makeCache()
        XCTAssertThrowsError(try model.forward([3, 256], cache: &cache)) { error in
            XCTAssertEqual(error as? ModelError, .tokenOutOfRange(id: 256, vocabularySize: 256))
        }
    }

    func testSafetensorsRoundTripKeepsDTypeAndValues() throws {
        let path = folder.appendingPathComponent("rt.safetensors").path
        let a = Tensor(randomUniform: [3, 5], seed: 1, dtype: .bf16), b = Tensor(randomUniform: [7], seed: 2)
        try SafetensorsWriter.write([("a", a), ("b", b)], metadata: ["format": "pt"], to: path)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(try f.tensor("a").dtype, .bf16)
        XCTAssertEqual(try f.tensor("a").toFloats(), a.toFloats())
        XCTAssertEqual(try f.tensor("b").toFloats(), b.toFloats())
        XCTAssertEqual(f.metadata["format"], "pt")
    }

    func testStraySafetensorsNeverShadowTheModel() throws {
        // Another file with the same tensor names (saved gradients, say) beside model.safetensors.
        let decoy = try Checkpoint(directory: folder.path)
        try SafetensorsWriter.write(try decoy.names.map { ($0, Tensor(zeros: try decoy.tensor($0).shape)) },
                                    to: folder.appendingPathComponent("grads.safetensors").path)
        let reference = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("mixtral").path)
        let model = try DecoderModel(directory: folder.path)
        var c1 = reference.makeCache(), c2 = model.makeCache()
        XCTAssertEqual(try model.forward([1, 2], cache: &c2).toFloats(), try reference.forward([1, 2], cache: &c1).toFloats())
        // Without model.safetensors, a name in two files is ambiguous: an error naming both.
        try FileManager.default.moveItem(at: weights, to: folder.appendingPathComponent("a.safetensors"))
        expect { if case let .invalidFile(path, field, reason) = $0 { return path.hasSuffix(".safetensors") && !field.isEmpty && reason.contains("also in") }; return false }
    }
}
