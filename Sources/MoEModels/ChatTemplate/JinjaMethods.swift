/// The Python methods templates call on strings and dicts (`.strip()`, `.split()`, `.get()`,
/// `.items()`, ...), and transformers' `tojson` (`json.dumps` with `ensure_ascii=False`).
enum JinjaMethods {
    /// `value.name` as a bound method, or nil when the value has no such method. A list's or
    /// dict's mutating methods exist but raise, as the immutable sandbox makes them.
    static func method(of input: JinjaValue, _ name: String) -> JinjaValue? {
        let value = input.unmarked
        switch value {
        case let .string(s): return stringMethod(s, name)
        case let .dict(d): return dictMethod(d, name)
        case .list:
            let mutating: Set = ["append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"]
            guard mutating.contains(name) else { return nil }
            return bound(name) { _, _ in throw JinjaError.security("access to attribute '\(name)' of 'list' object is unsafe.") }
        default: return nil
        }
    }

    private static func bound(_ name: String, _ f: @escaping @Sendable ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue) -> JinjaValue {
        .callable(JinjaCallable(name: name, call: f))
    }

    private static func dictMethod(_ d: JinjaDict, _ name: String) -> JinjaValue? {
        switch name {
        case "items": return bound(name) { _, _ in .list(d.valueItems.map { .tuple([$0.0, $0.1]) }) }
        case "keys": return bound(name) { _, _ in .list(d.keyValues) }
        case "values": return bound(name) { _, _ in .list(d.items.map(\.1)) }
        case "get":
            return bound(name) { args, _ in
                guard let key = args.first else { throw JinjaError.type("get expected at least 1 argument, got 0") }
                if let k = JinjaDict.key(for: key), let v = d[k] { return v }
                return args.count > 1 ? args[1] : .none
            }
        case "pop", "update", "setdefault", "clear", "popitem":
            return bound(name) { _, _ in throw JinjaError.security("access to attribute '\(name)' of 'dict' object is unsafe.") }
        default: return nil
        }
    }

    static func isPythonSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
    }

    /// Python's `str.strip(chars)` family: `leading`/`trailing` say which ends.
    static func strip(_ s: String, _ chars: JinjaValue?, leading: Bool, trailing: Bool) -> String {
        let scalars = Array(s.unicodeScalars)
        let set: Set<Unicode.Scalar>?
        if case let .string(c)? = chars { set = Set(c.unicodeScalars) } else { set = nil }
        func drop(_ c: Unicode.Scalar) -> Bool { set.map { $0.contains(c) } ?? isPythonSpace(c) }
        var lo = 0, hi = scalars.count
        if leading { while lo < hi, drop(scalars[lo]) { lo += 1 } }
        if trailing { while hi > lo, drop(scalars[hi - 1]) { hi -= 1 } }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[lo..<hi])
        return String(out)
    }

    /// Python's `str.split(sep, maxsplit)`.
    static func split(_ s: String, _ sep: JinjaValue?, _ maxSplit: Int) throws -> [String] {
        if case let .string(separator)? = sep {
            guard !separator.isEmpty else { throw JinjaError.type("empty separator") }
            var parts: [String] = []
            var rest = Substring(s)
            while maxSplit < 0 || parts.count < maxSplit, let r = rest.range(of: separator) {
                parts.append(String(rest[..<r.lowerBound]))
                rest = rest[r.upperBound...]
            }
            parts.append(String(rest))
            return parts
        }
        var parts: [String] = []
        var current = String.UnicodeScalarView()
        var scalars = s.unicodeScalars[...]
        while let c = scalars.first {
            if isPythonSpace(c) {
                if !current.isEmpty { parts.append(String(current)); current = String.UnicodeScalarView() }
                scalars = scalars.dropFirst()
                if maxSplit >= 0 && parts.count == maxSplit {
                    let rest = String(String.UnicodeScalarView(scalars.drop(while: isPythonSpace)))
                    if !rest.isEmpty { parts.append(rest) }
                    return parts
                }
            } else {
                current.append(c)
                scalars = scalars.dropFirst()
            }
        }
        if !current.isEmpty { parts.append(String(current)) }
        return parts
    }

    private static func stringArgument(_ args: [JinjaValue], _ k: Int, _ method: String) throws -> String {
        guard k < args.count, case let .string(s) = args[k] else {
            throw JinjaError.type("\(method)() argument \(k + 1) must be str")
        }
        return s
    }

    private static func stringMethod(_ s: String, _ name: String) -> JinjaValue? {
        switch name {
        case "strip", "lstrip", "rstrip":
            return bound(name) { args, _ in
                .string(strip(s, args.first, leading: name != "rstrip", trailing: name != "lstrip"))
            }
        case "split", "rsplit":
            return bound(name) { args, kwargs in
                let sep = args.first ?? kwargs.first { $0.0 == "sep" }?.1
                let maxArg = args.count > 1 ? args[1] : kwargs.first { $0.0 == "maxsplit" }?.1
                let maxSplit = maxArg?.integerValue ?? -1
                if name == "rsplit", maxSplit >= 0 {
                    let reversed = try split(String(s.reversed()), sep.map { v -> JinjaValue in
                        if case let .string(x) = v { return .string(String(x.reversed())) }
                        return v
                    }, maxSplit)
                    return .list(reversed.reversed().map { .string(String($0.reversed())) })
                }
                var separator = sep
                if case .none? = sep { separator = nil }
                return .list(try split(s, separator, maxSplit).map { .string($0) })
            }
        case "startswith", "endswith":
            return bound(name) { args, _ in
                let candidates: [JinjaValue]
                if case let .list(l)? = args.first?.unmarked { candidates = l } else { candidates = Array(args.prefix(1)) }
                for c in candidates {
                    guard case let .string(p) = c else { throw JinjaError.type("\(name) first arg must be str or a tuple of str") }
                    if name == "startswith" ? s.unicodeScalars.starts(with: p.unicodeScalars)
                        : s.unicodeScalars.reversed().starts(with: p.unicodeScalars.reversed()) { return .bool(true) }
                }
                return .bool(false)
            }
        case "replace":
            return bound(name) { args, _ in
                let old = try stringArgument(args, 0, name), new = try stringArgument(args, 1, name)
                let count = args.count > 2 ? (args[2].integerValue ?? -1) : -1
                return .string(replace(s, old, new, count: count))
            }
        case "upper": return bound(name) { _, _ in .string(s.uppercased()) }
        case "lower": return bound(name) { _, _ in .string(s.lowercased()) }
        case "title": return bound(name) { _, _ in .string(title(s)) }
        case "capitalize": return bound(name) { _, _ in .string(capitalize(s)) }
        case "find", "rfind", "index", "rindex":
            return bound(name) { args, _ in
                let needle = try stringArgument(args, 0, name)
                let hay = Array(s.unicodeScalars), n = Array(needle.unicodeScalars)
                var positions = n.count <= hay.count ? Array(0...(hay.count - n.count)) : []
                if name.hasPrefix("r") { positions.reverse() }
                for i in positions where Array(hay[i..<(i + n.count)]) == n { return .int(i) }
                if name.hasSuffix("index") { throw JinjaError.type("substring not found") }
                return .int(-1)
            }
        case "count":
            return bound(name) { args, _ in
                let needle = try stringArgument(args, 0, name)
                return .int(needle.isEmpty ? s.unicodeScalars.count + 1 : s.components(separatedBy: needle).count - 1)
            }
        case "join":
            return bound(name) { args, _ in
                guard case let .list(items)? = args.first else { throw JinjaError.type("can only join an iterable") }
                var parts: [String] = []
                for item in items {
                    guard case let .string(p) = item else { throw JinjaError.type("sequence item: expected str instance, \(item.typeName) found") }
                    parts.append(p)
                }
                return .string(parts.joined(separator: s))
            }
        case "format": return bound(name) { args, kwargs in .string(try format(s, args, kwargs)) }
        case "splitlines":
            return bound(name) { _, _ in
                var lines = s.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }).map(String.init)
                if lines.last == "" { lines.removeLast() }
                return .list(lines.map { .string($0) })
            }
        case "isdigit", "isalpha", "isspace", "isalnum", "islower", "isupper":
            return bound(name) { _, _ in
                let u = s.unicodeScalars
                guard !u.isEmpty else { return .bool(false) }
                switch name {
                case "isdigit": return .bool(u.allSatisfy { $0.properties.numericType == .decimal || $0.properties.numericType == .digit })
                case "isalpha": return .bool(u.allSatisfy { $0.properties.isAlphabetic })
                case "isspace": return .bool(u.allSatisfy(isPythonSpace))
                case "isalnum": return .bool(u.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
                case "islower": return .bool(s == s.lowercased() && s != s.uppercased())
                default: return .bool(s == s.uppercased() && s != s.lowercased())
                }
            }
        default: return nil
        }
    }

    static func replace(_ s: String, _ old: String, _ new: String, count: Int) -> String {
        if count < 0 { return old.isEmpty ? insertEverywhere(s, new) : s.replacingOccurrences(of: old, with: new) }
        var out = "", rest = Substring(s), done = 0
        while done < count, !old.isEmpty, let r = rest.range(of: old) {
            out += rest[..<r.lowerBound] + new
            rest = rest[r.upperBound...]
            done += 1
        }
        return out + rest
    }

    private static func insertEverywhere(_ s: String, _ new: String) -> String {
        new + s.unicodeScalars.map { String($0) + new }.joined()
    }

    /// Python's `str.title()`: a letter after a non-letter goes upper case, others lower.
    static func title(_ s: String) -> String {
        var out = "", previousCased = false
        for c in s {
            let isLetter = c.isLetter
            out += isLetter ? (previousCased ? c.lowercased() : c.uppercased()) : String(c)
            previousCased = isLetter
        }
        return out
    }

    static func capitalize(_ s: String) -> String {
        guard let first = s.first else { return s }
        return first.uppercased() + s.dropFirst().lowercased()
    }

    /// Python's `str.format` for `{}`, `{0}` and `{name}` fields (no format specs).
    static func format(_ s: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> String {
        var out = "", field = "", inField = false, auto = 0
        var it = s.makeIterator()
        var pending: Character? = nil
        while let c = pending ?? it.next() {
            pending = nil
            if inField {
                if c == "}" {
                    let value: JinjaValue
                    if field.isEmpty {
                        guard auto < args.count else { throw JinjaError.type("Replacement index \(auto) out of range") }
                        value = args[auto]
                        auto += 1
                    } else if let k = Int(field) {
                        guard k < args.count else { throw JinjaError.type("Replacement index \(k) out of range") }
                        value = args[k]
                    } else if let v = kwargs.first(where: { $0.0 == field })?.1 {
                        value = v
                    } else {
                        throw JinjaError.type("KeyError: '\(field)'")
                    }
                    out += value.pythonString
                    inField = false
                    field = ""
                } else {
                    guard c != ":" && c != "!" else { throw JinjaError.type("format specs are not supported") }
                    field.append(c)
                }
            } else if c == "{" {
                let next = it.next()
                if next == "{" { out.append("{") } else { inField = true; pending = next }
            } else if c == "}" {
                guard it.next() == "}" else { throw JinjaError.type("Single '}' encountered in format string") }
                out.append("}")
            } else {
                out.append(c)
            }
        }
        guard !inField else { throw JinjaError.type("expected '}' before end of string") }
        return out
    }
}

// MARK: - JSON (transformers' tojson)

extension JinjaMethods {
    /// `json.dumps(value, ensure_ascii=False, indent=indent, separators=..., sort_keys=...)`.
    static func json(_ v: JinjaValue, indent: Int?, separators: (String, String)?, sortKeys: Bool) throws -> String {
        let (itemSep, keySep) = separators ?? (indent == nil ? (", ", ": ") : (",", ": "))
        var out = ""
        try writeJSON(v, indent: indent, level: 0, itemSep: itemSep, keySep: keySep, sortKeys: sortKeys, into: &out)
        return out
    }

    private static func writeJSON(_ v: JinjaValue, indent: Int?, level: Int, itemSep: String, keySep: String,
                                  sortKeys: Bool, into out: inout String) throws {
        guard level < 512 else { throw JinjaError.limit("tojson nested more than 512 deep") }
        if case let .tuple(items) = v {
            return try writeJSON(.list(items), indent: indent, level: level, itemSep: itemSep, keySep: keySep, sortKeys: sortKeys, into: &out)
        }
        func newline(_ l: Int) { if let indent { out += "\n" + String(repeating: " ", count: indent * l) } }
        switch v {
        case .none: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d):
            out += d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : JinjaValue.pythonFloat(d)
        case let .string(s), let .markup(s): out += jsonQuoted(s)
        case let .list(items):
            guard !items.isEmpty else { out += "[]"; return }
            out += "["
            for (k, item) in items.enumerated() {
                if k > 0 { out += itemSep }
                newline(level + 1)
                try writeJSON(item, indent: indent, level: level + 1, itemSep: itemSep, keySep: keySep, sortKeys: sortKeys, into: &out)
            }
            newline(level)
            out += "]"
        case let .dict(d):
            guard !d.keys.isEmpty else { out += "{}"; return }
            out += "{"
            let keys = sortKeys ? d.keys.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) } : d.keys
            for (k, key) in keys.enumerated() {
                if k > 0 { out += itemSep }
                newline(level + 1)
                let keyText: String
                switch JinjaDict.value(ofKey: key) {
                case let .string(s): keyText = s
                case .none: keyText = "null"
                case let .double(x): keyText = JinjaValue.pythonFloat(x)
                case let other: keyText = other.pythonRepr
                }
                out += jsonQuoted(keyText) + keySep
                try writeJSON(d[key]!, indent: indent, level: level + 1, itemSep: itemSep, keySep: keySep, sortKeys: sortKeys, into: &out)
            }
            newline(level)
            out += "}"
        default:
            throw JinjaError.type("Object of type \(v.typeName) is not JSON serializable")
        }
    }

    static func jsonQuoted(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if c.value < 0x20 {
                    let hex = String(c.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        return out + "\""
    }
}
