import Foundation
import MoEModels
import XCTest

/// The tokenizer a GGUF file carries against llama.cpp's own expectations: the vocabulary
/// files and test cases shipped with llama.cpp (`models/ggml-vocab-*.gguf`, `.inp`, `.out`).
final class GGUFTokenizerTests: XCTestCase {
    let folder = fixturesDirectory.appendingPathComponent("gguf_vocab")

    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let base = folder.appendingPathComponent("ggml-vocab-\(name).gguf")
        let tokenizer = try GGUFFile(path: base.path).tokenizer()
        let inputs = try String(contentsOf: URL(fileURLWithPath: base.path + ".inp"), encoding: .utf8)
            .components(separatedBy: "\n__ggml_vocab_test__\n")
        let outputs = try String(contentsOf: URL(fileURLWithPath: base.path + ".out"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map { $0.split(separator: " ").compactMap { Int($0) } }
        XCTAssertGreaterThan(inputs.count, 10, file: file, line: line)
        var failures = 0
        for (i, text) in inputs.enumerated() where i < outputs.count {
            let ids = tokenizer.encode(text, addSpecialTokens: false)  // as llama.cpp's test-tokenizer-0
            if ids != outputs[i] {
                failures += 1
                if failures <= 3 { XCTFail("\(name) case \(i) \(text.debugDescription): \(ids) != \(outputs[i])", file: file, line: line) }
            }
            XCTAssertEqual(tokenizer.decode(ids, skipSpecialTokens: true), text, "\(name) round trip \(i)",
                           file: file, line: line)
        }
        XCTAssertEqual(failures, 0, "\(name): \(failures) of \(inputs.count) cases differ", file: file, line: line)
    }

    func testGPT2() throws { try check("gpt-2") }
    func testQwen2() throws { try check("qwen2") }
    func testDeepSeekLLM() throws { try check("deepseek-llm") }  // DeepSeek-V2's GGUFs name this pre-tokenizer
    func testLlama3() throws { try check("llama-bpe") }

    /// A Llama 3 vocabulary without `tokenizer.ggml.add_bos_token` puts BOS in front, as
    /// llama.cpp defaults for it; GPT-2's does not.
    func testLlama3AddsBOSByDefault() throws {
        let llama3 = try GGUFFile(path: folder.appendingPathComponent("ggml-vocab-llama-bpe.gguf").path)
        XCTAssertNil(llama3.metadata["tokenizer.ggml.add_bos_token"])
        XCTAssertEqual(try llama3.tokenizer().encode("Hello", addSpecialTokens: true).first, 128000)
        XCTAssertEqual(try llama3.tokenizer().encode("Hello", addSpecialTokens: false).first, 9906)
        let gpt2 = try GGUFFile(path: folder.appendingPathComponent("ggml-vocab-gpt-2.gguf").path).tokenizer()
        XCTAssertEqual(gpt2.encode("Hello", addSpecialTokens: true), gpt2.encode("Hello", addSpecialTokens: false))
    }

    func testLlamaSentencePiece() throws { try check("llama-spm") }

    /// The tokenizer.json a GGUF vocabulary exports (`tokenizerJSON`, what `moe train --from
    /// FILE.gguf` writes) is the tokenizer `tokenizer()` builds without it: the same ids, BOS
    /// included, on llama.cpp's test texts, for a byte-level BPE and a SentencePiece vocabulary.
    func testExportedTokenizerJSONEncodesAsTheFile() throws {
        for name in ["gpt-2", "llama-spm"] {
            let base = folder.appendingPathComponent("ggml-vocab-\(name).gguf")
            let file = try GGUFFile(path: base.path)
            let direct = try file.tokenizer(), exported = try Tokenizer(data: try file.tokenizerJSON(), path: "tokenizer.json")
            let texts = try String(contentsOf: URL(fileURLWithPath: base.path + ".inp"), encoding: .utf8)
                .components(separatedBy: "\n__ggml_vocab_test__\n")
            XCTAssertGreaterThan(texts.count, 10)
            for text in texts {
                XCTAssertEqual(exported.encode(text), direct.encode(text), "\(name) \(text.debugDescription)")
            }
            XCTAssertEqual(exported.vocabularySize, direct.vocabularySize, name)
        }
    }

    /// A SentencePiece vocabulary puts BOS in front by default, as llama.cpp does.
    func testSentencePieceAddsBOS() throws {
        let tokenizer = try GGUFFile(path: folder.appendingPathComponent("ggml-vocab-llama-spm.gguf").path).tokenizer()
        XCTAssertEqual(tokenizer.encode("Hello world"), [1, 15043, 3186])
        XCTAssertEqual(tokenizer.decode([1, 15043, 3186], skipSpecialTokens: true), "Hello world")
    }

    func testUnknownVocabularyKindIsATypedError() throws {
        var bytes = [UInt8](try Data(contentsOf: folder.appendingPathComponent("ggml-vocab-gpt-2.gguf")))
        // The value of tokenizer.ggml.model: after the key, its type (4 bytes) and length (8).
        let key = Array("tokenizer.ggml.model".utf8)
        let at = try XCTUnwrap((0..<(bytes.count - key.count)).first { Array(bytes[$0..<($0 + key.count)]) == key })
        let value = at + key.count + 12
        XCTAssertEqual(Array(bytes[value..<(value + 4)]), Array("gpt2".utf8))
        bytes[value + 3] = UInt8(ascii: "X")
        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-vocab-\(getpid()).gguf")
        defer { try? FileManager.default.removeItem(at: bad) }
        try Data(bytes).write(to: bad)
        XCTAssertThrowsError(try GGUFFile(path: bad.path).tokenizer()) { error in
            guard case let .invalidFile(_, field, _)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "tokenizer.ggml.model")
        }
    }
}

/// tokenizer.json fields of the wrong type are errors naming the field, never read as absent
/// (merges as a string used to mean no merges; a pre_tokenizer string, none).
final class TokenizerFieldTypeTests: XCTestCase {
    func testWrongTypedFieldsNameTheField() throws {
        let base = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}"#
        XCTAssertEqual(try Tokenizer(data: Data(base.utf8), path: "t.json").encode("ab", addSpecialTokens: false), [2])
        let cases: [(String, String)] = [
            (#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": "a b"}}"#, "model.merges"),
            (#"{"model": {"type": 5, "vocab": {"a": 0}}}"#, "model.type"),
            (#"{"model": {"type": "BPE", "vocab": {"a": 0}, "byte_fallback": "yes"}}"#, "model.byte_fallback"),
            (#"{"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": "ByteLevel"}"#, "(root).pre_tokenizer"),
            (#"{"model": {"type": "BPE", "vocab": {"a": 0}}, "added_tokens": {"id": 1}}"#, "(root).added_tokens"),
            (#"{"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": "no"}}"#, "pre_tokenizer.add_prefix_space"),
            (#"{"model": {"type": "BPE", "vocab": {"a": 0}, "unk_token": 3}}"#, "model.unk_token"),
        ]
        for (json, field) in cases {
            XCTAssertThrowsError(try Tokenizer(data: Data(json.utf8), path: "t.json"), json) { error in
                guard case let .invalidFile(path, f, _)? = error as? ModelError else { return XCTFail("\(error)") }
                XCTAssertEqual(path, "t.json")
                XCTAssertEqual(f, field, json)
            }
        }
    }
}

/// New GGUF input paths with a key renamed away: typed errors naming the key.
final class GGUFMissingKeyTests: XCTestCase {
    func renamed(_ file: URL, key: String) throws -> URL {
        var bytes = [UInt8](try Data(contentsOf: file))
        let k = Array(key.utf8)
        let at = try XCTUnwrap((0..<(bytes.count - k.count)).first { Array(bytes[$0..<($0 + k.count)]) == k }, key)
        bytes[at + k.count - 1] = UInt8(ascii: "X")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-key-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: out)
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        return out
    }

    func testSentencePieceWithoutScores() throws {
        let bad = try renamed(fixturesDirectory.appendingPathComponent("gguf_vocab/ggml-vocab-llama-spm.gguf"), key: "tokenizer.ggml.scores")
        XCTAssertThrowsError(try GGUFFile(path: bad.path).tokenizer()) { error in
            guard case let .invalidFile(_, field, _)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "tokenizer.ggml.scores")
        }
    }

    func testDeepSeekWithoutItsLatentRank() throws {
        let bad = try renamed(fixturesDirectory.appendingPathComponent("gguf_models/deepseek_v3.f32.gguf"), key: "deepseek2.attention.kv_lora_rank")
        XCTAssertThrowsError(try GGUFWeights(path: bad.path)) { error in
            guard case let .invalidFile(_, field, _)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "deepseek2.attention.kv_lora_rank")
        }
    }
}
