import Foundation

/// A model's chat format: its chat template and the special tokens the template names
/// (`bos_token`, `eos_token`, ...), from a checkpoint folder (`chat_template.jinja`, else
/// tokenizer_config.json's `chat_template`) or a GGUF file (`tokenizer.chat_template`).
///
/// ```swift
/// let format = try ChatFormat.of(model: "Qwen3-30B-A3B-Q4_K_M.gguf")
/// let text = try format.prompt(messages: [.chatMessage(role: "user", content: "Hi")])
/// let ids = tokenizer.encode(text, addSpecialTokens: false)  // the template wrote the BOS
/// ```
public struct ChatFormat: Sendable {
    public let template: ChatTemplate
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` as the template sees them.
    public let specialTokens: [String: String]
    /// Where the template came from, for error messages.
    public let origin: String

    public init(template: ChatTemplate, specialTokens: [String: String], origin: String) {
        self.template = template
        self.specialTokens = specialTokens
        self.origin = origin
    }

    /// Renders a conversation into the prompt text (`add_generation_prompt` true by default:
    /// the text ends where the assistant's reply begins).
    public func prompt(messages: [JinjaValue], tools: [JinjaValue]? = nil, addGenerationPrompt: Bool = true,
                       extra: [String: JinjaValue] = [:], now: Date = Date()) throws(ModelError) -> String {
        do {
            return try template.render(messages: messages, tools: tools, addGenerationPrompt: addGenerationPrompt,
                                       specialTokens: specialTokens, extra: extra, now: now)
        } catch {
            throw .invalidFile(path: origin, field: "chat_template", reason: error.description)
        }
    }

    /// The model's chat format, `templateFile` in place of its own template when given; nil
    /// when the model has no template and none is given.
    public static func of(model path: String, templateFile: String? = nil) throws(ModelError) -> ChatFormat? {
        var source: (text: String, origin: String)? = nil
        var special: [String: String] = [:]
        if GGUFFile.isGGUF(path: path) {
            let file = try GGUFFile(path: path)
            if let text = file.metadata["tokenizer.chat_template"]?.string { source = (text, path) }
            special = ggufSpecialTokens(file)
        } else {
            let config = (path as NSString).appendingPathComponent("tokenizer_config.json")
            var json: [String: Any] = [:]
            if let data = FileManager.default.contents(atPath: config) {
                guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
                    throw .invalidFile(path: config, field: "(json)", reason: "not a JSON object")
                }
                json = object
            }
            for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
                if let s = json[key] as? String { special[key] = s }
                if let d = json[key] as? [String: Any], let s = d["content"] as? String { special[key] = s }
            }
            let jinjaFile = (path as NSString).appendingPathComponent("chat_template.jinja")
            if let data = FileManager.default.contents(atPath: jinjaFile) {
                source = (String(decoding: data, as: UTF8.self), jinjaFile)
            } else if let text = json["chat_template"] as? String {
                source = (text, config)
            } else if let named = json["chat_template"] as? [[String: Any]] {
                // A list of {"name", "template"}: transformers takes "default".
                guard let entry = named.first(where: { $0["name"] as? String == "default" }) ?? named.first,
                      let text = entry["template"] as? String else {
                    throw .invalidFile(path: config, field: "chat_template", reason: "a list without a usable template")
                }
                source = (text, config)
            } else if json["chat_template"] != nil {
                throw .invalidFile(path: config, field: "chat_template", reason: "neither a string nor a list of named templates")
            }
        }
        if let templateFile {
            guard let data = FileManager.default.contents(atPath: templateFile) else {
                throw .io(path: templateFile, reason: "cannot read the chat template")
            }
            guard let text = String(validating: data, as: UTF8.self) else {
                throw .invalidFile(path: templateFile, field: "(text)", reason: "not UTF-8")
            }
            source = (text, templateFile)
        }
        guard let source else { return nil }
        do {
            return ChatFormat(template: try ChatTemplate(source.text), specialTokens: special, origin: source.origin)
        } catch {
            throw .invalidFile(path: source.origin, field: "chat_template", reason: error.description)
        }
    }

    /// The special tokens' text from a GGUF's token list.
    private static func ggufSpecialTokens(_ file: GGUFFile) -> [String: String] {
        guard case let .array(tokens)? = file.metadata["tokenizer.ggml.tokens"] else { return [:] }
        var out: [String: String] = [:]
        for (key, name) in [("tokenizer.ggml.bos_token_id", "bos_token"), ("tokenizer.ggml.eos_token_id", "eos_token"),
                            ("tokenizer.ggml.unknown_token_id", "unk_token"), ("tokenizer.ggml.padding_token_id", "pad_token")] {
            if let id = file.metadata[key]?.int, id >= 0, id < tokens.count, let s = tokens[id].string { out[name] = s }
        }
        return out
    }
}
