import MoECore
import _TestSupport
import XCTest

/// argmax and top-k against a full sort on hand-made rows with ties, NaN and edge values of k.
final class SelectionTests: XCTestCase {
    /// Reference: stable sort by value descending (NaN first), ties by index.
    func referenceTopK(_ row: [Float], k: Int) -> [Int] {
        let order = row.indices.sorted { a, b in
            let (x, y) = (row[a], row[b])
            if x.isNaN != y.isNaN { return x.isNaN }
            if x != y && !x.isNaN { return x > y }
            return a < b
        }
        return Array(order.prefix(max(0, min(k, row.count))))
    }

    func testArgmaxTiesAndNaN() {
        let t = Tensor(shape: [4, 4], values: [1, 3, 3, 2,   -1, -1, -1, -1,   0, .nan, 5, .nan,   -.infinity, -5, .infinity, 0])
        XCTAssertEqual(Kernels.argmax(t), [1, 0, 1, 2])
    }

    /// The vectorised argmax on every ISA against the sort, on rows of 1 to 300 values from a
    /// few levels (ties, signed zeros, infinities, all -inf), with NaN early, late, or in the tail
    /// past the last 16 lanes.
    func testArgmaxRowOnEveryISAAgainstTheSort() {
        var rng = SplitMix64(seed: 5)
        let levels: [Float] = [-.infinity, -1, -0.0, 0, 0.5, 2, .infinity]
        forEachISA { isa in
            for n in [1, 2, 15, 16, 17, 31, 33, 64, 100, 255, 256, 257, 300] {
                for trial in 0..<7 {
                    var row = (0..<n).map { _ in levels[Int(rng.next() % UInt64(trial < 3 ? 3 : levels.count))] }
                    if trial == 1 { row = [Float](repeating: -.infinity, count: n) }
                    if trial == 4 { row[n / 2] = .nan }
                    if trial == 5 { row[n - 1] = .nan }
                    if trial == 6 && n > 2 { row[n - 1] = .nan; row[1] = .nan }
                    let got = row.withUnsafeBufferPointer { Kernels.argmaxRow($0) }
                    XCTAssertEqual(got, referenceTopK(row, k: 1)[0], "\(isa) n=\(n) trial \(trial)")
                }
            }
        }
    }

    func testTopKHandMadeRows() {
        let row: [Float] = [0.1, 0.5, 0.5, -2, 0.5, 9, .nan, 0]
        let t = Tensor(shape: [1, row.count], values: row)
        XCTAssertEqual(Kernels.topK(t, k: 4).indices, [[6, 5, 1, 2]])
        XCTAssertEqual(Kernels.topK(t, k: 0).indices, [[]])
        XCTAssertEqual(Kernels.topK(t, k: 100).indices[0].count, row.count, "k is clamped to the row length")
        let values = Kernels.topK(Tensor(shape: [1, 3], values: [2, 7, 7]), k: 2).values
        XCTAssertEqual(values, [[7, 7]])
    }

    func testTopKMatchesSortForSmallAndLargeK() {
        var rng = SplitMix64(seed: 3)
        for (c, ks) in [(1, [1]), (3, [1, 2, 3]), (17, [1, 2, 8, 17]), (300, [8, 33, 64, 300])] {
            // Values drawn from a few levels, so ties are frequent.
            let row = (0..<c).map { _ in Float(rng.next() % 5) }
            let t = Tensor(shape: [1, c], values: row)
            for k in ks {
                XCTAssertEqual(Kernels.topK(t, k: k).indices[0], referenceTopK(row, k: k), "c=\(c) k=\(k)")
            }
        }
    }

    /// `topKRow(_:into:)` on every ISA (AVX-512 ranks a pruned candidate set, the others insert)
    /// against the sort, on rows of 1 to 300 values drawn from a few levels (so ties and equal
    /// lane maxima are common), with signed zeros and infinities, for k from 1 past 16; and rows
    /// with NaN, which put NaN first.
    func testTopKRowOnEveryISAAgainstTheSort() {
        var rng = SplitMix64(seed: 11)
        let levels: [Float] = [-.infinity, -1, -0.0, 0, 0.5, 0.5000001, 2, .infinity]
        forEachISA { isa in
            for n in [1, 2, 7, 16, 17, 31, 64, 100, 128, 255, 256, 257, 300] {
                for trial in 0..<6 {
                    var row = (0..<n).map { _ in levels[Int(rng.next() % UInt64(trial < 3 ? 3 : levels.count))] + (trial == 5 ? Float(rng.next() % 1000) : 0) }
                    if trial == 4 && n > 3 { row[n / 2] = .nan; row[n - 1] = .nan }
                    for k in Set([1, 2, 8, 15, 16, 17, n].filter { $0 <= n }) {
                        var best = [Int](repeating: -1, count: k)
                        let wrote = row.withUnsafeBufferPointer { r in best.withUnsafeMutableBufferPointer { Kernels.topKRow(r, into: $0) } }
                        XCTAssertEqual(wrote, k)
                        let want = referenceTopK(row, k: k)
                        if best != want { XCTFail("n=\(n) k=\(k) trial=\(trial) \(isa): got \(best.prefix(20)), want \(want.prefix(20))"); return }
                    }
                }
            }
        }
    }
}
