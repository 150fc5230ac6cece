import Foundation
import MoECore
import MoETrain
import XCTest

final class OptimizerTests: XCTestCase {
    func testAdamWMatchesHandComputedSteps() {
        // One parameter [2] with constant gradient [0.5, -1]; lr 0.1, wd 0.1, b1 0.9, b2 0.95.
        let p = Variable(Tensor(shape: [2], values: [1, 2]))
        let opt = AdamW(beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        var w: [Double] = [1, 2], m: [Double] = [0, 0], v: [Double] = [0, 0]
        let g: [Double] = [0.5, -1]
        for step in 1...3 {
            p.grad = Tensor(shape: [2], values: g.map(Float.init))
            opt.update([(p, true)], lr: 0.1)
            for i in 0..<2 {
                m[i] = 0.9 * m[i] + 0.1 * g[i]
                v[i] = 0.95 * v[i] + 0.05 * g[i] * g[i]
                let mh = m[i] / (1 - pow(0.9, Double(step))), vh = v[i] / (1 - pow(0.95, Double(step)))
                w[i] -= 0.1 * (mh / (vh.squareRoot() + 1e-8) + 0.1 * w[i])
            }
            XCTAssertEqual(p.value.toFloats()[0], Float(w[0]), accuracy: 1e-6)
            XCTAssertEqual(p.value.toFloats()[1], Float(w[1]), accuracy: 1e-6)
        }
        // Without decay, a parameter moves by the Adam step alone (lr * sign at step 1).
        let q = Variable(Tensor(shape: [1], values: [3]))
        q.grad = Tensor(shape: [1], values: [2])
        AdamW().update([(q, false)], lr: 0.01)
        XCTAssertEqual(q.value.toFloats()[0], 2.99, accuracy: 1e-6)
    }

    func testClippingScalesToTheMaxNorm() {
        let a = Variable(Tensor(shape: [2], values: [0, 0])), b = Variable(Tensor(shape: [1], values: [0]))
        a.grad = Tensor(shape: [2], values: [3, 0])
        b.grad = Tensor(shape: [1], values: [4])
        XCTAssertEqual(clipGradients([a, b], maxNorm: 1), 5, accuracy: 1e-6)
        XCTAssertEqual(a.grad?.toFloats() ?? [], [0.6, 0])
        XCTAssertEqual(b.grad?.toFloats() ?? [], [0.8])
        XCTAssertEqual(clipGradients([a, b], maxNorm: 10), 1, accuracy: 1e-6, "under the limit: unchanged")
        XCTAssertEqual(b.grad?.toFloats() ?? [], [0.8])
    }

    /// Clipping folded into AdamW (`gradScale`) updates exactly as clipping the gradients first,
    /// over several parameters and more elements than one parallel piece.
    func testClipScaleInAdamWEqualsClippingFirst() {
        let shapes = [[3, 7000], [5], [40000]]
        func params() -> [Variable] {
            shapes.enumerated().map { i, s in
                let v = Variable(Tensor(randomUniform: s, seed: UInt64(i + 1)))
                v.grad = Tensor(randomUniform: s, in: -3...3, seed: UInt64(i + 10))
                return v
            }
        }
        let (a, b) = (params(), params())
        let (optA, optB) = (AdamW(), AdamW())
        for _ in 0..<3 {
            let (norm, scale) = clipScale(a, maxNorm: 1)
            XCTAssertLessThan(scale, 0.1, "the gradients are far above the limit")
            optA.update(a.map { ($0, true) }, lr: 0.01, gradScale: scale, pool: ThreadPool(threads: 2))
            XCTAssertEqual(clipGradients(b, maxNorm: 1), norm)
            optB.update(b.map { ($0, true) }, lr: 0.01, pool: ThreadPool(threads: 1))
            for (x, y) in zip(a, b) { XCTAssertEqual(x.value.toFloats(), y.value.toFloats()) }
            for p in a + b { p.grad = Tensor(randomUniform: p.shape, in: -3...3, seed: 99) }
        }
    }

    func testWarmupThenCosine() {
        let s = WarmupCosine(peak: 1, minLR: 0.1, warmup: 4, totalSteps: 14)
        XCTAssertEqual(s.rate(at: 0), 0.25, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 3), 1, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 4), 1, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 9), 0.55, accuracy: 1e-6, "halfway: the mean of peak and floor")
        XCTAssertEqual(s.rate(at: 14), 0.1, accuracy: 1e-6)
        XCTAssertEqual(s.rate(at: 100), 0.1, accuracy: 1e-6)
    }

    /// A tiny regression learned with the tape and AdamW: the loss must fall by 100x.
    func testTrainingALinearLayerConverges() {
        let w = Variable(Tensor(zeros: [1, 3])), target: [Float] = [0.5, -1, 2]
        let xs = Tensor(randomUniform: [16, 3], seed: 3)
        let ys = (0..<16).map { r in (0..<3).reduce(Float(0)) { $0 + xs.toFloats()[r * 3 + $1] * target[$1] } }
        let opt = AdamW(weightDecay: 0)
        var first: Float = 0, last: Float = 0
        for step in 0..<300 {
            let tape = Tape(pool: ThreadPool(threads: 1))
            let pred = tape.linear(Variable(xs, requiresGrad: false), w)
            let err = tape.add(pred, Variable(Tensor(shape: [16, 1], values: ys.map { -$0 }), requiresGrad: false))
            let loss = tape.weightedSum(err, err.value.copied())  // sum of squares / 2 via err * err
            if step == 0 { first = loss.value.floats[0] }
            last = loss.value.floats[0]
            w.grad = nil
            tape.backward(from: loss)
            opt.update([(w, false)], lr: 0.05)
        }
        XCTAssertLessThan(last, first / 100, "loss \(first) -> \(last)")
        XCTAssertEqual(w.value.toFloats()[2], 2, accuracy: 0.05)
    }
}
