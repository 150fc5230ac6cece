import Foundation

extension TOML {
    /// A recursive-descent reader over the document's UTF-8 bytes.
    struct Parser {
        let bytes: [UInt8]
        let path: String?
        var i = 0
        var line = 1
        /// Arrays and inline tables open around the value being read: bounded, so a hostile
        /// document cannot overflow the stack (nothing MoEKit reads nests deeper than a few).
        var depth = 0
        static let maxDepth = 64

        init(bytes: [UInt8], path: String?) { self.bytes = bytes; self.path = path }

        // MARK: Document and headers

        mutating func document() throws(MoECoreError) -> Table {
            let root = Table()
            var current = root
            while true {
                skipWhitespaceAndComments()
                guard let c = peek() else { return root }
                if c == UInt8(ascii: "[") {
                    if peek(1) == UInt8(ascii: "[") {
                        i += 2
                        let keys = try keyPath()
                        try expect("]]")
                        current = try appendArrayTable(root, keys)
                    } else {
                        i += 1
                        let keys = try keyPath()
                        try expect("]")
                        current = try defineTable(root, keys)
                    }
                } else {
                    try keyValue(into: current)
                }
                try endOfLine()
            }
        }

        /// Walks `keys` from `table`, making implicit tables; an array of tables yields its last.
        mutating func walk(_ table: Table, _ keys: ArraySlice<String>, headers: Bool) throws(MoECoreError) -> Table {
            var t = table
            for key in keys {
                switch t.values[key] {
                case nil:
                    let next = Table()
                    t.set(key, .table(next))
                    t = next
                case .table(let next)?:
                    if next.sealed { throw fail("'\(key)' is an inline table and cannot be extended") }
                    t = next
                case .array(let items)? where headers && t.arraysOfTables.contains(key):
                    guard case .table(let last)? = items.last else { throw fail("'\(key)' is not a table") }
                    t = last
                default:
                    throw fail("'\(key)' is already a value, not a table")
                }
            }
            return t
        }

        mutating func defineTable(_ root: Table, _ keys: [String]) throws(MoECoreError) -> Table {
            let parent = try walk(root, keys.dropLast(), headers: true)
            let name = keys.last!
            switch parent.values[name] {
            case nil:
                let t = Table()
                t.explicitlyDefined = true
                parent.set(name, .table(t))
                return t
            case .table(let t)? where !t.explicitlyDefined && !t.sealed:
                t.explicitlyDefined = true
                return t
            default:
                throw fail("table [\(keys.joined(separator: "."))] is defined twice")
            }
        }

        mutating func appendArrayTable(_ root: Table, _ keys: [String]) throws(MoECoreError) -> Table {
            let parent = try walk(root, keys.dropLast(), headers: true)
            let name = keys.last!
            let t = Table()
            switch parent.values[name] {
            case nil:
                parent.set(name, .array([.table(t)]))
                parent.arraysOfTables.insert(name)
            case .array(let items)? where parent.arraysOfTables.contains(name):
                parent.set(name, .array(items + [.table(t)]))
            default:
                throw fail("'\(name)' is already defined and is not an array of tables")
            }
            return t
        }

        mutating func keyValue(into table: Table) throws(MoECoreError) {
            let keys = try keyPath()
            skipSpaces()
            try expect("=")
            skipSpaces()
            let v = try value()
            let owner = try walk(table, keys.dropLast(), headers: false)
            let name = keys.last!
            if owner.values[name] != nil { throw fail("key '\(keys.joined(separator: "."))' is defined twice") }
            owner.set(name, v)
        }

        // MARK: Keys

        mutating func keyPath() throws(MoECoreError) -> [String] {
            var keys: [String] = []
            repeat {
                skipSpaces()
                keys.append(try key())
                skipSpaces()
            } while consume(".")
            return keys
        }

        mutating func key() throws(MoECoreError) -> String {
            switch peek() {
            case UInt8(ascii: "\"")?: return try basicString()
            case UInt8(ascii: "'")?: return try literalString()
            default:
                let start = i
                while let c = peek(), Self.isBare(c) { i += 1 }
                guard i > start else { throw fail("expected a key") }
                return String(decoding: bytes[start..<i], as: UTF8.self)
            }
        }

        static func isBare(_ c: UInt8) -> Bool {
            (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x5F || c == 0x2D
        }

        // MARK: Values

        mutating func value() throws(MoECoreError) -> Value {
            guard let c = peek() else { throw fail("expected a value") }
            if c == UInt8(ascii: "[") || c == UInt8(ascii: "{") {
                guard depth < Self.maxDepth else { throw fail("arrays and inline tables nest deeper than \(Self.maxDepth)") }
                depth += 1
            }
            defer { if c == UInt8(ascii: "[") || c == UInt8(ascii: "{") { depth -= 1 } }
            switch c {
            case UInt8(ascii: "\""):
                return .string(starts(with: "\"\"\"") ? try multilineBasicString() : try basicString())
            case UInt8(ascii: "'"):
                return .string(starts(with: "'''") ? try multilineLiteralString() : try literalString())
            case UInt8(ascii: "["): return try array()
            case UInt8(ascii: "{"): return try inlineTable()
            default:
                if starts(with: "true") { i += 4; return .bool(true) }
                if starts(with: "false") { i += 5; return .bool(false) }
                return try number()
            }
        }

        mutating func array() throws(MoECoreError) -> Value {
            i += 1
            var items: [Value] = []
            while true {
                skipWhitespaceAndComments()
                if consume("]") { return .array(items) }
                items.append(try value())
                skipWhitespaceAndComments()
                if consume("]") { return .array(items) }
                try expect(",")
            }
        }

        mutating func inlineTable() throws(MoECoreError) -> Value {
            i += 1
            let t = Table()
            skipSpaces()
            if consume("}") { t.sealed = true; return .table(t) }
            while true {
                try keyValue(into: t)
                skipSpaces()
                if consume("}") { break }
                try expect(",")
            }
            func seal(_ t: Table) { t.sealed = true; for case .table(let s) in t.values.values { seal(s) } }
            seal(t)
            return .table(t)
        }

        mutating func number() throws(MoECoreError) -> Value {
            let start = i
            while let c = peek(), !(c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x2C || c == 0x5D || c == 0x7D || c == 0x23) {
                i += 1
            }
            let raw = String(decoding: bytes[start..<i], as: UTF8.self)
            guard !raw.isEmpty else { throw fail("expected a value") }
            if raw.count >= 10, raw.dropFirst(4).first == "-", raw.prefix(4).allSatisfy(\.isNumber) {
                throw fail("dates and times are not config values: \(raw)")
            }
            if ["inf", "+inf", "-inf", "nan", "+nan", "-nan"].contains(raw) { throw fail("inf and nan cannot be config values") }
            if raw.hasPrefix("_") || raw.hasSuffix("_") || raw.contains("__") { throw fail("misplaced '_' in number \(raw)") }
            let text = raw.replacingOccurrences(of: "_", with: "")
            for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where text.hasPrefix(prefix) {
                guard let v = Int64(text.dropFirst(2), radix: radix) else { throw fail("bad integer \(raw)") }
                return .integer(v)
            }
            let digits = text.first == "+" || text.first == "-" ? text.dropFirst() : Substring(text)
            if digits.count > 1 && digits.first == "0" && digits.dropFirst().first?.isNumber == true {
                throw fail("leading zeros are not allowed: \(raw)")
            }
            if let v = Int64(text) { return .integer(v) }
            let isFloat = text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" })
            guard isFloat, digits.first?.isNumber == true, digits.last?.isNumber == true, let d = Double(text) else {
                throw fail("expected a value, found '\(raw)'")
            }
            return .float(d)
        }

        // MARK: Strings

        mutating func basicString() throws(MoECoreError) -> String {
            i += 1
            var out: [UInt8] = []
            while true {
                guard let c = peek(), c != 0x0A else { throw fail("unterminated string") }
                i += 1
                if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
                if c == UInt8(ascii: "\\") { try escape(into: &out) } else { out.append(c) }
            }
        }

        mutating func multilineBasicString() throws(MoECoreError) -> String {
            i += 3
            if consume("\n") { line += 1 } else if starts(with: "\r\n") { i += 2; line += 1 }
            var out: [UInt8] = []
            while true {
                guard let c = peek() else { throw fail("unterminated string") }
                if starts(with: "\"\"\"") && !starts(with: "\"\"\"\"\"\"") {
                    i += 3
                    while consume("\"") { out.append(UInt8(ascii: "\"")) }
                    return String(decoding: out, as: UTF8.self)
                }
                i += 1
                if c == 0x0A { line += 1 }
                if c == UInt8(ascii: "\\") {
                    // A backslash ending a line trims the newline and the whitespace after it.
                    var j = i
                    while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x09 { j += 1 }
                    if j < bytes.count, bytes[j] == 0x0A || bytes[j] == 0x0D {
                        i = j
                        skipWhitespaceAndComments(comments: false)
                    } else {
                        try escape(into: &out)
                    }
                } else {
                    out.append(c)
                }
            }
        }

        mutating func literalString() throws(MoECoreError) -> String {
            i += 1
            let start = i
            while let c = peek(), c != UInt8(ascii: "'") {
                if c == 0x0A { throw fail("unterminated string") }
                i += 1
            }
            guard peek() != nil else { throw fail("unterminated string") }
            defer { i += 1 }
            return String(decoding: bytes[start..<i], as: UTF8.self)
        }

        mutating func multilineLiteralString() throws(MoECoreError) -> String {
            i += 3
            if consume("\n") { line += 1 } else if starts(with: "\r\n") { i += 2; line += 1 }
            let start = i
            while !starts(with: "'''") || starts(with: "''''''") {
                guard let c = peek() else { throw fail("unterminated string") }
                if c == 0x0A { line += 1 }
                i += 1
            }
            var end = i
            i += 3
            while consume("'") { end += 1 }
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }

        mutating func escape(into out: inout [UInt8]) throws(MoECoreError) {
            guard let c = peek() else { throw fail("unterminated string") }
            i += 1
            switch c {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "u"), UInt8(ascii: "U"):
                let n = c == UInt8(ascii: "u") ? 4 : 8
                guard i + n <= bytes.count, let v = UInt32(String(decoding: bytes[i..<i + n], as: UTF8.self), radix: 16),
                      let scalar = Unicode.Scalar(v) else { throw fail("bad unicode escape") }
                i += n
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                throw fail("unknown escape '\\\(Character(Unicode.Scalar(c)))'")
            }
        }

        // MARK: Lexing helpers

        func peek(_ ahead: Int = 0) -> UInt8? { i + ahead < bytes.count ? bytes[i + ahead] : nil }

        func starts(with s: String) -> Bool {
            let u = Array(s.utf8)
            return i + u.count <= bytes.count && Array(bytes[i..<i + u.count]) == u
        }

        mutating func consume(_ s: String) -> Bool {
            guard starts(with: s) else { return false }
            i += s.utf8.count
            return true
        }

        mutating func expect(_ s: String) throws(MoECoreError) {
            guard consume(s) else { throw fail("expected '\(s)'") }
        }

        mutating func skipSpaces() { while peek() == 0x20 || peek() == 0x09 { i += 1 } }

        mutating func skipComment() { if peek() == UInt8(ascii: "#") { while let c = peek(), c != 0x0A { i += 1 } } }

        /// Spaces, newlines and (unless told not to) comments, as inside arrays.
        mutating func skipWhitespaceAndComments(comments: Bool = true) {
            while let c = peek() {
                if c == 0x0A { line += 1; i += 1 } else if c == 0x20 || c == 0x09 || c == 0x0D { i += 1 }
                else if comments && c == UInt8(ascii: "#") { skipComment() } else { return }
            }
        }

        /// After a header or key-value pair: only spaces and a comment may follow on the line.
        mutating func endOfLine() throws(MoECoreError) {
            skipSpaces()
            skipComment()
            if peek() == 0x0D { i += 1 }
            guard let c = peek() else { return }
            guard c == 0x0A else { throw fail("unexpected '\(Character(Unicode.Scalar(c)))' after the value") }
        }

        func fail(_ reason: String) -> MoECoreError { .invalidValue(path: path, field: "line \(line)", reason: reason) }
    }
}
