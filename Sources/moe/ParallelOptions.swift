import ArgumentParser
import Foundation
import MoEDistributed
import MoEModels

/// `--expert-parallel P`: under `mpirun -np P`, each rank holds 1/P of every MoE layer's routed
/// experts and runs the same tokens; rank 0 prints. Needs a `moe` built with the MPI trait.
struct ParallelOptions: ParsableArguments {
    @Option(name: .customLong("expert-parallel"),
            help: "Shard every MoE layer's routed experts over the P ranks of `mpirun -np P` (needs `swift build --traits MPI`); rank 0 prints.")
    var expertParallel: Int?

    func validate() throws {
        if let p = expertParallel { try OptionLimits.check(p, "--expert-parallel", in: 1...65_536) }
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
        if world.rank != 0 {
            let null = open("/dev/null", O_WRONLY)
            if null >= 0 { dup2(null, STDOUT_FILENO); close(null) }
        }
        let total = model.routedExpertBytes
        return Sharded(statistics: try model.shardExperts(over: world), communicator: world, expertBytesTotal: total)
        #else
        throw ValidationError("--expert-parallel needs a moe built with MPI: apt-get install libopenmpi-dev openmpi-bin, then swift build -c release --traits MPI")
        #endif
    }
}
