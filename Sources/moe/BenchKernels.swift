import ArgumentParser
import Foundation
import MoE
import MoECore

/// `moe bench-kernels`: the machine's limits and the kernels measured against them, as JSON.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-kernels",
        abstract: "Measure read bandwidth, FMA peak, matvec, matmul, grouped matmul and the MoE layer; print JSON.")

    @Option(help: "Threads to run on (default: the active cores).")
    var threads: Int?

    @Flag(help: "Small sizes and few repetitions: a smoke test, not a measurement.")
    var quick = false

    @Option(parsing: .upToNextOption,
            help: "Run only these sections (matvec, matmul, grouped, moe); the machine probes always run.")
    var only: [String] = []

    @Flag(help: "Pretty-print the JSON.")
    var pretty = false

    mutating func validate() throws {
        try OptionLimits.check(threads: threads)
        for name in only where KernelBenchmark.Section(rawValue: name) == nil && name != "moe" {
            throw ValidationError("--only: unknown section '\(name)' (matvec, matmul, grouped, moe)")
        }
    }

    func run() throws {
        let pool = ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
        let sections = only.isEmpty ? Set(KernelBenchmark.Section.allCases)
            : Set(only.compactMap(KernelBenchmark.Section.init(rawValue:)))
        let kernels = KernelBenchmark.run(pool: pool, quick: quick, sections: sections)
        var layer: [MoELayerBenchmark.Entry] = []
        if only.isEmpty || only.contains("moe") {
            let shapes = quick ? [MoELayerBenchmark.Shape(experts: 4, topK: 2, hidden: 64, expertSize: 96)]
                               : MoELayerBenchmark.Shape.standard
            layer = MoELayerBenchmark.run(shapes: shapes, prefillTokens: quick ? 16 : 128, pool: pool, quick: quick)
        }
        try printJSON(BenchReport(kernels: kernels, moeLayer: layer), pretty: pretty)
    }
}

/// The kernel report with the MoE layer's figures added under `moe_layer`.
struct BenchReport: Encodable {
    let kernels: KernelBenchmark.Report
    let moeLayer: [MoELayerBenchmark.Entry]

    enum CodingKeys: String, CodingKey { case moeLayer }

    func encode(to encoder: any Encoder) throws {
        try kernels.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(moeLayer, forKey: .moeLayer)
    }
}

/// Prints `value` as one JSON object with snake_case keys on standard output.
func printJSON<T: Encodable>(_ value: T, pretty: Bool = false) throws {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    print(String(decoding: data, as: UTF8.self))
}
