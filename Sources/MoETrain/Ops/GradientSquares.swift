import MoECore

/// The sums of squares of the weight gradients that a batch of products writes whole, taken
/// row by row from each finished block while it is in cache (`Kernels.gemmBatch`'s `finish`),
/// then handed to the variables (`Variable.gradSquares`): gradient clipping need not read those
/// gradients again (at the OLMoE shape, 105 MB a step, 3.4 ms).
///
/// The tracked jobs must be split by whole rows (`GemmJob.wholeRows`): then each row's sum is
/// one `moek_sum_squares` over the row, and the gradient's is the rows' sums added in order,
/// whatever the blocks and the thread count.
final class GradientSquares: @unchecked Sendable {
    private struct Tracked {
        let variable: Variable, out: UnsafePointer<Float>, rows: Int, columns: Int, offset: Int
    }
    private var tracked: [Tracked] = []
    private var trackedIndex: [Int: Int] = [:]  // job index in the batch -> index in `tracked`
    private var sums: UnsafeMutableBufferPointer<Double>?
    private var rowCount = 0

    deinit { sums?.deallocate() }

    /// Notes that job `job` of the batch writes all of `variable`'s gradient `grad` (2-D),
    /// overwriting it. Call before the batch runs.
    func track(_ variable: Variable, grad: Tensor, job: Int) {
        precondition(sums == nil && grad.rank == 2, "GradientSquares: track 2-D gradients before the batch runs")
        trackedIndex[job] = tracked.count
        tracked.append(Tracked(variable: variable, out: grad.rawPointer.assumingMemoryBound(to: Float.self),
                               rows: grad.shape[0], columns: grad.shape[1], offset: rowCount))
        rowCount += grad.shape[0]
    }

    /// Makes room for the row sums (NaN until taken, so a row never reached is seen).
    func start() {
        let buffer = UnsafeMutableBufferPointer<Double>.allocate(capacity: rowCount)
        buffer.initialize(repeating: .nan)
        sums = buffer
    }

    /// The `finish` step for a block of rows of job `job`: its rows' sums, if the job is tracked.
    /// Safe from many threads at once (blocks do not share rows).
    func record(job: Int, rows: Range<Int>) {
        guard let i = trackedIndex[job], let base = sums?.baseAddress else { return }
        let t = tracked[i]
        Kernels.rowSumsOfSquares(t.out + rows.lowerBound * t.columns, rows: rows.count, length: t.columns,
                                 into: base + t.offset + rows.lowerBound)
    }

    /// Hands each tracked gradient its sum (its rows' sums in order); a gradient with a row not
    /// reached, or a NaN, gets none, and clipping reads it.
    func deliver() {
        guard let sums else { return }
        for t in tracked {
            let total = sums[t.offset..<(t.offset + t.rows)].reduce(0, +)
            if !total.isNaN { t.variable.gradSquares = total }
        }
    }
}
