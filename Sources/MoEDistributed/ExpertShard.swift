/// Which experts each rank of an expert-parallel group holds: E experts in P contiguous ranges,
/// as even as they go (the first E mod P ranks hold one more). Contiguous ranges keep the
/// rows a rank sends to another contiguous, since a layer's rows are grouped by expert.
public struct ExpertShard: Sendable, Equatable {
    public let experts: Int, ranks: Int

    /// Nil unless 1 <= ranks <= experts.
    public init?(experts: Int, ranks: Int) {
        guard ranks >= 1, experts >= ranks else { return nil }
        self.experts = experts
        self.ranks = ranks
    }

    /// The experts rank `r` holds.
    public func experts(of r: Int) -> Range<Int> {
        let base = experts / ranks, extra = experts % ranks
        let start = r * base + min(r, extra)
        return start..<(start + base + (r < extra ? 1 : 0))
    }

    /// How many of the rows grouped by `rowOffsets` (E + 1 offsets, rows grouped by expert)
    /// belong to each rank's experts, in rank order.
    public func rowCounts(_ rowOffsets: [Int]) -> [Int] {
        (0..<ranks).map { q in
            let held = experts(of: q)
            return rowOffsets[held.upperBound] - rowOffsets[held.lowerBound]
        }
    }

    /// The rank that holds expert `e`.
    public func owner(of e: Int) -> Int {
        (0..<ranks).first { experts(of: $0).contains(e) } ?? ranks - 1
    }
}
