import Foundation
import MoEGenerate
import MoEModels

/// What one API request asks of the engine: one or more prompts (completions may send
/// several), each sampled `n` times, and how.
struct GenerationJob {
    var prompts: [[Int]]
    var maxTokens: [Int]
    var sampling: SamplingOptions
    var stops: [String]
    var n: Int
    var stream: Bool
    var includeUsage: Bool
    /// Alternatives per token with log-probabilities (nil: none asked).
    var logprobs: Int?
    var routing: RoutingOverride
    var returnRouting: Bool
    /// vLLM's `ignore_eos`: generate past the end-of-sequence token (for benchmarks).
    var ignoreEOS = false
    /// SCMoE decoding (`moe.decoding: "scmoe"`).
    var selfContrast: SelfContrast?

    /// The engine request for prompt `p`, choice `c` (each choice its own seed).
    func request(prompt p: Int, choice c: Int) -> BatchRequest {
        var s = sampling
        s.seed = sampling.seed &+ UInt64(c)
        return BatchRequest(promptIDs: prompts[p], maxTokens: maxTokens[p], sampling: s, stopStrings: stops, stopOnEOS: !ignoreEOS,
                            routing: routing, logprobs: logprobs, returnRouting: returnRouting, selfContrast: selfContrast)
    }
}

/// Reads OpenAI request bodies into generation jobs, checking every field's type and range
/// and the prompt against the context length.
struct RequestParser {
    let modelName: String
    let tokenizer: Tokenizer
    let chat: ChatFormat?
    let contextLength: Int
    let maxTokensLimit: Int
    let defaultStop: [String]
    /// Token ids a prompt may hold: the model's embedding rows.
    let vocabularySize: Int
    let maxChoices = 16

    /// The body as a JSON object.
    static func object(_ body: Data) throws(APIError) -> JinjaDict {
        guard let text = String(data: body, encoding: .utf8) else { throw .invalid("The request body is not UTF-8 text.") }
        let value: JinjaValue
        do { value = try JinjaValue.parseJSON(text) } catch {
            throw .invalid("We could not parse the JSON body of your request: \(error.description)")
        }
        guard case let .dict(d) = value else { throw .invalid("The request body must be a JSON object.") }
        return d
    }

    /// `/v1/chat/completions`: the messages rendered by the model's chat template.
    func chat(_ body: JinjaDict) throws(APIError) -> GenerationJob {
        let f = RequestFields(body)
        guard let messages = try f.list("messages"), !messages.isEmpty else {
            throw .invalid("'messages' must be a non-empty array of messages.", param: "messages")
        }
        var rendered: [JinjaValue] = []
        for (i, m) in messages.enumerated() { rendered.append(try message(m, index: i)) }
        var tools = try f.list("tools")
        if let choice = body["tool_choice"] {
            switch choice {
            case .string("none"): tools = nil
            case .string("auto"), .none: break
            default: throw .invalid("Only 'auto' and 'none' tool_choice are supported.", param: "tool_choice")
            }
        }
        let logprobsOn = try f.bool("logprobs") ?? false
        let top = try f.int("top_logprobs", in: 0...20)
        if top != nil && !logprobsOn { throw .invalid("'top_logprobs' needs 'logprobs' set to true.", param: "top_logprobs") }
        var extra: [String: JinjaValue] = [:]
        if let kwargs = try f.dict("chat_template_kwargs") { for (k, v) in kwargs.items { extra[k] = v } }
        let ids: [Int]
        if let chat {
            let text: String
            do { text = try chat.prompt(messages: rendered, tools: tools, extra: extra) } catch {
                throw .invalid("The chat template failed on these messages: \(error.description)", param: "messages")
            }
            ids = tokenizer.encode(text, addSpecialTokens: false)
        } else {
            // No template (the embedded model): the contents, one per line.
            let text = rendered.compactMap { m -> String? in
                if case let .dict(d) = m, case let .string(s)? = d["content"] { return s }
                return nil
            }.joined(separator: "\n")
            ids = tokenizer.encode(text)
        }
        return try job(f, prompts: [ids], logprobs: logprobsOn ? (top ?? 0) : nil, promptName: "messages")
    }

    /// `/v1/completions`: a prompt string, several, or token ids.
    func completion(_ body: JinjaDict) throws(APIError) -> GenerationJob {
        let f = RequestFields(body)
        var prompts: [[Int]] = []
        switch body["prompt"] {
        case let .string(s)?: prompts = [tokenizer.encode(s)]
        case let .list(items)?:
            if items.allSatisfy({ if case .int = $0 { return true } else { return false } }), !items.isEmpty {
                prompts = [items.compactMap(\.integerValue)]
            } else {
                guard items.count <= maxChoices else { throw .invalid("At most \(maxChoices) prompts per request.", param: "prompt") }
                for item in items {
                    switch item {
                    case let .string(s): prompts.append(tokenizer.encode(s))
                    case let .list(ids) where ids.allSatisfy({ if case .int = $0 { return true } else { return false } }):
                        prompts.append(ids.compactMap(\.integerValue))
                    default: throw .invalid("'prompt' must be a string, an array of strings, or token ids.", param: "prompt")
                    }
                }
            }
        default: throw .invalid("'prompt' must be a string, an array of strings, or token ids.", param: "prompt")
        }
        let vocab = vocabularySize
        for p in prompts {
            guard !p.isEmpty else { throw .invalid("The prompt is empty.", param: "prompt") }
            if let bad = p.first(where: { $0 < 0 || $0 >= vocab }) {
                throw .invalid("Token id \(bad) is outside the vocabulary (0..<\(vocab)).", param: "prompt")
            }
        }
        if try f.bool("echo") == true { throw .invalid("'echo' is not supported.", param: "echo") }
        if try f.string("suffix") != nil { throw .invalid("'suffix' is not supported.", param: "suffix") }
        if let bestOf = try f.int("best_of", in: 1...maxChoices), bestOf > 1 {
            throw .invalid("'best_of' above 1 is not supported.", param: "best_of")
        }
        return try job(f, prompts: prompts, logprobs: try f.int("logprobs", in: 0...5), promptName: "prompt")
    }

    /// One chat message, its content reduced to text (content parts of type "text" joined).
    private func message(_ m: JinjaValue, index i: Int) throws(APIError) -> JinjaValue {
        let param = "messages.[\(i)]"
        guard case var .dict(d) = m else { throw .invalid("Each message must be an object.", param: param) }
        guard case let .string(role)? = d["role"] else { throw .invalid("Each message needs a string 'role'.", param: param + ".role") }
        guard ["system", "developer", "user", "assistant", "tool", "function"].contains(role) else {
            throw .invalid("'\(role)' is not a valid role: one of system, developer, user, assistant, tool.", param: param + ".role")
        }
        switch d["content"] {
        case .string?, nil, .none?: break
        case let .list(parts)?:
            var text = ""
            for (k, part) in parts.enumerated() {
                guard case let .dict(p) = part, case let .string(type)? = p["type"] else {
                    throw .invalid("Each content part needs a 'type'.", param: "\(param).content.[\(k)]")
                }
                guard type == "text", case let .string(t)? = p["text"] else {
                    throw .invalid("Content parts of type '\(type)' are not supported: the models are text only.",
                                   param: "\(param).content.[\(k)]")
                }
                text += t
            }
            d["content"] = .string(text)
        default:
            throw .invalid("A message's 'content' must be a string or an array of content parts.", param: param + ".content")
        }
        return .dict(d)
    }

    /// The sampling, limits and MoE fields every endpoint shares.
    private func job(_ f: RequestFields, prompts: [[Int]], logprobs: Int?, promptName: String) throws(APIError) -> GenerationJob {
        guard let model = try f.string("model") else { throw .invalid("You must provide a model parameter.", param: "model") }
        guard model == modelName else {
            throw .invalid("The model '\(model)' does not exist: this server serves '\(modelName)'.", param: "model", code: "model_not_found")
        }
        var asked = try f.int("max_completion_tokens", in: 1...Int(Int32.max))
        if asked == nil { asked = try f.int("max_tokens", in: 1...Int(Int32.max)) }
        if let asked, asked > maxTokensLimit {
            throw .invalid("max_tokens is \(asked); this server allows at most \(maxTokensLimit).", param: "max_tokens")
        }
        var maxTokens: [Int] = []
        for p in prompts {
            guard p.count < contextLength else {
                throw .invalid("This model's maximum context length is \(contextLength) tokens. However, your \(promptName) resulted in \(p.count) tokens.",
                               param: promptName, code: "context_length_exceeded")
            }
            let room = contextLength - p.count
            if let asked, asked > room {
                throw .invalid("This model's maximum context length is \(contextLength) tokens. However, you requested \(p.count + asked) tokens (\(p.count) in the \(promptName), \(asked) for the completion). Please reduce the length of the \(promptName) or completion.",
                               param: "max_tokens", code: "context_length_exceeded")
            }
            maxTokens.append(min(asked ?? room, room, maxTokensLimit))
        }
        for penalty in ["presence_penalty", "frequency_penalty"] {
            if let v = try f.number(penalty, in: -2...2), v != 0 { throw .invalid("'\(penalty)' is not supported.", param: penalty) }
        }
        if let bias = try f.dict("logit_bias"), !bias.keys.isEmpty { throw .invalid("'logit_bias' is not supported.", param: "logit_bias") }
        if let format = try f.dict("response_format"), format["type"].map({ if case .string("text") = $0 { return false } else { return true } }) ?? false {
            throw .invalid("Only response_format {\"type\": \"text\"} is supported.", param: "response_format")
        }
        let stream = try f.bool("stream") ?? false
        var includeUsage = false
        if let options = try f.dict("stream_options") {
            guard stream else { throw .invalid("'stream_options' needs 'stream' set to true.", param: "stream_options") }
            includeUsage = try RequestFields(options, prefix: "stream_options.").bool("include_usage") ?? false
        }
        let topK = try f.int("top_k", in: -1...1_000_000)
        let seed = try f.int("seed", in: Int.min...Int.max)
        let sampling = SamplingOptions(temperature: Float(try f.number("temperature", in: 0...2) ?? 1),
                                       topK: topK.flatMap { $0 > 0 ? $0 : nil },
                                       topP: try f.number("top_p", in: 0...1, openBelow: true).map(Float.init),
                                       minP: try f.number("min_p", in: 0...1).map(Float.init),
                                       seed: seed.map { UInt64(bitPattern: Int64($0)) } ?? UInt64.random(in: 0...UInt64.max))
        let n = try f.int("n", in: 1...maxChoices) ?? 1
        guard n * prompts.count <= maxChoices else {
            throw .invalid("n times the prompts is \(n * prompts.count); at most \(maxChoices) choices per request.", param: "n")
        }
        var routing = RoutingOverride()
        var returnRouting = false
        var selfContrast: SelfContrast? = nil
        if let moe = try f.dict("moe") {
            let m = RequestFields(moe, prefix: "moe.")
            routing.expertsPerToken = try m.int("experts_per_token", in: 1...4096)
            routing.topP = try m.number("expert_top_p", in: 0...1, openBelow: true).map(Float.init)
            routing.minExperts = try m.int("min_experts", in: 1...4096)
            routing.maxExperts = try m.int("max_experts", in: 1...4096)
            routing.threshold = try m.number("expert_threshold", in: 0...1).map(Float.init)
            if routing.threshold == 1 { throw .invalid("'moe.expert_threshold' must be below 1.", param: "moe.expert_threshold") }
            routing.renormalize = try m.bool("renormalize")
            returnRouting = try m.bool("return_routing") ?? false
            switch try m.string("decoding") {
            case nil, "greedy", "sample": break
            case "scmoe":
                var c = SelfContrast()
                c.weakRank = try m.int("scmoe_rank", in: 0...4095) ?? c.weakRank
                c.alpha = Float(try m.number("scmoe_alpha", in: 0...1, openBelow: true) ?? Double(c.alpha))
                c.beta = Float(try m.number("scmoe_beta", in: 0...100) ?? Double(c.beta))
                selfContrast = c
            case let other?: throw .invalid("'moe.decoding' is '\(other)': 'scmoe' or absent.", param: "moe.decoding")
            }
            let known: Set = ["experts_per_token", "expert_top_p", "min_experts", "max_experts", "expert_threshold", "renormalize",
                              "return_routing", "decoding", "scmoe_rank", "scmoe_alpha", "scmoe_beta"]
            if let unknown = moe.keys.first(where: { !known.contains($0) }) {
                throw .invalid("Unknown field 'moe.\(unknown)'.", param: "moe.\(unknown)")
            }
        }
        var job = GenerationJob(prompts: prompts, maxTokens: maxTokens, sampling: sampling, stops: f.object["stop"] == nil ? defaultStop : try f.stops("stop", most: 4), n: n,
                                stream: stream, includeUsage: includeUsage, logprobs: logprobs, routing: routing,
                                returnRouting: returnRouting)
        job.ignoreEOS = try f.bool("ignore_eos") ?? false
        job.selfContrast = selfContrast
        return job
    }
}
