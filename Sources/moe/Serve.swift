import ArgumentParser
import Foundation
import MoECore
import MoEModels
import MoEServer

/// `moe serve`: the OpenAI-compatible server.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a model over the OpenAI API (chat completions, completions, models, health, metrics).")

    @Option(help: "Checkpoint folder or GGUF file (of a split set, the first; default: the embedded model).") var model: String?
    @Option(help: "Address to bind (loopback by default; 0.0.0.0 for every interface).") var host = "127.0.0.1"
    @Option(help: "Port.") var port = 8080
    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer KEY' on every endpoint but /health.") var apiKey: String?
    @Option(name: .customLong("api-key-file"), help: "Read the API key from this file (its first line).") var apiKeyFile: String?
    @Option(name: .customLong("model-name"), help: "The model id clients send (default: the folder or file name).") var modelName: String?
    @Option(help: "Most prompt plus completion tokens per sequence.") var context = 4096
    @Option(name: .customLong("max-tokens"), help: "Most tokens one request may generate.") var maxTokens = 4096
    @Option(help: "Sequences generated at once (continuous batching); the rest queue.") var parallel = 8
    @Option(help: "Requests that may wait for a slot; beyond that the server answers 429.") var queue = 64
    @Option(name: .customLong("step-tokens"), help: "Rows one batched pass may carry (decode tokens plus prompt chunks).") var stepTokens = 256
    @Option(name: .customLong("max-body-bytes"), help: "Largest request body accepted.") var maxBodyBytes = 8 << 20
    @Option(name: .customLong("chat-template"), help: "A Jinja file to use instead of the model's chat template.") var chatTemplate: String?
    @Option(help: "Threads to run on (default: the active cores).") var threads: Int?
    @OptionGroup var precision: PrecisionOption
    @OptionGroup(title: "Memory") var memory: MemoryOptions
    @OptionGroup(title: "Adapters") var adapter: AdapterOptions

    func validate() throws {
        try OptionLimits.check(port, "--port", in: 0...65535)
        try OptionLimits.check(context, "--context", in: 2...OptionLimits.tokens)
        try OptionLimits.check(maxTokens, "--max-tokens", in: 1...OptionLimits.tokens)
        try OptionLimits.check(parallel, "--parallel", in: 1...256)
        try OptionLimits.check(queue, "--queue", in: 0...100_000)
        try OptionLimits.check(stepTokens, "--step-tokens", in: 1...65536)
        try OptionLimits.check(maxBodyBytes, "--max-body-bytes", in: 1024...(1 << 30))
        if apiKey != nil && apiKeyFile != nil { throw ValidationError("give --api-key or --api-key-file, not both") }
        try OptionLimits.check(threads: threads)
        // The server's passes carry prompt pieces and decode tokens together, bounded by
        // --step-tokens: a --prefill-chunk here would be silently ignored.
        if memory.prefillChunk != nil {
            throw ValidationError("--prefill-chunk does not apply to moe serve: its passes hold at most --step-tokens rows (prompt pieces and decode tokens together)")
        }
    }

    func run() async throws {
        let path = try model ?? DefaultModel.path()
        precision.apply(model: path)
        let m = try adapter.load(path, pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount))
        try memory.apply(to: m)
        let tokenizer = try Tokenizer.of(model: path)
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        config.apiKey = apiKey
        if let apiKeyFile {
            guard let data = FileManager.default.contents(atPath: apiKeyFile),
                  let key = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map(String.init), !key.isEmpty else {
                throw ModelError.io(path: apiKeyFile, reason: "cannot read an API key from it")
            }
            config.apiKey = key
        }
        config.modelName = modelName ?? (model.map { ($0 as NSString).lastPathComponent } ?? "moekit-default")
        config.contextLength = context
        config.maxTokens = maxTokens
        config.parallel = parallel
        config.queue = queue
        config.stepTokens = stepTokens
        config.maxBodyBytes = maxBodyBytes
        // The embedded model answers one task per line.
        if model == nil { config.defaultStop = ["\n"] }
        let server = MoEServer(model: m, tokenizer: tokenizer, chat: try ChatFormat.of(model: path, templateFile: chatTemplate),
                               configuration: config)
        let name = config.modelName, host = config.host
        try await server.run { port in
            FileHandle.standardError.write(Data("moe serve: \(name) on http://\(host):\(port)\n".utf8))
        }
    }
}
