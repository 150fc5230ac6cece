import Foundation
@testable import MoECore
import MoE
import XCTest

/// The TOML reader against hand-written JSON equivalents (the TOML 1.0 spec's examples).
final class TOMLTests: XCTestCase {
    private func parsed(_ toml: String) throws -> NSDictionary {
        let data = try TOML.json(from: toml, path: "t.toml")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? NSDictionary)
    }

    private func expected(_ json: String) throws -> NSDictionary {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? NSDictionary)
    }

    func testScalarsStringsAndKeys() throws {
        let toml = #"""
        # a comment
        title = "TOML \"x\"\tA\u00e9" # trailing comment
        literal = 'C:\Users\nodejs'
        "quoted key" = 1
        bare_key-2 = -17
        big = 1_000_000
        hex = 0xff
        oct = 0o17
        bin = 0b101
        pi = 3.25
        exp = -2e-3
        yes = true
        no = false
        multi = """
        one \
            two"""
        raw = '''
        a\b'''
        site."google.com" = true
        physical.color = "orange"
        """#
        let want = #"""
        {"title": "TOML \"x\"\tAé", "literal": "C:\\Users\\nodejs", "quoted key": 1, "bare_key-2": -17,
         "big": 1000000, "hex": 255, "oct": 15, "bin": 5, "pi": 3.25, "exp": -0.002, "yes": true, "no": false,
         "multi": "one two", "raw": "a\\b", "site": {"google.com": true}, "physical": {"color": "orange"}}
        """#
        XCTAssertEqual(try parsed(toml), try expected(want))
    }

    func testTablesArraysAndInlineTables() throws {
        let toml = """
        steps = 10
        bias = [0.5, -1,
                2, ]   # trailing comma and a newline inside
        nested = [[1, 2], ["a"]]
        point = { x = 1, y = { z = "deep" } }

        [model]
        hidden_size = 96

        [data.synthetic]
        level = 2

        [[fruits]]
        name = "apple"
        [fruits.physical]
        color = "red"
        [[fruits]]
        name = "banana"
        """
        let want = """
        {"steps": 10, "bias": [0.5, -1, 2], "nested": [[1, 2], ["a"]], "point": {"x": 1, "y": {"z": "deep"}},
         "model": {"hidden_size": 96}, "data": {"synthetic": {"level": 2}},
         "fruits": [{"name": "apple", "physical": {"color": "red"}}, {"name": "banana"}]}
        """
        XCTAssertEqual(try parsed(toml), try expected(want))
    }

    func testMalformedDocumentsNameTheLine() {
        let cases: [(String, String)] = [
            ("a = 1\na = 2", "line 2"),
            ("[t]\nx = 1\n[t]", "line 3"),
            ("a = ", "line 1"),
            ("a = \"open", "line 1"),
            ("\n\nx = 1979-05-27", "line 3"),
            ("x = inf", "line 1"),
            ("x = 1 2", "line 1"),
            ("x = 012", "line 1"),
            ("x = [1, 2", "line 1"),
            ("x = 1\nx.y = 2", "line 2"),
            ("p = {a = 1}\n[p]", "line 2"),
            ("s = \"\\q\"", "line 1"),
            // Nesting past 64 is refused before the parser's stack is (100,000 deep crashed it).
            ("\n\na = " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000), "line 3"),
            ("a = " + String(repeating: "{b = ", count: 100_000) + "1" + String(repeating: "}", count: 100_000), "line 1"),
        ]
        for (toml, line) in cases {
            XCTAssertThrowsError(try TOML.json(from: toml, path: "t.toml"), toml) { error in
                guard case let .invalidValue(path, field, _)? = error as? MoECoreError else { return XCTFail("\(error)") }
                XCTAssertEqual(path, "t.toml")
                XCTAssertEqual(field, line, toml)
            }
        }
    }

    func testTOMLConfigDecodesLikeItsJSONTwin() throws {
        let toml = """
        name = "top-p"
        p = 0.6
        bias = [1, 2.5]
        """
        let json = #"{"name": "top-p", "p": 0.6, "bias": [1, 2.5]}"#
        let a = try ConfigFile.decode(RouterConfig.self, data: Data(toml.utf8), path: "r.toml", format: .toml)
        let b = try ConfigFile.decode(RouterConfig.self, data: Data(json.utf8), path: "r.json", format: .json)
        XCTAssertEqual(a.name, b.name)
        XCTAssertEqual(a.p, b.p)
        XCTAssertEqual(a.bias, b.bias)
        XCTAssertThrowsError(try ConfigFile.decode(RouterConfig.self, data: Data("name = \"top-p\"\nbias = [1, \"x\"]".utf8),
                                                   path: "r.toml", format: .toml)) { error in
            guard case let .invalidValue(path, field, _)? = error as? MoECoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "r.toml")
            XCTAssertEqual(field, "bias[1]")
        }
    }
}
