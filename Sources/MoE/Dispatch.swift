import MoECore

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

    public init(_ routing: Routing) {
        let e = routing.expertCount
        var counts = [Int](repeating: 0, count: e + 1)
        for x in routing.experts { counts[x + 1] += 1 }
        for i in 0..<e { counts[i + 1] += counts[i] }
        rowOffsets = counts
        var cursor = Array(counts.prefix(e))
        var rowToken = [Int](repeating: 0, count: routing.assignmentCount)
        var assignmentRow = [Int](repeating: 0, count: routing.assignmentCount)
        for t in 0..<routing.tokenCount {
            for i in routing.offsets[t]..<routing.offsets[t + 1] {
                let x = routing.experts[i]
                rowToken[cursor[x]] = t
                assignmentRow[i] = cursor[x]
                cursor[x] += 1
            }
        }
        self.rowToken = rowToken
        self.assignmentRow = assignmentRow
    }

    /// The token rows of x [T, d] in grouped order: [R, d]; rows copied in parallel on `pool`.
    public func gather(_ x: Tensor, pool: ThreadPool? = nil) -> Tensor {
        let d = x.shape[1]
        let out = Tensor(uninitialized: [rowToken.count, d])  // every row is copied below
        let src = x.rawPointer.assumingMemoryBound(to: Float.self), dst = out.mutableFloats
        guard let base = dst.baseAddress else { return out }
        let copy = { (row: Int) in (base + row * d).update(from: src + self.rowToken[row] * d, count: d) }
        if let pool {
            Kernels.parallelRows(rowToken.count, cost: d, pool: pool, copy)
        } else {
            for row in rowToken.indices { copy(row) }
        }
        return out
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
        let ys = yp.baseAddress
        Kernels.parallelRows(routing.tokenCount, cost: d * max(1, routing.assignmentCount / max(1, routing.tokenCount)), pool: pool) { t in
            let o = os + t * d, assignments = routing.offsets[t]..<routing.offsets[t + 1]
            if !accumulate && assignments.isEmpty { o.update(repeating: 0, count: d) }
            for i in assignments {
                let w = weighted ? routing.weights[i] : 1, src = ys! + assignmentRow[i] * d
                if !accumulate && i == assignments.lowerBound {
                    for j in 0..<d { o[j] = weighted ? w * src[j] : src[j] }
                } else {
                    for j in 0..<d { o[j] += weighted ? w * src[j] : src[j] }
                }
            }
        }
    }
}
