import ArgumentParser
import Foundation
import MoEDistributed
import MoEModels
import MoE
import MoETrain

/// `--expert-parallel P`: under `mpirun -np P`, each rank holds 1/P of every MoE layer's routed
/// experts and runs the same tokens; rank 0 prints. Needs a `moe` built with the MPI trait.
struct ParallelOptions: ParsableArguments {
    @Option(name: .customLong("expert-parallel"),
            help: "Shard every MoE layer's routed experts over the P ranks of `mpirun -np P` (needs `swift build --traits MPI`); rank 0 prints.")
    var expertParallel: Int?

    @Option(name: .customLong("expert-rows"),
            help: "With --expert-parallel: replicated (every rank runs the same tokens; its experts' outputs are all-gathered) or partitioned (rows go to their experts' ranks and back by all-to-all, as when each rank serves its own tokens).")
    var expertRows: ExpertRows = .replicated

    @Option(name: .customLong("overlap-chunks"),
            help: "With --expert-rows partitioned: pipeline each expert layer in N slices of the experts, so that one slice's rows travel while another's run (FSMoE).")
    var overlapChunks: Int = 1

    /// How rows reach their experts' ranks (`ExpertParallelExperts.Mode`).
    enum ExpertRows: String, ExpressibleByArgument, CaseIterable {
        case replicated, partitioned
        var mode: ExpertParallelExperts.Mode { self == .replicated ? .replicated : .partitioned }
    }

    func validate() throws {
        if let p = expertParallel { try OptionLimits.check(p, "--expert-parallel", in: 1...65_536) }
        try OptionLimits.check(overlapChunks, "--overlap-chunks", in: 1...1024)
        if expertParallel == nil && (expertRows != .replicated || overlapChunks != 1) {
            throw ValidationError("--expert-rows and --overlap-chunks need --expert-parallel")
        }
        if overlapChunks != 1 && expertRows != .partitioned {
            throw ValidationError("--overlap-chunks pipelines the all-to-all of --expert-rows partitioned; replicated rows have none")
        }
    }

    /// A model sharded over ranks: what its exchanges cost, and the ranks.
    struct Sharded {
        let statistics: ExchangeStatistics
        let communicator: any Communicator
        /// Bytes of the model's routed experts over all ranks.
        let expertBytesTotal: Int
    }

    /// Shards `model`'s experts over the MPI ranks, when asked; nil otherwise. Ranks other
    /// than 0 write nothing to standard output from here on.
    @discardableResult
    func apply(to model: DecoderModel) throws -> Sharded? {
        guard let p = expertParallel else { return nil }
        #if MPI
        let world = MPICommunicator.world
        guard world.size == p else {
            throw ValidationError("--expert-parallel \(p): this job has \(world.size) rank(s); start it with mpirun -np \(p)")
        }
        Self.quietUnlessLead(world)
        let total = model.routedExpertBytes
        return Sharded(statistics: try model.shardExperts(over: world, mode: expertRows.mode, chunks: overlapChunks),
                       communicator: world, expertBytesTotal: total)
        #else
        throw ValidationError("--expert-parallel needs a moe built with MPI: apt-get install libopenmpi-dev openmpi-bin, then swift build -c release --traits MPI")
        #endif
    }

    /// The MPI ranks `moe train` runs on when `mpirun` started more than one (its environment
    /// says so), or nil. `Trainer.join` checks the config fits them. Ranks other than 0 write
    /// nothing to standard output.
    static func trainingRanks(config: TrainingConfig, path: String) throws -> (any Communicator)? {
        let env = ProcessInfo.processInfo.environment
        guard let size = (env["OMPI_COMM_WORLD_SIZE"] ?? env["PMI_SIZE"]).flatMap({ Int($0) }), size > 1 else {
            if config.expertParallel > 1 {
                throw MoEError.invalidConfig(path: path, field: "expert_parallel",
                                             reason: "\(config.expertParallel) ranks: start moe train with mpirun -np \(config.expertParallel)")
            }
            return nil
        }
        guard config.dataParallel else {
            throw MoEError.invalidConfig(path: path, field: "data_parallel",
                                         reason: "mpirun started \(size) ranks: set data_parallel to true, so that each rank trains a shard of every batch")
        }
        guard config.batch % size == 0 else {
            throw MoEError.invalidConfig(path: path, field: "batch", reason: "\(config.batch) sequences do not divide among \(size) ranks")
        }
        #if MPI
        let world = MPICommunicator.world
        Self.quietUnlessLead(world)
        return world
        #else
        throw ValidationError("moe train under mpirun (\(size) ranks) needs a moe built with MPI: swift build -c release --traits MPI")
        #endif
    }
}

extension ParallelOptions {
    /// The chunk counts `moe bench` compares under partitioned rows: 1, then doubling up to
    /// `--overlap-chunks` (and it), or none without a pipeline asked for.
    var overlapSeries: [Int] {
        guard expertRows == .partitioned, overlapChunks > 1 else { return [] }
        var series = [1], c = 2
        while c < overlapChunks { series.append(c); c *= 2 }
        return series + [overlapChunks]
    }
}

extension ParallelOptions {
    /// On ranks other than 0, points standard output at /dev/null: rank 0 alone prints.
    static func quietUnlessLead(_ world: any Communicator) {
        guard world.rank != 0 else { return }
        let null = open("/dev/null", O_WRONLY)
        if null >= 0 { dup2(null, STDOUT_FILENO); close(null) }
    }
}
