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
    public init(communicator: any Communicator, shard: ExpertShard, rowOffsets: [Int], statistics: ExchangeStatistics? = nil) {
        self.statistics = statistics
        let e = shard.experts, p = communicator.size
        precondition(rowOffsets.count == e + 1 && shard.ranks == p, "RowExchange: \(rowOffsets.count) offsets for \(e) experts, \(p) ranks")
        self.communicator = communicator
        self.shard = shard
        localRows = rowOffsets[e]
        let counts = communicator.allGather((0..<e).map { Int64(rowOffsets[$0 + 1] - rowOffsets[$0]) }).map { Int($0) }
        func count(_ r: Int, _ x: Int) -> Int { counts[r * e + x] }
        let mine = shard.experts(of: communicator.rank)
        sendRows = (0..<p).map { q in
            let r = shard.experts(of: q)
            return rowOffsets[r.upperBound] - rowOffsets[r.lowerBound]
        }
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

    /// This rank's grouped rows [R, width] -> the rows its experts receive, [R', width].
    public func dispatch(_ rows: Tensor) -> Tensor {
        let width = rows.rowStride
        precondition(rows.dtype == .f32 && rows.shape[0] == localRows, "RowExchange.dispatch: rows \(rows.shape), \(localRows) expected")
        var inbox = [Float](repeating: 0, count: receiveRows.reduce(0, +) * width)
        let start = DispatchTime.now().uptimeNanoseconds
        inbox.withUnsafeMutableBufferPointer { box in
            communicator.allToAllV(send: rows.floats, sendCounts: sendRows.map { $0 * width },
                                   receive: box, receiveCounts: receiveRows.map { $0 * width })
        }
        statistics?.record(sent: bytesSent(width: width), received: bytesReceived(width: width), compute: 0,
                           communication: DispatchTime.now().uptimeNanoseconds - start)
        let owned = Tensor(uninitialized: [ownedRows, width])
        inbox.withUnsafeBufferPointer { box in
            let to = owned.mutableFloats.baseAddress
            for b in blocks where b.count > 0 { (to! + b.owned * width).update(from: box.baseAddress! + b.source * width, count: b.count * width) }
        }
        return owned
    }

    /// Rows computed for the received rows, [R', width] -> back on the ranks that sent them,
    /// in each rank's own order: [R, width].
    public func collect(_ owned: Tensor) -> Tensor {
        let width = owned.rowStride
        precondition(owned.dtype == .f32 && owned.shape[0] == ownedRows, "RowExchange.collect: rows \(owned.shape), \(ownedRows) expected")
        var outbox = [Float](repeating: 0, count: receiveRows.reduce(0, +) * width)
        outbox.withUnsafeMutableBufferPointer { box in
            let from = owned.floats.baseAddress
            for b in blocks where b.count > 0 { (box.baseAddress! + b.source * width).update(from: from! + b.owned * width, count: b.count * width) }
        }
        let back = Tensor(uninitialized: [localRows, width])
        let start = DispatchTime.now().uptimeNanoseconds
        outbox.withUnsafeBufferPointer { box in
            communicator.allToAllV(send: box, sendCounts: receiveRows.map { $0 * width },
                                   receive: back.mutableFloats, receiveCounts: sendRows.map { $0 * width })
        }
        statistics?.record(sent: bytesReceived(width: width), received: bytesSent(width: width), compute: 0,
                           communication: DispatchTime.now().uptimeNanoseconds - start)
        return back
    }

    /// Bytes this rank sends to other ranks in one `dispatch` of rows of `width` floats (a
    /// `collect` sends what the others' dispatches sent here).
    public func bytesSent(width: Int) -> Int { (sendRows.reduce(0, +) - sendRows[communicator.rank]) * width * 4 }
    /// Bytes this rank receives from other ranks in one `dispatch` of rows of `width` floats.
    public func bytesReceived(width: Int) -> Int { (receiveRows.reduce(0, +) - receiveRows[communicator.rank]) * width * 4 }
}
