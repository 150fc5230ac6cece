/// An error parsing or rendering a chat template, with jinja2's wording where it has one.
public enum JinjaError: Error, Equatable, CustomStringConvertible {
    /// The template's text is not valid Jinja (line number from 1).
    case syntax(line: Int, reason: String)
    /// An operation on the wrong type of value (Python's TypeError).
    case type(String)
    /// A name or attribute used in a way an undefined value cannot be.
    case undefined(String)
    /// The template called `raise_exception(message)`.
    case raised(String)
    /// Something the sandbox forbids (mutating a list, an underscore attribute).
    case security(String)
    /// Rendering went past a bound (output size, loop steps, recursion).
    case limit(String)

    public var description: String {
        switch self {
        case let .syntax(line, reason): return "chat template line \(line): \(reason)"
        case let .type(m): return "chat template: \(m)"
        case let .undefined(m): return "chat template: \(m)"
        case let .raised(m): return "chat template raised: \(m)"
        case let .security(m): return "chat template: \(m)"
        case let .limit(m): return "chat template: \(m)"
        }
    }
}

/// One lexical token of a template.
enum JinjaToken: Equatable {
    case text(String)
    case variableBegin, variableEnd, blockBegin, blockEnd
    case name(String)
    case string(String)
    case int(Int)
    case double(Double)
    /// An operator or punctuation: `+`, `//`, `==`, `(`, `|`, ...
    case op(String)
}

/// Splits a template into text and tag tokens with jinja2's whitespace rules as transformers
/// configures them: `trim_blocks` (the newline after a block or comment tag goes) and
/// `lstrip_blocks` (spaces before a block or comment tag on its line go), plus the `-` and `+`
/// modifiers.
struct JinjaLexer {
    private let s: [Unicode.Scalar]
    private var i = 0
    private(set) var tokens: [(JinjaToken, Int)] = []
    private var line = 1

    /// jinja2 turns every `\r\n` and `\r` into `\n` and drops one trailing newline
    /// (`keep_trailing_newline=False`).
    init(_ source: String) {
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(source.unicodeScalars.count)
        var previousCR = false
        for c in source.unicodeScalars {
            if c == "\n" && previousCR { previousCR = false; continue }
            previousCR = c == "\r"
            scalars.append(c == "\r" ? "\n" : c)
        }
        if scalars.last == "\n" { scalars.removeLast() }
        s = scalars
    }

    static func tokenize(_ source: String) throws(JinjaError) -> [(JinjaToken, Int)] {
        var lexer = JinjaLexer(source)
        try lexer.run()
        return lexer.tokens
    }

    private func at(_ k: Int, _ text: String) -> Bool {
        var j = k
        for c in text.unicodeScalars {
            guard j < s.count, s[j] == c else { return false }
            j += 1
        }
        return true
    }

    private mutating func run() throws(JinjaError) {
        var text: [Unicode.Scalar] = []
        var lineStarting = true  // the previous tag's match ended a line (or nothing came yet)
        while i < s.count {
            guard s[i] == "{", i + 1 < s.count, s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#" else {
                text.append(s[i])
                i += 1
                continue
            }
            let kind = s[i + 1]
            let modifier: Unicode.Scalar? = i + 2 < s.count && (s[i + 2] == "-" || s[i + 2] == "+") ? s[i + 2] : nil
            emitText(&text, lineStarting: lineStarting, stripTrailing: modifier == "-",
                     lstrip: kind != "{" && modifier != "+")
            i += modifier == nil ? 2 : 3
            switch kind {
            case "#":
                let strip = try skipComment()
                lineStarting = consumeAfterTag(strip: strip, trimNewline: true)
            case "{":
                tokens.append((.variableBegin, line))
                let strip = try lexTag(end: "}}")
                tokens.append((.variableEnd, line))
                lineStarting = consumeAfterTag(strip: strip, trimNewline: false)
            default:
                let start = tokens.count
                tokens.append((.blockBegin, line))
                let strip = try lexTag(end: "%}")
                tokens.append((.blockEnd, line))
                lineStarting = consumeAfterTag(strip: strip, trimNewline: true)
                if tokens.count == start + 3, case .name("raw") = tokens[start + 1].0 {
                    tokens.removeLast(3)
                    lineStarting = try lexRaw()
                }
            }
        }
        emitText(&text, lineStarting: lineStarting, stripTrailing: false, lstrip: false)
    }

    /// After a tag's closing delimiter: `-` eats all following whitespace, otherwise a block or
    /// comment eats one newline (trim_blocks); `+` (nil) eats nothing. Returns whether what was
    /// eaten ended a line (jinja2's `line_starting` for the next lstrip).
    private mutating func consumeAfterTag(strip: Bool?, trimNewline: Bool) -> Bool {
        guard let strip else { return false }
        if strip {
            var last: Unicode.Scalar? = nil
            while i < s.count, s[i].properties.isWhitespace {
                if s[i] == "\n" { line += 1 }
                last = s[i]
                i += 1
            }
            return last == "\n"
        }
        if trimNewline, i < s.count, s[i] == "\n" {
            i += 1
            line += 1
            return true
        }
        return false
    }

    /// Emits pending text; `stripTrailing` for a `-` on the next tag, `lstrip` for lstrip_blocks.
    private mutating func emitText(_ text: inout [Unicode.Scalar], lineStarting: Bool, stripTrailing: Bool, lstrip: Bool) {
        var hi = text.count
        if stripTrailing {
            while hi > 0, text[hi - 1].properties.isWhitespace { hi -= 1 }
        } else if lstrip {
            var lPos = hi
            while lPos > 0, text[lPos - 1] != "\n" { lPos -= 1 }
            if (lPos > 0 || lineStarting) && lPos < hi && text[lPos..<hi].allSatisfy({ $0.properties.isWhitespace }) {
                hi = lPos
            }
        }
        if hi > 0 {
            var out = String.UnicodeScalarView()
            out.append(contentsOf: text[0..<hi])
            let str = String(out)
            tokens.append((.text(str), line))
        }
        line += text.filter { $0 == "\n" }.count
        text.removeAll(keepingCapacity: true)
    }

    /// Skips a comment; returns true for `-#}`, false for `#}`, nil for `+#}`.
    private mutating func skipComment() throws(JinjaError) -> Bool? {
        while i < s.count {
            if at(i, "-#}") { i += 3; return true }
            if at(i, "+#}") { i += 3; return nil }
            if at(i, "#}") { i += 2; return false }
            if s[i] == "\n" { line += 1 }
            i += 1
        }
        throw .syntax(line: line, reason: "comment not closed")
    }

    /// The body of `{% raw %}` up to `{% endraw %}`, as text; returns `line_starting`.
    private mutating func lexRaw() throws(JinjaError) -> Bool {
        var body: [Unicode.Scalar] = []
        while i < s.count {
            if s[i] == "{", at(i + 1, "%") {
                var j = i + 2
                let strip = j < s.count && s[j] == "-"
                if j < s.count, s[j] == "-" || s[j] == "+" { j += 1 }
                while j < s.count, s[j].properties.isWhitespace { j += 1 }
                if at(j, "endraw") {
                    j += 6
                    while j < s.count, s[j].properties.isWhitespace { j += 1 }
                    let stripAfter = at(j, "-%}")
                    if stripAfter || at(j, "%}") {
                        emitText(&body, lineStarting: false, stripTrailing: strip, lstrip: false)
                        i = j + (stripAfter ? 3 : 2)
                        return consumeAfterTag(strip: stripAfter, trimNewline: true)
                    }
                }
            }
            body.append(s[i])
            i += 1
        }
        throw .syntax(line: line, reason: "raw block not closed")
    }

    /// Lexes expression tokens up to `end` (`}}` or `%}`); returns true for a `-` before it,
    /// nil for a `+`, false for neither.
    private mutating func lexTag(end: String) throws(JinjaError) -> Bool? {
        while i < s.count {
            let c = s[i]
            if c == " " || c == "\t" || c == "\r" || c == "\n" {
                if c == "\n" { line += 1 }
                i += 1
                continue
            }
            if at(i, "-" + end) { i += 3; return true }
            if at(i, "+" + end) { i += 3; return nil }
            if at(i, end) { i += 2; return false }
            if c == "\"" || c == "'" {
                tokens.append((.string(try lexString(quote: c)), line))
            } else if c.properties.numericType != nil && c.isASCII {
                tokens.append((lexNumber(), line))
            } else if c == "_" || c.properties.isAlphabetic {
                var name = String.UnicodeScalarView()
                while i < s.count, s[i] == "_" || s[i].properties.isAlphabetic || (s[i].isASCII && s[i].properties.numericType != nil) {
                    name.append(s[i])
                    i += 1
                }
                tokens.append((.name(String(name)), line))
            } else {
                let three = ["**", "//", "==", "!=", "<=", ">="]
                if let op = three.first(where: { at(i, $0) }) {
                    tokens.append((.op(op), line))
                    i += 2
                } else if "+-*/%~()[]{},.:|=<>!".unicodeScalars.contains(c) {
                    tokens.append((.op(String(c)), line))
                    i += 1
                } else {
                    throw .syntax(line: line, reason: "unexpected character '\(Character(c))'")
                }
            }
        }
        throw .syntax(line: line, reason: "tag not closed: expected '\(end)'")
    }

    private mutating func lexString(quote: Unicode.Scalar) throws(JinjaError) -> String {
        i += 1
        var out = String.UnicodeScalarView()
        while i < s.count {
            let c = s[i]
            if c == quote { i += 1; return String(out) }
            if c == "\\", i + 1 < s.count {
                let e = s[i + 1]
                i += 2
                switch e {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                case "a": out.append("\u{07}")
                case "b": out.append("\u{08}")
                case "f": out.append("\u{0C}")
                case "v": out.append("\u{0B}")
                case "0": out.append("\u{00}")
                case "\n": break  // a backslash-newline continues the line
                case "x", "u", "U":
                    let width = e == "x" ? 2 : e == "u" ? 4 : 8
                    var hex = ""
                    while hex.count < width, i < s.count, s[i].properties.isASCIIHexDigit { hex.unicodeScalars.append(s[i]); i += 1 }
                    guard hex.count == width, let code = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(code) else {
                        throw .syntax(line: line, reason: "bad \\\(e) escape in string")
                    }
                    out.append(scalar)
                case "\\", "'", "\"": out.append(e)
                default: out.append("\\"); out.append(e)
                }
                continue
            }
            if c == "\n" { line += 1 }
            out.append(c)
            i += 1
        }
        throw .syntax(line: line, reason: "string not closed")
    }

    private mutating func lexNumber() -> JinjaToken {
        var digits = ""
        var isFloat = false
        while i < s.count {
            let c = s[i]
            if c.isASCII, c.properties.numericType != nil || c == "_" {
                if c != "_" { digits.unicodeScalars.append(c) }
            } else if c == ".", !isFloat, i + 1 < s.count, s[i + 1].isASCII, s[i + 1].properties.numericType != nil {
                isFloat = true
                digits += "."
            } else if c == "e" || c == "E", i + 1 < s.count,
                      s[i + 1].properties.numericType != nil || s[i + 1] == "-" || s[i + 1] == "+" {
                isFloat = true
                digits += "e"
                i += 1
                digits.unicodeScalars.append(s[i])
            } else {
                break
            }
            i += 1
        }
        if !isFloat, let v = Int(digits) { return .int(v) }
        return .double(Double(digits) ?? .infinity)
    }
}
