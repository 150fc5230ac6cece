import ArgumentParser
import Foundation
import MoECore
import MoEGenerate
import MoEModels
import MoETrain

/// `moe perplexity`: perplexity over a text file with sliding windows, the experts each MoE
/// layer read, and (against a saved base run) KL-divergence and top-1 agreement.
struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a model on a text file (sliding windows), experts per token per layer, and KL-divergence against a base run; print JSON.")
    /// The largest text file read (bytes).
    static let maxFileBytes = 256 << 20

    @Option(help: "Checkpoint folder or GGUF file (of a split set, the first; default: the embedded model).") var model: String?
    @Option(help: "The text file to score.") var file: String?
    @Flag(help: "Score held-out samples of the synthetic tasks instead, and report each task's exact-match accuracy (greedy answers).")
    var synthetic = false
    @Option(help: "Synthetic task level (1 = easiest).") var level = 2
    @Option(help: "Synthetic samples (tasks in turn).") var samples = 120
    @Option(help: "Tokens per window.") var context = 512
    @Option(help: "Tokens between window starts (default: half the context); each token is scored once.") var stride: Int?
    @Option(name: .customLong("max-windows"), help: "Score at most this many windows (default: the whole file).") var maxWindows: Int?
    @Option(help: "Threads to run on (default: the active cores).") var threads: Int?
    @Option(name: .customLong("save-logits"), help: "Save every scored position's log-probabilities here, for a later --kl-base.")
    var saveLogits: String?
    @Option(name: .customLong("kl-base"), help: "A --save-logits file of a base run on the same text: report mean KL(base || this) and top-1 agreement.")
    var klBase: String?
    @Flag(name: .customLong("llama-chunks"), help: "Score as llama-perplexity does: whole chunks of --context tokens from a BOS, the second half of each (--max-windows caps the chunks).")
    var llamaChunks = false
    @Flag(name: .customLong("token-by-token"),
          help: "Run each window one token a step with the KV cache, as decoding does (scores decode-time routing such as --cache-aware-routing; slower).")
    var tokenByToken = false
    @Flag(help: "Pretty-print the JSON.") var pretty = false
    @OptionGroup var precision: PrecisionOption
    @OptionGroup var experts: ExpertOptions
    @OptionGroup(title: "Memory") var memory: MemoryOptions
    @OptionGroup(title: "Parallel (under mpirun)") var parallel: ParallelOptions
    @OptionGroup(title: "Adapters") var adapter: AdapterOptions
    @OptionGroup var decodingOptions: DecodingOptions

    mutating func validate() throws {
        if (file == nil) == !synthetic { throw ValidationError("give --file TEXT or --synthetic") }
        try OptionLimits.check(level, "--level", in: 1...1000)
        try OptionLimits.check(samples, "--samples", in: 1...100_000)
        try OptionLimits.check(context, "--context", in: 2...OptionLimits.tokens)
        try OptionLimits.check(stride ?? 1, "--stride", in: 1...context)
        try OptionLimits.check(maxWindows ?? 1, "--max-windows", in: 1...OptionLimits.tokens)
        try OptionLimits.check(threads: threads)
        if saveLogits != nil && saveLogits == klBase { throw ValidationError("--save-logits and --kl-base name the same file") }
        if tokenByToken && llamaChunks { throw ValidationError("--token-by-token scores sliding windows; --llama-chunks prefills its chunks") }
    }

    func run() throws {
        let folder = try model ?? DefaultModel.path()
        precision.apply(model: folder)
        let m = try adapter.load(folder, pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount))
        try memory.apply(to: m)
        try parallel.apply(to: m)
        let tok = try Tokenizer.of(model: folder)
        let routing = try experts.override(for: m)
        let tasks = synthetic ? SyntheticCorpus(level: level).samples(samples, heldOut: true, seed: 7) : []
        let text = try file.map(Self.read) ?? tasks.map(\.text).joined()
        let path = file ?? "(synthetic)"
        var tokens = tok.encode(text)
        let step = stride ?? max(1, context / 2)
        if let maxWindows, !llamaChunks { tokens = Array(tokens.prefix(context + (maxWindows - 1) * step)) }
        guard tokens.count >= 2 else { throw ModelError.invalidFile(path: path, field: "(text)", reason: "has \(tokens.count) token(s); 2 are needed to score one") }

        let base = try klBase.map { p throws(ModelError) in try LogProbFile.Reader(path: p) }
        if let base {
            guard base.vocab == m.spec.vocabSize, base.tokens == tokens else {
                throw ModelError.invalidFile(path: base.path, field: "tokens",
                                             reason: "the base run scored other tokens (\(base.tokens.count) over a vocabulary of \(base.vocab); this run: \(tokens.count) over \(m.spec.vocabSize)): use the same text, tokenizer and --max-windows")
            }
        }
        let writer = try saveLogits.map { p throws(ModelError) in try LogProbFile.Writer(path: p, vocab: m.spec.vocabSize, tokens: tokens) }
        var row = 0, comparison = DistributionComparison()
        // The BOS the tokenizer puts in front, if any: each window starts from it.
        let plain = tok.encode("a", addSpecialTokens: false), special = tok.encode("a", addSpecialTokens: true)
        let bos = special.count > plain.count && special.last == plain.last ? special.first : nil
        let score = { (onScored: (Int, UnsafeBufferPointer<Float>) throws(ModelError) -> Void) throws(ModelError) -> Perplexity.Report in
            llamaChunks ? try Perplexity.runChunks(model: m, tokens: tokens, context: context, bos: bos, maxChunks: maxWindows, routing: routing, onScored: onScored)
                        : try Perplexity.run(model: m, tokens: tokens, context: context, stride: step, bos: bos, routing: routing,
                                             tokenByToken: tokenByToken, onScored: onScored)
        }
        var report = try score { position, lp throws(ModelError) in
            try writer?.append(position: position, logProbs: lp)
            if let base {
                guard row < base.rows else { throw ModelError.invalidFile(path: base.path, field: "rows", reason: "ends after \(base.rows) rows") }
                let (basePosition, b) = base.row(row)
                guard basePosition == position else {
                    throw ModelError.invalidFile(path: base.path, field: "rows[\(row)]", reason: "scores position \(basePosition), this run \(position)")
                }
                comparison.add(base: b, current: lp)
            }
            row += 1
        }
        try writer?.finish(tokenCount: tokens.count)
        report.expertCacheHitRate = m.expertCache?.statistics.hitRate
        if base != nil {
            report.klDivergence = comparison.meanKL
            report.top1Agreement = comparison.top1Agreement
        }
        guard !tasks.isEmpty else { return try printJSON(report, pretty: pretty) }
        var options = GenerationOptions(maxTokens: 32, stopStrings: ["\n"])
        options.routing = routing
        options.selfContrast = decodingOptions.selfContrast
        let generator = Generator(model: m, tokenizer: tok)
        var generated = 0, seconds = 0.0
        let accuracy = try exactMatchAccuracy(tasks) { prompt in
            let r = try generator.generate(prompt: prompt, options: options)
            generated += r.ids.count
            seconds += r.decodeSeconds
            return r.text
        }
        try printJSON(SyntheticReport(perplexity: report, accuracy: Dictionary(uniqueKeysWithValues: accuracy.map { ($0.key.rawValue, $0.value) }),
                                      meanAccuracy: accuracy.values.reduce(0, +) / Double(max(1, accuracy.count)),
                                      decodeTokensPerS: Double(generated) / max(seconds, 1e-9)), pretty: pretty)
    }

    /// A text file, bounded in size and checked to be UTF-8.
    static func read(_ file: String) throws -> String {
        let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? nil
        guard let size else { throw ModelError.io(path: file, reason: "cannot read: \(String(cString: strerror(ENOENT)))") }
        guard size <= maxFileBytes else { throw ModelError.io(path: file, reason: "\(size) bytes is more than the \(maxFileBytes >> 20) MiB read") }
        guard let data = FileManager.default.contents(atPath: file) else { throw ModelError.io(path: file, reason: "cannot read") }
        guard let text = String(data: data, encoding: .utf8) else { throw ModelError.invalidFile(path: file, field: "(text)", reason: "not UTF-8") }
        return text
    }
}

/// What `moe perplexity --synthetic` prints: the perplexity report with each task's exact-match
/// accuracy (greedy answers to held-out prompts) and the decode speed of those answers.
struct SyntheticReport: Encodable {
    let perplexity: Perplexity.Report
    let accuracy: [String: Double]
    let meanAccuracy: Double
    let decodeTokensPerS: Double
}
