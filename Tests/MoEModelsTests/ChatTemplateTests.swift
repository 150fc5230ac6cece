import Foundation
import MoEModels
import XCTest

/// The chat-template interpreter against jinja2: 72 real templates (the 70 of llama.cpp's
/// `models/templates/`, Mixtral's and OLMoE's) on six conversations each, rendered by
/// transformers' jinja2 environment in scripts/make_chat_template_fixtures.py. Every render
/// must equal jinja2's byte for byte, and where jinja2 raised, MoEKit must throw.
final class ChatTemplateTests: XCTestCase {
    let folder = fixturesDirectory.appendingPathComponent("chat_templates")

    func testRealTemplatesRenderAsJinja2Does() throws {
        let meta = try JinjaValue.parseJSON(String(contentsOf: folder.appendingPathComponent("cases.json"), encoding: .utf8))
        let expected = try JinjaValue.parseJSON(String(contentsOf: folder.appendingPathComponent("expected.json"), encoding: .utf8))
        guard case let .dict(m) = meta, case let .list(cases)? = m["cases"], case let .dict(special)? = m["special_tokens"],
              case let .dict(all) = expected else { return XCTFail("bad fixture") }
        var specialTokens: [String: String] = [:]
        for (k, v) in special.items { if case let .string(s) = v { specialTokens[k] = s } }
        // 2026-01-15T12:00:00Z, the instant the script's strftime_now formats.
        let now = Date(timeIntervalSince1970: 1_768_478_400)
        var checked = 0, failures: [String] = []
        for name in all.keys {
            let source = try String(contentsOf: folder.appendingPathComponent("templates/\(name)"), encoding: .utf8)
            guard case let .dict(results)? = all[name] else { continue }
            let template: ChatTemplate?
            do { template = try ChatTemplate(source) } catch {
                template = nil
                if results.items.contains(where: { if case let .dict(r) = $0.1 { return r["output"] != nil } else { return false } }) {
                    failures.append("\(name): does not parse: \(error)")
                    continue
                }
            }
            for case let .dict(c) in cases {
                guard case let .string(caseName)? = c["name"], case let .dict(result)? = results[caseName],
                      case let .list(messages)? = c["messages"] else { continue }
                var tools: [JinjaValue]? = nil
                if case let .list(t)? = c["tools"] { tools = t }
                var extra: [String: JinjaValue] = [:]
                if case let .dict(e)? = c["extra"] { for (k, v) in e.items { extra[k] = v } }
                let rendered: Result<String, JinjaError>
                if let template {
                    rendered = Result { () throws(JinjaError) in
                        try template.render(messages: messages, tools: tools, addGenerationPrompt: c["add_generation_prompt"]?.truthy ?? false,
                                            specialTokens: specialTokens, extra: extra, now: now)
                    }
                } else {
                    rendered = .failure(.syntax(line: 0, reason: "does not parse"))
                }
                checked += 1
                switch (rendered, result["output"]) {
                case let (.success(text), .string(want)?):
                    if text != want { failures.append("\(name) [\(caseName)]: \(firstDifference(text, want))") }
                case let (.failure(error), .string?):
                    failures.append("\(name) [\(caseName)]: threw \(error), jinja2 rendered")
                case let (.success(text), _):
                    failures.append("\(name) [\(caseName)]: rendered \(text.prefix(80).debugDescription), jinja2 raised \(result["error"]?.pythonDescription ?? "")")
                case (.failure, _):
                    break  // both raised
                }
            }
        }
        XCTAssertEqual(checked, 72 * 6)
        XCTAssert(failures.isEmpty, "\(failures.count) of \(checked) renders differ from jinja2:\n" + failures.prefix(25).joined(separator: "\n"))
    }

    /// 80 small templates, one per feature (whitespace control, loops, scoping, macros, every
    /// filter and test, operators, printing, errors), each against jinja2's render or error.
    func testFeatureSnippetsAsJinja2() throws {
        let snippets = try JinjaValue.parseJSON(String(contentsOf: folder.appendingPathComponent("snippets.json"), encoding: .utf8))
        guard case let .list(all) = snippets else { return XCTFail("bad fixture") }
        let now = Date(timeIntervalSince1970: 1_768_478_400)
        var failures: [String] = []
        for case let .dict(snippet) in all {
            guard case let .string(name)? = snippet["name"], case let .string(source)? = snippet["template"],
                  case let .dict(context)? = snippet["context"] else { continue }
            var variables: [String: JinjaValue] = [:]
            for (k, v) in context.items { variables[k] = v }
            let result = Result { () throws(JinjaError) in try ChatTemplate(source).render(variables, now: now) }
            switch (result, snippet["output"]) {
            case let (.success(text), .string(want)?):
                if text != want { failures.append("\(name): \(firstDifference(text, want))") }
            case let (.failure(error), .string?):
                failures.append("\(name): threw \(error)")
            case let (.success(text), _):
                failures.append("\(name): rendered \(text.debugDescription), jinja2 raised \(snippet["error"]?.pythonDescription ?? "")")
            case (.failure, _):
                break
            }
        }
        XCTAssertGreaterThan(all.count, 70)
        XCTAssert(failures.isEmpty, "\(failures.count) of \(all.count) snippets differ from jinja2:\n" + failures.joined(separator: "\n"))
    }

    /// Hostile templates end in a typed error, quickly: deep nesting, huge loops, output bombs,
    /// runaway recursion, huge repeats.
    func testHostileTemplatesAreBounded() throws {
        func expectLimit(_ source: String, _ label: String) {
            do {
                _ = try ChatTemplate(source).render([:])
                XCTFail("\(label): rendered")
            } catch {
                switch error {
                case .limit, .syntax: break
                default: XCTFail("\(label): \(error)")
                }
            }
        }
        expectLimit(String(repeating: "{% if true %}", count: 5000), "deep statements")
        expectLimit("{{ " + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " }}", "deep parentheses")
        expectLimit("{{ " + String(repeating: "not ", count: 5000) + "1 }}", "deep not")
        expectLimit("{{ " + String(repeating: "-", count: 5000) + "1 }}", "deep minus")
        expectLimit("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "loop steps")
        expectLimit("{% for a in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}", "output size")
        expectLimit("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion")
        expectLimit("{{ 'x' * 10000000000 }}", "repeat")
        expectLimit("{{ range(1000000000) }}", "range")
        XCTAssertThrowsError(try ChatTemplate(String(repeating: "x", count: ChatTemplate.maxSourceBytes + 1)))
        XCTAssertThrowsError(try JinjaValue.parseJSON(String(repeating: "[", count: 10_000)))
    }

    /// Where two renders first differ, with some context.
    private func firstDifference(_ a: String, _ b: String) -> String {
        let x = Array(a.unicodeScalars), y = Array(b.unicodeScalars)
        var i = 0
        while i < x.count, i < y.count, x[i] == y[i] { i += 1 }
        func around(_ s: [Unicode.Scalar]) -> String {
            var v = String.UnicodeScalarView()
            v.append(contentsOf: s[max(0, i - 30)..<min(s.count, i + 40)])
            return String(v).debugDescription
        }
        return "at \(i): got \(around(x)), want \(around(y))"
    }
}

private extension JinjaValue {
    var pythonDescription: String {
        if case let .string(s) = self { return s }
        return jsonText
    }
}
