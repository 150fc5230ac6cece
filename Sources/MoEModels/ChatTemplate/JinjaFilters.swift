/// jinja2's built-in filters and tests (`filters.py`, `tests.py`) that chat templates use,
/// with transformers' `tojson` in place of jinja2's HTML-escaping one.
extension JinjaEvaluator {
    private func argument(_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], _ k: Int, _ name: String) -> JinjaValue? {
        if k < args.count { return args[k] }
        return kwargs.first { $0.0 == name }?.1
    }

    private func boolArgument(_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], _ k: Int, _ name: String) -> Bool {
        argument(args, kwargs, k, name)?.truthy ?? false
    }

    /// jinja2's `environment.getitem` with a dotted path (`"function.name"`, `"0"`).
    private func path(_ value: JinjaValue, _ attribute: JinjaValue) throws(JinjaError) -> JinjaValue {
        guard case let .string(p) = attribute else { return try item(of: value, attribute) }
        var v = value
        for part in p.split(separator: ".", omittingEmptySubsequences: false) {
            if let i = Int(part) { v = try item(of: v, .int(i)) } else { v = try item(of: v, .string(String(part))) }
        }
        return v
    }

    /// The key a sort or min/max compares: lower-cased strings unless case-sensitive.
    private func sortKey(_ v: JinjaValue, caseSensitive: Bool) -> JinjaValue {
        if !caseSensitive, case let .string(s) = v { return .string(s.lowercased()) }
        return v
    }

    private func sorted(_ items: [JinjaValue], key: (JinjaValue) throws(JinjaError) -> JinjaValue, reverse: Bool) throws(JinjaError) -> [JinjaValue] {
        var keyed: [(JinjaValue, JinjaValue)] = []
        for item in items { keyed.append((try key(item), item)) }
        var failure: JinjaError? = nil
        // Python's sort is stable; so is insertion of equal keys in this merge sort.
        let order = keyed.indices.sorted { a, b in
            do {
                if try keyed[a].0.pythonLess(keyed[b].0) { return !reverse }
                if try keyed[b].0.pythonLess(keyed[a].0) { return reverse }
            } catch {
                failure = error as? JinjaError
            }
            return a < b
        }
        if let failure { throw failure }
        return order.map { keyed[$0].1 }
    }

    func applyFilter(_ name: String, to input: JinjaValue, args: [JinjaValue], kwargs: [(String, JinjaValue)]) throws(JinjaError) -> JinjaValue {
        let value = input.unmarked
        switch name {
        case "tojson":
            let indent = argument(args, kwargs, 1, "indent")?.integerValue
            var separators: (String, String)? = nil
            if case let .list(pair)? = argument(args, kwargs, 2, "separators")?.unmarked, pair.count == 2,
               case let .string(a) = pair[0], case let .string(b) = pair[1] { separators = (a, b) }
            do {
                var text = try JinjaMethods.json(value, indent: indent, separators: separators,
                                                 sortKeys: boolArgument(args, kwargs, 3, "sort_keys"))
                if boolArgument(args, kwargs, 0, "ensure_ascii") { text = Self.asciiEscaped(text) }
                return .string(text)
            } catch let e as JinjaError { throw e } catch { throw .type("\(error)") }
        case "length", "count":
            switch value {
            case .undefined: return .int(0)
            case let .string(s): return .int(s.unicodeScalars.count)
            case let .list(l): return .int(l.count)
            case let .dict(d): return .int(d.keys.count)
            default: throw .type("object of type '\(value.typeName)' has no len()")
            }
        case "trim":
            return .string(JinjaMethods.strip(value.pythonString, argument(args, kwargs, 0, "chars"), leading: true, trailing: true))
        case "string": return .string(value.pythonString)
        case "safe": return .markup(value.pythonString)
        case "e", "escape":
            if case .markup = input { return input }
            return .markup(JinjaOperators.escapeHTML(value.pythonString))
        case "upper": return .string(value.pythonString.uppercased())
        case "lower": return .string(value.pythonString.lowercased())
        case "capitalize": return .string(JinjaMethods.capitalize(value.pythonString))
        case "title": return .string(JinjaMethods.title(value.pythonString))
        case "default", "d":
            let fallback = argument(args, kwargs, 0, "default_value") ?? .string("")
            let useFalsy = boolArgument(args, kwargs, 1, "boolean")
            return value.isUndefined || (useFalsy && !value.truthy) ? fallback : value
        case "join":
            var items = try iterate(value)
            if let attribute = argument(args, kwargs, 1, "attribute") { items = try items.map { v throws(JinjaError) in try path(v, attribute) } }
            let separator = argument(args, kwargs, 0, "d")?.pythonString ?? ""
            return .string(items.map(\.pythonString).joined(separator: separator))
        case "items":
            switch value {
            case .undefined: return .list([])
            case let .dict(d): return .iterator(d.valueItems.map { .tuple([$0.0, $0.1]) }, kind: "generator")
            default: throw .type("Can only get item pairs from a mapping.")
            }
        case "list": return .list(try iterate(value))
        case "first": return try iterate(value).first ?? .undefined
        case "last":
            if case .iterator = value { throw .type("'\(value.typeName)' object is not reversible") }
            return try iterate(value).last ?? .undefined
        case "reverse":
            if case let .string(s) = value { return .string(String(s.reversed())) }
            return .iterator(try iterate(value).reversed(), kind: "list_reverseiterator")
        case "replace":
            guard args.count >= 2 else { throw .type("replace() needs old and new") }
            let count = argument(args, kwargs, 2, "count")?.integerValue ?? -1
            return .string(JinjaMethods.replace(value.pythonString, args[0].pythonString, args[1].pythonString, count: count))
        case "dictsort":
            guard case let .dict(d) = value else { throw .type("dictsort needs a mapping") }
            let caseSensitive = boolArgument(args, kwargs, 0, "case_sensitive")
            let byValue = argument(args, kwargs, 1, "by")?.pythonString == "value"
            let pairs = d.valueItems.map { JinjaValue.tuple([$0.0, $0.1]) }
            return .list(try sorted(pairs, key: { p throws(JinjaError) in
                guard case let .tuple(kv) = p else { return p }
                return sortKey(byValue ? kv[1] : kv[0], caseSensitive: caseSensitive)
            }, reverse: boolArgument(args, kwargs, 2, "reverse")))
        case "sort":
            let caseSensitive = boolArgument(args, kwargs, 1, "case_sensitive")
            let attribute = argument(args, kwargs, 2, "attribute")
            return .list(try sorted(try iterate(value), key: { v throws(JinjaError) in
                sortKey(try attribute.map { a throws(JinjaError) in try path(v, a) } ?? v, caseSensitive: caseSensitive)
            }, reverse: boolArgument(args, kwargs, 0, "reverse")))
        case "unique":
            let caseSensitive = boolArgument(args, kwargs, 0, "case_sensitive")
            let attribute = argument(args, kwargs, 1, "attribute")
            var seen: [JinjaValue] = [], out: [JinjaValue] = []
            for v in try iterate(value) {
                let key = sortKey(try attribute.map { a throws(JinjaError) in try path(v, a) } ?? v, caseSensitive: caseSensitive)
                if !seen.contains(where: { $0.pythonEquals(key) }) { seen.append(key); out.append(v) }
            }
            return .list(out)
        case "min", "max":
            let caseSensitive = boolArgument(args, kwargs, 0, "case_sensitive")
            let attribute = argument(args, kwargs, 1, "attribute")
            let items = try sorted(try iterate(value), key: { v throws(JinjaError) in
                sortKey(try attribute.map { a throws(JinjaError) in try path(v, a) } ?? v, caseSensitive: caseSensitive)
            }, reverse: name == "max")
            return items.first ?? .undefined
        case "sum":
            var total = argument(args, kwargs, 1, "start") ?? .int(0)
            for v in try iterate(value) {
                let term = try argument(args, kwargs, 0, "attribute").map { a throws(JinjaError) in try path(v, a) } ?? v
                total = try JinjaOperators.binary("+", total, term)
            }
            return total
        case "abs":
            switch value {
            case let .int(i): return .int(i == .min ? i : Swift.abs(i))
            case let .double(d): return .double(Swift.abs(d))
            default: throw .type("bad operand type for abs(): '\(value.typeName)'")
            }
        case "int": return Self.toInt(value, default: argument(args, kwargs, 0, "default") ?? .int(0))
        case "float": return Self.toDouble(value, default: argument(args, kwargs, 0, "default") ?? .double(0))
        case "round":
            guard let x = value.numericValue else { throw .type("round needs a number") }
            let precision = argument(args, kwargs, 0, "precision")?.integerValue ?? 0
            let method = argument(args, kwargs, 1, "method")?.pythonString ?? "common"
            var scale = 1.0
            for _ in 0..<min(max(precision, 0), 15) { scale *= 10 }
            let rule: FloatingPointRoundingRule = method == "ceil" ? .up : method == "floor" ? .down : .toNearestOrEven
            return .double((x * scale).rounded(rule) / scale)
        case "indent": return .string(Self.indent(value.pythonString, args, kwargs))
        case "wordcount": return .int(value.pythonString.split(whereSeparator: { $0.unicodeScalars.allSatisfy(JinjaMethods.isPythonSpace) }).count)
        case "attr": return attribute(of: value, args.first?.pythonString ?? "")
        case "map":
            let items = value.truthy ? try iterate(value) : []
            if let attribute = kwargs.first(where: { $0.0 == "attribute" })?.1 {
                let fallback = kwargs.first { $0.0 == "default" }?.1
                return .iterator(try items.map { v throws(JinjaError) in
                    let r = try path(v, attribute)
                    return r.isUndefined ? (fallback ?? r) : r
                }, kind: "generator")
            }
            guard case let .string(filter)? = args.first else { throw .type("map needs a filter name or attribute=") }
            return .iterator(try items.map { v throws(JinjaError) in try applyFilter(filter, to: v, args: Array(args.dropFirst()), kwargs: kwargs) }, kind: "generator")
        case "select", "reject", "selectattr", "rejectattr":
            let byAttribute = name.hasSuffix("attr")
            var rest = args
            let attribute: JinjaValue? = byAttribute && !rest.isEmpty ? rest.removeFirst() : nil
            let testName = rest.isEmpty ? nil : rest.removeFirst().pythonString
            let keep = name.hasPrefix("select")
            var out: [JinjaValue] = []
            for v in value.truthy ? try iterate(value) : [] {
                let subject = try attribute.map { a throws(JinjaError) in try path(v, a) } ?? v
                let passes = try testName.map { t throws(JinjaError) in try applyTest(t, to: subject, args: rest) } ?? subject.truthy
                if passes == keep { out.append(v) }
            }
            return .iterator(out, kind: "generator")
        default:
            throw .syntax(line: 0, reason: "No filter named '\(name)'.")
        }
    }

    private static func asciiEscaped(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            if c.isASCII { out.unicodeScalars.append(c); continue }
            for unit in String(c).utf16 {
                let hex = String(unit, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            }
        }
        return out
    }

    private static func toInt(_ v: JinjaValue, default fallback: JinjaValue) -> JinjaValue {
        switch v {
        case let .int(i): return .int(i)
        case let .bool(b): return .int(b ? 1 : 0)
        case let .double(d): return d.isFinite && Swift.abs(d) < 9e18 ? .int(Int(d)) : fallback
        case let .string(s):
            let t = s.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "_", with: "")
            if let i = Int(t) { return .int(i) }
            if let d = Double(t), d.isFinite, Swift.abs(d) < 9e18 { return .int(Int(d)) }
            return fallback
        default: return fallback
        }
    }

    private static func toDouble(_ v: JinjaValue, default fallback: JinjaValue) -> JinjaValue {
        if let x = v.numericValue { return .double(x) }
        if case let .string(s) = v, let d = Double(s.trimmingCharacters(in: .whitespacesAndNewlines)) { return .double(d) }
        return fallback
    }

    /// jinja2 3.1's `indent`: lines after the first indented, blank lines left alone unless `blank`.
    private static func indent(_ text: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) -> String {
        func arg(_ k: Int, _ name: String) -> JinjaValue? { k < args.count ? args[k] : kwargs.first { $0.0 == name }?.1 }
        let width = arg(0, "width") ?? .int(4)
        let indention: String
        if case let .string(w) = width { indention = w } else { indention = String(repeating: " ", count: max(0, min(width.integerValue ?? 4, 1000))) }
        let first = arg(1, "first")?.truthy ?? false, blank = arg(2, "blank")?.truthy ?? false
        var lines = (text + "\n").split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }).map(String.init)
        lines.removeLast()
        var rv: String
        if blank {
            rv = lines.joined(separator: "\n" + indention)
        } else {
            rv = lines.isEmpty ? "" : lines.removeFirst()
            if !lines.isEmpty { rv += "\n" + lines.map { $0.isEmpty ? $0 : indention + $0 }.joined(separator: "\n") }
        }
        return first ? indention + rv : rv
    }

    func applyTest(_ name: String, to input: JinjaValue, args: [JinjaValue]) throws(JinjaError) -> Bool {
        let v = input.unmarked, other = (args.first ?? .undefined).unmarked
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": if case .none = v { return true } else { return false }
        case "boolean": if case .bool = v { return true } else { return false }
        case "true": if case .bool(true) = v { return true } else { return false }
        case "false": if case .bool(false) = v { return true } else { return false }
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "number": return v.numericValue != nil
        case "string": if case .string = v { return true } else { return false }
        case "mapping": if case .dict = v { return true } else { return false }
        case "iterable":
            switch v {
            case .undefined, .string, .list, .dict, .iterator: return true
            default: return false
            }
        case "sequence":
            switch v {
            case .undefined, .string, .list, .dict: return true
            default: return false
            }
        case "callable": if case .callable = v { return true } else { return false }
        case "sameas":
            switch (v, other) {
            case (.none, .none), (.undefined, .undefined): return true
            case let (.bool(a), .bool(b)): return a == b
            case let (.namespace(a), .namespace(b)): return a === b
            default: return false
            }
        case "escaped": if case .markup = input { return true } else { return false }
        case "in": return try JinjaOperators.contains(other, v)
        case "eq", "equalto", "==": return v.pythonEquals(other)
        case "ne", "!=": return !v.pythonEquals(other)
        case "lt", "lessthan", "<": return try v.pythonLess(other)
        case "le", "<=": return v.pythonEquals(other) ? true : try v.pythonLess(other)
        case "gt", "greaterthan", ">": return try other.pythonLess(v)
        case "ge", ">=": return v.pythonEquals(other) ? true : try other.pythonLess(v)
        case "odd", "even":
            guard let i = v.integerValue else { throw .type("\(name) needs an integer") }
            return (i % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard let i = v.integerValue, let n = other.integerValue, n != 0 else { throw .type("divisibleby needs nonzero integers") }
            return i % n == 0
        case "lower": return v.pythonString == v.pythonString.lowercased()
        case "upper": return v.pythonString == v.pythonString.uppercased()
        default: throw .syntax(line: 0, reason: "No test named '\(name)'.")
        }
    }
}
