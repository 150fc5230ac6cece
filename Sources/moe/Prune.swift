import ArgumentParser
import Foundation
import MoECore
import MoEGenerate
import MoEModels

/// `moe prune`: a smaller checkpoint without each MoE layer's least-used experts, and what it
/// costs on a text (perplexity before and after, KL-divergence, top-1 agreement).
struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint without each MoE layer's least-used experts (by a profile.json of moe analyze); report the perplexity and KL change on a text.")

    @Option(help: "Checkpoint folder or GGUF file (of a split set, the first; default: the embedded model).") var model: String?
    @Option(help: "profile.json written by moe analyze.") var profile: String
    @Option(help: "Experts to keep in every MoE layer.") var keep: Int?
    @Option(name: .customLong("keep-fraction"), help: "Fraction of the experts to keep in every MoE layer.") var keepFraction: Double?
    @Option(help: "Output folder, or GGUF file for a GGUF model (must not exist).") var out: String
    @Option(name: .customLong("eval-file"), help: "A text to measure the change on (perplexity before and after, KL, top-1 agreement).")
    var evalFile: String?
    @Option(help: "Tokens per window for --eval-file.") var context = 512
    @Option(help: "Threads to run on (default: the active cores).") var threads: Int?

    mutating func validate() throws {
        if (keep == nil) == (keepFraction == nil) { throw ValidationError("give one of --keep or --keep-fraction") }
        if let keep, keep < 1 { throw ValidationError("--keep must be at least 1, got \(keep)") }
        if let f = keepFraction, !(f > 0 && f <= 1) { throw ValidationError("--keep-fraction must be in (0, 1], got \(f)") }
        try OptionLimits.check(context, "--context", in: 2...OptionLimits.tokens)
        try OptionLimits.check(threads: threads)
    }

    func run() throws {
        let folder = try model ?? DefaultModel.path()
        let pool = ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
        let isFolder = (try? FileManager.default.attributesOfItem(atPath: folder)[.type] as? FileAttributeType) == .typeDirectory
        let base = try DecoderModel(path: folder, pool: pool)
        let p = try ExpertProfile.load(path: profile, for: base)
        let experts = base.spec.experts
        let kept = min(experts, keep ?? max(1, Int((keepFraction ?? 1) * Double(experts) + 0.5)))
        let groups = max(1, base.spec.groups)
        guard kept % groups == 0 else {
            throw ModelError.invalidConfig(path: folder, field: "--keep", reason: "\(kept) does not split over the model's \(groups) expert groups; keep a multiple of \(groups)")
        }
        let skipped = p.skipped(keep: kept, perLayer: true, minimum: 1, groups: groups)
        if isFolder {
            try ExpertPruner.prune(source: try Checkpoint(directory: folder), spec: base.spec, skipped: skipped, out: out)
        } else {
            try ExpertPruner.prune(source: try GGUFFile(path: folder), skipped: skipped, out: out)
        }
        let pruned = try DecoderModel(path: out, pool: pool)
        var report = PruneReport(out: out, expertsBefore: experts, expertsAfter: pruned.spec.experts,
                                 skipped: Dictionary(uniqueKeysWithValues: skipped.map { (String($0.key), $0.value.sorted()) }),
                                 bytesBefore: Self.bytes(folder), bytesAfter: Self.bytes(out))
        if let evalFile {
            let tok = try Tokenizer.of(model: folder)
            let tokens = tok.encode(try PerplexityCommand.read(evalFile))
            let stride = max(1, context / 2)
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-prune-\(getpid()).lp").path
            defer { unlink(scratch) }
            let writer = try LogProbFile.Writer(path: scratch, vocab: base.spec.vocabSize, tokens: tokens)
            let before = try Perplexity.run(model: base, tokens: tokens, context: context, stride: stride) { pos, lp throws(ModelError) in
                try writer.append(position: pos, logProbs: lp)
            }
            try writer.finish(tokenCount: tokens.count)
            let reader = try LogProbFile.Reader(path: scratch)
            var comparison = DistributionComparison()
            let after = try Perplexity.run(model: pruned, tokens: tokens, context: context, stride: stride) { _, lp in
                comparison.add(base: reader.row(comparison.positions).logProbs, current: lp)
            }
            report.perplexityBefore = before.perplexity
            report.perplexityAfter = after.perplexity
            report.klDivergence = comparison.meanKL
            report.top1Agreement = comparison.top1Agreement
        }
        try printJSON(report)
    }

    /// Bytes of a GGUF file, or of the safetensors files in a folder.
    static func bytes(_ folder: String) -> Int {
        if let size = (try? FileManager.default.attributesOfItem(atPath: folder))?[.size] as? Int,
           (try? FileManager.default.attributesOfItem(atPath: folder)[.type] as? FileAttributeType) != .typeDirectory { return size }
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".safetensors") }.reduce(0) {
            $0 + ((try? FileManager.default.attributesOfItem(atPath: (folder as NSString).appendingPathComponent($1))[.size] as? Int) ?? 0)
        }
    }
}

/// What `moe prune` prints.
struct PruneReport: Encodable {
    let out: String
    let expertsBefore: Int
    let expertsAfter: Int
    /// Per MoE layer, the experts removed (ids in the original).
    let skipped: [String: [Int]]
    let bytesBefore: Int
    let bytesAfter: Int
    var perplexityBefore: Double?
    var perplexityAfter: Double?
    var klDivergence: Double?
    var top1Agreement: Double?
}
