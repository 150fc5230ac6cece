import MoECore

// Dimension legend: R this rank's routed rows (grouped by expert), R' the rows of this rank's
// experts from every rank, E experts, P ranks, C chunks.

/// One MoE layer's all-to-all split into chunks, so that one chunk's rows travel while another's
/// experts run (FSMoE's pipeline). Chunk k is slice k of every rank's experts (each rank's
/// experts cut into C contiguous slices), so every rank has work in every chunk, and an
/// expert's rows all travel in one chunk: each expert still runs all its rows in one product.
///
/// The chunks' plans come from one `allGather` of counts, as does `whole`, the unchunked plan
/// over the same rows: its received layout is the chunks' received rows one after another
/// (`ownedRange`), so a layer can receive chunk by chunk into one tensor and run the backward
/// on it as if unchunked. All ranks must start the chunks' exchanges in the same order.
public final class ChunkedExchange {
    /// Chunks (at most the fewest experts a rank holds).
    public let chunks: Int
    /// Each chunk's plan: its `dispatch` gives the rows `ownedRange(k)` of `whole`'s layout.
    public let plans: [RowExchange]
    /// The unchunked plan over the same rows.
    public let whole: RowExchange
    private let rowOffsets: [Int], chunkOffsets: [[Int]], chunkOf: [Int]

    /// The plans for rows grouped by `rowOffsets` (E + 1 offsets) in `chunks` chunks (capped at
    /// the fewest experts a rank holds). Every rank must build it at the same point.
    public init(communicator: any Communicator, shard: ExpertShard, rowOffsets: [Int], chunks: Int,
                statistics: ExchangeStatistics? = nil) {
        let e = shard.experts, c = max(1, min(chunks, shard.experts / shard.ranks))
        self.chunks = c
        self.rowOffsets = rowOffsets
        chunkOf = (0..<e).map { x in
            let held = shard.experts(of: shard.owner(of: x))
            return (x - held.lowerBound) * c / held.count
        }
        let chunkOf = self.chunkOf
        chunkOffsets = (0..<c).map { k in
            var offsets = [0]
            for x in 0..<e { offsets.append(offsets[x] + (chunkOf[x] == k ? rowOffsets[x + 1] - rowOffsets[x] : 0)) }
            return offsets
        }
        let all = RowExchange.plans(communicator: communicator, shard: shard, chunkOffsets: chunkOffsets + [rowOffsets],
                                    statistics: statistics)
        plans = Array(all.prefix(c))
        whole = all[c]
    }

    /// This rank's experts in chunk k (a contiguous slice of its shard).
    public func experts(_ k: Int) -> Range<Int> {
        let mine = whole.shard.experts(of: whole.communicator.rank)
        let inChunk = mine.filter { chunkOf[$0] == k }
        return (inChunk.first ?? mine.lowerBound)..<((inChunk.last ?? mine.lowerBound - 1) + 1)
    }

    /// The rows of `whole`'s received layout [R', width] that chunk k brings.
    public func ownedRange(_ k: Int) -> Range<Int> {
        let x = experts(k)
        return whole.ownedOffsets[x.lowerBound]..<whole.ownedOffsets[x.upperBound]
    }

    /// Chunk k of this rank's grouped rows [R, width], grouped by expert: the rows of every
    /// rank's slice k (`rows` itself when there is one chunk).
    public func input(_ k: Int, of rows: Tensor) -> Tensor {
        if chunks == 1 { return rows }
        let width = rows.rowStride, e = chunkOf.count
        let t = Tensor(uninitialized: [chunkOffsets[k][e], width])
        let from = rows.floats.baseAddress, to = t.mutableFloats.baseAddress
        for x in 0..<e where chunkOf[x] == k && rowOffsets[x + 1] > rowOffsets[x] {
            (to! + chunkOffsets[k][x] * width).update(from: from! + rowOffsets[x] * width, count: (rowOffsets[x + 1] - rowOffsets[x]) * width)
        }
        return t
    }

    /// Waits for chunk k's dispatch (`pending`, from `plans[k].startDispatch`) and puts its rows
    /// in their place, `ownedRange(k)`, of `owned`, a tensor in `whole`'s received layout.
    public func receive(_ k: Int, _ pending: PendingRows, into owned: Tensor) {
        let arrived = pending.finish(), range = ownedRange(k), width = owned.rowStride
        guard !range.isEmpty else { return }
        withExtendedLifetime(arrived) {
            (owned.mutableFloats.baseAddress! + range.lowerBound * width).update(from: arrived.floats.baseAddress!, count: range.count * width)
        }
    }

    /// Puts chunk k's rows as collected (its plan's `collect` layout) into `rows`, this rank's
    /// grouped rows [R, width].
    public func place(_ k: Int, collected: Tensor, into rows: Tensor) {
        let width = rows.rowStride, e = chunkOf.count
        let from = collected.floats.baseAddress, to = rows.mutableFloats.baseAddress
        for x in 0..<e where chunkOf[x] == k && rowOffsets[x + 1] > rowOffsets[x] {
            (to! + rowOffsets[x] * width).update(from: from! + chunkOffsets[k][x] * width, count: (rowOffsets[x + 1] - rowOffsets[x]) * width)
        }
    }
}
