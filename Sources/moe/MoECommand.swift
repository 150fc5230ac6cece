import ArgumentParser
import MoECore

/// The `moe` command-line tool: one subcommand per job, each a thin shell over the library.
@main
struct MoECommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe",
        abstract: "MoEKit: run, route, train and benchmark Mixture-of-Experts models on the CPU.",
        version: MoEKitVersion.string,
        subcommands: [Generate.self, Train.self, Logits.self, Tokenize.self, Detokenize.self, Route.self, Bench.self, BenchKernels.self, InitRandom.self, Quantize.self])
}

/// The package version printed by `moe --version`.
enum MoEKitVersion {
    static let string = "0.1.0"
}
