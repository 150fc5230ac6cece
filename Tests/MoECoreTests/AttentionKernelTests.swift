import Foundation
import MoECore
import _TestSupport
import XCTest

/// `CausalAttention` forward and backward against a Double reference written here, on every
/// instruction-set path and with 1 and 2 threads. The shapes cover grouped heads, segments that
/// do not divide the tokens, head dims off the 16-lane width, and blocks longer than one task's
/// run of rows (32), so the row and key splits are exercised, and sliding windows shorter than
/// a segment.
final class AttentionKernelTests: XCTestCase {
    struct Shape {
        let t: Int, h: Int, g: Int, d: Int, seg: Int
        var window: Int? = nil
    }

    /// out, dq, dk, dv for dOut, in Double: P = causal softmax(scale q k^T) per segment.
    static func reference(_ s: Shape, q: [Float], k: [Float], v: [Float], dOut: [Float], scale: Double)
        -> (out: [Float], dq: [Float], dk: [Float], dv: [Float]) {
        var out = [Double](repeating: 0, count: q.count), dq = out
        var dk = [Double](repeating: 0, count: k.count), dv = dk
        let group = s.h / s.g
        func qi(_ t: Int, _ h: Int, _ c: Int) -> Int { (t * s.h + h) * s.d + c }
        func ki(_ t: Int, _ g: Int, _ c: Int) -> Int { (t * s.g + g) * s.d + c }
        for h in 0..<s.h {
            let g = h / group
            for t in 0..<s.t {
                var first = t / s.seg * s.seg
                if let w = s.window { first = max(first, t - w + 1) }
                let keys = Array(first...t)
                let scores = keys.map { j in scale * (0..<s.d).reduce(0.0) { $0 + Double(q[qi(t, h, $1)]) * Double(k[ki(j, g, $1)]) } }
                let mx = scores.max()!
                let e = scores.map { exp($0 - mx) }, sum = e.reduce(0, +)
                let p = e.map { $0 / sum }
                let dp = keys.map { j in (0..<s.d).reduce(0.0) { $0 + Double(dOut[qi(t, h, $1)]) * Double(v[ki(j, g, $1)]) } }
                let inner = zip(p, dp).reduce(0.0) { $0 + $1.0 * $1.1 }
                for (a, j) in keys.enumerated() {
                    let ds = p[a] * (dp[a] - inner)
                    for c in 0..<s.d {
                        out[qi(t, h, c)] += p[a] * Double(v[ki(j, g, c)])
                        dv[ki(j, g, c)] += p[a] * Double(dOut[qi(t, h, c)])
                        dq[qi(t, h, c)] += scale * ds * Double(k[ki(j, g, c)])
                        dk[ki(j, g, c)] += scale * ds * Double(q[qi(t, h, c)])
                    }
                }
            }
        }
        let f = { (x: [Double]) in x.map(Float.init) }
        return (f(out), f(dq), f(dk), f(dv))
    }

    func testMatchesReference() {
        let shapes = [Shape(t: 150, h: 4, g: 2, d: 5, seg: 150), Shape(t: 150, h: 2, g: 2, d: 24, seg: 70),
                      Shape(t: 9, h: 3, g: 1, d: 3, seg: 3), Shape(t: 1, h: 1, g: 1, d: 17, seg: 1),
                      Shape(t: 150, h: 4, g: 2, d: 19, seg: 75, window: 40), Shape(t: 12, h: 2, g: 1, d: 4, seg: 12, window: 1)]
        for s in shapes {
            let q = Tensor(randomUniform: [s.t, s.h, s.d], in: -1...1, seed: 1)
            let k = Tensor(randomUniform: [s.t, s.g, s.d], in: -1...1, seed: 2)
            let v = Tensor(randomUniform: [s.t, s.g, s.d], in: -1...1, seed: 3)
            let dOut = Tensor(randomUniform: [s.t, s.h * s.d], in: -1...1, seed: 4)
            let scale: Float = 0.7
            let want = Self.reference(s, q: q.toFloats(), k: k.toFloats(), v: v.toFloats(), dOut: dOut.toFloats(),
                                      scale: Double(scale))
            forEachISA { isa in
                for pool in testPools {
                    let label = "\(isa), \(pool.threadCount) threads, t \(s.t) h \(s.h) g \(s.g) d \(s.d) segment \(s.seg) window \(s.window ?? 0)"
                    let attention = CausalAttention(tokens: s.t, heads: s.h, kvHeads: s.g, headDim: s.d, segment: s.seg, window: s.window)
                    // Garbage in every output: each must be overwritten, probabilities above the diagonal included.
                    let probs = Tensor(shape: [attention.scoreCount], values: [Float](repeating: .nan, count: attention.scoreCount))
                    let out = Tensor(shape: [s.t, s.h * s.d], values: [Float](repeating: .nan, count: s.t * s.h * s.d))
                    attention.forward(q: q, k: k, v: v, scale: scale, probs: probs, into: out, pool: pool)
                    // Values are O(1) sums of at most 150 products: 1e-5 absolute plus 1e-4 relative.
                    assertClose(out.toFloats(), want.out, absolute: 1e-5, relative: 1e-4, "out, \(label)")
                    let p = probs.toFloats()
                    XCTAssertFalse(p.contains { $0.isNaN }, "probabilities, \(label)")
                    XCTAssertEqual(p.reduce(0.0) { $0 + Double($1) }, Double(s.h * s.t), accuracy: 1e-3, "rows sum to 1, \(label)")
                    let dq = Tensor(shape: q.shape, values: [Float](repeating: .nan, count: q.count))
                    let dk = Tensor(shape: k.shape, values: [Float](repeating: .nan, count: k.count))
                    let dv = Tensor(shape: v.shape, values: [Float](repeating: .nan, count: v.count))
                    attention.backward(dOut: dOut, q: q, k: k, v: v, probs: probs, scale: scale, dq: dq, dk: dk, dv: dv, pool: pool)
                    assertClose(dq.toFloats(), want.dq, absolute: 1e-5, relative: 1e-4, "dq, \(label)")
                    assertClose(dk.toFloats(), want.dk, absolute: 1e-5, relative: 1e-4, "dk, \(label)")
                    assertClose(dv.toFloats(), want.dv, absolute: 1e-5, relative: 1e-4, "dv, \(label)")
                }
            }
        }
    }
}
