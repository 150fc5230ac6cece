import ArgumentParser
import Foundation
import MoECore
import MoEModels

/// `moe imatrix`: an importance matrix from calibration text, in llama.cpp's GGUF format.
struct Imatrix: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imatrix",
        abstract: "Compute an importance matrix (each weight's mean squared input, per routed expert) from calibration text, as llama-imatrix does.",
        discussion: """
            The text runs through the model in chunks of --chunk-size tokens, each from an empty cache with its \
            first token replaced by BOS when the tokenizer adds one. The file is llama.cpp's GGUF imatrix: \
            llama-quantize --imatrix and moe quantize --imatrix read it.
            """)

    @Option(help: "The model: a GGUF file or a checkpoint folder.")
    var model: String

    @Option(help: "Calibration text (UTF-8).")
    var calibration: String

    @Option(help: "The importance matrix to write (GGUF, atomically).")
    var out: String

    @OptionGroup var chunking: ImportanceChunking

    @Flag(name: .customLong("process-output"), help: "Also collect the output projection (llama-imatrix's --process-output).")
    var processOutput = false

    @Option(help: "Threads to run on (default: the active cores).")
    var threads: Int?

    mutating func validate() throws {
        try OptionLimits.check(threads: threads)
        try chunking.validate()
    }

    func run() throws {
        let pool = ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
        let matrix = try chunking.collect(model: model, calibration: calibration, includeOutput: processOutput, pool: pool)
        try matrix.write(to: out)
        FileHandle.standardError.write(Data("wrote \(out): \(matrix.entries.count) entries from \(matrix.chunkCount) chunks of \(matrix.chunkSize) tokens\n".utf8))
    }
}

/// How calibration text is cut for an importance matrix (`moe imatrix`, `moe quantize --calibration`).
struct ImportanceChunking: ParsableArguments {
    @Option(name: .customLong("chunk-size"), help: "Tokens per chunk (llama-imatrix's context size).")
    var chunkSize = 512

    @Option(help: "At most this many chunks (default: all the text holds).")
    var chunks: Int?

    func validate() throws {
        try OptionLimits.check(chunkSize, "--chunk-size", in: 16...65536)
        if let chunks { try OptionLimits.check(chunks, "--chunks", in: 1...1_000_000) }
    }

    /// The importance matrix of `model` over the text in `calibration`, with a progress bar.
    func collect(model: String, calibration: String, includeOutput: Bool, pool: ThreadPool) throws -> ImportanceMatrix {
        let text = try PerplexityCommand.read(calibration)
        let tokenizer = try Tokenizer.of(model: model)
        let tokens = tokenizer.encode(text)
        let bos = tokenizer.encode("").first
        let bar = ProgressBar()
        defer { bar.finish() }
        return try ImportanceCollector.collect(path: model, tokens: tokens, bos: bos, chunkSize: chunkSize, maxChunks: chunks,
                                               includeOutput: includeOutput, dataset: calibration, pool: pool) { done, total in
            bar.show(fraction: Double(done) / Double(total), label: "chunk \(done)/\(total)")
        }
    }
}
