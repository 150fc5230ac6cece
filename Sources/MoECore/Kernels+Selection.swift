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
        if row.isEmpty { return -1 }
        var best = 0
        for i in 1..<row.count where isGreater(row[i], i, than: row[best], best) { best = i }
        return best
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
        // Insertion into a sorted buffer of k: O(C k), fastest for the small k of routing.
        var best = [Int]()
        best.reserveCapacity(k + 1)
        for i in row.indices {
            let v = row[i]
            if best.count == k, !isGreater(v, i, than: row[best[k - 1]], best[k - 1]) { continue }
            var pos = best.count
            while pos > 0 && isGreater(v, i, than: row[best[pos - 1]], best[pos - 1]) { pos -= 1 }
            best.insert(i, at: pos)
            if best.count > k { best.removeLast() }
        }
        return best
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
