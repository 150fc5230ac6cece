import Foundation
import MoE
import MoECore

// Dimension legend: R routed rows (grouped by expert), d hidden size, E experts, P ranks.

/// One MoE layer's routed experts, sharded over the ranks of a `Communicator`: this rank runs
/// only the experts `shard.experts(of: rank)` (the others' weights are never read, so a
/// memory-mapped checkpoint never brings them in), and rows travel to the rank that holds
/// their expert and back. DeepSpeed-MoE's expert parallelism, behind the `ExpertFFN` seam, so
/// any router, capacity drops and null experts (ragged counts) work unchanged.
///
/// Two ways the ranks' rows relate:
/// - `.replicated` (inference: every rank runs the same tokens through replicated attention):
///   every rank already holds every row, so each runs its experts' rows and one
///   `allGatherV` returns every expert's output to every rank.
/// - `.partitioned` (data parallel: each rank has its own tokens): each rank's per-expert row
///   counts are exchanged first (`allGather`), then one `allToAllV` sends each row to its
///   expert's rank, the experts run there on the rows of every rank (grouped by expert, ranks
///   in order), and a second `allToAllV` sends the outputs back.
///
/// Either way each expert sees the rows a single process would give it, in the same order
/// (in `.replicated`), so the outputs are bit for bit the single process's.
public struct ExpertParallelExperts: ExpertFFN {
    /// How the ranks' rows relate (see the type's documentation).
    public enum Mode: Sendable { case replicated, partitioned }

    /// The layer's experts; only this rank's are ever run.
    public let experts: any ExpertFFN
    public let shard: ExpertShard
    public let communicator: any Communicator
    public let mode: Mode
    /// What the exchanges cost (shared by the layers of a model).
    public let statistics: ExchangeStatistics

    public var expertCount: Int { experts.expertCount }
    public var hiddenSize: Int { experts.hiddenSize }
    /// Every rank takes part in every exchange, with rows or without.
    public var isCollective: Bool { true }

    /// Shards `experts` over `communicator`'s ranks; nil when there are fewer experts than ranks.
    public init?(_ experts: any ExpertFFN, communicator: any Communicator, mode: Mode,
                 statistics: ExchangeStatistics = ExchangeStatistics()) {
        guard let shard = ExpertShard(experts: experts.expertCount, ranks: communicator.size) else { return nil }
        self.experts = experts
        self.shard = shard
        self.communicator = communicator
        self.mode = mode
        self.statistics = statistics
    }

    /// This rank's experts' bytes: what a rank reads, not the layer's.
    public func weightBytes(expert: Int) -> Int {
        shard.experts(of: communicator.rank).contains(expert) ? experts.weightBytes(expert: expert) : 0
    }

    public func forward(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        precondition(rowOffsets.count == expertCount + 1 && rows.shape == [rowOffsets[expertCount], hiddenSize],
                     "ExpertParallelExperts: rows \(rows.shape), \(rowOffsets.count) offsets")
        switch mode {
        case .replicated: return replicated(rows, rowOffsets: rowOffsets, pool: pool)
        case .partitioned: return partitioned(rows, rowOffsets: rowOffsets, pool: pool)
        }
    }

    /// Every rank holds every row: run this rank's experts' rows, all-gather the outputs.
    private func replicated(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let d = hiddenSize, comm = communicator
        let mine = shard.experts(of: comm.rank)
        let (lo, hi) = (rowOffsets[mine.lowerBound], rowOffsets[mine.upperBound])
        let start = DispatchTime.now().uptimeNanoseconds
        let y = runLocal(rows.rows(lo..<hi), offsets: rowOffsets.map { min(max($0 - lo, 0), hi - lo) }, pool: pool)
        let computed = DispatchTime.now().uptimeNanoseconds
        let counts = (0..<comm.size).map { q in
            let r = shard.experts(of: q)
            return (rowOffsets[r.upperBound] - rowOffsets[r.lowerBound]) * d
        }
        let out = Tensor(uninitialized: [rows.shape[0], d])
        withExtendedLifetime(y) { comm.allGatherV(send: y.floats, receive: out.mutableFloats, counts: counts) }
        let received = counts.reduce(0, +) - counts[comm.rank]
        statistics.record(sent: counts[comm.rank] * (comm.size - 1) * 4, received: received * 4,
                          compute: computed - start, communication: DispatchTime.now().uptimeNanoseconds - computed)
        return out
    }

    /// Each rank has its own rows: send them to their experts' ranks, run, send the outputs back.
    private func partitioned(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let start = DispatchTime.now().uptimeNanoseconds
        let exchange = RowExchange(communicator: communicator, shard: shard, rowOffsets: rowOffsets)
        let owned = exchange.dispatch(rows)
        let computeStart = DispatchTime.now().uptimeNanoseconds
        let y = runLocal(owned, offsets: exchange.ownedOffsets, pool: pool)
        let computed = DispatchTime.now().uptimeNanoseconds
        let out = exchange.collect(y)
        let d = hiddenSize, moved = exchange.bytesSent(width: d) + exchange.bytesReceived(width: d)
        statistics.record(sent: moved, received: moved, compute: computed - computeStart,
                          communication: (computeStart - start) + (DispatchTime.now().uptimeNanoseconds - computed))
        return out
    }

    /// This rank's experts on their rows (`offsets` over all E experts, empty outside the shard).
    private func runLocal(_ rows: Tensor, offsets: [Int], pool: ThreadPool) -> Tensor {
        rows.shape[0] == 0 ? Tensor(zeros: [0, hiddenSize]) : experts.forward(rows, rowOffsets: offsets, pool: pool)
    }
}

/// What the expert-parallel exchanges of a model cost, added up over its layers and calls:
/// bytes this rank sent to and received from other ranks, and nanoseconds spent running its
/// experts and in the collectives (waiting for slower ranks included).
public final class ExchangeStatistics: @unchecked Sendable {
    private let lock = NSLock()
    private var totals = Totals()

    /// A snapshot of the running totals.
    public struct Totals: Sendable, Equatable {
        public var exchanges = 0
        public var bytesSent = 0, bytesReceived = 0
        public var computeNanoseconds: UInt64 = 0, communicationNanoseconds: UInt64 = 0
    }

    public init() {}

    /// The totals so far.
    public var current: Totals { lock.withLock { totals } }

    /// Starts the totals again from zero.
    public func reset() { lock.withLock { totals = Totals() } }

    func record(sent: Int, received: Int, compute: UInt64, communication: UInt64) {
        lock.withLock {
            totals.exchanges += 1
            totals.bytesSent += sent
            totals.bytesReceived += received
            totals.computeNanoseconds += compute
            totals.communicationNanoseconds += communication
        }
    }
}
