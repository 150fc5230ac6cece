import Foundation
import MoECore
import _MoEKernels
import _TestSupport
import XCTest

/// The elementwise C leaves (SiLU and its SwiGLU backward with their vectorised exp, AdamW,
/// sum of squares, the cross-entropy softmax row, the MoE combine, dropout, attention's weighted
/// value rows) against Double references, on every ISA path
/// and odd sizes, including inputs where exp saturates.
final class ElementwiseLeafTests: XCTestCase {
    let sizes = [1, 3, 17, 4097, 70_001]

    func testSiLUAndItsBackward() {
        forEachISA { isa in
            for n in sizes {
                var x = Tensor(randomUniform: [n], in: -12...12, seed: UInt64(n)).toFloats()
                if n > 3 { x[0] = -100; x[1] = 100; x[2] = 0 }  // saturated exp and zero
                let up = Tensor(randomUniform: [n], seed: UInt64(n + 1)).toFloats()
                let dy = Tensor(randomUniform: [n], seed: UInt64(n + 2)).toFloats()
                let gate = Tensor(shape: [n], values: x)
                Kernels.siluMul(gate: gate, up: Tensor(shape: [n], values: up))
                let (dg, du) = Kernels.siluMulBackward(Tensor(shape: [n], values: dy), gate: Tensor(shape: [n], values: x),
                                                       up: Tensor(shape: [n], values: up))
                var y = [Float](), rg = [Float](), ru = [Float]()
                for i in 0..<n {
                    let g = Double(x[i]), s = 1 / (1 + exp(-g))
                    y.append(Float(g * s * Double(up[i])))
                    ru.append(Float(Double(dy[i]) * g * s))
                    rg.append(Float(Double(dy[i]) * Double(up[i]) * s * (1 + g * (1 - s))))
                }
                assertClose(gate.toFloats(), y, absolute: 1e-6, relative: 1e-6, "siluMul n=\(n) \(isa)")
                assertClose(du.toFloats(), ru, absolute: 1e-6, relative: 1e-6, "dUp n=\(n) \(isa)")
                assertClose(dg.toFloats(), rg, absolute: 1e-6, relative: 1e-5, "dGate n=\(n) \(isa)")
            }
        }
    }

    func testAdamWAndSumOfSquares() {
        forEachISA { isa in
            for pool in testPools {
                for n in sizes {
                    let w0 = Tensor(randomUniform: [n], seed: UInt64(n)).toFloats(), g = Tensor(randomUniform: [n], seed: UInt64(n + 5)).toFloats()
                    var w = w0, m = g.map { $0 * 0.1 }, v = g.map { $0 * $0 * 0.5 }
                    let (m0, v0) = (m, v)
                    let h = Kernels.AdamWStep(beta1: 0.9, beta2: 0.95, eps: 1e-8, lr: 0.01, weightDecay: 0.1, step: 3)
                    w.withUnsafeMutableBufferPointer { wp in
                        m.withUnsafeMutableBufferPointer { mp in
                            v.withUnsafeMutableBufferPointer { vp in
                                Kernels.adamW(weights: wp.baseAddress!, grad: g, m: mp.baseAddress!, v: vp.baseAddress!, count: n, h, pool: pool)
                            }
                        }
                    }
                    let c1 = 1 - pow(0.9, 3.0), c2 = 1 - pow(0.95, 3.0)
                    var rw = [Float](), rm = [Float](), rv = [Float]()
                    for i in 0..<n {
                        let mi = 0.9 * Double(m0[i]) + 0.1 * Double(g[i]), vi = 0.95 * Double(v0[i]) + 0.05 * Double(g[i]) * Double(g[i])
                        rm.append(Float(mi))
                        rv.append(Float(vi))
                        rw.append(Float(Double(w0[i]) - 0.01 * ((mi / c1) / ((vi / c2).squareRoot() + 1e-8) + 0.1 * Double(w0[i]))))
                    }
                    let label = "n=\(n) threads=\(pool.threadCount) \(isa)"
                    assertClose(m, rm, absolute: 1e-6, relative: 1e-6, "m " + label)
                    assertClose(v, rv, absolute: 1e-7, relative: 1e-6, "v " + label)
                    assertClose(w, rw, absolute: 1e-6, relative: 1e-5, "w " + label)
                    let squares = Kernels.sumOfSquares(Tensor(shape: [n], values: g), pool: pool)
                    XCTAssertEqual(squares, g.reduce(0.0) { $0 + Double($1) * Double($1) }, accuracy: 1e-6 * Double(n), label)
                }
            }
        }
    }

    /// The cross-entropy softmax row: probabilities, max and f64 sum against Double, with
    /// large logits (the max shift) and odd lengths (the lane tails).
    func testSoftmaxRowWithF64Sum() {
        forEachISA { isa in
            for n in sizes {
                var z = Tensor(randomUniform: [n], in: -30...30, seed: UInt64(n + 9)).toFloats()
                if n > 3 { z[n / 2] = 500 }  // exp(500) would overflow without the shift
                var p = [Float](repeating: .nan, count: n), mx: Float = 0
                let sum = moek_softmax_row_f64(z, &p, n, &mx)
                let m = z.map(Double.init).max()!, e = z.map { exp(Double($0) - m) }, total = e.reduce(0, +)
                XCTAssertEqual(mx, Float(m), "max n=\(n) \(isa)")
                XCTAssertEqual(sum, total, accuracy: 1e-6 * total, "sum n=\(n) \(isa)")
                assertClose(p, e.map { Float($0 / total) }, absolute: 1e-9, relative: 1e-6, "p n=\(n) \(isa)")
            }
        }
    }

    /// The MoE combine leaf: weighted and plain sums of chosen rows, overwrite and accumulate,
    /// and a token with no rows, against a Double sum in the same order.
    func testCombineRows() {
        forEachISA { isa in
            for d in [1, 17, 256] {
                let y = Tensor(randomUniform: [5, d], seed: UInt64(d)).toFloats()
                let start = Tensor(randomUniform: [d], seed: UInt64(d + 1)).toFloats()
                for rows in [[Int](), [3], [4, 0, 3]] {
                    let w: [Float] = [0.5, -1.25, 2][..<rows.count].map { $0 }
                    for (weighted, accumulate) in [(true, false), (true, true), (false, false), (false, true)] {
                        var out = start
                        w.withUnsafeBufferPointer { wp in
                            moek_combine_rows(&out, y, d, rows, weighted ? wp.baseAddress : nil, rows.count, accumulate ? 1 : 0)
                        }
                        let want = (0..<d).map { j in
                            Float(zip(rows, w).reduce(accumulate ? Double(start[j]) : 0) { $0 + (weighted ? Double($1.1) : 1) * Double(y[$1.0 * d + j]) })
                        }
                        assertClose(out, want, absolute: 1e-6, relative: 1e-6,
                                    "d=\(d) rows \(rows) weighted \(weighted) accumulate \(accumulate) \(isa)")
                    }
                }
            }
        }
    }

    /// Dropout's mask is the documented hash of (seed, index) exactly (written out here in Swift),
    /// the same on every ISA, whether drawn whole or in pieces from odd offsets, in place or
    /// accumulated, and across a 2^32 boundary of the index.
    func testDropoutDrawsTheDocumentedMaskOnEveryISA() {
        func fmix32(_ x: UInt32) -> UInt32 {
            var z = x ^ (x >> 16)
            z = z &* 0x85EB_CA6B
            z ^= z >> 13
            z = z &* 0xC2B2_AE35
            return z ^ (z >> 16)
        }
        func factor(_ p: Float, seed: UInt64, index: Int) -> Float {
            let j = UInt64(index)
            let key = UInt32(truncatingIfNeeded: seed) ^ fmix32(UInt32(seed >> 32) &+ UInt32(j >> 32) &* 0x632B_E5AB)
            let z = fmix32(UInt32(truncatingIfNeeded: j) &* 0x9E37_79B9 &+ key)
            return (z >> 8) < UInt32(Double(p) * 16_777_216) ? 0 : 1 / (1 - p)
        }
        forEachISA { isa in
            for (n, p, first) in [(1, Float(0.5), 1000), (17, 0.1, 1000), (4097, 0.05, 1000), (70_001, 0.9, 1000),
                                  (300, 0.5, (1 << 32) - 150)] {
                let x = Tensor(randomUniform: [n], in: -2...2, seed: UInt64(n)).toFloats()
                let want = (0..<n).map { x[$0] * factor(p, seed: 0xDEAD_BEEF_0000_0007, index: first + $0) }
                var whole = [Float](repeating: 0, count: n), pieces = x, summed = x
                whole.withUnsafeMutableBufferPointer { w in
                    x.withUnsafeBufferPointer { Kernels.dropout(w.baseAddress!, $0.baseAddress!, count: n, seed: 0xDEAD_BEEF_0000_0007, first: first, p: p) }
                }
                pieces.withUnsafeMutableBufferPointer { b in  // in place, in pieces of 13
                    for from in stride(from: 0, to: n, by: 13) {
                        let q = b.baseAddress! + from
                        Kernels.dropout(q, q, count: min(13, n - from), seed: 0xDEAD_BEEF_0000_0007, first: first + from, p: p)
                    }
                }
                summed.withUnsafeMutableBufferPointer { b in
                    x.withUnsafeBufferPointer { Kernels.dropout(b.baseAddress!, $0.baseAddress!, count: n, seed: 0xDEAD_BEEF_0000_0007, first: first, p: p, accumulate: true) }
                }
                XCTAssertEqual(whole, want, "dropout n=\(n) \(isa)")
                XCTAssertEqual(pieces, want, "dropout in place, in pieces, n=\(n) \(isa)")
                XCTAssertEqual(summed, zip(x, want).map { $0 + $1 }, "dropout accumulated n=\(n) \(isa)")
                let kept = Double(want.filter { $0 != 0 }.count) / Double(n)
                if n > 4000 { XCTAssertEqual(kept, Double(1 - p), accuracy: 0.02, "kept fraction n=\(n)") }
            }
        }
    }
    /// Attention's probabilities times value rows: the same bits on every ISA as the plain loop
    /// (each term one fused multiply-add, positions in order), with strided rows and 1 to 4 heads at a time;
    /// f16 value rows (an f16 KV cache) give the plain loop's bits on the widened values.
    func testWeightedValueRowsAreThePlainLoopsBitsOnEveryISA() {
        forEachISA { isa in
            for (nx, l, d) in [(1, 1, 1), (3, 17, 64), (4, 130, 128), (2, 5, 33), (3, 40, 80), (4, 9, 16), (1, 7, 96)] {
              for half in [false, true] {
                let (ldp, ldv, ldo) = (l + 3, d + 5, d + 2)
                let p = Tensor(randomUniform: [nx * ldp], seed: UInt64(l)).toFloats()
                let stored = Tensor(randomUniform: [l * ldv], in: -3...3, seed: UInt64(d), dtype: half ? .f16 : .f32)
                let v = stored.toFloats()
                var out = [Float](repeating: .nan, count: nx * ldo)
                moek_weighted_rows(p, ldp, Int32(nx), stored.rawPointer, Int32(stored.dtype.rawValue), ldv, l, d, &out, ldo)
                for m in 0..<nx {
                    var want = [Float](repeating: 0, count: d)
                    for j in 0..<l {
                        let pj = p[m * ldp + j]
                        for k in 0..<d { want[k].addProduct(pj, v[j * ldv + k]) }  // fused: one rounding
                    }
                    XCTAssertEqual(Array(out[m * ldo..<(m * ldo + d)]), want, "nx \(nx) L \(l) D \(d) row \(m) f16 \(half) \(isa)")
                }
              }
            }
        }
    }
}
