import ArgumentParser
import Foundation
import MoECore
import MoEModels

/// `moe logits`: the model's vocabulary logits for every position of a token sequence.
struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Print the model's logits for every input position as JSON: {\"tokens\": [..], \"logits\": [[..], ..]}.")

    @Option(help: "Hugging Face checkpoint folder (config.json, *.safetensors) or GGUF file (of a split set, the first; default: the embedded model).")
    var model: String?

    @Option(help: "Comma-separated token ids, e.g. 1,2,3.")
    var tokens: String

    @Option(help: "Threads to run on (default: the active cores).")
    var threads: Int?

    @OptionGroup var precision: PrecisionOption
    @OptionGroup var experts: ExpertOptions
    @OptionGroup(title: "Memory") var memory: MemoryOptions
    @OptionGroup(title: "Parallel (under mpirun)") var parallel: ParallelOptions
    @OptionGroup(title: "Adapters") var adapter: AdapterOptions

    mutating func validate() throws {
        try OptionLimits.check(threads: threads)
        _ = try parseTokenList(tokens, option: "--tokens")
    }

    func run() throws {
        let ids = try parseTokenList(tokens, option: "--tokens")
        let path = try model ?? DefaultModel.path()
        precision.apply(model: path)
        let m = try adapter.load(path, pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount))
        try memory.apply(to: m)
        try parallel.apply(to: m)
        var cache = m.makeCache(capacity: ids.count)
        let logits = try m.forward(ids, cache: &cache, options: try experts.override(for: m).forwardOptions(for: m))
        let v = m.spec.vocabSize, values = logits.floats
        let rows = (0..<ids.count).map { Array(values[($0 * v)..<(($0 + 1) * v)]) }
        try printJSON(LogitsReport(tokens: ids, logits: rows))
    }
}

/// What `moe logits` prints.
struct LogitsReport: Encodable {
    let tokens: [Int]
    let logits: [[Float]]
}

/// Parses "1,2,3" into token ids; throws a ValidationError naming `option` otherwise.
func parseTokenList(_ text: String, option: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    guard !parts.isEmpty, !(parts.count == 1 && parts[0].isEmpty) else { throw ValidationError("\(option): give at least one token id") }
    return try parts.map { part in
        guard let id = Int(part), id >= 0 else { throw ValidationError("\(option): '\(part)' is not a non-negative integer") }
        return id
    }
}
