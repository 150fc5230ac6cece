import Foundation
import MoE
import MoECore
import MoETrain
import _TestSupport
import XCTest

/// Every op's backward against central finite differences of its forward.
///
/// For inputs `xs`, `build` makes a scalar loss on a fresh tape (a random weighted sum of the
/// op's output, so every output element matters). The analytic gradient of each input is
/// compared with (L(x + h) - L(x - h)) / 2h at up to 24 random elements, h = 5e-3, within
/// 3e-3 + 3e-2 |numeric| (f32 forward passes: rounding alone is ~1e-4 at this h).
final class GradientCheckTests: XCTestCase {
    func check(_ inputs: [Tensor], file: StaticString = #filePath, line: UInt = #line,
               _ build: (Tape, [Variable]) -> Variable) {
        gradientCheck(inputs, file: file, line: line, build)
    }

    func probe(_ shape: [Int], seed: UInt64) -> Tensor { Tensor(randomUniform: shape, seed: seed) }

    func testLinearWithBias() {
        check([probe([3, 5], seed: 1), probe([4, 5], seed: 2), probe([4], seed: 3)]) { t, v in
            t.weightedSum(t.linear(v[0], v[1], bias: v[2]), self.probe([3, 4], seed: 4))
        }
    }

    /// Three maps of one input; the middle output is unused (no gradient flows into it). x's
    /// gradient starts with the chain, or (x also feeding an op recorded later) already exists.
    func testLinearsOfOneInput() {
        for alsoDirect in [false, true] {
            check([probe([5, 6], seed: 41), probe([4, 6], seed: 42), probe([2, 6], seed: 43), probe([3, 6], seed: 44)]) { t, v in
                let ys = t.linears(v[0], [v[1], v[2], v[3]])
                let used = t.add(t.weightedSum(ys[0], self.probe([5, 4], seed: 45)), t.weightedSum(ys[2], self.probe([5, 3], seed: 46)))
                return alsoDirect ? t.add(used, t.weightedSum(v[0], self.probe([5, 6], seed: 47))) : used
            }
        }
    }

    func testAddAndEmbedding() {
        check([probe([6, 4], seed: 5), probe([3, 4], seed: 6)]) { t, v in
            let e = t.embedding(v[0], ids: [2, 5, 2])  // a repeated id accumulates
            return t.weightedSum(t.add(e, v[1]), self.probe([3, 4], seed: 7))
        }
    }

    func testRMSNorm() {
        check([probe([3, 7], seed: 8), Tensor(randomUniform: [7], in: 0.5...1.5, seed: 9)]) { t, v in
            t.weightedSum(t.rmsNorm(v[0], weight: v[1], eps: 1e-5), self.probe([3, 7], seed: 10))
        }
    }

    func testSwiGLU() {
        check([Tensor(randomUniform: [4, 6], in: -3...3, seed: 11), probe([4, 6], seed: 12)]) { t, v in
            t.weightedSum(t.siluMul(gate: v[0], up: v[1]), self.probe([4, 6], seed: 13))
        }
    }

    func testRoPEBothLayouts() {
        for layout in [RotaryEmbedding.Layout.rotateHalf, .interleaved] {
            let rope = RotaryEmbedding(headDim: 8, base: 100, layout: layout)
            check([probe([3, 2, 8], seed: 14)]) { t, v in
                t.weightedSum(t.rope(v[0], positions: [0, 3, 7], rope), self.probe([3, 2, 8], seed: 15))
            }
        }
    }

    func testCausalAttentionWithGroupedHeads() {
        check([probe([4, 4, 3], seed: 16), probe([4, 2, 3], seed: 17), probe([4, 2, 3], seed: 18)]) { t, v in
            t.weightedSum(t.causalAttention(q: v[0], k: v[1], v: v[2], scale: 0.6), self.probe([4, 12], seed: 19))
        }
    }

    /// Three sequences of 3 packed in one batch: no token attends across a boundary.
    func testCausalAttentionWithinSegments() {
        check([probe([9, 2, 3], seed: 26), probe([9, 1, 3], seed: 27), probe([9, 1, 3], seed: 28)]) { t, v in
            t.weightedSum(t.causalAttention(q: v[0], k: v[1], v: v[2], scale: 0.6, segment: 3), self.probe([9, 6], seed: 29))
        }
        // The first token of each segment sees only itself: its output is its own value.
        let tape = Tape(pool: ThreadPool(threads: 2))
        let (q, k, v) = (Variable(probe([9, 2, 3], seed: 26)), Variable(probe([9, 1, 3], seed: 27)), Variable(probe([9, 1, 3], seed: 28)))
        let y = tape.causalAttention(q: q, k: k, v: v, scale: 0.6, segment: 3).value.toFloats()
        let values = v.value.toFloats()
        for first in [0, 3, 6] {
            for head in 0..<2 { XCTAssertEqual(Array(y[(first * 2 + head) * 3..<(first * 2 + head + 1) * 3]), Array(values[first * 3..<first * 3 + 3])) }
        }
    }

    func testCrossEntropyIgnoringNegativeTargets() {
        check([Tensor(randomUniform: [4, 6], in: -2...2, seed: 20)]) { t, v in
            t.crossEntropy(v[0], targets: [1, 5, -1, 0])
        }
    }

    /// A whole dense decoder block with an LM head and loss, every parameter checked at once.
    func testDecoderBlockEndToEnd() {
        let (vocab, d, heads, hd, ff) = (11, 8, 2, 4, 12)
        let rope = RotaryEmbedding(headDim: hd, base: 100)
        let ids = [3, 1, 4, 1, 5], targets = [1, 4, 1, 5, 9]
        let params = [probe([vocab, d], seed: 30), Tensor(randomUniform: [d], in: 0.5...1.5, seed: 31),
                      probe([heads * hd, d], seed: 32), probe([hd, d], seed: 33), probe([hd, d], seed: 34),
                      probe([d, heads * hd], seed: 35), Tensor(randomUniform: [d], in: 0.5...1.5, seed: 36),
                      probe([ff, d], seed: 37), probe([ff, d], seed: 38), probe([d, ff], seed: 39), probe([vocab, d], seed: 40)]
        check(params) { t, p in
            let x = t.embedding(p[0], ids: ids)
            let h = t.rmsNorm(x, weight: p[1], eps: 1e-6)
            let q = t.rope(t.reshape(t.linear(h, p[2]), [5, heads, hd]), positions: Array(0..<5), rope)
            let k = t.rope(t.reshape(t.linear(h, p[3]), [5, 1, hd]), positions: Array(0..<5), rope)
            let v = t.reshape(t.linear(h, p[4]), [5, 1, hd])
            let x2 = t.add(x, t.linear(t.causalAttention(q: q, k: k, v: v, scale: 0.5), p[5]))
            let h2 = t.rmsNorm(x2, weight: p[6], eps: 1e-6)
            let f = t.linear(t.siluMul(gate: t.linear(h2, p[7]), up: t.linear(h2, p[8])), p[9])
            return t.crossEntropy(t.linear(t.add(x2, f), p[10]), targets: targets)
        }
    }
}

/// The MoE layer's backward (router through the chosen weights and the softmax, experts, the
/// load-balance and z-losses) against finite differences, for renormalised top-k, raw top-k and
/// top-p. Router weights are kept small so a step of h never changes which experts are chosen.
final class MoEGradientTests: XCTestCase {
    func run(_ router: any Router, lb: Float, zc: Float, more: AuxLossCoefficients = AuxLossCoefficients()) {
        let (t, d, e, inner) = (5, 6, 4, 5)
        var inputs = [Tensor(randomUniform: [t, d], seed: 50), Tensor(randomUniform: [router.logitCount, d], in: -0.5...0.5, seed: 51)]
        for i in 0..<e {
            inputs += [Tensor(randomUniform: [inner, d], seed: 60 + UInt64(i)), Tensor(randomUniform: [inner, d], seed: 70 + UInt64(i)),
                       Tensor(randomUniform: [d, inner], seed: 80 + UInt64(i))]
        }
        let r = Tensor(randomUniform: [t, d], seed: 52)
        gradientCheck(inputs) { tape, v in
            let params = MoEParameters(router: v[1], gate: (0..<e).map { v[2 + 3 * $0] }, up: (0..<e).map { v[3 + 3 * $0] },
                                       down: (0..<e).map { v[4 + 3 * $0] })
            var aux = more
            aux.loadBalance = lb
            aux.zLoss = zc
            let step = tape.moe(v[0], params, router: router, aux: aux)
            let probe = tape.weightedSum(step.output, r)
            return tape.add(probe, Variable(Tensor(shape: [1], values: [step.auxLoss]), requiresGrad: false))
        }
    }

    func testTopKRenormalisedWithAuxLosses() {
        run(TopKSoftmaxRouter(experts: 4, k: 2), lb: 0.5, zc: 0.3)
    }

    /// The same on every ISA: the paths without the indexed matmul leaf gather the experts'
    /// rows and pack them, and run the SwiGLU backward on whole rows of packed-path blocks.
    func testTopKOnEveryISA() {
        forEachISA { _ in run(TopKSoftmaxRouter(experts: 4, k: 2), lb: 0.5, zc: 0.3) }
    }

    func testTopKWithoutRenormalisation() {
        run(TopKSoftmaxRouter(experts: 4, k: 2, renormalize: false), lb: 0, zc: 0)
    }

    func testSigmoidRenormalisedScaledWithAuxLosses() {
        run(TopKSigmoidRouter(experts: 4, k: 2, renormalize: true, routedScaling: 2.5), lb: 0.5, zc: 0.3)
    }

    func testSigmoidGroupedWithBiasUnnormalised() {
        run(TopKSigmoidRouter(experts: 4, k: 2, bias: [0.3, -0.2, 0.1, 0], groups: 2, topkGroup: 1, renormalize: false,
                              routedScaling: 1.5), lb: 0.2, zc: 0)
    }

    func testNullExpertsWithAuxLosses() {
        run(NullExpertsRouter(experts: 4, nullExperts: 3, k: 2), lb: 0.5, zc: 0.3)
    }

    func testTopPRaggedSelection() {
        run(TopPRouter(experts: 4, p: 0.5), lb: 0.2, zc: 0)
    }

    /// The layer on 1 thread (4 used experts: SwiGLU fused into the expert products' blocks) and
    /// on 2 (the same 4 experts: SwiGLU as passes of their own) gives the same output and
    /// gradients, to the bit, on every ISA; the fused forward and backward are checked by finite
    /// differences in the tests above (their tapes run on 1 thread).
    func testFusedAndSeparateSwiGLUAgree() {
        let (t, d, e, inner) = (32, 8, 4, 6)
        func run(_ pool: ThreadPool) -> [[Float]] {
            let tape = Tape(pool: pool)
            let x = Variable(Tensor(randomUniform: [t, d], seed: 1))
            let params = MoEParameters(router: Variable(Tensor(randomUniform: [e, d], seed: 2)),
                                       gate: (0..<e).map { Variable(Tensor(randomUniform: [inner, d], seed: 10 + UInt64($0))) },
                                       up: (0..<e).map { Variable(Tensor(randomUniform: [inner, d], seed: 20 + UInt64($0))) },
                                       down: (0..<e).map { Variable(Tensor(randomUniform: [d, inner], seed: 30 + UInt64($0))) })
            let step = tape.moe(x, params, router: TopKSoftmaxRouter(experts: e, k: 2))
            XCTAssertTrue(step.routing.tokensPerExpert.allSatisfy { $0 > 0 }, "every expert used")
            tape.backward(from: tape.weightedSum(step.output, Tensor(randomUniform: [t, d], seed: 3)))
            let grads = [x] + params.gate + params.up + params.down
            return [step.output.value.toFloats()] + grads.map { $0.grad?.toFloats() ?? [] }
        }
        forEachISA { isa in
            let (one, two) = (run(ThreadPool(threads: 1)), run(ThreadPool(threads: 2)))
            for (i, (a, b)) in zip(one, two).enumerated() { assertClose(a, b, "output or gradient \(i), \(isa)") }
        }
    }

    /// The top-p dynamic (entropy) loss and DeepSeekMoE's expert- and device-level balance,
    /// with softmax and with (normalised) sigmoid scores.
    func testEntropyExpertAndDeviceBalance() {
        let more = AuxLossCoefficients(entropy: 0.3, expertBalance: 0.4, deviceBalance: 0.5, devices: 2)
        run(TopPRouter(experts: 4, p: 0.5), lb: 0, zc: 0, more: more)
        run(TopKSoftmaxRouter(experts: 4, k: 2), lb: 0.1, zc: 0, more: more)
        run(TopKSigmoidRouter(experts: 4, k: 2, renormalize: true, routedScaling: 2), lb: 0, zc: 0, more: more)
        // The device loss alone, large: only the gap between the devices' mean f moves the scores.
        let device = AuxLossCoefficients(deviceBalance: 4, devices: 2)
        run(TopKSoftmaxRouter(experts: 4, k: 1), lb: 0, zc: 0, more: device)
        run(TopKSigmoidRouter(experts: 4, k: 1, renormalize: true), lb: 0, zc: 0, more: device)
    }
}

/// Checks the tape's gradients of `build`'s scalar loss against central finite differences
/// (see `GradientCheckTests` for the tolerance).
func gradientCheck(_ inputs: [Tensor], file: StaticString = #filePath, line: UInt = #line,
               _ build: (Tape, [Variable]) -> Variable) {
    let tape = Tape(pool: ThreadPool(threads: 1))
    let vars = inputs.map { Variable($0.copied()) }
    let loss = build(tape, vars)
    tape.backward(from: loss)
    var rng = SplitMix64(seed: 99)
    for (vi, v) in vars.enumerated() {
        let analytic = v.grad?.toFloats() ?? [Float](repeating: 0, count: v.value.count)
        let picks = v.value.count <= 24 ? Array(0..<v.value.count) : (0..<24).map { _ in Int(rng.next() % UInt64(v.value.count)) }
        for i in picks {
            func lossAt(_ delta: Float) -> Float {
                let t = Tape(pool: ThreadPool(threads: 1))
                let shifted = inputs.map { Variable($0.copied()) }
                shifted[vi].value.mutableFloats[i] += delta
                return build(t, shifted).value.floats[0]
            }
            let h: Float = 5e-3
            let numeric = (lossAt(h) - lossAt(-h)) / (2 * h)
            XCTAssertEqual(analytic[i], numeric, accuracy: 3e-3 + 3e-2 * abs(numeric),
                           "input \(vi) element \(i): analytic \(analytic[i]) numeric \(numeric)", file: file, line: line)
        }
    }
}

/// The MoE layer takes its expert weights' gradient sums of squares as it writes them
/// (`Variable.gradSquares`), so clipping need not read them: the sums match the gradients on
/// every ISA and thread count (to the bit across thread counts), and any later change to a
/// gradient drops its sum.
final class GradientSquaresTests: XCTestCase {
    func layer(_ t: Int = 40, _ d: Int = 8, _ e: Int = 6, _ inner: Int = 6) -> (x: Variable, params: MoEParameters) {
        (Variable(Tensor(randomUniform: [t, d], seed: 1)),
         MoEParameters(router: Variable(Tensor(randomUniform: [e, d], seed: 2)),
                       gate: (0..<e).map { Variable(Tensor(randomUniform: [inner, d], seed: 10 + UInt64($0))) },
                       up: (0..<e).map { Variable(Tensor(randomUniform: [inner, d], seed: 20 + UInt64($0))) },
                       down: (0..<e).map { Variable(Tensor(randomUniform: [d, inner], seed: 30 + UInt64($0))) }))
    }

    func squares(_ v: Variable) -> Double { v.grad!.toFloats().reduce(0.0) { $0 + Double($1) * Double($1) } }

    /// Small experts (each gradient one block), and two big ones whose gradients split into
    /// blocks of rows.
    func testSumsMatchTheGradients() {
        for (t, d, e, inner, k) in [(40, 8, 6, 6, 2), (256, 64, 2, 64, 1)] { forEachISA { isa in
            var byThreads: [[Double]] = []
            for threads in [1, 2] {
                let pool = ThreadPool(threads: threads), tape = Tape(pool: pool)
                let (x, params) = layer(t, d, e, inner)
                let step = tape.moe(x, params, router: TopKSoftmaxRouter(experts: e, k: k))
                tape.backward(from: tape.weightedSum(step.output, Tensor(randomUniform: [t, d], seed: 3)))
                let experts = params.gate + params.up + params.down
                var sums: [Double] = []
                for (i, v) in experts.enumerated() {
                    guard let s = v.gradSquares else { return XCTFail("expert weight \(i) has no sum, \(isa), \(threads) threads") }
                    XCTAssertEqual(s, squares(v), accuracy: 1e-6 * max(1, squares(v)), "expert weight \(i), \(isa)")
                    sums.append(s)
                }
                byThreads.append(sums)
                guard case let .linear(router) = params.router else { return XCTFail("a linear router") }
                let all = [x, router] + experts
                let norm = all.reduce(0.0) { $0 + ($1.grad == nil ? 0 : squares($1)) }.squareRoot()
                XCTAssertEqual(Double(clipScale(all, maxNorm: 1, pool: pool).norm), norm, accuracy: 1e-5 * norm, "\(isa)")
            }
            XCTAssertEqual(byThreads[0], byThreads[1], "1 and 2 threads, \(isa)")
        } }
    }

    /// The layer run twice on the same weights: the second backward (run first) writes the
    /// gradients whole, the first then adds into them, so no sum may survive.
    func testAddingIntoAGradientDropsItsSum() {
        let tape = Tape(pool: ThreadPool(threads: 2))
        let (x, params) = layer()
        let router = TopKSoftmaxRouter(experts: 6, k: 2)
        let twice = tape.moe(tape.moe(x, params, router: router).output, params, router: router)
        tape.backward(from: tape.weightedSum(twice.output, Tensor(randomUniform: [40, 8], seed: 3)))
        let experts = params.gate + params.up + params.down
        XCTAssertTrue(experts.allSatisfy { $0.gradSquares == nil })
        let norm = experts.reduce(0.0) { $0 + squares($1) }.squareRoot()
        XCTAssertEqual(Double(clipScale(experts, maxNorm: 1).norm), norm, accuracy: 1e-5 * norm)

        let v = Variable(Tensor(randomUniform: [2, 3], seed: 4))
        for change in [{ v.grad = Tensor(zeros: [2, 3]) }, { clipGradients([v], maxNorm: 1e-3) }] {
            v.grad = Tensor(randomUniform: [2, 3], seed: 5)
            v.gradSquares = 1
            change()
            XCTAssertNil(v.gradSquares)
        }
    }
}
