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
