import Foundation
import MoEGenerate
import MoEModels
import XCTest

/// `TextStream` decodes a window of the latest ids a token; its text must stay what decoding all
/// the ids gives, after every token that ends a character, over real vocabularies (byte-level
/// BPE and SentencePiece, from tokenizer.json and from GGUF files), on llama.cpp's tokenizer
/// test texts (emoji, CJK, runs of spaces and newlines, byte fallback), and stop strings must
/// end it as before.
final class TextStreamTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// Every vocabulary with a long text of its own test cases.
    func vocabularies() throws -> [(name: String, tokenizer: Tokenizer, text: String)] {
        var out: [(String, Tokenizer, String)] = []
        for name in ["bytelevel", "sentencepiece"] {
            let folder = Self.fixtures.appendingPathComponent("tokenizers/\(name)")
            let tokenizer = try Tokenizer(path: folder.appendingPathComponent("tokenizer.json").path)
            let cases = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("cases.json"))) as? [String: Any]
            let texts = (cases?["cases"] as? [[String: Any]] ?? []).compactMap { $0["text"] as? String }
            XCTAssertGreaterThan(texts.count, 3, name)
            out.append((name, tokenizer, texts.joined(separator: "\n")))
        }
        for name in ["gpt-2", "qwen2", "llama-spm", "llama-bpe", "deepseek-llm"] {
            let base = Self.fixtures.appendingPathComponent("gguf_vocab/ggml-vocab-\(name).gguf").path
            let texts = try String(contentsOf: URL(fileURLWithPath: base + ".inp"), encoding: .utf8)
                .components(separatedBy: "\n__ggml_vocab_test__\n")
            XCTAssertGreaterThan(texts.count, 10, name)
            out.append((name, try GGUFFile(path: base).tokenizer(), texts.joined(separator: "\n")))
        }
        return out
    }

    func testTextIsTheWholeDecodeWheneverACharacterEnds() throws {
        for (name, tokenizer, text) in try vocabularies() {
            // With the vocabulary's special tokens (BOS where it adds one), which decode skips,
            // and that token again after every fifth, so runs of them sit inside windows.
            var ids: [Int] = []
            for (n, id) in tokenizer.encode(text, addSpecialTokens: true).enumerated() {
                ids.append(id)
                if n % 5 == 4, let special = ids.first(where: tokenizer.isSpecial) { ids += [special, special] }
            }
            var stream = TextStream(tokenizer: tokenizer, stopStrings: [], eos: [])
            var out = ""
            for (n, id) in ids.enumerated() {
                out += stream.push(id)
                let whole = tokenizer.decode(Array(ids[...n]), skipSpecialTokens: true)
                // Where the ids so far end inside a character, the whole decode may turn a run of
                // byte tokens into U+FFFDs (characters already complete among them too), which the
                // stream need not echo; once the character is whole the texts must agree.
                if stream.text != whole && !whole.hasSuffix("\u{FFFD}") {
                    XCTFail("\(name): after \(n + 1) of \(ids.count) tokens the stream's text ends \(String(stream.text.suffix(20)).debugDescription), the whole decode \(String(whole.suffix(20)).debugDescription) (ids \(ids[max(0, n - 4)...n]))")
                    break
                }
            }
            out += stream.finish(.maxTokens)
            XCTAssertEqual(out, tokenizer.decode(ids, skipSpecialTokens: true), name)
            XCTAssertEqual(stream.stopReason, .maxTokens, name)
        }
    }

    /// A stop string that spans tokens ends the stream before it; none of it is handed out.
    func testStopStringSpanningTokensEndsTheTextBeforeIt() throws {
        for (name, tokenizer, text) in try vocabularies() {
            let ids = tokenizer.encode(text, addSpecialTokens: false)
            let whole = tokenizer.decode(ids, skipSpecialTokens: true)
            let scalars = Array(whole.unicodeScalars)
            let at = scalars.count / 2
            let stop = String(String.UnicodeScalarView(scalars[at..<(at + 7)]))
            let expected = String(whole[..<whole.range(of: stop)!.lowerBound])
            var stream = TextStream(tokenizer: tokenizer, stopStrings: ["never appears \u{1F600}", stop], eos: [])
            var out = ""
            for id in ids where stream.stopReason == nil { out += stream.push(id) }
            XCTAssertEqual(stream.stopReason, .stopString, name)
            XCTAssertEqual(out, expected, name)
            XCTAssertEqual(stream.text, expected, name)
        }
    }

    /// An end-of-sequence id hands out what was held back and ends the stream.
    func testEOSFlushesTheHeldBackTail() throws {
        let (_, tokenizer, _) = try XCTUnwrap(vocabularies().first { $0.name == "gpt-2" })
        let ids = tokenizer.encode("Hello wor", addSpecialTokens: false)
        var stream = TextStream(tokenizer: tokenizer, stopStrings: ["world!"], eos: [-7])
        var out = ""
        for id in ids { out += stream.push(id) }
        XCTAssertEqual(out, "Hello ")  // "wor" could still grow into the stop string
        out += stream.push(-7)
        XCTAssertEqual(out, "Hello wor")
        XCTAssertEqual(stream.stopReason, .eos)
        XCTAssertEqual(stream.push(ids[0]), "")
    }
}
