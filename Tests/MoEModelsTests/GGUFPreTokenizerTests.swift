import Foundation
@testable import MoEModels
import XCTest

/// GGUF pre-tokenizer names that published GGUFs carry and llama.cpp ships no vocabulary test
/// for ("gpt-4o": GPT-OSS; "glm4": GLM-4.5; "tekken": Mistral's newer models), against the Hugging Face `tokenizers` library
/// (scripts/make_gguf_pre_fixtures.py): llama.cpp's GPT-2 vocabulary file with its
/// `tokenizer.ggml.pre` renamed gives the library's ids for llama.cpp's test texts and more, and
/// each split alone gives the library's pieces.
final class GGUFPreTokenizerTests: XCTestCase {
    struct Expected: Decodable { var texts: [String], ids: [String: [[Int]]], pieces: [String: [[String]]] }

    /// ggml-vocab-gpt-2.gguf with `tokenizer.ggml.pre` set to `pre` (a vocabulary-only file, so
    /// the bytes after the value may move).
    func vocabulary(pre: String) throws -> URL {
        var bytes = [UInt8](try Data(contentsOf: fixturesDirectory.appendingPathComponent("gguf_vocab/ggml-vocab-gpt-2.gguf")))
        let key = Array("tokenizer.ggml.pre".utf8)
        let at = try XCTUnwrap((0..<(bytes.count - key.count)).first { Array(bytes[$0..<($0 + key.count)]) == key })
        let lengthAt = at + key.count + 4  // after the key, its type (a u32)
        let old = bytes[lengthAt..<(lengthAt + 8)].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(String(decoding: bytes[(lengthAt + 8)..<(lengthAt + 8 + old)], as: UTF8.self), "gpt-2")
        let value = Array(pre.utf8)
        bytes.replaceSubrange(lengthAt..<(lengthAt + 8 + old), with: (0..<8).map { UInt8((value.count >> (8 * $0)) & 0xFF) } + value)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-pre-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: out)
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        return out
    }

    func testPublishedPreTokenizersMatchTheTokenizersLibrary() throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf:
            fixturesDirectory.appendingPathComponent("gguf_vocab/pre-tokenizers.json")))
        for pre in ["gpt-4o", "glm4", "tekken"] {
            let file = try GGUFFile(path: try vocabulary(pre: pre).path)
            XCTAssertEqual(file.metadata["tokenizer.ggml.pre"]?.string, pre)
            let tokenizer = try file.tokenizer()
            let patterns = try XCTUnwrap(GGUFFile.preTokenizerPatterns[pre])
            XCTAssertEqual(patterns.count, 1)
            let regex = try TokenRegex(patterns[0])
            for (i, text) in expected.texts.enumerated() {
                XCTAssertEqual(tokenizer.encode(text, addSpecialTokens: false), expected.ids[pre]?[i], "\(pre) ids \(text.debugDescription)")
                XCTAssertEqual(pieces(text, regex), expected.pieces[pre]?[i], "\(pre) pieces \(text.debugDescription)")
            }
        }
    }

    /// Converting a checkpoint folder names each split the reader knows as llama.cpp does, so a
    /// folder with GPT-OSS's or Mistral's tokenizer.json converts; a name the reader does not
    /// know is a typed error naming the key and listing the known ones.
    func testConverterNamesEveryKnownSplitAndTheReaderRefusesOthers() throws {
        for pre in ["qwen2", "llama-bpe", "deepseek-v3", "deepseek-llm", "gpt-4o", "tekken", "gpt-2"] {
            let splits = try XCTUnwrap(GGUFFile.preTokenizerPatterns[pre]).map { ["type": "Split", "pattern": ["Regex": $0], "behavior": "Isolated"] }
            let json: [String: Any] = ["type": "Sequence", "pretokenizers": splits + [["type": "ByteLevel", "use_regex": false]]]
            XCTAssertEqual(try GGUFConverter.preTokenizerName(json, path: "t.json"), pre)
        }
        XCTAssertThrowsError(try GGUFFile(path: try vocabulary(pre: "nonesuch").path).tokenizer()) { error in
            guard case let .invalidFile(_, field, reason)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "tokenizer.ggml.pre")
            XCTAssertTrue(reason.contains("nonesuch") && reason.contains("gpt-4o") && reason.contains("tekken"), reason)
        }
    }

    /// `text` cut at the matches of `regex`, keeping the text between them (the library's
    /// isolated `Split`).
    func pieces(_ text: String, _ regex: TokenRegex) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var out: [String] = [], at = 0
        func piece(_ r: Range<Int>) -> String { var v = String.UnicodeScalarView(); v.append(contentsOf: scalars[r]); return String(v) }
        for m in regex.matches(in: scalars.map(\.value)) where !m.isEmpty {
            if m.lowerBound > at { out.append(piece(at..<m.lowerBound)) }
            out.append(piece(m))
            at = m.upperBound
        }
        if at < scalars.count { out.append(piece(at..<scalars.count)) }
        return out
    }
}
