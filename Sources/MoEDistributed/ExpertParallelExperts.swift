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
///
/// `.partitioned` can pipeline (FSMoE's overlap): with `chunks` C > 1, each rank's experts are
/// split into C slices, chunk k being the k-th slice of every rank's experts, and while chunk
/// k's experts run, chunk k+1's rows travel out and chunk k-1's outputs travel back
/// (non-blocking all-to-alls). Chunks are whole experts, not pieces of an expert's rows, so
/// each expert still runs all its rows in one product and the outputs are bit for bit the
/// unchunked ones (the products' rounding depends on how many rows they take).
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
    /// Pieces each `.partitioned` forward is pipelined in (1: no pipeline); at most the
    /// smallest shard's expert count is used (`effectiveChunks`).
    public var chunks = 1
    /// The chunks a forward really uses: a chunk is a slice of every rank's experts, so there
    /// are no more than the fewest experts a rank holds.
    public var effectiveChunks: Int { min(chunks, shard.experts / shard.ranks) }

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
        let counts = shard.rowCounts(rowOffsets).map { $0 * d }
        let out = Tensor(uninitialized: [rows.shape[0], d])
        withExtendedLifetime(y) { comm.allGatherV(send: y.floats, receive: out.mutableFloats, counts: counts) }
        let received = counts.reduce(0, +) - counts[comm.rank]
        let end = DispatchTime.now().uptimeNanoseconds
        statistics.record(sent: counts[comm.rank] * (comm.size - 1) * 4, received: received * 4,
                          compute: computed - start, communication: end - computed, flight: end - computed, wall: end - start)
        return out
    }

    /// Each rank has its own rows: send them to their experts' ranks, run, send the outputs
    /// back; in `chunks` pieces, pipelined. All ranks start the exchanges in one order: out 0,
    /// out 1, back 0, out 2, back 1, ..., back C-1.
    private func partitioned(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let start = DispatchTime.now().uptimeNanoseconds
        let d = hiddenSize
        let pipeline = ChunkedExchange(communicator: communicator, shard: shard, rowOffsets: rowOffsets, chunks: chunks)
        let plans = pipeline.plans, c = pipeline.chunks
        var outgoing = [plans[0].startDispatch(pipeline.input(0, of: rows))], returning: [PendingRows] = []
        var compute: UInt64 = 0
        for k in 0..<c {
            if k + 1 < c { outgoing.append(plans[k + 1].startDispatch(pipeline.input(k + 1, of: rows))) }
            let owned = outgoing[k].finish()
            let computeStart = DispatchTime.now().uptimeNanoseconds
            let y = runLocal(owned, offsets: plans[k].ownedOffsets, pool: pool)
            compute += DispatchTime.now().uptimeNanoseconds - computeStart
            returning.append(plans[k].startCollect(y))
        }
        let out = c == 1 ? returning[0].finish() : Tensor(uninitialized: [rows.shape[0], d])
        if c > 1 {
            for k in 0..<c { pipeline.place(k, collected: returning[k].finish(), into: out) }
        }
        let moved = plans.reduce(0) { $0 + $1.bytesSent(width: d) + $1.bytesReceived(width: d) }
        let exchanges = outgoing + returning
        let total = DispatchTime.now().uptimeNanoseconds - start
        statistics.record(sent: moved, received: moved, compute: compute,
                          communication: exchanges.reduce(0) { $0 + $1.exposedNanoseconds },
                          flight: exchanges.reduce(0) { $0 + $1.flightNanoseconds }, wall: total)
        return out
    }

    /// The same experts, pipelined in `chunks` pieces (see the type's documentation).
    public func pipelined(chunks: Int) -> ExpertParallelExperts {
        precondition(chunks >= 1, "ExpertParallelExperts: \(chunks) chunks")
        var copy = self
        copy.chunks = chunks
        return copy
    }

    /// This rank's experts on their rows (`offsets` over all E experts, empty outside the shard).
    private func runLocal(_ rows: Tensor, offsets: [Int], pool: ThreadPool) -> Tensor {
        rows.shape[0] == 0 ? Tensor(zeros: [0, hiddenSize]) : experts.forward(rows, rowOffsets: offsets, pool: pool)
    }
}

/// What the expert-parallel exchanges of a model cost, added up over its layers and calls:
/// bytes this rank sent to and received from other ranks, and nanoseconds spent running its
/// experts, held up by the collectives (waiting for slower ranks included), with the
/// collectives in flight (overlapped with the experts or not), and in the expert layers'
/// exchange-and-run as a whole.
public final class ExchangeStatistics: @unchecked Sendable {
    private let lock = NSLock()
    private var totals = Totals()

    /// A snapshot of the running totals.
    public struct Totals: Sendable, Equatable {
        public var exchanges = 0
        public var bytesSent = 0, bytesReceived = 0
        public var computeNanoseconds: UInt64 = 0, communicationNanoseconds: UInt64 = 0
        public var flightNanoseconds: UInt64 = 0, wallNanoseconds: UInt64 = 0
    }

    public init() {}

    /// The totals so far.
    public var current: Totals { lock.withLock { totals } }

    /// Starts the totals again from zero.
    public func reset() { lock.withLock { totals = Totals() } }

    func record(sent: Int, received: Int, compute: UInt64, communication: UInt64, flight: UInt64 = 0, wall: UInt64 = 0) {
        lock.withLock {
            totals.exchanges += 1
            totals.bytesSent += sent
            totals.bytesReceived += received
            totals.computeNanoseconds += compute
            totals.communicationNanoseconds += communication
            totals.flightNanoseconds += flight
            totals.wallNanoseconds += wall
        }
    }
}
