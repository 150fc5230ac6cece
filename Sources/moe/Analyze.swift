import ArgumentParser
import Foundation
import MoECore
import MoEGenerate
import MoEModels
import MoETrain

/// `moe analyze`: a model's routing over a corpus, as JSON, SVG pictures and one HTML report.
struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a model over text files or the synthetic tasks with routing traces on; write analysis.json, profile.json, SVG pictures and report.html.")

    @Option(help: "Checkpoint folder or GGUF file (of a split set, the first; default: the embedded model).") var model: String?
    @Option(parsing: .singleValue, help: "A text file to analyse (repeatable).") var file: [String] = []
    @Flag(help: "Analyse held-out samples of the synthetic tasks, grouped by task.") var synthetic = false
    @Option(help: "Synthetic task level (1 = easiest).") var level = 2
    @Option(help: "Synthetic samples (tasks in turn).") var samples = 300
    @Option(help: "Tokens per window of text (each from an empty cache).") var context = 512
    @Option(name: .customLong("max-windows"), help: "Analyse at most this many windows of text.") var maxWindows: Int?
    @Option(help: "Output folder (created).") var out: String
    @Option(help: "Threads to run on (default: the active cores).") var threads: Int?
    @OptionGroup var experts: ExpertOptions

    mutating func validate() throws {
        if file.isEmpty == !synthetic { throw ValidationError("give --file TEXT (one or more) or --synthetic") }
        try OptionLimits.check(level, "--level", in: 1...1000)
        try OptionLimits.check(samples, "--samples", in: 1...100_000)
        try OptionLimits.check(context, "--context", in: 2...OptionLimits.tokens)
        try OptionLimits.check(maxWindows ?? 1, "--max-windows", in: 1...OptionLimits.tokens)
        try OptionLimits.check(threads: threads)
    }

    func run() throws {
        let folder = try model ?? DefaultModel.path()
        let m = try DecoderModel(path: folder, pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount))
        guard !m.moeRouters.isEmpty else { throw ModelError.invalidConfig(path: m.checkpoint.weightsPath, field: "model", reason: "has no MoE layer to analyse") }
        let tok = try Tokenizer.of(model: folder)
        let routing = try experts.override(for: m)
        var windows: [(ids: [Int], group: String)] = []
        if synthetic {
            for s in SyntheticCorpus(level: level).samples(samples, heldOut: true, seed: 11) {
                windows.append((tok.encode(s.text), s.task.rawValue))
            }
        } else {
            let plain = tok.encode("a", addSpecialTokens: false), special = tok.encode("a", addSpecialTokens: true)
            let bos = special.count > plain.count && special.last == plain.last ? special.first : nil
            for path in file {
                let ids = tok.encode(try PerplexityCommand.read(path), addSpecialTokens: false)
                let body = context - (bos == nil ? 0 : 1)
                for start in stride(from: 0, to: ids.count, by: max(1, body)) {
                    windows.append(((bos.map { [$0] } ?? []) + ids[start..<min(start + body, ids.count)], "text"))
                }
            }
            if let maxWindows { windows = Array(windows.prefix(maxWindows)) }
        }
        guard !windows.isEmpty else { throw ModelError.invalidFile(path: file.first ?? "(synthetic)", field: "(text)", reason: "no tokens to analyse") }

        // Tracing's cost: the first windows untraced, then traced.
        let probe = Array(windows.prefix(8))
        let untracedOptions = try routing.forwardOptions(for: m)
        var untraced = 0.0
        for (ids, _) in probe {
            var cache = m.makeCache(capacity: ids.count)
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try m.forward(ids, cache: &cache, lastOnly: true, options: untracedOptions)
            untraced += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        }
        let analysis = RoutingAnalysis()
        let tracedProbe = try analysis.run(model: m, windows: probe, routing: routing)
        let rest = try analysis.run(model: m, windows: Array(windows.dropFirst(probe.count)), routing: routing)

        let dir = URL(fileURLWithPath: out)
        do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
            throw ModelError.io(path: out, reason: "cannot create: \(systemReason(error))")
        }
        let layers = analysis.layers.keys.sorted().map { analysis.layers[$0]! }  // safe: keys from the same dictionary
        let report = AnalysisReport(model: model ?? "(embedded)", tokens: analysis.tokens, windows: windows.count,
                                    tokensPerS: Double(analysis.tokens) / max(tracedProbe + rest, 1e-9),
                                    traceOverhead: tracedProbe / max(untraced, 1e-9) - 1, layers: layers)
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        try AtomicFile.write(try encoder.encode(report), to: dir.appendingPathComponent("analysis.json").path)
        try AtomicFile.write(try encoder.encode(analysis.profile), to: dir.appendingPathComponent("profile.json").path)
        let pictures = AnalysisPictures.draw(layers)
        for (name, svg) in pictures { try AtomicFile.write(Data(svg.utf8), to: dir.appendingPathComponent(name).path) }
        try AtomicFile.write(Data(AnalysisPictures.html(report, pictures).utf8), to: dir.appendingPathComponent("report.html").path)
        try printJSON(AnalysisSummary(out: out, tokens: analysis.tokens, tokensPerS: report.tokensPerS, traceOverhead: report.traceOverhead,
                                      files: ["analysis.json", "profile.json", "report.html"] + pictures.map(\.name)))
    }
}

/// analysis.json.
struct AnalysisReport: Encodable {
    let model: String
    let tokens: Int
    let windows: Int
    let tokensPerS: Double
    /// Traced over untraced forward time, minus 1, on the first windows.
    let traceOverhead: Double
    let layers: [RoutingAnalysis.Layer]
}

/// What `moe analyze` prints.
struct AnalysisSummary: Encodable {
    let out: String
    let tokens: Int
    let tokensPerS: Double
    let traceOverhead: Double
    let files: [String]
}
