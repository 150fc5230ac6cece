import Foundation
import MoECore
import _MoEKernels

// Dimension legend: nb query rows in a block, E the positions the block's last row sees,
// D the key or value head dim, H query heads.

/// Query rows of one sequence in blocks of up to `rows`, each against every position its last
/// row sees, with two matmul leaves per query head: scores [nb, E] = q kᵀ, then each row's
/// causal softmax, then out = p v. A prompt's attention, where the row-by-row path scored every
/// query row with a matrix-vector pass over all its keys. Used where there is no sliding window
/// and no sinks, for sequences of at least `minRows` new rows, when the machine has the direct
/// matmul leaf.
enum BlockedAttention {
    /// Query rows per block.
    static let rows = 32
    /// New rows a sequence needs before its attention goes by blocks.
    static let minRows = 16

    /// One task: rows `r0 ..< r1` of the batch (one sequence, which starts at batch row
    /// `start`), key/value head `kv`, all `group` query heads that read it.
    static func run(r0: Int, r1: Int, start: Int, kv: Int, group: Int, heads h: Int, keyDim: Int, valueDim: Int,
                    scale: Float, layer: Int, cache: KVCache, q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        let nb = r1 - r0
        let seen = cache.length + (r1 - 1 - start) + 1  // positions the last row sees
        let keys = cache.rows(layer: layer, head: kv, values: false)
        var values = cache.rows(layer: layer, head: kv, values: true)
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: nb * seen)
        defer { scores.deallocate() }
        // The value product reads its weight transposed, in f32 only: an f16 cache's values
        // are widened once for the group's heads (about 1/64 of the block's arithmetic).
        var wide: UnsafeMutablePointer<Float>?
        defer { wide?.deallocate() }
        if cache.dtype != .f32 {
            let w = UnsafeMutablePointer<Float>.allocate(capacity: seen * valueDim)
            Kernels.widen(values, count: seen * valueDim, from: cache.dtype, into: w)
            wide = w
            values = UnsafeRawPointer(w)
        }
        for head in kv * group..<(kv + 1) * group {
            moek_gemm_direct(q + (r0 * h + head) * keyDim, h * keyDim, 0, nb, keys, Int32(cache.dtype.rawValue), keyDim, 0, 0,
                             scores, seen, 0, seen, keyDim)
            for i in 0..<nb {
                let row = scores + i * seen, visible = cache.length + (r0 + i - start) + 1
                softmaxScores(row, count: visible, scale: scale, sink: nil)
                if visible < seen { (row + visible).update(repeating: 0, count: seen - visible) }
            }
            moek_gemm_direct(scores, seen, 0, nb, values, Int32(DType.f32.rawValue), valueDim, 1, 0,
                             out + (r0 * h + head) * valueDim, h * valueDim, 0, valueDim, seen)
        }
    }
}

/// row[0 ..< count] (scores q·k) becomes softmax(scale · row), spreading mass over `sink` too
/// when given (GPT-OSS). Finite scores without a sink take the C leaf (vectorised exp, sums in 16
/// lanes); a NaN or infinite score goes the plain way, which carries it to the output (the
/// non-finite check then names the layer).
func softmaxScores(_ row: UnsafeMutablePointer<Float>, count n: Int, scale: Float, sink: Float?) {
    var factor = scale
    if sink == nil {
        for j in 0..<n { row[j] *= scale }
        if moek_sum_squares(row, n).isFinite {
            moek_softmax_rows(row, n, n, 1)
            return
        }
        factor = 1
    }
    var maxScore = sink ?? -Float.infinity
    for j in 0..<n {
        row[j] *= factor
        maxScore = max(maxScore, row[j])
    }
    var sum: Float = sink.map { Foundation.exp($0 - maxScore) } ?? 0
    for j in 0..<n {
        row[j] = Foundation.exp(row[j] - maxScore)
        sum += row[j]
    }
    let inv = 1 / sum
    for j in 0..<n { row[j] *= inv }
}
