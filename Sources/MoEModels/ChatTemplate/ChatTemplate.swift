import Foundation

/// A Hugging Face chat template (`chat_template` in tokenizer_config.json, a
/// `chat_template.jinja` file, or `tokenizer.chat_template` in a GGUF), rendered exactly as
/// transformers' `apply_chat_template` renders it with jinja2: `trim_blocks`, `lstrip_blocks`,
/// the loop-controls extension, `{% generation %}`, `raise_exception`, `strftime_now`,
/// `namespace`, and `tojson` without ASCII escaping.
///
/// ```swift
/// let template = try ChatTemplate(source)
/// let prompt = try template.render(messages: [.chatMessage(role: "user", content: "Hi")],
///                                  addGenerationPrompt: true, specialTokens: ["bos_token": "<s>"])
/// ```
public struct ChatTemplate: Sendable {
    /// The template's text.
    public let source: String
    private let body: [JinjaStmt]

    /// Longest template accepted, as a bound on hostile input (real ones are under 30 KB).
    public static let maxSourceBytes = 1 << 20

    /// Parses a template; a syntax error names the line.
    public init(_ source: String) throws(JinjaError) {
        guard source.utf8.count <= Self.maxSourceBytes else {
            throw .limit("template is longer than \(Self.maxSourceBytes) bytes")
        }
        self.source = source
        body = try JinjaParser.parse(source)
    }

    /// Renders with the given variables (plus the globals transformers defines); `now` is what
    /// `strftime_now` formats.
    public func render(_ variables: [String: JinjaValue], now: Date = Date()) throws(JinjaError) -> String {
        var globals = Self.globals(now: now)
        for (k, v) in variables { globals[k] = v }
        return try JinjaEvaluator(globals: globals).render(body)
    }

    /// Renders a conversation as `apply_chat_template` does: `messages`, `tools` (none when
    /// nil), `add_generation_prompt`, the tokenizer's special tokens (`bos_token`, ...) and any
    /// extra keyword arguments (`enable_thinking`, `reasoning_effort`, ...).
    public func render(messages: [JinjaValue], tools: [JinjaValue]? = nil, addGenerationPrompt: Bool,
                       specialTokens: [String: String] = [:], extra: [String: JinjaValue] = [:],
                       now: Date = Date()) throws(JinjaError) -> String {
        var variables: [String: JinjaValue] = [:]
        for (k, v) in specialTokens { variables[k] = .string(v) }
        for (k, v) in extra { variables[k] = v }
        variables["messages"] = .list(messages)
        variables["tools"] = tools.map { .list($0) } ?? JinjaValue.none
        variables["documents"] = JinjaValue.none
        variables["add_generation_prompt"] = .bool(addGenerationPrompt)
        return try render(variables, now: now)
    }

    // MARK: - Globals

    private static func globals(now: Date) -> [String: JinjaValue] {
        func function(_ name: String, _ f: @escaping @Sendable ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue) -> JinjaValue {
            .callable(JinjaCallable(name: name, call: f))
        }
        let seconds = now.timeIntervalSince1970
        return [
            "raise_exception": function("raise_exception") { args, _ in
                throw JinjaError.raised(args.first?.pythonString ?? "")
            },
            "strftime_now": function("strftime_now") { args, _ in
                guard case let .string(format)? = args.first else { throw JinjaError.type("strftime_now needs a format string") }
                return .string(strftime(format, seconds: seconds))
            },
            "range": function("range") { args, _ in
                let ints = args.compactMap(\.integerValue)
                guard ints.count == args.count, (1...3).contains(ints.count) else { throw JinjaError.type("range() needs 1 to 3 integers") }
                let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
                guard step != 0 else { throw JinjaError.type("range() arg 3 must not be zero") }
                let count = step > 0 ? max(0, (stop - start + step - 1) / step) : max(0, (start - stop - step - 1) / -step)
                guard count <= 100_000 else { throw JinjaError.limit("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).") }
                return .list((0..<count).map { .int(start + $0 * step) })
            },
            "namespace": function("namespace") { args, kwargs in
                var attributes = JinjaDict()
                if case let .dict(d)? = args.first { for (k, v) in d.items { attributes[k] = v } }
                for (k, v) in kwargs {
                    guard !k.hasPrefix("_") else { throw JinjaError.security("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(k)'.") }
                    attributes[k] = v
                }
                return .namespace(JinjaNamespace(attributes))
            },
            "dict": function("dict") { args, kwargs in
                var d = JinjaDict()
                if case let .dict(base)? = args.first { for (k, v) in base.items { d[k] = v } }
                for (k, v) in kwargs { d[k] = v }
                return .dict(d)
            },
        ]
    }

    /// C's strftime on local time, as Python's `datetime.now().strftime` formats.
    private static func strftime(_ format: String, seconds: Double) -> String {
        var t = time_t(seconds.rounded(.down))
        var parts = tm()
        localtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 512)
        let n = Foundation.strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension JinjaValue {
    /// A `{"role": ..., "content": ...}` message.
    public static func chatMessage(role: String, content: String) -> JinjaValue {
        .dict(JinjaDict([("role", .string(role)), ("content", .string(content))]))
    }
}
