import Foundation

/// Python's arithmetic and comparison operators as jinja2 applies them to template values.
enum JinjaOperators {
    /// Longest string or list an operator may build (`'x' * n`), as a bound on hostile templates.
    static let maxRepeat = 1 << 20

    static func binary(_ op: String, _ left: JinjaValue, _ right: JinjaValue) throws(JinjaError) -> JinjaValue {
        if op == "~" { return .string(left.pythonString + right.pythonString) }
        // Markup + str escapes the str (markupsafe's __add__ and __radd__).
        if op == "+" {
            switch (left, right) {
            case let (.markup(a), .markup(b)): return .markup(a + b)
            case let (.markup(a), .string(b)): return .markup(a + escapeHTML(b))
            case let (.string(a), .markup(b)): return .markup(escapeHTML(a) + b)
            default: break
            }
        }
        let l = left.unmarked, r = right.unmarked
        if l.isUndefined || r.isUndefined { throw .undefined("an undefined value was used in '\(op)'") }
        switch (op, l, r) {
        case let ("+", .string(a), .string(b)): return .string(a + b)
        case let ("+", .list(a), .list(b)): return .list(a + b)
        case let ("*", .string(a), .int(n)), let ("*", .int(n), .string(a)):
            guard n <= 0 || a.utf8.count * n <= maxRepeat else { throw .limit("string repeated past \(maxRepeat) bytes") }
            return .string(n <= 0 ? "" : String(repeating: a, count: n))
        case let ("*", .list(a), .int(n)), let ("*", .int(n), .list(a)):
            guard n <= 0 || a.count * n <= maxRepeat else { throw .limit("list repeated past \(maxRepeat) items") }
            return .list(n <= 0 ? [] : Array([[JinjaValue]](repeating: a, count: n).joined()))
        default: break
        }
        guard let x = l.numericValue, let y = r.numericValue else {
            if op == "+", case .string = l {
                throw .type("can only concatenate str (not \"\(r.typeName)\") to str")
            }
            throw .type("unsupported operand type(s) for \(op): '\(l.typeName)' and '\(r.typeName)'")
        }
        let bothInt = l.isIntegral && r.isIntegral
        if bothInt, let a = l.integerValue, let b = r.integerValue {
            switch op {
            case "+": let (v, o) = a.addingReportingOverflow(b); if !o { return .int(v) }
            case "-": let (v, o) = a.subtractingReportingOverflow(b); if !o { return .int(v) }
            case "*": let (v, o) = a.multipliedReportingOverflow(by: b); if !o { return .int(v) }
            case "//":
                guard b != 0 else { throw .type("integer division or modulo by zero") }
                let q = a / b
                return .int((a % b != 0) && ((a < 0) != (b < 0)) ? q - 1 : q)
            case "%":
                guard b != 0 else { throw .type("integer division or modulo by zero") }
                let m = a % b
                return .int(m != 0 && ((m < 0) != (b < 0)) ? m + b : m)
            case "**":
                if b >= 0 {
                    var result = 1, overflow = false
                    for _ in 0..<min(b, 64) {
                        let (v, o) = result.multipliedReportingOverflow(by: a)
                        result = v
                        overflow = overflow || o
                    }
                    if !overflow && (b <= 64 || a == 0 || a == 1) { return .int(result) }
                }
            default: break
            }
        }
        switch op {
        case "+": return .double(x + y)
        case "-": return .double(x - y)
        case "*": return .double(x * y)
        case "/":
            guard y != 0 else { throw .type("division by zero") }
            return .double(x / y)
        case "//":
            guard y != 0 else { throw .type("float floor division by zero") }
            return .double((x / y).rounded(.down))
        case "%":
            guard y != 0 else { throw .type("float modulo") }
            let m = x.truncatingRemainder(dividingBy: y)
            return .double(m != 0 && ((m < 0) != (y < 0)) ? m + y : m)
        case "**": return .double(Foundation.pow(x, y))
        default: throw .type("unknown operator \(op)")
        }
    }

    static func compare(_ op: String, _ l: JinjaValue, _ r: JinjaValue) throws(JinjaError) -> Bool {
        switch op {
        case "==": return l.pythonEquals(r)
        case "!=": return !l.pythonEquals(r)
        case "<": return try l.pythonLess(r)
        case ">": return try r.pythonLess(l)
        case "<=": return l.pythonEquals(r) ? true : try l.pythonLess(r)
        case ">=": return l.pythonEquals(r) ? true : try r.pythonLess(l)
        case "in": return try contains(r, l)
        case "notin": return !(try contains(r, l))
        default: throw .type("unknown comparison \(op)")
        }
    }

    /// Python's `needle in container`.
    static func contains(_ haystack: JinjaValue, _ item: JinjaValue) throws(JinjaError) -> Bool {
        let container = haystack.unmarked, needle = item.unmarked
        switch container {
        case let .iterator(l, _): return l.contains { $0.pythonEquals(needle) }
        case .undefined: return false
        case let .string(s):
            guard case let .string(n) = needle else {
                throw .type("'in <string>' requires string as left operand, not \(needle.typeName)")
            }
            return n.isEmpty || s.contains(n)
        case let .list(l): return l.contains { $0.pythonEquals(needle) }
        case let .dict(d):
            return JinjaDict.key(for: needle).map { d[$0] != nil } ?? false
        case let .namespace(ns):
            if case let .string(k) = needle { return ns.attributes[k] != nil }
            return false
        default: throw .type("argument of type '\(container.typeName)' is not iterable")
        }
    }

    /// markupsafe's `escape`: `& < > " '` as entities.
    static func escapeHTML(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&#34;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// The positions Python's `seq[lo:hi:step]` picks.
    static func sliceIndices(count: Int, _ lo: Int?, _ hi: Int?, _ step: Int) -> [Int] {
        func clamp(_ v: Int, _ lower: Int, _ upper: Int) -> Int { min(max(v, lower), upper) }
        var out: [Int] = []
        if step > 0 {
            var start = lo.map { $0 < 0 ? $0 + count : $0 } ?? 0
            var stop = hi.map { $0 < 0 ? $0 + count : $0 } ?? count
            start = clamp(start, 0, count)
            stop = clamp(stop, 0, count)
            var i = start
            while i < stop { out.append(i); i += step }
        } else {
            var start = lo.map { $0 < 0 ? $0 + count : $0 } ?? count - 1
            var stop = hi.map { $0 < 0 ? $0 + count : $0 } ?? -1
            start = clamp(start, -1, count - 1)
            if hi != nil { stop = clamp(stop, -1, count - 1) }
            var i = start
            while i > stop { out.append(i); i += step }
        }
        return out
    }
}

extension JinjaValue {
    /// An int or a bool (Python's bool is an int).
    var isIntegral: Bool {
        switch self {
        case .int, .bool: return true
        default: return false
        }
    }

    /// The value of an int or bool, else nil.
    public var integerValue: Int? {
        switch self {
        case let .int(i): return i
        case let .bool(b): return b ? 1 : 0
        default: return nil
        }
    }
}
