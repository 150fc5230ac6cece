import Foundation

/// A value in a chat template: the Python objects jinja2 sees when transformers renders a
/// `chat_template` (JSON data, plus undefined, namespaces and callables).
///
/// Dictionaries keep their insertion order, as Python's do, so `tojson` and `items()` print
/// keys in the order the messages gave them.
public indirect enum JinjaValue: Sendable {
    /// A name or key that does not exist (jinja2's `Undefined`): prints as nothing, is false.
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    /// A tuple (`(1, 2)`, `dict.items()` pairs): a list that prints with parentheses.
    case tuple([JinjaValue])
    case dict(JinjaDict)
    /// A mutable attribute bag made by `namespace(...)`, shared by reference as in Python.
    case namespace(JinjaNamespace)
    /// A macro, a global function or a bound method.
    case callable(JinjaCallable)
    /// A string marked safe (`|safe`, jinja2's `Markup`): adding a plain string to it
    /// HTML-escapes that string.
    case markup(String)
    /// A one-pass iterator (what `map`, `select`, `selectattr`, `items` and `reverse` return in
    /// jinja2): it can be looped over, but has no length, no index and no JSON form.
    case iterator([JinjaValue], kind: String)

    /// Python truthiness.
    public var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .list(l), let .tuple(l): return !l.isEmpty
        case let .dict(d): return !d.keys.isEmpty
        case .namespace, .callable, .iterator: return true
        case let .markup(m): return !m.isEmpty
        }
    }

    /// The value as the operations see it: a marked-safe string as a plain one, a tuple as a
    /// list; other values unchanged.
    var unmarked: JinjaValue {
        switch self {
        case let .markup(m): return .string(m)
        case let .tuple(l): return .list(l)
        default: return self
        }
    }

    var isUndefined: Bool { if case .undefined = self { return true } else { return false } }

    /// Python's type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .callable: return "function"
        case .markup: return "Markup"
        case let .iterator(_, kind): return kind
        }
    }
}

/// An insertion-ordered string-keyed dictionary (Python's `dict` for JSON objects).
public struct JinjaDict: Sendable {
    public private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    public init() {}

    /// Makes a dictionary from pairs in order; a repeated key keeps its first position.
    public init(_ pairs: [(String, JinjaValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    public subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    /// The pairs in insertion order.
    public var items: [(String, JinjaValue)] { keys.map { ($0, storage[$0]!) } }

    // Python dicts may have int, float, bool or None keys (`{512: 128}` in a template): such a
    // key is stored under a spelling no JSON string starts with, and decoded where keys show.
    private static let tag = "\u{1}"

    /// The storage key for a template value, nil for an unhashable one (list, dict).
    static func key(for v: JinjaValue) -> String? {
        switch v {
        case let .string(s): return s
        case let .int(i): return tag + String(i)
        case let .bool(b): return tag + (b ? "1" : "0")
        case let .double(d): return d == d.rounded() && abs(d) < 9e18 ? tag + String(Int(d)) : tag + "f" + String(d)
        case .none: return tag + "None"
        default: return nil
        }
    }

    /// The template value of a storage key.
    static func value(ofKey k: String) -> JinjaValue {
        guard k.hasPrefix(tag) else { return .string(k) }
        let body = k.dropFirst()
        if body == "None" { return .none }
        if let i = Int(body) { return .int(i) }
        return .double(Double(body.dropFirst()) ?? 0)
    }

    /// The keys as template values.
    var keyValues: [JinjaValue] { keys.map(Self.value(ofKey:)) }

    /// The pairs with keys as template values.
    var valueItems: [(JinjaValue, JinjaValue)] { keys.map { (Self.value(ofKey: $0), storage[$0]!) } }
}

/// `namespace(...)`: the one mutable object a template can make (`{% set ns.x = ... %}`).
public final class JinjaNamespace: @unchecked Sendable {
    var attributes: JinjaDict
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}

/// A function a template can call: arguments in order, then keyword arguments.
public struct JinjaCallable: Sendable {
    let name: String
    let call: @Sendable (_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue
}

// MARK: - Python str() and repr()

extension JinjaValue {
    /// What `{{ value }}` prints: Python's `str()`.
    var pythonString: String {
        switch self {
        case .undefined: return ""
        case let .string(s), let .markup(s): return s
        default: return pythonRepr
        }
    }

    /// Python's `repr()`, used for values inside printed lists and dicts.
    var pythonRepr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return JinjaValue.pythonFloat(d)
        case let .string(s): return JinjaValue.pythonQuoted(s)
        case let .list(l): return "[" + l.map(\.pythonRepr).joined(separator: ", ") + "]"
        case let .tuple(l): return "(" + l.map(\.pythonRepr).joined(separator: ", ") + (l.count == 1 ? ",)" : ")")
        case let .dict(d):
            return "{" + d.valueItems.map { "\($0.0.pythonRepr): \($0.1.pythonRepr)" }.joined(separator: ", ") + "}"
        case let .namespace(ns):
            return "<Namespace " + ns.attributes.items.map { "\($0.0)=\($0.1.pythonRepr)" }.joined(separator: ", ") + ">"
        case let .callable(c): return "<function \(c.name)>"
        case let .markup(m): return "Markup(\(JinjaValue.pythonQuoted(m)))"
        case let .iterator(_, kind): return "<\(kind) object>"
        }
    }

    /// Python's float repr: the shortest round-trip digits, fixed between 1e-4 and 1e16.
    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        let magnitude = abs(d)
        if magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16) {
            var s = "\(d)"
            if s.contains("e") { s = expandExponent(s) }
            return s.contains(".") ? s : s + ".0"
        }
        // Swift prints "1e-05" and "1e+16" as Python does, but "1.5e-05" too: keep it.
        let s = "\(d)"
        return s.contains("e") ? s : s
    }

    /// Turns Swift's exponent spelling of a number in Python's fixed range into digits.
    private static func expandExponent(_ s: String) -> String {
        guard let value = Decimal(string: s) else { return s }
        var text = "\(value)"
        if !text.contains(".") { text += ".0" }
        return text
    }

    /// A Python string literal: single quotes unless the text holds one and no double quote.
    static func pythonQuoted(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(scalar) == quote {
                    out += "\\" + String(quote)
                } else if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += String(format: "\\x%02x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out.append(quote)
        return out
    }
}

// MARK: - Equality and order (Python semantics)

extension JinjaValue {
    /// Python `==`: numbers compare across int, float and bool; containers element-wise.
    func pythonEquals(_ other: JinjaValue) -> Bool {
        switch (self.unmarked, other.unmarked) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(a), .string(b)): return a == b
        case let (.list(a), .list(b)): return a.count == b.count && zip(a, b).allSatisfy { $0.pythonEquals($1) }
        case let (.dict(a), .dict(b)):
            return a.keys.count == b.keys.count && a.items.allSatisfy { k, v in b[k].map { v.pythonEquals($0) } ?? false }
        case let (.namespace(a), .namespace(b)): return a === b
        default:
            if let x = numericValue, let y = other.numericValue { return x == y }
            return false
        }
    }

    /// The number a bool, int or float stands for in arithmetic and comparison.
    var numericValue: Double? {
        switch self {
        case let .bool(b): return b ? 1 : 0
        case let .int(i): return Double(i)
        case let .double(d): return d
        default: return nil
        }
    }

    /// Python `<`: numbers, strings and lists (lexicographically); other pairs are a TypeError.
    func pythonLess(_ other: JinjaValue) throws(JinjaError) -> Bool {
        switch (self.unmarked, other.unmarked) {
        case let (.string(a), .string(b)): return a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars)
        case let (.list(a), .list(b)):
            for (x, y) in zip(a, b) where !x.pythonEquals(y) { return try x.pythonLess(y) }
            return a.count < b.count
        default:
            if case let .int(x) = self, case let .int(y) = other { return x < y }
            if let x = numericValue, let y = other.numericValue { return x < y }
            throw JinjaError.type("'<' not supported between instances of '\(typeName)' and '\(other.typeName)'")
        }
    }
}
