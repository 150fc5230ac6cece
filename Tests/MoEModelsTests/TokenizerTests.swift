import Foundation
import MoEModels
import XCTest

/// Both tokenizer.json families against the Python tokenizers library, on the hard strings
/// that scripts/make_tokenizer_fixtures.py records (unicode, emoji, CJK, runs of spaces and
/// newlines, digits, code, special tokens).
final class TokenizerTests: XCTestCase {
    struct Cases: Decodable {
        struct Case: Decodable {
            var text: String, ids: [Int], decoded: String
            var decodedSkipSpecial: String
            enum CodingKeys: String, CodingKey { case text, ids, decoded, decodedSkipSpecial = "decoded_skip_special" }
        }
        var cases: [Case]
    }

    func check(_ family: String) throws {
        let folder = fixturesDirectory.appendingPathComponent("tokenizers").appendingPathComponent(family)
        let tok = try Tokenizer(path: folder.appendingPathComponent("tokenizer.json").path)
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: folder.appendingPathComponent("cases.json")))
        XCTAssertGreaterThan(cases.cases.count, 20)
        for c in cases.cases {
            XCTAssertEqual(tok.encode(c.text), c.ids, "\(family) encode \(c.text.debugDescription)")
            XCTAssertEqual(tok.decode(c.ids), c.decoded, "\(family) decode \(c.text.debugDescription)")
            XCTAssertEqual(tok.decode(c.ids, skipSpecialTokens: true), c.decodedSkipSpecial, "\(family) decode skipping specials")
            if !c.text.contains("<") {
                let plain = tok.encode(c.text, addSpecialTokens: false)
                XCTAssertEqual(tok.decode(plain), c.text, "\(family) round trip \(c.text.debugDescription)")
            }
        }
    }

    func testByteLevelBPEMatchesTheLibrary() throws { try check("bytelevel") }
    func testSentencePieceBPEMatchesTheLibrary() throws { try check("sentencepiece") }

    func testUnsupportedComponentsAreRefusedNamingTheField() throws {
        let json = #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "BertPreTokenizer"}}"#
        XCTAssertThrowsError(try Tokenizer(data: Data(json.utf8), path: "t.json")) { error in
            XCTAssertEqual(error as? ModelError, .invalidFile(path: "t.json", field: "pre_tokenizer.type", reason: "'BertPreTokenizer' is not supported"))
        }
        XCTAssertThrowsError(try Tokenizer(data: Data("[1]".utf8), path: "t.json"))
        XCTAssertThrowsError(try Tokenizer(data: Data(#"{"model": {"type": "WordPiece", "vocab": {}}}"#.utf8), path: "t.json"))
    }
}
