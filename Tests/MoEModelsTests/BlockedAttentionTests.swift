import Foundation
import MoECore
@testable import MoEModels
import _TestSupport
import XCTest

/// A prompt's attention by blocks of query rows (two matmul leaves a head) equals the row-by-row
/// path: a sequence continuing a cache with a remainder block, GQA, value heads narrower than
/// key heads, beside a short sequence that stays row by row.
final class BlockedAttentionTests: XCTestCase {
    func testBlocksEqualTheRowByRowPath() {
        let (heads, kvHeads, keyDim, valueDim) = (6, 2, 16, 12)
        let cached = [5, 0], fresh = [41, 3]  // positions already in each cache, new rows
        var caches: [KVCache] = []
        for (i, (old, new)) in zip(cached, fresh).enumerated() {
            var c = KVCache(layers: 1, kvHeads: kvHeads, keyDim: keyDim, valueDim: valueDim)
            for (count, advance) in [(old, true), (new, false)] where count > 0 {  // the new rows stored, not yet counted
                let k = Tensor(randomUniform: [count, kvHeads, keyDim], in: -2...2, seed: UInt64(10 * i + count))
                let v = Tensor(randomUniform: [count, kvHeads, valueDim], in: -2...2, seed: UInt64(10 * i + count + 5))
                c.store(layer: 0, keys: k, values: v)
                if advance { c.advance(count) }
            }
            caches.append(c)
        }
        let segments = Segments([0..<fresh[0], fresh[0]..<(fresh[0] + fresh[1])])
        let q = Tensor(randomUniform: [fresh[0] + fresh[1], heads * keyDim], in: -2...2, seed: 99)
        let pool = ThreadPool(threads: 2)
        func attend(_ blocked: Bool) -> [Float] {
            causalAttention(q: q, heads: heads, kvHeads: kvHeads, keyDim: keyDim, valueDim: valueDim, scale: 0.25, layer: 0,
                            segments: segments, caches: caches, blocked: blocked, pool: pool).toFloats()
        }
        let rows = attend(false), blocks = attend(true)
        XCTAssertEqual(blocks.count, (fresh[0] + fresh[1]) * heads * valueDim)
        assertClose(blocks, rows, absolute: 1e-5, relative: 1e-5, "blocked attention")
        // The short sequence's rows take the row path either way: the same bits.
        let tail = fresh[0] * heads * valueDim
        XCTAssertEqual(Array(blocks[tail...]), Array(rows[tail...]))
    }
}
