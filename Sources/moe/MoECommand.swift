import ArgumentParser
import Foundation
import MoECore
import MoEDistributed

/// The `moe` command-line tool: one subcommand per job, each a thin shell over the library.
@main
struct MoECommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe",
        abstract: "MoEKit: run, route, train and benchmark Mixture-of-Experts models on the CPU.",
        version: MoEKitVersion.string,
        subcommands: [Generate.self, Train.self, Logits.self, Tokenize.self, Detokenize.self, Route.self, Bench.self, BenchKernels.self, InitRandom.self, Quantize.self, Imatrix.self, PerplexityCommand.self, Analyze.self, Prune.self, ChatTemplateCommand.self, Serve.self, Merge.self, Upcycle.self, Skills.self])

    /// Runs the command, after opting the process into keeping freed memory: every forward
    /// pass frees and reallocates the same activation buffers, and glibc would otherwise hand
    /// each back to the kernel and page-fault it in again, zeroed (about 4% of a prefill).
    static func main() async {
        Allocator.retainFreedMemory()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // One rank of several (mpirun) failing alone ends the whole job, with its message.
            let code = exitCode(for: error)
            if code != .success && MPIJob.isShared {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                MPIJob.abortIfShared(code: code.rawValue)
            }
            exit(withError: error)
        }
    }
}

/// The package version printed by `moe --version`.
enum MoEKitVersion {
    static let string = "0.1.0"
}

/// Bounds on sizes given on the command line, checked before anything is allocated.
enum OptionLimits {
    /// Tokens a command generates or benchmarks at most (2^20).
    static let tokens = 1 << 20

    /// Throws unless `threads` (when given) is in 1...ThreadPool.maxThreads.
    static func check(threads: Int?) throws {
        guard let threads else { return }
        guard (1...ThreadPool.maxThreads).contains(threads) else {
            throw ValidationError("--threads must be in 1...\(ThreadPool.maxThreads) (4 per core on this machine), got \(threads)")
        }
    }

    /// Throws unless `value` is in `range`, naming `option`.
    static func check(_ value: Int, _ option: String, in range: ClosedRange<Int>) throws {
        guard range.contains(value) else { throw ValidationError("\(option) must be in \(range.lowerBound)...\(range.upperBound), got \(value)") }
    }
}
