import Foundation
import MoEGenerate
import MoEModels

/// A JSON object with its keys in the order given (responses print as OpenAI's do).
func object(_ pairs: (String, JinjaValue)...) -> JinjaValue { .dict(JinjaDict(pairs)) }

extension JinjaValue {
    static func str(_ s: String) -> JinjaValue { .string(s) }
    static func num(_ x: Float) -> JinjaValue { .double(Double(x)) }
    static func optionalString(_ s: String?) -> JinjaValue { s.map(JinjaValue.string) ?? .none }
}

/// One choice's output as the engine produced it.
struct ChoiceResult {
    var text = ""
    var finishReason: String?
    var tokens: [Int] = []
    var logprobs: [TokenLogprob] = []
    var alternatives: [[TokenLogprob]] = []
    var experts: [[Int: [Int]]] = []
    var promptTokens = 0
    var completionTokens = 0
}

/// Builds the response bodies of both endpoints.
struct ResponseBuilder {
    let id: String
    let created: Int
    let model: String
    let chat: Bool
    let tokenizer: Tokenizer

    /// OpenAI's finish reason for the engine's stop reason.
    static func finishReason(_ reason: String) -> String {
        switch reason {
        case "max_tokens": return "length"
        case "cancelled": return "stop"
        default: return "stop"
        }
    }

    func usage(prompt: Int, completion: Int) -> JinjaValue {
        object(("prompt_tokens", .int(prompt)), ("completion_tokens", .int(completion)), ("total_tokens", .int(prompt + completion)))
    }

    private func tokenText(_ id: Int) -> String { tokenizer.decode([id]) }

    /// Log-probabilities of `tokens` in the endpoint's format (nil when none were asked).
    func logprobs(_ r: ChoiceResult, from start: Int = 0, textOffset: Int = 0) -> JinjaValue {
        guard !r.logprobs.isEmpty, start < r.logprobs.count else { return .none }
        let range = start..<r.logprobs.count
        if chat {
            let content: [JinjaValue] = range.map { k in
                let lp = r.logprobs[k]
                let text = tokenText(lp.id)
                let top: [JinjaValue] = r.alternatives[k].map { alt in
                    let t = tokenText(alt.id)
                    return object(("token", .str(t)), ("logprob", .num(alt.logprob)), ("bytes", .list(Array(t.utf8).map { .int(Int($0)) })))
                }
                return object(("token", .str(text)), ("logprob", .num(lp.logprob)),
                              ("bytes", .list(Array(text.utf8).map { .int(Int($0)) })), ("top_logprobs", .list(top)))
            }
            return object(("content", .list(content)), ("refusal", .none))
        }
        var offsets: [JinjaValue] = [], offset = textOffset
        for k in range {
            offsets.append(.int(offset))
            offset += tokenText(r.logprobs[k].id).count
        }
        return object(
            ("tokens", .list(range.map { .str(tokenText(r.logprobs[$0].id)) })),
            ("token_logprobs", .list(range.map { .num(r.logprobs[$0].logprob) })),
            ("top_logprobs", .list(range.map { k in
                .dict(JinjaDict(r.alternatives[k].map { (tokenText($0.id), .num($0.logprob)) }))
            })),
            ("text_offset", .list(offsets)))
    }

    /// The per-token experts (the `moe.return_routing` extension): for each generated token, the
    /// experts each MoE layer routed the position that predicted it to.
    func routing(_ r: ChoiceResult, from start: Int = 0) -> JinjaValue {
        .list(r.experts.dropFirst(start).map { layers in
            .dict(JinjaDict(layers.keys.sorted().map { (String($0), .list(layers[$0]!.map { .int($0) })) }))
        })
    }

    /// The whole (non-streamed) response.
    func complete(_ choices: [ChoiceResult], promptTokens prompt: Int, returnRouting: Bool) -> JinjaValue {
        let items: [JinjaValue] = choices.enumerated().map { i, r in
            var pairs: [(String, JinjaValue)] = [("index", .int(i))]
            if chat {
                pairs.append(("message", object(("role", .str("assistant")), ("content", .str(r.text)), ("refusal", .none))))
            } else {
                pairs.insert(("text", .str(r.text)), at: 0)
            }
            pairs.append(("logprobs", logprobs(r)))
            pairs.append(("finish_reason", .optionalString(r.finishReason)))
            if returnRouting { pairs.append(("moe_routing", routing(r))) }
            return .dict(JinjaDict(pairs))
        }
        return object(("id", .str(id)), ("object", .str(chat ? "chat.completion" : "text_completion")), ("created", .int(created)),
                      ("model", .str(model)), ("system_fingerprint", .none), ("choices", .list(items)),
                      ("usage", usage(prompt: prompt, completion: choices.map(\.completionTokens).reduce(0, +))))
    }

    /// One streamed chunk for choice `index`: a text delta (or the opening role), its
    /// log-probabilities and routing, and the finish reason on the last.
    func chunk(index: Int, text: String?, role: Bool = false, logprobs: JinjaValue = .none, finishReason: String? = nil,
               routing: JinjaValue? = nil) -> JinjaValue {
        var choice: [(String, JinjaValue)] = [("index", .int(index))]
        if chat {
            var delta: [(String, JinjaValue)] = []
            if role { delta.append(("role", .str("assistant"))) }
            if let text { delta.append(("content", .str(text))) }
            choice.append(("delta", .dict(JinjaDict(delta))))
        } else {
            choice.insert(("text", .str(text ?? "")), at: 0)
        }
        choice.append(("logprobs", logprobs))
        choice.append(("finish_reason", .optionalString(finishReason)))
        if let routing { choice.append(("moe_routing", routing)) }
        return object(("id", .str(id)), ("object", .str(chat ? "chat.completion.chunk" : "text_completion")), ("created", .int(created)),
                      ("model", .str(model)), ("system_fingerprint", .none), ("choices", .list([.dict(JinjaDict(choice))])))
    }

    /// The closing usage chunk (`stream_options.include_usage`): no choices.
    func usageChunk(prompt: Int, completion: Int) -> JinjaValue {
        object(("id", .str(id)), ("object", .str(chat ? "chat.completion.chunk" : "text_completion")), ("created", .int(created)),
               ("model", .str(model)), ("system_fingerprint", .none), ("choices", .list([])),
               ("usage", usage(prompt: prompt, completion: completion)))
    }
}
