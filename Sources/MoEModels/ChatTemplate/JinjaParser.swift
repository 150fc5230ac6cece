/// Parses jinja2 template tokens into statements, with jinja2's operator precedence
/// (`parser.py`): conditional, or, and, not, comparison, `+ -`, `~`, `* / // %`, `**`, unary,
/// then primaries with their postfix (attribute, item, call) and filters and tests.
struct JinjaParser {
    private let tokens: [(JinjaToken, Int)]
    private var p = 0
    /// Nesting of statements and expressions, bounded so a hostile template cannot overflow the stack.
    private var depth = 0
    static let maxDepth = 200

    init(_ tokens: [(JinjaToken, Int)]) { self.tokens = tokens }

    static func parse(_ source: String) throws(JinjaError) -> [JinjaStmt] {
        var parser = JinjaParser(try JinjaLexer.tokenize(source))
        let (body, end) = try parser.parseBody(until: [])
        if let end { throw .syntax(line: parser.line, reason: "unexpected '\(end)'") }
        return body
    }

    // MARK: - Token helpers

    private var current: JinjaToken? { p < tokens.count ? tokens[p].0 : nil }
    private var line: Int { p < tokens.count ? tokens[p].1 : (tokens.last?.1 ?? 1) }

    private func peek(_ k: Int = 0) -> JinjaToken? { p + k < tokens.count ? tokens[p + k].0 : nil }

    private mutating func skip(_ token: JinjaToken) -> Bool {
        if current == token { p += 1; return true }
        return false
    }

    private mutating func skipName(_ name: String) -> Bool { skip(.name(name)) }

    private mutating func expect(_ token: JinjaToken) throws(JinjaError) {
        guard skip(token) else { throw .syntax(line: line, reason: "expected \(describe(token)), found \(describe(current))") }
    }

    private mutating func expectName() throws(JinjaError) -> String {
        guard case let .name(n) = current else { throw .syntax(line: line, reason: "expected a name, found \(describe(current))") }
        p += 1
        return n
    }

    private func describe(_ t: JinjaToken?) -> String {
        switch t {
        case nil: return "end of template"
        case let .name(n)?: return "'\(n)'"
        case let .op(o)?: return "'\(o)'"
        case .string?: return "a string"
        case .int?, .double?: return "a number"
        case .text?: return "text"
        case .variableBegin?: return "'{{'"
        case .variableEnd?: return "'}}'"
        case .blockBegin?: return "'{%'"
        case .blockEnd?: return "'%}'"
        }
    }

    private mutating func enter() throws(JinjaError) {
        depth += 1
        if depth > Self.maxDepth { throw .syntax(line: line, reason: "nested more than \(Self.maxDepth) deep") }
    }

    // MARK: - Statements

    /// Parses statements until a block tag named in `until`; returns them and that tag's name,
    /// with the token after the name current.
    private mutating func parseBody(until: Set<String>) throws(JinjaError) -> ([JinjaStmt], String?) {
        try enter()
        defer { depth -= 1 }
        var body: [JinjaStmt] = []
        while let t = current {
            switch t {
            case let .text(s):
                body.append(.text(s))
                p += 1
            case .variableBegin:
                p += 1
                let e = try parseTuple()
                try expect(.variableEnd)
                body.append(.output(e))
            case .blockBegin:
                p += 1
                let name = try expectName()
                if until.contains(name) { return (body, name) }
                if let s = try parseStatement(name) { body.append(contentsOf: s) }
            default:
                throw .syntax(line: line, reason: "unexpected \(describe(t))")
            }
        }
        if !until.isEmpty {
            throw .syntax(line: line, reason: "missing end tag: expected one of \(until.sorted().joined(separator: ", "))")
        }
        return (body, nil)
    }

    private mutating func parseStatement(_ name: String) throws(JinjaError) -> [JinjaStmt]? {
        switch name {
        case "if": return [try parseIf()]
        case "for": return [try parseFor()]
        case "set": return [try parseSet()]
        case "macro": return [try parseMacro()]
        case "call": return [try parseCallBlock()]
        case "filter":
            let filters = try parseFilterChain()
            try expect(.blockEnd)
            let (body, _) = try parseBody(until: ["endfilter"])
            try expect(.blockEnd)
            return [.filterBlock(filters, body: body)]
        case "break", "continue":
            try expect(.blockEnd)
            return [name == "break" ? .breakLoop : .continueLoop]
        case "generation":
            // transformers' AssistantTracker: renders its body unchanged.
            try expect(.blockEnd)
            let (body, _) = try parseBody(until: ["endgeneration"])
            try expect(.blockEnd)
            return body
        default:
            throw .syntax(line: line, reason: "unknown tag '\(name)'")
        }
    }

    private mutating func parseIf() throws(JinjaError) -> JinjaStmt {
        var branches: [(JinjaExpr, [JinjaStmt])] = []
        var condition = try parseTuple(withCondition: false)
        while true {
            try expect(.blockEnd)
            let (body, end) = try parseBody(until: ["elif", "else", "endif"])
            branches.append((condition, body))
            switch end {
            case "elif":
                condition = try parseTuple(withCondition: false)
            case "else":
                try expect(.blockEnd)
                let (otherwise, _) = try parseBody(until: ["endif"])
                try expect(.blockEnd)
                return .branch(branches, otherwise: otherwise)
            default:
                try expect(.blockEnd)
                return .branch(branches, otherwise: [])
            }
        }
    }

    private mutating func parseFor() throws(JinjaError) -> JinjaStmt {
        var targets = [try expectName()]
        while skip(.op(",")) { targets.append(try expectName()) }
        guard skipName("in") else { throw .syntax(line: line, reason: "expected 'in' in for loop") }
        let iterable = try parseTuple(withCondition: false)
        var filter: JinjaExpr? = nil
        if skipName("if") { filter = try parseExpression() }
        if skipName("recursive") { throw .syntax(line: line, reason: "recursive loops are not supported") }
        try expect(.blockEnd)
        let (body, end) = try parseBody(until: ["else", "endfor"])
        var otherwise: [JinjaStmt] = []
        if end == "else" {
            try expect(.blockEnd)
            (otherwise, _) = try parseBody(until: ["endfor"])
        }
        try expect(.blockEnd)
        return .loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise)
    }

    private mutating func parseSet() throws(JinjaError) -> JinjaStmt {
        let first = try expectName()
        if skip(.op(".")) {
            let attr = try expectName()
            try expect(.op("="))
            let value = try parseTuple()
            try expect(.blockEnd)
            return .assign(targets: [first], attribute: attr, value)
        }
        var targets = [first]
        while skip(.op(",")) { targets.append(try expectName()) }
        if skip(.op("=")) {
            let value = try parseTuple()
            try expect(.blockEnd)
            return .assign(targets: targets, attribute: nil, value)
        }
        guard targets.count == 1 else { throw .syntax(line: line, reason: "expected '=' after set targets") }
        var filters: [(String, [JinjaExpr], [(String, JinjaExpr)])] = []
        if current == .op("|") { filters = try parseFilterChain() }
        try expect(.blockEnd)
        let (body, _) = try parseBody(until: ["endset"])
        try expect(.blockEnd)
        return .assignBlock(first, filters: filters, body: body)
    }

    private mutating func parseMacro() throws(JinjaError) -> JinjaStmt {
        let name = try expectName()
        try expect(.op("("))
        var parameters: [(String, JinjaExpr?)] = []
        while !skip(.op(")")) {
            if !parameters.isEmpty { try expect(.op(",")) }
            if skip(.op(")")) { break }
            let param = try expectName()
            parameters.append((param, skip(.op("=")) ? try parseExpression() : nil))
        }
        try expect(.blockEnd)
        let (body, _) = try parseBody(until: ["endmacro"])
        if case .name = current { p += 1 }  // `{% endmacro name %}`
        try expect(.blockEnd)
        return .macro(name: name, parameters: parameters, body: body)
    }

    private mutating func parseCallBlock() throws(JinjaError) -> JinjaStmt {
        let call = try parseExpression()
        guard case .call = call else { throw .syntax(line: line, reason: "expected a call in call block") }
        try expect(.blockEnd)
        let (body, _) = try parseBody(until: ["endcall"])
        try expect(.blockEnd)
        return .callBlock(call, body: body)
    }

    /// `| name(args) | name ...` (the first `|` optional, as after `filter`).
    private mutating func parseFilterChain() throws(JinjaError) -> [(String, [JinjaExpr], [(String, JinjaExpr)])] {
        var chain: [(String, [JinjaExpr], [(String, JinjaExpr)])] = []
        _ = skip(.op("|"))
        repeat {
            let name = try expectName()
            var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
            if current == .op("(") { (args, kwargs) = try parseCallArguments() }
            chain.append((name, args, kwargs))
        } while skip(.op("|"))
        return chain
    }
}

// MARK: - Expressions

extension JinjaParser {
    /// A comma-separated list makes a tuple; a single expression stays itself.
    fileprivate mutating func parseTuple(withCondition: Bool = true) throws(JinjaError) -> JinjaExpr {
        var items: [JinjaExpr] = []
        var sawComma = false
        while true {
            if !items.isEmpty {
                guard skip(.op(",")) else { break }
                sawComma = true
                if isTupleEnd { break }
            }
            items.append(withCondition ? try parseExpression() : try parseOr())
        }
        return items.count == 1 && !sawComma ? items[0] : .tuple(items)
    }

    private var isTupleEnd: Bool {
        switch current {
        case .variableEnd?, .blockEnd?, .op(")")?, nil: return true
        case .op("=")?: return true
        default: return false
        }
    }

    fileprivate mutating func parseExpression() throws(JinjaError) -> JinjaExpr {
        try enter()
        defer { depth -= 1 }
        var expr = try parseOr()
        while skipName("if") {
            let condition = try parseOr()
            let otherwise: JinjaExpr? = skipName("else") ? try parseExpression() : nil
            expr = .conditional(then: expr, condition: condition, otherwise: otherwise)
        }
        return expr
    }

    private mutating func parseOr() throws(JinjaError) -> JinjaExpr {
        var left = try parseAnd()
        while skipName("or") { left = .binary("or", left, try parseAnd()) }
        return left
    }

    private mutating func parseAnd() throws(JinjaError) -> JinjaExpr {
        var left = try parseNot()
        while skipName("and") { left = .binary("and", left, try parseNot()) }
        return left
    }

    private mutating func parseNot() throws(JinjaError) -> JinjaExpr {
        if skipName("not") {
            try enter()
            defer { depth -= 1 }
            return .unary("not", try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws(JinjaError) -> JinjaExpr {
        let left = try parseMath1()
        var ops: [(String, JinjaExpr)] = []
        while true {
            if case let .op(o)? = current, ["==", "!=", "<", "<=", ">", ">="].contains(o) {
                p += 1
                ops.append((o, try parseMath1()))
            } else if skipName("in") {
                ops.append(("in", try parseMath1()))
            } else if current == .name("not"), peek(1) == .name("in") {
                p += 2
                ops.append(("notin", try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? left : .compare(left, ops)
    }

    private mutating func parseMath1() throws(JinjaError) -> JinjaExpr {
        var left = try parseConcat()
        while case let .op(o)? = current, o == "+" || o == "-" {
            p += 1
            left = .binary(o, left, try parseConcat())
        }
        return left
    }

    private mutating func parseConcat() throws(JinjaError) -> JinjaExpr {
        var left = try parseMath2()
        while skip(.op("~")) { left = .binary("~", left, try parseMath2()) }
        return left
    }

    private mutating func parseMath2() throws(JinjaError) -> JinjaExpr {
        var left = try parsePow()
        while case let .op(o)? = current, ["*", "/", "//", "%"].contains(o) {
            p += 1
            left = .binary(o, left, try parsePow())
        }
        return left
    }

    private mutating func parsePow() throws(JinjaError) -> JinjaExpr {
        var left = try parseUnary()
        while skip(.op("**")) { left = .binary("**", left, try parseUnary()) }
        return left
    }

    private mutating func parseUnary(withFilter: Bool = true) throws(JinjaError) -> JinjaExpr {
        try enter()
        defer { depth -= 1 }
        var node: JinjaExpr
        if skip(.op("-")) {
            node = .unary("-", try parseUnary(withFilter: false))
        } else if skip(.op("+")) {
            node = .unary("+", try parseUnary(withFilter: false))
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        if withFilter { node = try parseFilterExpr(node) }
        return node
    }

    private mutating func parsePrimary() throws(JinjaError) -> JinjaExpr {
        guard let t = current else { throw .syntax(line: line, reason: "unexpected end of template") }
        p += 1
        switch t {
        case let .name(n):
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case var .string(s):
            while case let .string(more)? = current { s += more; p += 1 }
            return .literal(.string(s))
        case let .int(i): return .literal(.int(i))
        case let .double(d): return .literal(.double(d))
        case .op("("):
            if skip(.op(")")) { return .tuple([]) }
            let e = try parseTuple()
            try expect(.op(")"))
            return e
        case .op("["):
            var items: [JinjaExpr] = []
            while !skip(.op("]")) {
                if !items.isEmpty { try expect(.op(",")) }
                if skip(.op("]")) { break }
                items.append(try parseExpression())
            }
            return .list(items)
        case .op("{"):
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !skip(.op("}")) {
                if !pairs.isEmpty { try expect(.op(",")) }
                if skip(.op("}")) { break }
                let key = try parseExpression()
                try expect(.op(":"))
                pairs.append((key, try parseExpression()))
            }
            return .dict(pairs)
        default:
            p -= 1
            throw .syntax(line: line, reason: "unexpected \(describe(t))")
        }
    }

    private mutating func parsePostfix(_ start: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var node = start
        while true {
            if skip(.op(".")) {
                switch current {
                case let .name(n)?: p += 1; node = .attribute(node, n)
                case let .int(i)?: p += 1; node = .item(node, .literal(.int(i)))
                default: throw .syntax(line: line, reason: "expected an attribute name after '.'")
                }
            } else if skip(.op("[")) {
                node = try parseSubscript(node)
            } else if current == .op("(") {
                let (args, kwargs) = try parseCallArguments()
                node = .call(node, args, kwargs)
            } else {
                return node
            }
        }
    }

    private mutating func parseSubscript(_ node: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var parts: [JinjaExpr?] = [nil]
        var colons = 0
        while !skip(.op("]")) {
            if skip(.op(":")) {
                colons += 1
                guard colons <= 2 else { throw .syntax(line: line, reason: "too many ':' in subscript") }
                parts.append(nil)
            } else {
                guard parts[parts.count - 1] == nil else { throw .syntax(line: line, reason: "expected ']'") }
                parts[parts.count - 1] = try parseExpression()
            }
        }
        if colons == 0 {
            guard let index = parts[0] else { throw .syntax(line: line, reason: "empty subscript") }
            return .item(node, index)
        }
        while parts.count < 3 { parts.append(nil) }
        return .slice(node, parts[0], parts[1], parts[2])
    }

    private mutating func parseFilterExpr(_ start: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var node = start
        while true {
            if skip(.op("|")) {
                var name = try expectName()
                while current == .op("."), case let .name(more)? = peek(1) { p += 2; name += "." + more }
                var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
                if current == .op("(") { (args, kwargs) = try parseCallArguments() }
                node = .filter(node, name, args, kwargs)
            } else if skipName("is") {
                let negated = skipName("not")
                let name = try expectName()
                var args: [JinjaExpr] = []
                if current == .op("(") {
                    (args, _) = try parseCallArguments()
                } else if let t = current, startsPrimary(t) {
                    args = [try parsePostfix(try parsePrimary())]
                }
                node = .test(node, name, args, negated: negated)
            } else if current == .op("(") {
                let (args, kwargs) = try parseCallArguments()
                node = .call(node, args, kwargs)
            } else {
                return node
            }
        }
    }

    private func startsPrimary(_ t: JinjaToken) -> Bool {
        switch t {
        case let .name(n): return !["else", "or", "and", "if", "is", "not", "in"].contains(n)
        case .string, .int, .double, .op("["), .op("{"): return true
        default: return false
        }
    }

    private mutating func parseCallArguments() throws(JinjaError) -> ([JinjaExpr], [(String, JinjaExpr)]) {
        try expect(.op("("))
        var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
        while !skip(.op(")")) {
            if !args.isEmpty || !kwargs.isEmpty { try expect(.op(",")) }
            if skip(.op(")")) { break }
            if case let .name(n)? = current, peek(1) == .op("=") {
                p += 2
                kwargs.append((n, try parseExpression()))
            } else {
                guard kwargs.isEmpty else { throw .syntax(line: line, reason: "positional argument after keyword argument") }
                args.append(try parseExpression())
            }
        }
        return (args, kwargs)
    }
}
