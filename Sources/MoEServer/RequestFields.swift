import MoEModels

/// Typed reads of a JSON request object, each failure a 400 naming the field as OpenAI does.
struct RequestFields {
    let object: JinjaDict
    /// The path of this object in the request ("" for the body, "moe." for the extension).
    let prefix: String

    init(_ object: JinjaDict, prefix: String = "") {
        self.object = object
        self.prefix = prefix
    }

    private func present(_ key: String) -> JinjaValue? {
        guard let v = object[key] else { return nil }
        if case .none = v { return nil }
        return v
    }

    private func wrongType(_ key: String, _ expected: String, _ v: JinjaValue) -> APIError {
        .invalid("Invalid type for '\(prefix)\(key)': expected \(expected), but got \(JSONTypeName(v)).", param: prefix + key,
                 code: "invalid_type")
    }

    func string(_ key: String) throws(APIError) -> String? {
        guard let v = present(key) else { return nil }
        guard case let .string(s) = v else { throw wrongType(key, "a string", v) }
        return s
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        guard let v = present(key) else { return nil }
        guard case let .bool(b) = v else { throw wrongType(key, "a boolean", v) }
        return b
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let v = present(key) else { return nil }
        let i: Int
        switch v {
        case let .int(x): i = x
        case let .double(d) where d == d.rounded() && abs(d) < 1e15: i = Int(d)
        default: throw wrongType(key, "an integer", v)
        }
        guard range.contains(i) else {
            throw .invalid("\(i) is outside [\(range.lowerBound), \(range.upperBound)] - '\(prefix)\(key)'", param: prefix + key,
                           code: "invalid_value")
        }
        return i
    }

    func number(_ key: String, in range: ClosedRange<Double>, openBelow: Bool = false) throws(APIError) -> Double? {
        guard let v = present(key) else { return nil }
        let x: Double
        switch v {
        case let .int(i): x = Double(i)
        case let .double(d): x = d
        default: throw wrongType(key, "a number", v)
        }
        guard x.isFinite, range.contains(x), !(openBelow && x == range.lowerBound) else {
            let low = openBelow ? "(\(range.lowerBound)" : "[\(range.lowerBound)"
            throw .invalid("\(x) is outside \(low), \(range.upperBound)] - '\(prefix)\(key)'", param: prefix + key, code: "invalid_value")
        }
        return x
    }

    func list(_ key: String) throws(APIError) -> [JinjaValue]? {
        guard let v = present(key) else { return nil }
        guard case let .list(l) = v else { throw wrongType(key, "an array", v) }
        return l
    }

    func dict(_ key: String) throws(APIError) -> JinjaDict? {
        guard let v = present(key) else { return nil }
        guard case let .dict(d) = v else { throw wrongType(key, "an object", v) }
        return d
    }

    /// `stop`: a string or up to `most` strings.
    func stops(_ key: String, most: Int) throws(APIError) -> [String] {
        guard let v = present(key) else { return [] }
        switch v {
        case let .string(s): return [s]
        case let .list(items):
            guard items.count <= most else {
                throw .invalid("'\(prefix)\(key)' holds \(items.count) sequences; at most \(most) are allowed", param: prefix + key)
            }
            var out: [String] = []
            for item in items {
                guard case let .string(s) = item else { throw wrongType(key, "a string or an array of strings", v) }
                out.append(s)
            }
            return out
        default: throw wrongType(key, "a string or an array of strings", v)
        }
    }
}

/// The JSON type of a value, for error messages.
func JSONTypeName(_ v: JinjaValue) -> String {
    switch v {
    case .string, .markup: return "a string"
    case .int, .double: return "a number"
    case .bool: return "a boolean"
    case .list, .tuple, .iterator: return "an array"
    case .dict, .namespace: return "an object"
    case .none, .undefined: return "null"
    case .callable: return "a function"
    }
}
