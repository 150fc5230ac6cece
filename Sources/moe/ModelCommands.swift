import ArgumentParser
import Foundation
import MoECore
import MoEDistributed
import MoEGenerate
import MoEModels

/// `moe tokenize`: token ids for a text.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text as JSON: {\"ids\": [..]}.")
    @Option(help: "Checkpoint folder with tokenizer.json, or a GGUF file.") var model: String
    @Option(help: "The text to tokenize.") var text: String
    @Flag(inversion: .prefixedNo, help: "Add the tokenizer's special tokens (a BOS).") var specialTokens = true

    func run() throws {
        let tok = try Tokenizer.of(model: model)
        try printJSON(["ids": tok.encode(text, addSpecialTokens: specialTokens)])
    }
}

/// `moe detokenize`: the text of token ids.
struct Detokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the text of token ids as JSON: {\"text\": \"...\"}.")
    @Option(help: "Checkpoint folder with tokenizer.json, or a GGUF file.") var model: String
    @Option(help: "Comma-separated token ids.") var ids: String
    @Flag(help: "Leave special tokens out of the text.") var skipSpecialTokens = false

    mutating func validate() throws { _ = try parseTokenList(ids, option: "--ids") }

    func run() throws {
        let tok = try Tokenizer.of(model: model)
        let list = try parseTokenList(ids, option: "--ids")
        if let bad = list.first(where: { tok.token(of: $0) == nil }) {
            throw ModelError.tokenOutOfRange(id: bad, vocabularySize: tok.vocabularySize)
        }
        try printJSON(["text": tok.decode(list, skipSpecialTokens: skipSpecialTokens)])
    }
}

/// `moe generate`: text from a prompt, streamed.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt, streaming it to standard output.",
        discussion: """
            --temperature 0 (the default) is greedy and deterministic; otherwise top-k, top-p and min-p filter \
            and --seed fixes the draw. Without --model, the embedded default model (trained by `moe train` on \
            the synthetic tasks) answers, e.g. `moe generate "37+48="`.
            """)
    @Option(help: "Checkpoint folder (config.json, *.safetensors, tokenizer.json) or GGUF file (of a split set, the first); default: the embedded model.") var model: String?
    @Argument(help: "The prompt (or use --prompt).") var text: String?
    @Option(help: "The prompt.") var prompt: String?
    @Option(name: .customLong("max-tokens"), help: "Most tokens to generate.") var maxTokens = 128
    @Option(help: "Sampling temperature; 0 is greedy.") var temperature: Float = 0
    @Option(name: .customLong("top-k"), help: "Keep the k most likely tokens.") var topK: Int?
    @Option(name: .customLong("top-p"), help: "Keep the smallest set reaching this probability.") var topP: Float?
    @Option(name: .customLong("min-p"), help: "Drop tokens below this fraction of the most likely one's probability.") var minP: Float?
    @Option(help: "Seed for sampling.") var seed: UInt64 = 0
    @Option(parsing: .singleValue, help: "Stop before this text (repeatable).") var stop: [String] = []
    @Flag(help: "Print {\"ids\": [..], \"text\": \"...\"} at the end instead of streaming.") var json = false
    @Option(help: "Threads to run on (default: the active cores).") var threads: Int?
    @OptionGroup var precision: PrecisionOption
    @Flag(help: "Treat the prompt as a user message (after --system) and render it with the model's chat template.") var chat = false
    @OptionGroup var experts: ExpertOptions
    @OptionGroup(title: "Memory") var memory: MemoryOptions
    @OptionGroup(title: "Parallel (under mpirun)") var parallel: ParallelOptions
    @OptionGroup(title: "Adapters") var adapter: AdapterOptions
    @OptionGroup var decodingOptions: DecodingOptions
    @OptionGroup(title: "Chat (with --chat)") var chatOptions: ChatOptions

    mutating func validate() throws {
        if chat && chatOptions.messages != nil {
            if text != nil || prompt != nil { throw ValidationError("give the conversation once: --messages or a prompt") }
        } else if (text == nil) == (prompt == nil) {
            throw ValidationError("give the prompt once: as an argument or with --prompt")
        }
        if !chat && (chatOptions.messages != nil || chatOptions.system != nil || chatOptions.chatTemplate != nil || chatOptions.templateKwargs != nil) {
            throw ValidationError("--system, --messages, --chat-template and --template-kwargs need --chat")
        }
        try OptionLimits.check(maxTokens, "--max-tokens", in: 0...OptionLimits.tokens)
        if temperature < 0 || !temperature.isFinite { throw ValidationError("--temperature must be >= 0") }
        if let topK, topK < 1 { throw ValidationError("--top-k must be at least 1") }
        if let topP, !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
        if let minP, !(minP >= 0 && minP < 1) { throw ValidationError("--min-p must be in [0, 1)") }
        if stop.contains("") { throw ValidationError("--stop: an empty stop string would stop before the first token") }
        try OptionLimits.check(threads: threads)
    }

    func run() throws {
        let folder = try model ?? DefaultModel.path()
        precision.apply(model: folder)
        let m = try adapter.load(folder, pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount))
        try memory.apply(to: m)
        try parallel.apply(to: m)
        let tok = try Tokenizer.of(model: folder)
        // The default model answers one task per line: a newline ends its answer.
        let stops = stop + (model == nil && stop.isEmpty ? ["\n"] : [])
        var options = GenerationOptions(maxTokens: maxTokens,
                                        sampling: SamplingOptions(temperature: temperature, topK: topK, topP: topP, minP: minP, seed: seed),
                                        stopStrings: stops)
        options.routing = try experts.override(for: m)
        options.selfContrast = decodingOptions.selfContrast
        var input = text ?? prompt ?? ""
        if chat {
            // The template writes the BOS and every other special token itself.
            input = try chatOptions.render(model: folder, prompt: text ?? prompt)
            options.addSpecialTokens = false
        }
        let result = try Generator(model: m, tokenizer: tok).generate(prompt: input, options: options) { piece in
            if !json {
                FileHandle.standardOutput.write(Data(piece.utf8))
            }
        }
        if json {
            try printJSON(GenerateReport(ids: result.ids, text: result.text, stopReason: result.stopReason.rawValue,
                                         prefillTokensPerS: Double(result.promptIDs.count) / max(result.prefillSeconds, 1e-9),
                                         decodeTokensPerS: Double(max(0, result.ids.count - 1)) / max(result.decodeSeconds, 1e-9)))
        } else {
            print("")
        }
    }
}

/// The model embedded in the `moe` executable: trained by `moe train` with
/// `DefaultModel/train.json` on the synthetic tasks.
enum DefaultModel {
    /// The folder of the embedded checkpoint.
    static func path() throws -> String {
        guard let url = Bundle.module.url(forResource: "DefaultModel", withExtension: nil),
              FileManager.default.fileExists(atPath: url.appendingPathComponent("model.safetensors").path) else {
            throw ValidationError("the embedded default model is missing from this build; pass --model DIR")
        }
        return url.path
    }
}

/// What `moe generate --json` prints.
struct GenerateReport: Encodable {
    let ids: [Int]
    let text: String
    let stopReason: String
    /// Prompt tokens per second of prefill, and generated tokens per second after it.
    let prefillTokensPerS: Double
    let decodeTokensPerS: Double
}

/// `moe bench`: prefill and decode speed of a model.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure prefill and decode speed of a model against the machine's limits; print JSON.")
    @Option(help: "Checkpoint folder or GGUF file (of a split set, the first; default: the embedded model).") var model: String?
    @Option(name: .customLong("prompt-tokens"), help: "Prompt length for prefill.") var promptTokens = 128
    @Option(name: .customLong("gen-tokens"), help: "Tokens to decode.") var genTokens = 32
    @Option(help: "Threads to run on (default: the active cores).") var threads: Int?
    @Option(help: "Also decode this many sequences together, one batched pass a step, and report their total tokens per second.")
    var batch: Int?
    @Option(help: "Timed repetitions (the median is reported).") var reps = 3
    @Flag(name: .customLong("random-tokens"),
          help: "Draw a fresh random prompt each repetition and decode random tokens, as llama-bench does, instead of greedy ones (whose repeats flatter an expert cache).")
    var randomTokens = false
    @OptionGroup var precision: PrecisionOption
    @OptionGroup var experts: ExpertOptions
    @OptionGroup(title: "Memory") var memory: MemoryOptions
    @OptionGroup(title: "Parallel (under mpirun)") var parallel: ParallelOptions
    @OptionGroup(title: "Adapters") var adapter: AdapterOptions

    mutating func validate() throws {
        try OptionLimits.check(promptTokens, "--prompt-tokens", in: 1...OptionLimits.tokens)
        if let batch { try OptionLimits.check(batch, "--batch", in: 1...256) }
        try OptionLimits.check(genTokens, "--gen-tokens", in: 1...OptionLimits.tokens)
        try OptionLimits.check(threads: threads)
        if reps < 1 { throw ValidationError("--reps must be at least 1") }
    }

    func run() throws {
        let path = try model ?? DefaultModel.path()
        precision.apply(model: path)
        let m = try adapter.load(path, pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount))
        try memory.apply(to: m)
        let sharded = try parallel.apply(to: m)
        var report = try ModelBenchmark.run(model: m, name: model ?? "(embedded)", promptTokens: promptTokens, genTokens: genTokens, reps: reps,
                                            randomTokens: randomTokens,
                                            routing: try experts.override(for: m))
        report.precision = Kernels.bf16Activations && Kernels.bf16ComputeSupported ? "bf16" : "exact"
        if let batch {
            report.batch = batch
            report.batchDecodeTokensPerS = try ModelBenchmark.batchedDecodeRate(model: m, batch: batch, promptTokens: min(promptTokens, 32),
                                                                               genTokens: genTokens, reps: reps)
        }
        if let sharded {
            let figures = try ExpertParallelBenchmark.measure(model: m, statistics: sharded.statistics, communicator: sharded.communicator,
                                                              expertBytesTotal: sharded.expertBytesTotal,
                                                              promptTokens: promptTokens, genTokens: genTokens,
                                                              partitioned: parallel.expertRows == .partitioned, chunks: parallel.overlapChunks,
                                                              overlapChunks: parallel.overlapSeries, reps: reps)
            try printJSON(ShardedBenchReport(report: report, expertParallel: figures))
        } else {
            try printJSON(report)
        }
    }
}

/// What `moe bench --expert-parallel` prints: the bench report with the exchanges' figures.
struct ShardedBenchReport: Encodable {
    let report: ModelBenchmark.Report
    let expertParallel: ExpertParallelBenchmark.Figures

    enum Keys: String, CodingKey { case expertParallel }

    func encode(to encoder: Encoder) throws {
        try report.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(expertParallel, forKey: .expertParallel)
    }
}

/// `moe init-random`: a random-weight checkpoint of any supported architecture and shape.
struct InitRandom: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init-random",
        abstract: "Write a random-weight checkpoint (bf16 safetensors, config.json, tokenizer.json) of any supported architecture.")
    @Option(help: "Architecture: \(RandomCheckpoint.architectures.joined(separator: ", ")).") var arch: String
    @Option(help: "Output folder.") var out: String
    @Option(help: "Vocabulary size (>= 257).") var vocab = 512
    @Option(help: "Hidden size.") var hidden = 256
    @Option(help: "Layers.") var layers = 2
    @Option(help: "Attention heads.") var heads = 4
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (default: heads).") var kvHeads: Int?
    @Option(name: .customLong("head-dim"), help: "Head dimension (default: hidden / heads).") var headDim: Int?
    @Option(help: "Routed experts.") var experts = 8
    @Option(name: .customLong("top-k"), help: "Experts per token.") var topK = 2
    @Option(name: .customLong("expert-size"), help: "Expert intermediate size.") var expertSize = 512
    @Option(name: .customLong("shared-size"), help: "Shared expert intermediate size (qwen2_moe).") var sharedSize = 512
    @Option(name: .customLong("dense-size"), help: "Dense FFN size (the dense families, and the dense layers of Qwen-MoE, DeepSeek and GLM).")
    var denseSize = 1024
    @Option(name: .customLong("sliding-window"), help: "Sliding window (gpt_oss: on alternate layers, default 128; mistral: every layer, default none).")
    var slidingWindow: Int?
    @Option(name: .customLong("q-lora-rank"), help: "DeepSeek: q LoRA rank (0 for a plain q_proj).") var qLoraRank = 64
    @Option(name: .customLong("kv-lora-rank"), help: "DeepSeek: kv LoRA rank.") var kvLoraRank = 64
    @Option(name: .customLong("nope-dim"), help: "DeepSeek: per-head key dims without rope.") var nopeDim = 32
    @Option(name: .customLong("rope-dim"), help: "DeepSeek: per-head rope dims.") var ropeDim = 16
    @Option(name: .customLong("v-dim"), help: "DeepSeek: per-head value dims.") var vDim = 32
    @Option(name: .customLong("shared-experts"), help: "DeepSeek, GLM: shared experts.") var sharedExperts = 1
    @Option(help: "DeepSeek, GLM: expert groups.") var groups = 1
    @Option(name: .customLong("topk-group"), help: "DeepSeek, GLM: groups kept per token.") var topkGroup = 1
    @Option(name: .customLong("dense-layers"), help: "DeepSeek, GLM: leading dense layers (first_k_dense_replace).") var denseLayers = 0
    @Option(help: "Weight dtype: bf16, f16 or f32.") var dtype = "bf16"
    @Option(help: "Seed for the weights.") var seed: UInt64 = 0
    @Option(name: .customLong("init"), help: "How weights are drawn: uniform (in ±1/sqrt(fan-in), PyTorch's nn.Linear) or normal (std --init-std, transformers' _init_weights).")
    var weightInit = "uniform"
    @Option(name: .customLong("init-std"), help: "Standard deviation of --init normal (transformers' initializer_range).") var initStd: Float = 0.02

    func run() throws {
        guard let dt = DType(name: dtype) else { throw ValidationError("--dtype: '\(dtype)' is not bf16, f16 or f32") }
        let initialization: RandomCheckpoint.Initialization
        switch weightInit {
        case "uniform": initialization = .uniform
        case "normal":
            guard initStd.isFinite, initStd > 0, initStd <= 10 else { throw ValidationError("--init-std: \(initStd) is not in (0, 10]") }
            initialization = .normal(std: initStd)
        default: throw ValidationError("--init: '\(weightInit)' is not uniform or normal")
        }
        var shape = RandomCheckpoint.Shape()
        shape.vocabSize = vocab
        shape.hiddenSize = hidden
        shape.layers = layers
        shape.heads = heads
        shape.kvHeads = kvHeads ?? heads
        shape.headDim = headDim
        shape.experts = experts
        shape.topK = topK
        shape.expertSize = expertSize
        shape.sharedSize = sharedSize
        shape.denseSize = denseSize
        shape.qLoraRank = qLoraRank > 0 ? qLoraRank : nil
        shape.kvLoraRank = kvLoraRank
        shape.nopeDim = nopeDim
        shape.ropeDim = ropeDim
        shape.valueDim = vDim
        shape.sharedExperts = sharedExperts
        shape.groups = groups
        shape.topkGroup = topkGroup
        shape.denseLayers = denseLayers
        shape.slidingWindow = slidingWindow
        try RandomCheckpoint.write(arch: arch, shape: shape, to: out, seed: seed, dtype: dt, initialization: initialization)
        try printJSON(["out": out, "arch": arch])
    }
}
