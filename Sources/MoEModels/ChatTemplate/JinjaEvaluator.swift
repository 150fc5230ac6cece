/// Renders parsed template statements with jinja2's semantics under transformers' sandbox
/// (`ImmutableSandboxedEnvironment`: no mutation of lists or dicts, `namespace` for state
/// that outlives a loop iteration). Work is bounded: output size, loop steps and call depth.
final class JinjaEvaluator: @unchecked Sendable {
    /// Variable scopes, innermost last: the template's top level, then loop iterations and
    /// macro calls.
    private var frames: [[String: JinjaValue]]
    private var output = ""
    private var steps = 0
    private var callDepth = 0

    static let maxOutputBytes = 16 << 20
    static let maxSteps = 1_000_000
    static let maxCallDepth = 100

    init(globals: [String: JinjaValue]) { frames = [globals] }

    func render(_ body: [JinjaStmt]) throws(JinjaError) -> String {
        _ = try execute(body)
        return output
    }

    /// How a statement list ended: normally, or by `{% break %}` / `{% continue %}`.
    enum Flow { case normal, breakLoop, continueLoop }

    // MARK: - Statements

    private func execute(_ body: [JinjaStmt]) throws(JinjaError) -> Flow {
        for stmt in body {
            let flow = try execute(stmt)
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func emit(_ s: String) throws(JinjaError) {
        output += s
        if output.utf8.count > Self.maxOutputBytes {
            throw .limit("output is longer than \(Self.maxOutputBytes) bytes")
        }
    }

    private func step() throws(JinjaError) {
        steps += 1
        if steps > Self.maxSteps { throw .limit("more than \(Self.maxSteps) loop steps") }
    }

    private func execute(_ stmt: JinjaStmt) throws(JinjaError) -> Flow {
        switch stmt {
        case let .text(s):
            try emit(s)
        case let .output(e):
            try emit(try evaluate(e).pythonString)
        case let .branch(branches, otherwise):
            for (condition, body) in branches where try evaluate(condition).truthy {
                return try execute(body)
            }
            return try execute(otherwise)
        case let .loop(targets, iterable, filter, body, otherwise):
            return try runLoop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise)
        case let .assign(targets, attribute, e):
            let value = try evaluate(e)
            if let attribute {
                guard case let .namespace(ns) = lookup(targets[0]) else {
                    throw .type("cannot assign attribute on non-namespace object")
                }
                ns.attributes[attribute] = value
            } else {
                try bind(targets, to: value)
            }
        case let .assignBlock(name, filters, body):
            var value = JinjaValue.string(try capture(body))
            for (filterName, args, kwargs) in filters {
                value = try applyFilter(filterName, to: value, args: try args.map(evaluate), kwargs: try evaluateKeywords(kwargs))
            }
            frames[frames.count - 1][name] = value
        case let .macro(name, parameters, body):
            frames[frames.count - 1][name] = .callable(makeMacro(name: name, parameters: parameters, body: body, caller: nil))
        case let .callBlock(call, body):
            guard case let .call(callee, args, kwargs) = call else { return .normal }
            let caller = makeMacro(name: "caller", parameters: [], body: body, caller: nil)
            var keywords = try evaluateKeywords(kwargs)
            keywords.append(("caller", .callable(caller)))
            try emit(try invoke(try evaluate(callee), args: try args.map(evaluate), kwargs: keywords).pythonString)
        case let .filterBlock(filters, body):
            var value = JinjaValue.string(try capture(body))
            for (filterName, args, kwargs) in filters {
                value = try applyFilter(filterName, to: value, args: try args.map(evaluate), kwargs: try evaluateKeywords(kwargs))
            }
            try emit(value.pythonString)
        case .breakLoop: return .breakLoop
        case .continueLoop: return .continueLoop
        }
        return .normal
    }

    /// Renders `body` into a string instead of the output.
    private func capture(_ body: [JinjaStmt]) throws(JinjaError) -> String {
        let saved = output
        output = ""
        defer { output = saved }
        _ = try execute(body)
        return output
    }

    private func bind(_ targets: [String], to value: JinjaValue) throws(JinjaError) {
        if targets.count == 1 {
            frames[frames.count - 1][targets[0]] = value
            return
        }
        let items = try iterate(value)
        guard items.count == targets.count else {
            throw .type("cannot unpack \(items.count) values into \(targets.count) names")
        }
        for (t, v) in zip(targets, items) { frames[frames.count - 1][t] = v }
    }

    private func runLoop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaStmt],
                         otherwise: [JinjaStmt]) throws(JinjaError) -> Flow {
        var items = try iterate(try evaluate(iterable))
        if let filter {
            var kept: [JinjaValue] = []
            for item in items {
                try step()
                frames.append([:])
                defer { frames.removeLast() }
                try bind(targets, to: item)
                if try evaluate(filter).truthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty { return try execute(otherwise) }
        let n = items.count
        var loop = JinjaDict([("length", .int(n)), ("depth", .int(1)), ("depth0", .int(0))])
        for (k, item) in items.enumerated() {
            try step()
            loop["index"] = .int(k + 1)
            loop["index0"] = .int(k)
            loop["revindex"] = .int(n - k)
            loop["revindex0"] = .int(n - k - 1)
            loop["first"] = .bool(k == 0)
            loop["last"] = .bool(k == n - 1)
            loop["previtem"] = k > 0 ? items[k - 1] : .undefined
            loop["nextitem"] = k + 1 < n ? items[k + 1] : .undefined
            loop["cycle"] = .callable(JinjaCallable(name: "cycle") { args, _ in
                guard !args.isEmpty else { throw JinjaError.type("no items for cycling given") }
                return args[k % args.count]
            })
            frames.append(["loop": .dict(loop)])
            defer { frames.removeLast() }
            try bind(targets, to: item)
            if try execute(body) == .breakLoop { break }
        }
        return .normal
    }

    private func makeMacro(name: String, parameters: [(String, JinjaExpr?)], body: [JinjaStmt],
                           caller: JinjaCallable?) -> JinjaCallable {
        JinjaCallable(name: name) { [unowned self] args, kwargs in
            guard args.count <= parameters.count else {
                throw JinjaError.type("macro '\(name)' takes not more than \(parameters.count) argument(s)")
            }
            self.callDepth += 1
            defer { self.callDepth -= 1 }
            guard self.callDepth <= Self.maxCallDepth else { throw JinjaError.limit("macro calls nested more than \(Self.maxCallDepth) deep") }
            var locals: [String: JinjaValue] = [:]
            let saved = self.frames
            self.frames = [self.frames[0], [:]]
            defer { self.frames = saved }
            for (k, (param, defaultValue)) in parameters.enumerated() {
                if k < args.count {
                    locals[param] = args[k]
                } else if let given = kwargs.first(where: { $0.0 == param }) {
                    locals[param] = given.1
                } else if let defaultValue {
                    self.frames[1] = locals
                    locals[param] = try self.evaluate(defaultValue)
                } else {
                    locals[param] = .undefined
                }
            }
            for (key, value) in kwargs where !parameters.contains(where: { $0.0 == key }) {
                guard key == "caller" else { throw JinjaError.type("macro '\(name)' takes no keyword argument '\(key)'") }
                locals["caller"] = value
            }
            self.frames[1] = locals
            return .string(try self.capture(body))
        }
    }

    // MARK: - Names and expressions

    func lookup(_ name: String) -> JinjaValue {
        for frame in frames.reversed() {
            if let v = frame[name] { return v }
        }
        return .undefined
    }

    private func evaluateKeywords(_ kwargs: [(String, JinjaExpr)]) throws(JinjaError) -> [(String, JinjaValue)] {
        var out: [(String, JinjaValue)] = []
        for (k, e) in kwargs { out.append((k, try evaluate(e))) }
        return out
    }

    func evaluate(_ expr: JinjaExpr) throws(JinjaError) -> JinjaValue {
        switch expr {
        case let .literal(v): return v
        case let .name(n): return lookup(n)
        case let .list(items): return .list(try items.map(evaluate))
        case let .tuple(items): return .tuple(try items.map(evaluate))
        case let .dict(pairs):
            var d = JinjaDict()
            for (k, v) in pairs {
                let key = try evaluate(k)
                guard let s = JinjaDict.key(for: key) else { throw .type("unhashable type: '\(key.typeName)'") }
                d[s] = try evaluate(v)
            }
            return .dict(d)
        case let .attribute(e, name):
            let base = try evaluate(e)
            if case .undefined = base { throw .undefined(undefinedMessage(e)) }
            return attribute(of: base, name)
        case let .item(e, index):
            let base = try evaluate(e)
            if case .undefined = base { throw .undefined(undefinedMessage(e)) }
            return try item(of: base, try evaluate(index))
        case let .slice(e, lo, hi, stride):
            let base = try evaluate(e)
            if case .undefined = base { throw .undefined(undefinedMessage(e)) }
            return try slice(base, lo.map(evaluate), hi.map(evaluate), stride.map(evaluate))
        case let .call(callee, args, kwargs):
            let f = try evaluate(callee)
            if case .undefined = f { throw .undefined(undefinedMessage(callee)) }
            return try invoke(f, args: try args.map(evaluate), kwargs: try evaluateKeywords(kwargs))
        case let .filter(e, name, args, kwargs):
            return try applyFilter(name, to: try evaluate(e), args: try args.map(evaluate), kwargs: try evaluateKeywords(kwargs))
        case let .test(e, name, args, negated):
            let result = try applyTest(name, to: try evaluate(e), args: try args.map(evaluate))
            return .bool(result != negated)
        case let .unary(op, e):
            let v = try evaluate(e)
            switch op {
            case "not": return .bool(!v.truthy)
            case "-":
                switch v {
                case let .int(i): return .int(0 &- i)
                case let .double(d): return .double(-d)
                case let .bool(b): return .int(b ? -1 : 0)
                default: throw .type("bad operand type for unary -: '\(v.typeName)'")
                }
            default:
                guard v.numericValue != nil else { throw .type("bad operand type for unary +: '\(v.typeName)'") }
                return v
            }
        case let .binary(op, l, r):
            if op == "and" {
                let left = try evaluate(l)
                return left.truthy ? try evaluate(r) : left
            }
            if op == "or" {
                let left = try evaluate(l)
                return left.truthy ? left : try evaluate(r)
            }
            return try JinjaOperators.binary(op, try evaluate(l), try evaluate(r))
        case let .compare(first, rest):
            var left = try evaluate(first)
            for (op, e) in rest {
                let right = try evaluate(e)
                if !(try JinjaOperators.compare(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case let .conditional(then, condition, otherwise):
            if try evaluate(condition).truthy { return try evaluate(then) }
            return try otherwise.map(evaluate) ?? .undefined
        }
    }

    private func undefinedMessage(_ e: JinjaExpr) -> String {
        switch e {
        case let .name(n): return "'\(n)' is undefined"
        case let .attribute(_, a): return "has no attribute '\(a)'"
        default: return "value is undefined"
        }
    }

    func invoke(_ f: JinjaValue, args: [JinjaValue], kwargs: [(String, JinjaValue)]) throws(JinjaError) -> JinjaValue {
        guard case let .callable(c) = f else { throw .type("'\(f.typeName)' object is not callable") }
        do {
            return try c.call(args, kwargs)
        } catch let e as JinjaError {
            throw e
        } catch {
            throw .type("\(error)")
        }
    }

    /// `value.name`: a method of a string or dict, a dict's key, a namespace's attribute.
    func attribute(of value: JinjaValue, _ name: String) -> JinjaValue {
        let base = value.unmarked
        if let method = JinjaMethods.method(of: base, name) { return method }
        switch base {
        case let .dict(d): return d[name] ?? .undefined
        case let .namespace(ns): return ns.attributes[name] ?? .undefined
        default: return .undefined
        }
    }

    /// `value[index]`: a dict's key, a list's or string's element (negative from the end).
    func item(of value: JinjaValue, _ key: JinjaValue) throws(JinjaError) -> JinjaValue {
        let base = value.unmarked, index = key.unmarked
        if case .iterator = base { throw .type("'\(base.typeName)' object is not subscriptable") }
        switch (base, index) {
        case let (.dict(d), .string(k)):
            if let v = d[k] { return v }
            return JinjaMethods.method(of: base, k) ?? .undefined
        case let (.dict(d), key):
            return JinjaDict.key(for: key).flatMap { d[$0] } ?? .undefined
        case let (.list(l), .int(i)):
            let j = i < 0 ? l.count + i : i
            return j >= 0 && j < l.count ? l[j] : .undefined
        case let (.string(s), .int(i)):
            let chars = Array(s.unicodeScalars)
            let j = i < 0 ? chars.count + i : i
            return j >= 0 && j < chars.count ? .string(String(chars[j])) : .undefined
        case let (.namespace(ns), .string(k)): return ns.attributes[k] ?? .undefined
        case let (_, .string(k)): return attribute(of: base, k)
        default: return .undefined
        }
    }

    private func slice(_ value: JinjaValue, _ lo: JinjaValue?, _ hi: JinjaValue?, _ stride: JinjaValue?) throws(JinjaError) -> JinjaValue {
        func int(_ v: JinjaValue?) throws(JinjaError) -> Int? {
            switch v {
            case nil, .none?: return nil
            case let .int(i)?: return i
            default: throw .type("slice indices must be integers or None")
            }
        }
        let step = try int(stride) ?? 1
        guard step != 0 else { throw .type("slice step cannot be zero") }
        let base = value.unmarked
        let elements: [JinjaValue]
        switch base {
        case let .list(l): elements = l
        case let .string(s): elements = s.unicodeScalars.map { .string(String($0)) }
        default: throw .type("'\(base.typeName)' object is not subscriptable")
        }
        let indices = JinjaOperators.sliceIndices(count: elements.count, try int(lo), try int(hi), step)
        let picked = indices.map { elements[$0] }
        if case .string = base { return .string(picked.map(\.pythonString).joined()) }
        return .list(picked)
    }

    /// The items a `for` loop or filter walks: a list's elements, a dict's keys, a string's
    /// characters; undefined walks nothing.
    func iterate(_ value: JinjaValue) throws(JinjaError) -> [JinjaValue] {
        let v = value.unmarked
        switch v {
        case .undefined: return []
        case let .iterator(items, _): return items
        case let .list(l): return l
        case let .dict(d): return d.keyValues
        case let .string(s): return s.unicodeScalars.map { .string(String($0)) }
        case let .namespace(ns): return ns.attributes.keys.map { .string($0) }
        default: throw .type("'\(v.typeName)' object is not iterable")
        }
    }
}
