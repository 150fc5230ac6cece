import Dispatch
import MoECore

// Dimension legend: R this rank's routed rows (grouped by expert), R' the rows of this rank's
// experts from every rank, E experts, P ranks.

/// One MoE layer's rows moving between ranks under expert parallelism, for one step: built from
/// this rank's per-expert row offsets (the counts of every rank are exchanged first, with
/// `allGather`), it sends rows of any width to the ranks that hold their experts (`dispatch`,
/// one `allToAllV`) and brings rows computed there back (`collect`). The same plan serves the
/// forward pass (inputs out, outputs back) and the backward (output gradients out, input
/// gradients and weight gradients back).
///
/// On the expert's rank the rows are grouped by expert, and within an expert by source rank in
/// rank order, each rank's rows in its own order: `ownedOffsets` gives each expert's range.
public final class RowExchange {
    public let communicator: any Communicator
    public let shard: ExpertShard
    /// Rows (in rows, not values) this rank sends to each rank, and receives from each.
    let sendRows: [Int], receiveRows: [Int]
    /// Source-major blocks of received rows: (offset in the received order, offset in the
    /// expert-major order, rows).
    let blocks: [(source: Int, owned: Int, count: Int)]
    /// Offsets over all E experts into the rows this rank's experts receive (R'): empty
    /// ranges outside this rank's shard.
    public let ownedOffsets: [Int]
    /// Rows this rank's experts receive (R'), and rows this rank sent (R).
    public var ownedRows: Int { ownedOffsets.last ?? 0 }
    public let localRows: Int
    /// Where each exchange adds the bytes it sends and receives and its time in the
    /// collectives, or nil.
    let statistics: ExchangeStatistics?

    /// The plan for rows grouped by `rowOffsets` (E + 1 offsets) on this rank. Every rank must
    /// build one at the same point (it exchanges the counts).
    public convenience init(communicator: any Communicator, shard: ExpertShard, rowOffsets: [Int], statistics: ExchangeStatistics? = nil) {
        let plans = Self.plans(communicator: communicator, shard: shard, chunkOffsets: [rowOffsets], statistics: statistics)
        self.init(copying: plans[0])
    }

    /// One plan per chunk of this rank's rows (`chunkOffsets[c]`: chunk c's E + 1 offsets, the
    /// same number of chunks on every rank), with the counts of all of them exchanged in one
    /// `allGather`: the chunks' exchanges can then be started one after another without
    /// waiting for each other's counts. Every rank must call it at the same point.
    public static func plans(communicator: any Communicator, shard: ExpertShard, chunkOffsets: [[Int]],
                             statistics: ExchangeStatistics? = nil) -> [RowExchange] {
        let e = shard.experts, p = communicator.size
        precondition(shard.ranks == p && chunkOffsets.allSatisfy { $0.count == e + 1 },
                     "RowExchange: offsets for \(e) experts, \(p) ranks expected")
        let local = chunkOffsets.flatMap { o in (0..<e).map { Int64(o[$0 + 1] - o[$0]) } }
        let all = communicator.allGather(local).map { Int($0) }
        let chunks = chunkOffsets.count
        precondition(all.count == p * chunks * e, "RowExchange: ranks split their rows into different numbers of chunks")
        return chunkOffsets.indices.map { c in
            RowExchange(communicator: communicator, shard: shard, rowOffsets: chunkOffsets[c], statistics: statistics) { r, x in
                all[(r * chunks + c) * e + x]
            }
        }
    }

    /// The plan from every rank's per-expert row counts (`count(rank, expert)`).
    private init(communicator: any Communicator, shard: ExpertShard, rowOffsets: [Int], statistics: ExchangeStatistics?,
                 count: (Int, Int) -> Int) {
        self.statistics = statistics
        let e = shard.experts, p = communicator.size
        self.communicator = communicator
        self.shard = shard
        localRows = rowOffsets[e]
        let mine = shard.experts(of: communicator.rank)
        sendRows = shard.rowCounts(rowOffsets)
        receiveRows = (0..<p).map { r in mine.reduce(0) { $0 + count(r, $1) } }
        var offsets = [Int](repeating: 0, count: e + 1), total = 0
        for x in 0..<e {
            offsets[x] = total
            if mine.contains(x) { total += (0..<p).reduce(0) { $0 + count($1, x) } }
        }
        offsets[e] = total
        ownedOffsets = offsets
        var blocks: [(Int, Int, Int)] = [], source = 0
        for r in 0..<p {
            for x in mine {
                blocks.append((source, offsets[x] + (0..<r).reduce(0) { $0 + count($1, x) }, count(r, x)))
                source += count(r, x)
            }
        }
        self.blocks = blocks
    }

    private init(copying plan: RowExchange) {
        communicator = plan.communicator
        shard = plan.shard
        sendRows = plan.sendRows
        receiveRows = plan.receiveRows
        blocks = plan.blocks
        ownedOffsets = plan.ownedOffsets
        localRows = plan.localRows
        statistics = plan.statistics
    }

    /// This rank's grouped rows [R, width] -> the rows its experts receive, [R', width].
    public func dispatch(_ rows: Tensor) -> Tensor { startDispatch(rows).finish() }

    /// Rows computed for the received rows, [R', width] -> back on the ranks that sent them,
    /// in each rank's own order: [R, width].
    public func collect(_ owned: Tensor) -> Tensor { startCollect(owned).finish() }

    /// Starts `dispatch` (a non-blocking all-to-all); `finish()` gives its result.
    public func startDispatch(_ rows: Tensor) -> PendingRows {
        let width = rows.rowStride
        precondition(rows.dtype == .f32 && rows.shape[0] == localRows, "RowExchange.dispatch: rows \(rows.shape), \(localRows) expected")
        let inbox = Tensor(uninitialized: [receiveRows.reduce(0, +), width])
        let start = DispatchTime.now().uptimeNanoseconds
        let request = communicator.startAllToAllV(send: rows.floats, sendCounts: sendRows.map { $0 * width },
                                                  receive: inbox.mutableFloats, receiveCounts: receiveRows.map { $0 * width })
        return PendingRows(request: request, buffers: [rows, inbox], started: start) { [self] waited in
            statistics?.record(sent: bytesSent(width: width), received: bytesReceived(width: width), compute: 0, communication: waited)
            let owned = Tensor(uninitialized: [ownedRows, width])
            let from = inbox.floats.baseAddress, to = owned.mutableFloats.baseAddress
            for b in blocks where b.count > 0 { (to! + b.owned * width).update(from: from! + b.source * width, count: b.count * width) }
            return owned
        }
    }

    /// Starts `collect` (a non-blocking all-to-all); `finish()` gives its result.
    public func startCollect(_ owned: Tensor) -> PendingRows {
        let width = owned.rowStride
        precondition(owned.dtype == .f32 && owned.shape[0] == ownedRows, "RowExchange.collect: rows \(owned.shape), \(ownedRows) expected")
        let outbox = Tensor(uninitialized: [receiveRows.reduce(0, +), width])
        let from = owned.floats.baseAddress, to = outbox.mutableFloats.baseAddress
        for b in blocks where b.count > 0 { (to! + b.source * width).update(from: from! + b.owned * width, count: b.count * width) }
        let back = Tensor(uninitialized: [localRows, width])
        let start = DispatchTime.now().uptimeNanoseconds
        let request = communicator.startAllToAllV(send: outbox.floats, sendCounts: receiveRows.map { $0 * width },
                                                  receive: back.mutableFloats, receiveCounts: sendRows.map { $0 * width })
        return PendingRows(request: request, buffers: [outbox, back], started: start) { [self] waited in
            statistics?.record(sent: bytesReceived(width: width), received: bytesSent(width: width), compute: 0, communication: waited)
            return back
        }
    }

    /// Bytes this rank sends to other ranks in one `dispatch` of rows of `width` floats (a
    /// `collect` sends what the others' dispatches sent here).
    public func bytesSent(width: Int) -> Int { (sendRows.reduce(0, +) - sendRows[communicator.rank]) * width * 4 }
    /// Bytes this rank receives from other ranks in one `dispatch` of rows of `width` floats.
    public func bytesReceived(width: Int) -> Int { (receiveRows.reduce(0, +) - receiveRows[communicator.rank]) * width * 4 }
}

/// Rows on their way between ranks (`RowExchange.startDispatch`, `startCollect`): the
/// exchange's buffers stay alive until `finish()`, which waits for it and returns the rows.
public final class PendingRows {
    private let request: any PendingCollective
    private var buffers: [Tensor]
    private let started: UInt64
    private var result: ((UInt64) -> Tensor)?
    /// Nanoseconds from the start of the exchange to when it was first seen done (by the
    /// progress thread, every 50 µs, or by `finish()`): the time it was in flight, overlapped
    /// with other work or not.
    public private(set) var flightNanoseconds: UInt64 = 0
    /// Nanoseconds this rank was held up by it: in the call that started it (all of it, for a
    /// communicator whose exchanges finish as they start) and in `finish()` waiting for it.
    /// The part of the exchange not hidden behind other work.
    public private(set) var exposedNanoseconds: UInt64 = 0
    private let postNanoseconds: UInt64

    init(request: any PendingCollective, buffers: [Tensor], started: UInt64, result: @escaping (UInt64) -> Tensor) {
        self.request = request
        self.buffers = buffers
        self.started = started
        self.result = result
        postNanoseconds = DispatchTime.now().uptimeNanoseconds - started
    }

    /// Lets MPI move the data along (between pieces of other work); whether it has arrived.
    @discardableResult
    public func poll() -> Bool { request.test() }

    /// Waits for the exchange and returns its rows (once: a second call is a bug).
    public func finish() -> Tensor {
        guard let result else { preconditionFailure("PendingRows.finish called twice") }
        let waitStart = DispatchTime.now().uptimeNanoseconds
        request.wait()
        let end = DispatchTime.now().uptimeNanoseconds
        exposedNanoseconds = postNanoseconds + (end - waitStart)
        // At least the time it held this rank up (the start and wait calls' own overhead).
        flightNanoseconds = max(min(request.finishedAt ?? end, end) - started, exposedNanoseconds)
        self.result = nil
        defer { buffers = [] }
        return result(exposedNanoseconds)
    }
}
