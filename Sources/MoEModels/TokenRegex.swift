// The patterns of tokenizer.json `Split`/`Replace` and of GGUF pre-tokenizers, parsed.
//
// These patterns come from files a user downloads, so they are hostile input. Swift's `Regex`
// and Oniguruma backtrack: `(a+)+b` against a long run of `a` takes exponential time. MoEKit
// parses the Oniguruma/PCRE syntax tokenizers use into a `RegexNode` here, compiles it to a
// small program and matches it with a memoising backtracker (TokenRegex+Search.swift) whose
// work is linear in the text.

/// A parse or size error in a tokenizer pattern.
public struct TokenRegexError: Error, Equatable, CustomStringConvertible {
    /// Where in the pattern (in Unicode scalars) the problem was found.
    public let offset: Int
    /// What is wrong.
    public let reason: String
    public var description: String { "at offset \(offset): \(reason)" }
}

/// A zero-width test at a position.
enum RegexAssertion: Sendable { case textStart, textEnd, wordBoundary, notWordBoundary }

/// A parsed pattern.
indirect enum RegexNode {
    case empty
    case scalars(ScalarClass)
    case concat([RegexNode])
    case alternation([RegexNode])
    case repetition(RegexNode, min: Int, max: Int?, greedy: Bool)
    case look(RegexNode, ahead: Bool, negated: Bool)
    case assertion(RegexAssertion)

    /// The shortest and longest texts this node can match (nil: unbounded).
    var lengthRange: (min: Int, max: Int?) {
        switch self {
        case .empty, .look, .assertion: return (0, 0)
        case .scalars: return (1, 1)
        case let .concat(items):
            var lo = 0, hi: Int? = 0
            for item in items {
                let r = item.lengthRange
                lo += r.min
                hi = hi.flatMap { h in r.max.map { h + $0 } }
            }
            return (lo, hi)
        case let .alternation(items):
            let ranges = items.map(\.lengthRange)
            let hi = ranges.contains { $0.max == nil } ? nil : ranges.map { $0.max! }.max() ?? 0
            return (ranges.map(\.min).min() ?? 0, hi)
        case let .repetition(node, min, max, _):
            let r = node.lengthRange
            guard let max, let rmax = r.max else { return (r.min * min, r.max == 0 ? 0 : nil) }
            return (r.min * min, rmax * max)
        }
    }
}

/// Parses the pattern syntax of tokenizer files: literals and escapes (`\r \n \t \f \v \0 \e \a`,
/// `\xHH`, `\x{H..}`, `\uHHHH`), classes `\s \S \d \D \w \W`, Unicode general categories
/// (`\p{L}`, `\pN`, `\P{Lu}`, `\p{^P}`), bracket classes with ranges, negation and nesting, `.`,
/// groups (`(..)`, `(?:..)`, `(?<name>..)`, `(?i:..)`, `(?i)`), lookahead and lookbehind of
/// bounded length, anchors (`^ $ \A \z \b \B`), alternation and the quantifiers `* + ? {n}
/// {n,} {n,m} {,m}` with their lazy forms. Backreferences, atomic groups and possessive
/// quantifiers are errors: they are what makes backtracking engines slow.
struct RegexParser {
    static let maxPatternLength = 16_384
    static let maxRepeat = 1_000
    static let maxDepth = 64
    static let maxLookLength = 256

    private let p: [Unicode.Scalar]
    private var i = 0
    private var depth = 0

    init(_ pattern: String) { p = Array(pattern.unicodeScalars) }

    /// The whole pattern as a node.
    mutating func parse() throws(TokenRegexError) -> RegexNode {
        guard p.count <= Self.maxPatternLength else { throw fail("the pattern is longer than \(Self.maxPatternLength) characters") }
        let node = try alternation(caseless: false)
        if i < p.count { throw fail("unbalanced ')'") }
        return node
    }

    private func fail(_ reason: String) -> TokenRegexError { TokenRegexError(offset: i, reason: reason) }
    private var peek: Unicode.Scalar? { i < p.count ? p[i] : nil }
    private mutating func eat(_ c: Unicode.Scalar) -> Bool {
        if peek == c { i += 1; return true }
        return false
    }

    private mutating func alternation(caseless: Bool) throws(TokenRegexError) -> RegexNode {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else { throw fail("groups nest deeper than \(Self.maxDepth)") }
        var caseless = caseless
        var branches: [RegexNode] = []
        var items: [RegexNode] = []
        while let c = peek, c != ")" {
            if c == "|" {
                i += 1
                branches.append(.concat(items))
                items = []
                continue
            }
            if c == "(", i + 2 < p.count, p[i + 1] == "?", let flags = inlineFlags(at: i + 2), p[flags.end] == ")" {
                // `(?i)`: the flag holds to the end of the enclosing group.
                caseless = flags.caseless
                i = flags.end + 1
                continue
            }
            var atom = try atom(caseless: caseless)
            atom = try quantified(atom)
            items.append(atom)
        }
        branches.append(.concat(items))
        return branches.count == 1 ? branches[0] : .alternation(branches)
    }

    /// `i`, `-i`, `i-` flag letters starting at `start`, ending before `:` or `)`.
    private func inlineFlags(at start: Int) -> (caseless: Bool, end: Int)? {
        var j = start, on = true, caseless: Bool?
        while j < p.count {
            switch p[j] {
            case "i": caseless = on
            case "-": on = false
            case ":", ")": return caseless.map { ($0, j) } ?? (on ? nil : (false, j))
            default: return nil
            }
            j += 1
        }
        return nil
    }

    private mutating func quantified(_ atom: RegexNode) throws(TokenRegexError) -> RegexNode {
        var node = atom
        while let c = peek {
            var lo = 0, hi: Int?
            switch c {
            case "*": i += 1
            case "+": lo = 1; i += 1
            case "?": hi = 1; i += 1
            case "{":
                guard let (a, b, end) = braces(at: i) else { return node }
                lo = a; hi = b; i = end
            default: return node
            }
            if case .assertion = node { throw fail("a quantifier follows an assertion") }
            if case .look = node { throw fail("a quantifier follows a lookaround") }
            if let h = hi, h < lo { throw fail("{\(lo),\(h)}: the maximum is below the minimum") }
            guard lo <= Self.maxRepeat, (hi ?? 0) <= Self.maxRepeat else { throw fail("repetition counts above \(Self.maxRepeat)") }
            if eat("+") { throw fail("possessive quantifiers are not supported") }
            let greedy = !eat("?")
            node = .repetition(node, min: lo, max: hi, greedy: greedy)
        }
        return node
    }

    /// `{n}`, `{n,}`, `{n,m}` or `{,m}` at `start`; nil when the brace is a literal.
    private func braces(at start: Int) -> (Int, Int?, Int)? {
        var j = start + 1
        func number() -> Int? {
            var v: Int?
            while j < p.count, let d = p[j].properties.numericType == .decimal && p[j].isASCII ? Int(p[j].value - 48) : nil {
                v = min((v ?? 0) * 10 + d, 1_000_000)
                j += 1
            }
            return v
        }
        let lo = number()
        if j < p.count, p[j] == "}" { return lo.map { ($0, $0, j + 1) } }
        guard j < p.count, p[j] == "," else { return nil }
        j += 1
        let hi = number()
        guard j < p.count, p[j] == "}", lo != nil || hi != nil else { return nil }
        return (lo ?? 0, hi, j + 1)
    }

    private mutating func atom(caseless: Bool) throws(TokenRegexError) -> RegexNode {
        let c = p[i]
        i += 1
        switch c {
        case "(": return try group(caseless: caseless)
        case "[": return .scalars(try bracket(caseless: caseless))
        case ".": return .scalars(ScalarClass(items: [.range(10, 10)], negated: true))
        case "^": return .assertion(.textStart)
        case "$": return .assertion(.textEnd)
        case "*", "+", "?": throw fail("a quantifier has nothing to repeat")
        case "\\":
            switch peek {
            case "A": i += 1; return .assertion(.textStart)
            case "z", "Z": i += 1; return .assertion(.textEnd)
            case "b": i += 1; return .assertion(.wordBoundary)
            case "B": i += 1; return .assertion(.notWordBoundary)
            default: return .scalars(try escape(caseless: caseless))
            }
        default: return .scalars(ScalarClass(literal: c, caseless: caseless))
        }
    }

    private mutating func group(caseless: Bool) throws(TokenRegexError) -> RegexNode {
        var caseless = caseless
        var look: (ahead: Bool, negated: Bool)?
        if eat("?") {
            if eat(":") {
            } else if eat("=") { look = (true, false)
            } else if eat("!") { look = (true, true)
            } else if peek == "<", i + 1 < p.count, p[i + 1] == "=" || p[i + 1] == "!" {
                look = (false, p[i + 1] == "!")
                i += 2
            } else if eat("<") || eat("P") && eat("<") || eat("'") {
                while let c = peek, c != ">", c != "'" { i += 1 }
                guard peek != nil else { throw fail("an unterminated group name") }
                i += 1
            } else if let flags = inlineFlags(at: i), p[flags.end] == ":" {
                caseless = flags.caseless
                i = flags.end + 1
            } else {
                throw fail("this group syntax is not supported (atomic groups, conditionals and backreferences are not)")
            }
        }
        let body = try alternation(caseless: caseless)
        guard eat(")") else { throw fail("an unterminated group") }
        guard let look else { return body }
        guard let longest = body.lengthRange.max, longest <= Self.maxLookLength else {
            throw fail("a lookaround must match at most \(Self.maxLookLength) characters")
        }
        return .look(body, ahead: look.ahead, negated: look.negated)
    }

    /// A backslash escape (the backslash eaten) as a class.
    private mutating func escape(caseless: Bool) throws(TokenRegexError) -> ScalarClass {
        guard let c = peek else { throw fail("a trailing backslash") }
        i += 1
        switch c {
        case "s": return ScalarClass(items: [.whitespace], negated: false)
        case "S": return ScalarClass(items: [.whitespace], negated: true)
        case "d": return ScalarClass(items: [.digit], negated: false)
        case "D": return ScalarClass(items: [.digit], negated: true)
        case "w": return ScalarClass(items: [.word], negated: false)
        case "W": return ScalarClass(items: [.word], negated: true)
        case "p", "P": return try property(negated: c == "P")
        default: return ScalarClass(literal: try escapedScalar(c), caseless: caseless)
        }
    }

    /// The scalar an escape other than a class stands for.
    private mutating func escapedScalar(_ c: Unicode.Scalar) throws(TokenRegexError) -> Unicode.Scalar {
        switch c {
        case "n": return "\n"
        case "r": return "\r"
        case "t": return "\t"
        case "f": return "\u{0C}"
        case "v": return "\u{0B}"
        case "a": return "\u{07}"
        case "e": return "\u{1B}"
        case "0": return "\0"
        case "x", "u":
            let braced = eat("{")
            var v: UInt32 = 0, digits = 0
            while let d = peek, let h = d.isASCII ? UInt32(String(d), radix: 16) : nil, braced || digits < (c == "x" ? 2 : 4) {
                guard digits < 8 else { throw fail("a hexadecimal escape is too long") }
                v = v * 16 + h
                digits += 1
                i += 1
            }
            if braced && !eat("}") || digits == 0 { throw fail("a malformed \\\(c) escape") }
            guard let s = Unicode.Scalar(v) else { throw fail("\\\(c) names no Unicode scalar") }
            return s
        default:
            if c.properties.isAlphabetic || c.properties.numericType != nil {
                throw fail("the escape \\\(c) is not supported")
            }
            return c
        }
    }

    /// `\p{Name}`, `\pL`, `\p{^Name}` (the `p` eaten).
    private mutating func property(negated: Bool) throws(TokenRegexError) -> ScalarClass {
        var name = ""
        if eat("{") {
            while let c = peek, c != "}" { name.unicodeScalars.append(c); i += 1; guard name.count < 64 else { break } }
            guard eat("}") else { throw fail("an unterminated \\p{") }
        } else if let c = peek {
            name = String(c)
            i += 1
        }
        var negated = negated
        if name.hasPrefix("^") { negated.toggle(); name.removeFirst() }
        guard let categories = ScalarClass.categories(named: name) else { throw fail("the property '\(name)' is not supported") }
        return ScalarClass(items: [.categories(categories)], negated: negated)
    }

    /// A bracket class (the `[` eaten).
    private mutating func bracket(caseless: Bool) throws(TokenRegexError) -> ScalarClass {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else { throw fail("classes nest deeper than \(Self.maxDepth)") }
        let negated = eat("^")
        var items: [ScalarClass.Item] = []
        var first = true
        while true {
            guard let c = peek else { throw fail("an unterminated '['") }
            if c == "]" && !first { i += 1; break }
            first = false
            if c == "[" {
                if i + 1 < p.count, p[i + 1] == ":" { throw fail("POSIX classes are not supported") }
                i += 1
                items.append(.nested(try bracket(caseless: caseless)))
                continue
            }
            if c == "&", i + 1 < p.count, p[i + 1] == "&" { throw fail("class intersection is not supported") }
            i += 1
            var lo: Unicode.Scalar = c
            if c == "\\" {
                guard let e = peek else { throw fail("a trailing backslash") }
                if "sSdDwWpP".unicodeScalars.contains(e) {
                    items.append(.nested(try escape(caseless: caseless)))
                    continue
                }
                i += 1
                lo = e == "b" ? "\u{08}" : try escapedScalar(e)
            }
            if peek == "-", i + 1 < p.count, p[i + 1] != "]" {
                i += 1
                var hi = p[i]
                i += 1
                if hi == "\\" {
                    guard let e = peek else { throw fail("a trailing backslash") }
                    i += 1
                    hi = try escapedScalar(e)
                }
                guard lo.value <= hi.value else { throw fail("a class range runs backwards") }
                items.append(.range(lo.value, hi.value))
            } else {
                items.append(.range(lo.value, lo.value))
            }
        }
        return ScalarClass(items: items, negated: negated, caseless: caseless)
    }
}
