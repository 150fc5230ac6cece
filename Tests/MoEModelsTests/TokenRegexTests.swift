@testable import MoEModels
import XCTest

/// MoEKit's tokenizer regex engine against Swift's `Regex` (an independent backtracking engine)
/// on the pre-tokenizer patterns of real tokenizers, its work bound on patterns that make
/// backtracking engines exponential, and its refusals.
final class TokenRegexTests: XCTestCase {
    /// GPT-OSS's o200k split, the longest real pattern in use.
    static let o200k = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    static var patterns: [String] {
        var list = Set(GGUFFile.preTokenizerPatterns.values.flatMap { $0 })
        list.insert(gpt2Pattern)
        list.insert(o200k)
        return list.sorted() + [
            #"(a|ab)(c|bcd)(d*)"#, #"colou?r|[^aeiou\s]{2,3}"#, #"(?i)straße|\bHELLO\b"#, #"x(?=yz)|y(?!z)"#,
            #"[\u4e00-\u9fa5]+|\x41+|\x{1F600}"#, #"[0-9]+(?:\.[0-9]+)?|[a-z]+?z"#, #"[^\p{L}\p{N}\s]+|\p{Lu}\p{Ll}*"#,
            #"[a-c[x-z]]+|\P{L}{2}|a{2}b{1,}c{0,2}"#, #"(?:ab|a)(?:bc|c)?"#, #"\s+(?!\S)|\s+"#,
        ]
    }

    /// Scalars that exercise every class the patterns use.
    static let alphabet: [String] = ["a", "b", "c", "d", "z", "A", "B", "H", "x", "y", "s", "t", "r", "l", "e", "o", "u",
        "'", "S", "T", "L", "ß", "é", "É", "ǅ", "ʰ", "中", "文", "ぁ", "カ", "한", "٣", "7", "0", "½", "Ⅳ", "\u{301}",
        " ", " ", " ", "\t", "\n", "\r", "\u{A0}", "\u{3000}", "!", ".", ",", "-", "/", "$", "+", "€", "😀", "\u{200D}", "_", "[", "]"]

    func testMatchesSwiftRegexOnRealPreTokenizerPatterns() throws {
        var generator = SystemRandomNumberGenerator()
        var compared = 0
        for pattern in Self.patterns {
            guard let swift = try? Regex(pattern).matchingSemantics(.unicodeScalar) else { continue }
            let ours = try TokenRegex(pattern)
            for _ in 0..<150 {
                let length = Int.random(in: 0...30, using: &generator)
                let text = (0..<length).map { _ in Self.alphabet.randomElement(using: &generator)! }.joined()
                let scalars = text.unicodeScalars
                let expected = text.matches(of: swift).map(\.range).filter { !$0.isEmpty }.map {
                    scalars.distance(from: scalars.startIndex, to: $0.lowerBound)..<scalars.distance(from: scalars.startIndex, to: $0.upperBound)
                }
                XCTAssertEqual(ours.matches(in: scalars.map(\.value)), expected, "pattern \(pattern) on \(Array(scalars).map { String($0.value, radix: 16) })")
                compared += 1
            }
        }
        XCTAssertGreaterThanOrEqual(compared, Self.patterns.count * 150 - 300)
    }

    /// `\d` and `\w` as Oniguruma (the tokenizers library's engine) defines them over Unicode:
    /// decimal digits (Nd) only, and letters, marks, decimal digits and connector punctuation.
    /// Swift's `Regex` differs here (its `\d` takes `½`), so these are checked directly.
    func testDigitAndWordClassesFollowOniguruma() throws {
        let text = "7٣½Ⅳa_é\u{301}-".unicodeScalars.map(\.value)
        XCTAssertEqual(try TokenRegex(#"\d"#).matches(in: text), [0..<1, 1..<2])
        XCTAssertEqual(try TokenRegex(#"\w+"#).matches(in: text), [0..<2, 3..<8])
        XCTAssertEqual(try TokenRegex(#"\D"#).matches(in: text).count, 7)
    }

    func testWorkIsLinearOnCatastrophicPatterns() throws {
        let n = 20_000
        let runs = [Array(repeating: "a", count: n).joined(), Array(repeating: "a", count: n).joined() + "!",
                    Array(repeating: "ab ", count: n / 3).joined()]
        for pattern in [#"(a+)+b"#, #"(a|a)*c"#, #"(a*)*$"#, #"(\w+\s?)+$"#, #"(a|aa)+z"#, #"(.*a){12}x"#, #"(?:a|b|ab)*\s+(?!\S)q"#] {
            let regex = try TokenRegex(pattern)
            for text in runs {
                let r = regex.matchesCountingSteps(in: text.unicodeScalars.map(\.value))
                XCTAssertLessThanOrEqual(r.steps, r.bound, pattern)
            }
        }
        // And the answers are right where one exists.
        let text = Array(repeating: "a", count: n).joined() + "b"
        XCTAssertEqual(try TokenRegex(#"(a+)+b"#).matches(in: text.unicodeScalars.map(\.value)), [0..<(n + 1)])
    }

    func testUnsupportedOrOversizedPatternsAreTypedErrors() {
        let cases: [(String, String)] = [
            (#"(a)\1"#, "escape"), (#"a++"#, "possessive"), (#"(?>a)"#, "not supported"), (#"(?=a*)b"#, "lookaround"),
            (#"a{5000}"#, "repetition"), (#"(a{1000}){1000}"#, "instructions"), (String(repeating: "(", count: 100), "nest"),
            (#"[abc"#, "unterminated"), (#"(ab"#, "unterminated"), (#"ab)"#, "unbalanced"), (#"*a"#, "nothing to repeat"),
            (#"\p{Klingon}"#, "property"), (#"[z-a]"#, "backwards"), (#"a{3,2}"#, "minimum"), (#"[[:alpha:]]"#, "POSIX"),
            (#"\"#, "trailing"), (#"\x{110000}"#, "no Unicode scalar"),
        ]
        for (pattern, fragment) in cases {
            XCTAssertThrowsError(try TokenRegex(pattern), pattern) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(pattern): \(error)")
            }
        }
    }

    func testTokenizerJSONWithABadPatternNamesTheField() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("regex-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let json: [String: Any] = [
            "model": ["type": "BPE", "vocab": ["a": 0, "b": 1], "merges": []],
            "pre_tokenizer": ["type": "Split", "pattern": ["Regex": "(a)\\1"], "behavior": "Isolated"],
        ]
        let path = dir.appendingPathComponent("tokenizer.json").path
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try Tokenizer(path: path)) { error in
            XCTAssertTrue("\(error)".contains("pre_tokenizer.pattern"), "\(error)")
        }
    }
}
