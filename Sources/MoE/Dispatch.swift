import MoECore
import _MoEKernels

// Dimension legend: T tokens, d hidden size, R routed rows (assignments), E experts.

/// The permutation that groups token rows by expert (a counting sort), and the way back.
///
/// Within an expert, rows keep token order. No loop runs per token over experts: the experts
/// see one contiguous block of rows each, and `combine` is a weighted scatter-add.
public struct Dispatch: Sendable {
    /// E + 1 offsets: expert e's rows are `rowOffsets[e] ..< rowOffsets[e + 1]`.
    public let rowOffsets: [Int]
    /// For each grouped row, the token it came from.
    public let rowToken: [Int]
    /// For each assignment of the routing (in its token-major order), its grouped row.
    public let assignmentRow: [Int]
    /// For each grouped row, its assignment (the inverse of `assignmentRow`).
    public let rowAssignment: [Int]

    public init(_ routing: Routing) {
        let e = routing.expertCount
        var counts = [Int](repeating: 0, count: e + 1)
        for x in routing.experts { counts[x + 1] += 1 }
        for i in 0..<e { counts[i + 1] += counts[i] }
        rowOffsets = counts
        var cursor = Array(counts.prefix(e))
        var rowToken = [Int](repeating: 0, count: routing.assignmentCount)
        var assignmentRow = [Int](repeating: 0, count: routing.assignmentCount), rowAssignment = assignmentRow
        for t in 0..<routing.tokenCount {
            for i in routing.offsets[t]..<routing.offsets[t + 1] {
                let x = routing.experts[i]
                rowToken[cursor[x]] = t
                assignmentRow[i] = cursor[x]
                rowAssignment[cursor[x]] = i
                cursor[x] += 1
            }
        }
        self.rowToken = rowToken
        self.assignmentRow = assignmentRow
        self.rowAssignment = rowAssignment
    }

    /// The token rows of x [T, d] in grouped order: [R, d]; rows copied in parallel on `pool`.
    public func gather(_ x: Tensor, pool: ThreadPool? = nil) -> Tensor {
        Kernels.gatherRows(x, rowToken, pool: pool)
    }

    /// Groups of whole consecutive experts whose rows number at most `maxRows` (an expert with
    /// more forms a group alone), as ranges of expert ids covering every expert: an MoE layer
    /// runs a long prompt's experts group by group, so its gathered rows stay bounded.
    public func expertGroups(maxRows: Int) -> [Range<Int>] { Self.expertGroups(rowOffsets: rowOffsets, maxRows: maxRows) }

    /// `expertGroups(maxRows:)` for any E + 1 row offsets (an expert pass's own rows).
    public static func expertGroups(rowOffsets: [Int], maxRows: Int) -> [Range<Int>] {
        let e = rowOffsets.count - 1
        var groups: [Range<Int>] = [], first = 0
        while first < e {
            var end = first + 1
            while end < e && rowOffsets[end + 1] - rowOffsets[first] <= maxRows { end += 1 }
            groups.append(first..<end)
            first = end
        }
        return groups
    }

    /// The rows of the experts in `group` of x [T, d]: [rows, d], in grouped order.
    public func gather(_ x: Tensor, experts group: Range<Int>, pool: ThreadPool? = nil) -> Tensor {
        Kernels.gatherRows(x, Array(rowToken[rowOffsets[group.lowerBound]..<rowOffsets[group.upperBound]]), pool: pool)
    }

    /// `rowOffsets` relative to the first row of the experts in `group`, for all E experts
    /// (those outside the group with empty spans).
    public func rowOffsets(experts group: Range<Int>) -> [Int] { Self.rowOffsets(rowOffsets, experts: group) }

    /// `rowOffsets(experts:)` for any E + 1 row offsets.
    public static func rowOffsets(_ rowOffsets: [Int], experts group: Range<Int>) -> [Int] {
        let lo = rowOffsets[group.lowerBound], count = rowOffsets[group.upperBound] - lo
        return rowOffsets.map { min(max($0 - lo, 0), count) }
    }

    /// out[t] += weight * y[row] for the rows of the experts in `group` (y [rows, d], the
    /// group's outputs in grouped order; out [T, d]), each token's terms added in expert order.
    /// Calling it for consecutive groups in order adds every token's terms in expert order, so
    /// the sums do not depend on the grouping.
    public func combine(_ y: Tensor, experts group: Range<Int>, routing: Routing, into out: Tensor, pool: ThreadPool) {
        let lo = rowOffsets[group.lowerBound], hi = rowOffsets[group.upperBound], t = routing.tokenCount
        guard hi > lo, let os = out.mutableFloats.baseAddress, let ys = y.floats.baseAddress else { return }
        let d = out.shape[1]
        // Each token's rows of the group, in row order (which is expert order): counting sort.
        var starts = [Int](repeating: 0, count: t + 1)
        for r in lo..<hi { starts[rowToken[r] + 1] += 1 }
        for i in 0..<t { starts[i + 1] += starts[i] }
        var cursor = Array(starts.prefix(t))
        var rows = [Int](repeating: 0, count: hi - lo), weights = [Float](repeating: 0, count: hi - lo)
        for r in lo..<hi {
            let tok = rowToken[r]
            rows[cursor[tok]] = r - lo
            weights[cursor[tok]] = routing.weights[rowAssignment[r]]
            cursor[tok] += 1
        }
        let perToken = max(1, (hi - lo) / max(1, t))
        rows.withUnsafeBufferPointer { rows in
            weights.withUnsafeBufferPointer { weights in
                Kernels.parallelRows(t, cost: d * perToken, pool: pool) { tok in
                    let first = starts[tok], count = starts[tok + 1] - first
                    if count > 0 {
                        moek_combine_rows(os + tok * d, ys, d, rows.baseAddress! + first, weights.baseAddress! + first, count, 1)
                    }
                }
            }
        }
    }

    /// out[t] += sum over t's assignments of weight * y[row]: y [R, d], out [T, d]. With
    /// `weighted` false the rows are summed as they are (an MoE backward's input gradient);
    /// with `accumulate` false out[t] is overwritten (zeros for a token with no assignment), so
    /// out need not be zeroed first.
    public func combine(_ y: Tensor, routing: Routing, into out: Tensor, weighted: Bool = true, accumulate: Bool = true,
                        pool: ThreadPool) {
        let d = out.shape[1]
        let yp = y.floats, op = out.mutableFloats
        guard let os = op.baseAddress else { return }
        let ys = yp.baseAddress ?? UnsafePointer(os)  // read only when a token has assignments, so y has rows
        let perToken = max(1, routing.assignmentCount / max(1, routing.tokenCount))
        assignmentRow.withUnsafeBufferPointer { rows in
            routing.weights.withUnsafeBufferPointer { weights in
                routing.offsets.withUnsafeBufferPointer { offsets in
                    Kernels.parallelRows(routing.tokenCount, cost: d * perToken, pool: pool) { t in
                        let lo = offsets[t], count = offsets[t + 1] - lo
                        moek_combine_rows(os + t * d, ys, d, rows.baseAddress.map { $0 + lo }, weighted ? weights.baseAddress.map { $0 + lo } : nil,
                                          count, accumulate ? 1 : 0)
                    }
                }
            }
        }
    }
}
