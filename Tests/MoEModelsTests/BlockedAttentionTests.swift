import Foundation
import MoECore
@testable import MoEModels
import _TestSupport
import XCTest

/// A prompt's attention by blocks of query rows (two matmul leaves a head) equals the row-by-row
/// path: a sequence continuing a cache with a remainder block, GQA, value heads narrower than
/// key heads, beside a short sequence that stays row by row.
final class BlockedAttentionTests: XCTestCase {
    let (heads, kvHeads, keyDim, valueDim) = (6, 2, 16, 12)
    let cached = [5, 0], fresh = [41, 3]  // positions already in each cache, new rows

    /// The two sequences' caches: the old positions counted, the new rows stored but not yet
    /// counted. With `rounded`, keys and values are first rounded to f16 (what an f16 cache holds).
    func caches(_ dtype: DType, rounded: Bool = false) -> [KVCache] {
        var caches: [KVCache] = []
        for (i, (old, new)) in zip(cached, fresh).enumerated() {
            var c = KVCache(layers: 1, kvHeads: kvHeads, keyDim: keyDim, valueDim: valueDim, dtype: dtype)
            for (count, advance) in [(old, true), (new, false)] where count > 0 {
                var k = Tensor(randomUniform: [count, kvHeads, keyDim], in: -2...2, seed: UInt64(10 * i + count))
                var v = Tensor(randomUniform: [count, kvHeads, valueDim], in: -2...2, seed: UInt64(10 * i + count + 5))
                if rounded {
                    k = Tensor(shape: k.shape, values: k.converted(to: .f16).toFloats())
                    v = Tensor(shape: v.shape, values: v.converted(to: .f16).toFloats())
                }
                c.store(layer: 0, keys: k, values: v)
                if advance { c.advance(count) }
            }
            caches.append(c)
        }
        return caches
    }

    func attend(_ caches: [KVCache], blocked: Bool) -> [Float] {
        let segments = Segments([0..<fresh[0], fresh[0]..<(fresh[0] + fresh[1])])
        let q = Tensor(randomUniform: [fresh[0] + fresh[1], heads * keyDim], in: -2...2, seed: 99)
        return causalAttention(q: q, heads: heads, kvHeads: kvHeads, keyDim: keyDim, valueDim: valueDim, scale: 0.25, layer: 0,
                               segments: segments, caches: caches, blocked: blocked, pool: ThreadPool(threads: 2)).toFloats()
    }

    func testBlocksEqualTheRowByRowPath() {
        let c = caches(.f32)
        let rows = attend(c, blocked: false), blocks = attend(c, blocked: true)
        XCTAssertEqual(blocks.count, (fresh[0] + fresh[1]) * heads * valueDim)
        assertClose(blocks, rows, absolute: 1e-5, relative: 1e-5, "blocked attention")
        // The short sequence's rows take the row path either way: the same bits.
        let tail = fresh[0] * heads * valueDim
        XCTAssertEqual(Array(blocks[tail...]), Array(rows[tail...]))
    }

    /// An f16 cache stores keys and values rounded to f16 and reads them widened: on both paths
    /// its attention is bit for bit that of an f32 cache holding the rounded values, in half
    /// the bytes.
    func testF16CacheIsAnF32CacheOfTheRoundedValues() {
        let half = caches(.f16), rounded = caches(.f32, rounded: true), exact = caches(.f32)
        XCTAssertEqual(half[0].byteCount * 2, exact[0].byteCount)
        for blocked in [false, true] {
            let got = attend(half, blocked: blocked)
            XCTAssertEqual(got.map(\.bitPattern), attend(rounded, blocked: blocked).map(\.bitPattern), "blocked \(blocked)")
            assertClose(got, attend(exact, blocked: blocked), absolute: 2e-3, relative: 2e-3, "f16 against f32, blocked \(blocked)")
        }
    }
}
