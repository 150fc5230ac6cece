import Foundation
import MoECore
import _TestSupport
import XCTest

/// Softmax, RMSNorm, activations and RoPE against Double references written here, on odd
/// sizes, with 1 and 2 threads. Tolerances are stated per test.
final class RowKernelTests: XCTestCase {
    let sizes = [1, 3, 17, 4097]

    func testSoftmaxMatchesReferenceAndIsStable() {
        for pool in testPools {
            for c in sizes {
                let x = Tensor(randomUniform: [3, c], in: -20...20, seed: UInt64(c))
                var values = x.toFloats()
                values[0] = 1000  // would overflow exp without the max shift
                let t = Tensor(shape: [3, c], values: values)
                Kernels.softmax(t, pool: pool)
                var expected = [Float]()
                for r in 0..<3 {
                    let row = values[(r * c)..<((r + 1) * c)].map(Double.init)
                    let mx = row.max() ?? 0
                    let sum = row.reduce(0) { $0 + exp($1 - mx) }
                    expected += row.map { Float(exp($0 - mx) / sum) }
                }
                // Relative 1e-5 per probability, plus 1e-7 absolute for the tiny ones.
                assertClose(t.toFloats(), expected, absolute: 1e-7, relative: 1e-5, "softmax c=\(c)")
            }
        }
    }

    func testSoftmaxOfAllMinusInfinityRowIsZeros() {
        let t = Tensor(shape: [1, 4], values: [-.infinity, -.infinity, -.infinity, -.infinity])
        Kernels.softmax(t)
        XCTAssertEqual(t.toFloats(), [0, 0, 0, 0])
        let u = Tensor(shape: [1, 3], values: [-.infinity, 2, -.infinity])
        Kernels.softmax(u)
        XCTAssertEqual(u.toFloats(), [0, 1, 0])
    }

    /// Every ISA's leaf against an f64 reference, and bit for bit against the other ISAs (the f64
    /// partial sums are added in one order everywhere).
    func testRMSNormEveryWeightDtypeOnEveryISA() {
        var first: [String: [Float]] = [:]
        forEachISA { isa in
            for (p, pool) in testPools.enumerated() {
                for dtype in DType.elementFormats {
                    for c in sizes {
                        let x = Tensor(randomUniform: [5, c], in: -3...3, seed: UInt64(c + 1))
                        let w = Tensor(randomUniform: [c], in: 0.5...1.5, seed: UInt64(c + 2), dtype: dtype)
                        let eps: Float = 1e-6
                        let out = Kernels.rmsNorm(x, weight: w, eps: eps, pool: pool)
                        let xs = x.toFloats(), ws = w.toFloats()
                        var expected = [Float]()
                        for r in 0..<5 {
                            let row = xs[(r * c)..<((r + 1) * c)].map(Double.init)
                            let ms = row.reduce(0) { $0 + $1 * $1 } / Double(c)
                            let s = 1 / (ms + Double(eps)).squareRoot()
                            expected += row.enumerated().map { Float($0.element * s * Double(ws[$0.offset])) }
                        }
                        // f32 rounding of x * scale * w: 2e-6 relative, 1e-6 absolute.
                        assertClose(out.toFloats(), expected, absolute: 1e-6, relative: 2e-6, "rmsNorm \(isa) c=\(c) \(dtype)")
                        let key = "\(p) \(dtype) \(c)"
                        if let bits = first[key] { XCTAssertEqual(out.toFloats(), bits, "rmsNorm \(isa) \(key)") } else { first[key] = out.toFloats() }
                    }
                }
            }
        }
    }

    func testRMSNormInPlace() {
        let x = Tensor(randomUniform: [2, 17], seed: 5)
        let w = Tensor(randomUniform: [17], seed: 6)
        let expected = Kernels.rmsNorm(x, weight: w, eps: 1e-5).toFloats()
        Kernels.rmsNorm(x, weight: w, eps: 1e-5, into: x)
        XCTAssertEqual(x.toFloats(), expected)
    }

    func testActivations() {
        for pool in testPools {
            for c in sizes {
                let x = Tensor(randomUniform: [c], in: -8...8, seed: UInt64(c + 9))
                let xs = x.toFloats().map(Double.init)
                let s = x.copied(), g = x.copied(), gt = x.copied()
                Kernels.silu(s, pool: pool)
                Kernels.gelu(g, pool: pool)
                Kernels.gelu(gt, approximation: .tanh, pool: pool)
                // 1e-6 relative and absolute: f32 exp, erf and tanh against Double.
                assertClose(s.toFloats(), xs.map { Float($0 / (1 + exp(-$0))) }, absolute: 1e-6, relative: 1e-6)
                assertClose(g.toFloats(), xs.map { Float(0.5 * $0 * (1 + erf($0 / 2.0.squareRoot()))) },
                            absolute: 1e-6, relative: 1e-6)
                assertClose(gt.toFloats(), xs.map { Float(0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0)))) },
                            absolute: 1e-6, relative: 1e-6)
                let up = Tensor(randomUniform: [c], seed: UInt64(c + 10))
                let gate = x.copied()
                Kernels.siluMul(gate: gate, up: up, pool: pool)
                let ups = up.toFloats().map(Double.init)
                assertClose(gate.toFloats(), xs.indices.map { Float(xs[$0] / (1 + exp(-xs[$0])) * ups[$0]) },
                            absolute: 1e-6, relative: 1e-6)
            }
        }
    }

    /// RoPE reference: rotate each pair (a, b) by angle pos * invFreq[i], in Double.
    func ropeReference(_ x: [Float], t: Int, h: Int, d: Int, rotary: Int, base: Double, positions: [Int],
                       interleaved: Bool) -> [Float] {
        var out = x
        let half = rotary / 2
        for ti in 0..<t {
            for hi in 0..<h {
                let o = (ti * h + hi) * d
                for i in 0..<half {
                    let inv = 1 / pow(base, Double(2 * i) / Double(rotary))
                    let angle = Double(positions[ti]) * inv
                    let (a, b) = interleaved ? (o + 2 * i, o + 2 * i + 1) : (o + i, o + i + half)
                    let (x0, x1) = (Double(x[a]), Double(x[b]))
                    out[a] = Float(x0 * cos(angle) - x1 * sin(angle))
                    out[b] = Float(x1 * cos(angle) + x0 * sin(angle))
                }
            }
        }
        return out
    }

    func testRoPEBothLayoutsAndPartialRotary() {
        // Spread-out positions (angles per token), and a batch that repeats a short range
        // (angles per position of the range, shared by the tokens).
        forEachISA { isa in
            for positions in [[0, 1, 7, 300, 4096], [3, 0, 1, 2, 3, 1, 0, 2]] {
                for pool in testPools {
                    for layout in [RotaryEmbedding.Layout.rotateHalf, .interleaved] {
                        for (d, rotary) in [(2, 2), (16, 16), (24, 8), (64, 64), (160, 160), (200, 132)] {
                            let x = Tensor(randomUniform: [positions.count, 3, d], seed: UInt64(d + rotary))
                            let before = x.toFloats()
                            let expected = ropeReference(before, t: positions.count, h: 3, d: d, rotary: rotary, base: 10000,
                                                         positions: positions, interleaved: layout == .interleaved)
                            let rope = RotaryEmbedding(headDim: d, rotaryDim: rotary, base: 10000, layout: layout)
                            let out = Tensor(zeros: x.shape)
                            rope.apply(x, positions: positions, into: out, pool: pool)
                            assertClose(x.toFloats(), before, "apply(into:) must leave x alone")
                            rope.apply(x, positions: positions, pool: pool)
                            // Angles are f32 (as transformers computes them): at position 4096 an angle
                            // is off by up to ~2e-4 rad, so 5e-4 absolute on values in [-1.5, 1.5].
                            assertClose(x.toFloats(), expected, absolute: 5e-4, "rope \(layout) d=\(d) r=\(rotary)")
                            assertClose(out.toFloats(), x.toFloats(), "into a new tensor = in place, \(isa)")
                            // The inverse rotation from the same table is RoPE at the negated positions,
                            // to the bit, and takes the result back to the input.
                            let back = Tensor(zeros: x.shape), negated = x.copied()
                            rope.apply(x, angles: rope.angles(for: positions), inverse: true, into: back, pool: pool)
                            rope.apply(negated, positions: positions.map { -$0 }, pool: pool)
                            assertClose(back.toFloats(), negated.toFloats(), "inverse \(layout) d=\(d) r=\(rotary) \(isa)")
                            assertClose(back.toFloats(), before, absolute: 1e-5, "round trip \(layout) d=\(d) r=\(rotary) \(isa)")
                        }
                    }
                }
            }
        }
    }

    func testRoPEAtPositionZeroIsIdentityAndKeepsNorm() {
        let x = Tensor(randomUniform: [2, 2, 8], seed: 77)
        let before = x.toFloats()
        RotaryEmbedding(headDim: 8, base: 10000).apply(x, positions: [0, 0])
        XCTAssertEqual(x.toFloats(), before)
        RotaryEmbedding(headDim: 8, base: 10000, layout: .interleaved).apply(x, positions: [5, 9])
        let norm = { (v: [Float]) in v.reduce(0) { $0 + Double($1) * Double($1) } }
        XCTAssertEqual(norm(x.toFloats()), norm(before), accuracy: 1e-4)
    }
}
