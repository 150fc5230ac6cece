import _MoEKernels

extension Kernels {
    /// Index of the largest value in each row of an f32 tensor [..., C]. Ties go to the lowest
    /// index; NaN counts as larger than any number (as in PyTorch).
    public static func argmax(_ x: Tensor) -> [Int] {
        let c = x.shape.last ?? 1
        let rows = c == 0 ? 0 : x.count / c
        let p = x.floats
        return (0..<rows).map { r in argmaxRow(UnsafeBufferPointer(rebasing: p[(r * c)..<((r + 1) * c)])) }
    }

    /// Index of the largest value in `row` (lowest index on ties; NaN is largest); -1 if empty.
    public static func argmaxRow(_ row: UnsafeBufferPointer<Float>) -> Int {
        // A vocabulary's logits (32K-150K) once per generated token: one vectorised C pass, with
        // `isGreater`'s order (the tests hold the two to each other).
        guard let base = row.baseAddress, !row.isEmpty else { return -1 }
        return Int(moek_argmax(base, row.count))
    }

    /// The `k` largest values of each row of an f32 tensor [R, C] and their indices, largest
    /// first; ties go to the lower index (so the result is deterministic). `k` is clamped to C.
    public static func topK(_ x: Tensor, k: Int) -> (values: [[Float]], indices: [[Int]]) {
        let c = x.shape.last ?? 1
        let rows = c == 0 ? 0 : x.count / c
        let p = x.floats
        var values: [[Float]] = [], indices: [[Int]] = []
        values.reserveCapacity(rows)
        indices.reserveCapacity(rows)
        for r in 0..<rows {
            let idx = topKRow(UnsafeBufferPointer(rebasing: p[(r * c)..<((r + 1) * c)]), k: k)
            indices.append(idx)
            values.append(idx.map { p[r * c + $0] })
        }
        return (values, indices)
    }

    /// Indices of the `k` largest values of `row`, largest first, ties to the lower index.
    public static func topKRow(_ row: UnsafeBufferPointer<Float>, k: Int) -> [Int] {
        let k = max(0, min(k, row.count))
        if k == 0 { return [] }
        if k > 32 {
            return Array(row.indices.sorted { isGreater(row[$0], $0, than: row[$1], $1) }.prefix(k))
        }
        return [Int](unsafeUninitializedCapacity: k) { best, count in count = topKRow(row, into: best) }
    }

    /// `topKRow(_:k:)` with k = `best.count`, written into `best` with no allocation: the
    /// indices of the largest values, largest first, ties to the lower index. Returns how many
    /// it wrote, min(k, row.count). Insertion into the sorted prefix: O(C k), the fastest for
    /// the small k of routing.
    @discardableResult
    public static func topKRow(_ row: UnsafeBufferPointer<Float>, into best: UnsafeMutableBufferPointer<Int>) -> Int {
        let k = min(best.count, row.count)
        if k == 0 { return 0 }
        if let r = row.baseAddress, let b = best.baseAddress, moek_topk_row(r, row.count, k, b) != 0 { return k }
        var filled = 0
        for i in row.indices {
            let v = row[i]
            if filled == k, !isGreater(v, i, than: row[best[k - 1]], best[k - 1]) { continue }
            var pos = filled < k ? filled : k - 1  // the slot freed (or the last one, dropped)
            while pos > 0 && isGreater(v, i, than: row[best[pos - 1]], best[pos - 1]) {
                best[pos] = best[pos - 1]
                pos -= 1
            }
            best[pos] = i
            if filled < k { filled += 1 }
        }
        return k
    }

    /// The order of selection: larger value first, NaN above every number, then lower index.
    @inline(__always)
    static func isGreater(_ a: Float, _ ia: Int, than b: Float, _ ib: Int) -> Bool {
        if a.isNaN || b.isNaN {
            if a.isNaN && b.isNaN { return ia < ib }
            return a.isNaN
        }
        return a > b || (a == b && ia < ib)
    }
}
