import ArgumentParser
import Foundation
import MoEModels

/// Options that make a conversation and render it with the model's chat template.
struct ChatOptions: ParsableArguments {
    @Option(help: "A system message to put first.") var system: String?
    @Option(help: "A JSON file holding the conversation: [{\"role\": ..., \"content\": ...}, ...] ('-' reads standard input).")
    var messages: String?
    @Option(name: .customLong("chat-template"), help: "A Jinja file to use instead of the model's chat template.") var chatTemplate: String?
    @Option(name: .customLong("template-kwargs"), help: "A JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'.")
    var templateKwargs: String?

    func validate() throws { _ = try extraVariables() }

    /// The messages: those of `--messages`, else the system message (if any) and `prompt`.
    func conversation(prompt: String?) throws -> [JinjaValue] {
        if let messages {
            let text: String
            if messages == "-" {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            } else {
                guard let data = FileManager.default.contents(atPath: messages) else {
                    throw ModelError.io(path: messages, reason: "cannot read the messages file")
                }
                text = String(decoding: data, as: UTF8.self)
            }
            guard text.utf8.count <= 64 << 20 else { throw ModelError.invalidFile(path: messages, field: "(json)", reason: "larger than 64 MiB") }
            let value: JinjaValue
            do { value = try JinjaValue.parseJSON(text) } catch {
                throw ModelError.invalidFile(path: messages, field: "(json)", reason: error.description)
            }
            guard case let .list(list) = value else {
                throw ModelError.invalidFile(path: messages, field: "(root)", reason: "expected a list of messages")
            }
            for (i, m) in list.enumerated() {
                guard case let .dict(d) = m, case .string? = d["role"] else {
                    throw ModelError.invalidFile(path: messages, field: "[\(i)]", reason: "a message needs a string \"role\"")
                }
            }
            return list
        }
        var list: [JinjaValue] = []
        if let system { list.append(.chatMessage(role: "system", content: system)) }
        if let prompt { list.append(.chatMessage(role: "user", content: prompt)) }
        return list
    }

    /// `--template-kwargs` as template variables.
    func extraVariables() throws -> [String: JinjaValue] {
        guard let templateKwargs else { return [:] }
        guard case let .dict(d) = try? JinjaValue.parseJSON(templateKwargs) else {
            throw ValidationError("--template-kwargs must be a JSON object")
        }
        var out: [String: JinjaValue] = [:]
        for (k, v) in d.items { out[k] = v }
        return out
    }

    /// The model's chat format (or `--chat-template`'s); an error when there is none.
    func format(model: String) throws -> ChatFormat {
        guard let format = try ChatFormat.of(model: model, templateFile: chatTemplate) else {
            throw ModelError.invalidFile(path: model, field: "chat_template",
                                         reason: "the model has no chat template; pass --chat-template FILE")
        }
        return format
    }

    /// The prompt text for `prompt` rendered as a conversation.
    func render(model: String, prompt: String?) throws -> String {
        try format(model: model).prompt(messages: try conversation(prompt: prompt), extra: try extraVariables())
    }
}

/// `moe chat-template`: prints the prompt a conversation renders to (and its token ids).
struct ChatTemplateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-template",
        abstract: "Render a conversation with the model's chat template, as transformers' apply_chat_template does.")

    @Option(help: "Checkpoint folder (tokenizer_config.json or chat_template.jinja) or GGUF file.") var model: String
    @Option(help: "A user message (or give --messages).") var prompt: String?
    @Flag(inversion: .prefixedNo, help: "End with the assistant's turn opening (add_generation_prompt).") var generationPrompt = true
    @Flag(help: "Print {\"text\": ..., \"ids\": [..]} instead of the text.") var json = false
    @OptionGroup var chatOptions: ChatOptions

    func validate() throws {
        if chatOptions.messages == nil && prompt == nil { throw ValidationError("give --prompt or --messages") }
    }

    func run() throws {
        let format = try chatOptions.format(model: model)
        let text = try format.prompt(messages: try chatOptions.conversation(prompt: prompt), addGenerationPrompt: generationPrompt,
                                     extra: try chatOptions.extraVariables())
        if json {
            let ids = try Tokenizer.of(model: model).encode(text, addSpecialTokens: false)
            try printJSON(ChatTemplateReport(text: text, ids: ids))
        } else {
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }
}

/// What `moe chat-template --json` prints.
struct ChatTemplateReport: Encodable {
    var text: String
    var ids: [Int]
}
