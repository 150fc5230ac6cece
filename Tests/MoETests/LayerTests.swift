import Foundation
import MoE
import MoECore
import _TestSupport
import XCTest

/// The whole layer against a plain per-token loop, for every router.
///
/// The reference: logits from a Double matvec of the gate (or a Double GRU for RMoE), then for
/// every token the sum over its chosen experts of weight * SwiGLU(x) computed in Double, plus
/// the shared expert. Tolerance 2e-4 absolute on outputs of magnitude ~1 (f32 accumulation over
/// d = 16 and I = 24, bf16 weights widened exactly).
final class LayerTests: XCTestCase {
    let d = 16, inner = 24, experts = 6, tokens = 9
    let pools = [ThreadPool(threads: 1), ThreadPool(threads: 2)]

    func matvec(_ w: [Float], _ x: ArraySlice<Float>, rows: Int) -> [Double] {
        let cols = x.count
        return (0..<rows).map { r in
            (0..<cols).reduce(0.0) { $0 + Double(w[r * cols + $1]) * Double(x[x.startIndex + $1]) }
        }
    }

    func swiglu(_ g: Tensor, _ u: Tensor, _ dn: Tensor, _ x: ArraySlice<Float>) -> [Double] {
        let i = g.shape[0]
        let a = matvec(g.toFloats(), x, rows: i), b = matvec(u.toFloats(), x, rows: i)
        let h = (0..<i).map { Float(a[$0] / (1 + exp(-a[$0])) * b[$0]) }
        return matvec(dn.toFloats(), h[...], rows: dn.shape[0])
    }

    func makeExperts(_ n: Int, seed: UInt64) -> SwiGLUExperts {
        SwiGLUExperts(gate: (0..<n).map { Tensor(randomUniform: [inner, d], in: -0.5...0.5, seed: seed + UInt64($0), dtype: .bf16) },
                      up: (0..<n).map { Tensor(randomUniform: [inner, d], in: -0.5...0.5, seed: seed + 100 + UInt64($0), dtype: .bf16) },
                      down: (0..<n).map { Tensor(randomUniform: [d, inner], in: -0.5...0.5, seed: seed + 200 + UInt64($0), dtype: .bf16) })
    }

    /// Checks one layer against the per-token loop; returns its output for further checks.
    @discardableResult
    func check(_ layer: MoELayer, label: String, referenceLogits: (([Float]) -> [Double])? = nil) -> MoELayer.Output {
        let x = Tensor(randomUniform: [tokens, d], in: -1...1, seed: 42)
        let xs = x.toFloats()
        var last: MoELayer.Output?
        for pool in pools {
            var state = RouterState()
            let out = layer.forward(x, state: &state, options: .init(auxLosses: true), pool: pool)
            // The logits are the gate's, and the routing is the router's on them.
            if case let .linear(w, _) = layer.gate {
                let z = (0..<tokens).flatMap { matvec(w.toFloats(), xs[($0 * d)..<(($0 + 1) * d)], rows: w.shape[0]) }
                assertClose(out.logits.toFloats(), z.map(Float.init), absolute: 1e-5, "\(label) logits")
            }
            if let referenceLogits {
                assertClose(out.logits.toFloats(), referenceLogits(xs).map(Float.init), absolute: 1e-5, "\(label) logits")
            }
            XCTAssertEqual(out.routing, layer.router.route(out.logits), "\(label): routing is the router's")
            var expected = [Float]()
            for t in 0..<tokens {
                let xt = xs[(t * d)..<((t + 1) * d)]
                var y = [Double](repeating: 0, count: d)
                for (e, w) in zip(out.routing.experts(of: t), out.routing.weights(of: t)) {
                    guard let sw = layer.experts as? SwiGLUExperts else { return out }
                    let v = swiglu(sw.gate[e], sw.up[e], sw.down[e], xt)
                    for j in 0..<d { y[j] += Double(w) * v[j] }
                }
                if let shared = layer.shared {
                    let v = swiglu(shared.gate, shared.up, shared.down, xt)
                    let g = shared.outputGate.map { w in
                        1 / (1 + exp(-matvec(w.toFloats(), xt, rows: 1)[0]))
                    } ?? 1
                    for j in 0..<d { y[j] += g * v[j] }
                }
                expected += y.map(Float.init)
            }
            assertClose(out.output.toFloats(), expected, absolute: 2e-4, "\(label) threads=\(pool.threadCount)")
            XCTAssertTrue(out.auxLosses.values.allSatisfy(\.isFinite), "\(label) losses")
            last = out
        }
        return last!  // safe: pools is not empty
    }

    func linearGate(_ rows: Int, seed: UInt64) -> RouterGate {
        .linear(weight: Tensor(randomUniform: [rows, d], in: -1...1, seed: seed))
    }

    func testEveryRouterMatchesThePerTokenLoop() throws {
        let ex = makeExperts(experts, seed: 1)
        let shared = SharedExpert(gate: Tensor(randomUniform: [inner, d], in: -0.5...0.5, seed: 900, dtype: .bf16),
                                  up: Tensor(randomUniform: [inner, d], in: -0.5...0.5, seed: 901, dtype: .bf16),
                                  down: Tensor(randomUniform: [d, inner], in: -0.5...0.5, seed: 902, dtype: .bf16),
                                  outputGate: Tensor(randomUniform: [1, d], seed: 903))
        let bias: [Float] = [0.1, -0.2, 0.3, 0, 0.05, -0.1]
        let cases: [(String, any Router, Int, SharedExpert?)] = [
            ("topk-softmax", TopKSoftmaxRouter(experts: experts, k: 2), experts, nil),
            ("topk-softmax+shared", TopKSoftmaxRouter(experts: experts, k: 2, renormalize: false), experts, shared),
            ("topk-softmax+capacity", CapacityLimitedRouter(TopKSoftmaxRouter(experts: experts, k: 2), capacity: Capacity(factor: 0.5)), experts, nil),
            ("switch", SwitchRouter(experts: experts, capacity: Capacity(factor: 1, dropBy: .score)), experts, nil),
            ("topk-sigmoid", TopKSigmoidRouter(experts: experts, k: 2, bias: bias, groups: 3, topkGroup: 2, routedScaling: 2.5), experts, shared),
            ("topk-sigmoid-v2", TopKSigmoidRouter(experts: experts, k: 3, scoring: .softmax, groups: 2, topkGroup: 1, renormalize: false), experts, nil),
            ("top-p", TopPRouter(experts: experts, p: 0.5), experts, nil),
            ("null-experts", NullExpertsRouter(experts: experts, nullExperts: 4, k: 3), experts + 4, nil),
            ("expert-choice", ExpertChoiceRouter(experts: experts, capacityFactor: 1.5), experts, nil),
        ]
        for (i, (label, router, logitCount, shared)) in cases.enumerated() {
            let layer = MoELayer(gate: linearGate(logitCount, seed: 500 + UInt64(i)), router: router, experts: ex, shared: shared)
            let out = check(layer, label: label)
            if label == "topk-softmax+capacity" { XCTAssertGreaterThan(out.routing.droppedCount, 0, "capacity 0.5 must drop") }
            if label == "null-experts" {
                XCTAssertNotEqual(Set((0..<tokens).map { out.routing.experts(of: $0).count }).count, 1,
                                  "null experts should give tokens different numbers of experts")
            }
        }
    }

    func testRecurrentRouterCarriesStateAcrossLayers() {
        let h = 5
        let cell = GRUCell(weightIH: Tensor(randomUniform: [3 * h, h], seed: 70), weightHH: Tensor(randomUniform: [3 * h, h], seed: 71),
                           biasIH: Tensor(randomUniform: [3 * h], seed: 72), biasHH: Tensor(randomUniform: [3 * h], seed: 73))
        let gates = (0..<2).map { l in
            RecurrentGate(inputProjection: Tensor(randomUniform: [h, d], seed: 80 + UInt64(l)),
                          outputProjection: Tensor(randomUniform: [experts, h], seed: 90 + UInt64(l)), cell: cell)
        }
        // Reference GRU over depth in Double.
        func gru(_ x: [Double], _ hp: [Double]) -> [Double] {
            let wi = cell.weightIH.toFloats(), wh = cell.weightHH.toFloats(), bi = cell.biasIH.toFloats(), bh = cell.biasHH.toFloats()
            func row(_ w: [Float], _ v: [Double], _ r: Int) -> Double { (0..<h).reduce(0.0) { $0 + Double(w[r * h + $1]) * v[$1] } }
            return (0..<h).map { j in
                let r = 1 / (1 + exp(-(row(wi, x, j) + Double(bi[j]) + row(wh, hp, j) + Double(bh[j]))))
                let u = 1 / (1 + exp(-(row(wi, x, h + j) + Double(bi[h + j]) + row(wh, hp, h + j) + Double(bh[h + j]))))
                let n = tanh(row(wi, x, 2 * h + j) + Double(bi[2 * h + j]) + r * (row(wh, hp, 2 * h + j) + Double(bh[2 * h + j])))
                return (1 - u) * n + u * hp[j]
            }
        }
        let ex = makeExperts(experts, seed: 3)
        let x = Tensor(randomUniform: [tokens, d], in: -1...1, seed: 42)
        let xs = x.toFloats()
        var refState = [[Double]](repeating: [Double](repeating: 0, count: h), count: tokens)
        var state = RouterState()
        for (l, gate) in gates.enumerated() {
            let layer = MoELayer(gate: .recurrent(gate), router: RecurrentRouter(experts: experts, k: 2), experts: ex)
            var refLogits = [Double]()
            for t in 0..<tokens {
                let xi = matvec(gate.inputProjection.toFloats(), xs[(t * d)..<((t + 1) * d)], rows: h)
                refState[t] = gru(xi, refState[t])
                refLogits += matvec(gate.outputProjection.toFloats(), refState[t].map(Float.init)[...], rows: experts)
            }
            let out = layer.forward(x, state: &state)
            assertClose(out.logits.toFloats(), refLogits.map(Float.init), absolute: 1e-5, "layer \(l) logits")
            XCTAssertEqual(out.routing, layer.router.route(out.logits))
        }
        XCTAssertNotNil(state.recurrent, "the state reaches the next layer")
        // The first layer's whole output against the per-token loop (its state starts at zero).
        check(MoELayer(gate: .recurrent(gates[0]), router: RecurrentRouter(experts: experts, k: 2), experts: ex),
              label: "recurrent") { xs in
            (0..<self.tokens).flatMap { t -> [Double] in
                let xi = self.matvec(gates[0].inputProjection.toFloats(), xs[(t * self.d)..<((t + 1) * self.d)], rows: h)
                let r = gru(xi, [Double](repeating: 0, count: h))
                return self.matvec(gates[0].outputProjection.toFloats(), r.map(Float.init)[...], rows: self.experts)
            }
        }
    }

    func testFineGrainedSegmentationComputesTheSameFunction() throws {
        let layer = MoELayer(gate: linearGate(experts, seed: 11), router: TopKSoftmaxRouter(experts: experts, k: 2),
                             experts: makeExperts(experts, seed: 5))
        let fine = try XCTUnwrap(layer.fineGrained(segments: 3))
        XCTAssertEqual(fine.experts.expertCount, experts * 3)
        XCTAssertEqual((fine.router as? TopKSoftmaxRouter)?.k, 6)
        let x = Tensor(randomUniform: [tokens, d], seed: 8)
        var s1 = RouterState(), s2 = RouterState()
        let a = layer.forward(x, state: &s1).output.toFloats()
        let b = fine.forward(x, state: &s2).output.toFloats()
        // bf16 down weights scaled by 3 are rounded again: 1e-2 relative of |y|, 1e-3 absolute.
        assertClose(b, a, absolute: 1e-3, relative: 1e-2)
    }

    func testLoRAExpertsMatchDenseEquivalents() {
        let r = 3, scale: Float = 2
        let base = makeExperts(1, seed: 60)
        func adapter(_ out: Int, _ inp: Int, _ seed: UInt64) -> LoRAAdapter {
            LoRAAdapter(a: Tensor(randomUniform: [r, inp], in: -0.3...0.3, seed: seed), b: Tensor(randomUniform: [out, r], in: -0.3...0.3, seed: seed + 1))
        }
        let gateA = (0..<experts).map { e -> LoRAAdapter? in e % 3 == 2 ? nil : adapter(inner, d, 300 + UInt64(e) * 10) }
        let upA = (0..<experts).map { adapter(inner, d, 400 + UInt64($0) * 10) as LoRAAdapter? }
        let downA = (0..<experts).map { adapter(d, inner, 500 + UInt64($0) * 10) as LoRAAdapter? }
        let lora = LoRAExperts(baseGate: base.gate[0], baseUp: base.up[0], baseDown: base.down[0], gateAdapters: gateA,
                               upAdapters: upA, downAdapters: downA, scale: scale)
        // The dense equivalent of each expert: W + scale * B A, in f32.
        func merged(_ w: Tensor, _ a: LoRAAdapter?) -> Tensor {
            guard let a else { return w.converted(to: .f32) }
            let ab = Kernels.matmul(a.b, a.a.converted(to: .f32).transposedForTest())  // [out, in]
            return Tensor(shape: w.shape, values: zip(w.toFloats(), ab.toFloats()).map { $0 + scale * $1 })
        }
        let dense = SwiGLUExperts(gate: gateA.map { merged(base.gate[0], $0) }, up: upA.map { merged(base.up[0], $0) },
                                  down: downA.map { merged(base.down[0], $0) })
        let gate = linearGate(experts, seed: 12)
        let x = Tensor(randomUniform: [tokens, d], seed: 9)
        var s1 = RouterState(), s2 = RouterState()
        let router = TopKSoftmaxRouter(experts: experts, k: 2)
        let a = MoELayer(gate: gate, router: router, experts: lora).forward(x, state: &s1).output.toFloats()
        let b = MoELayer(gate: gate, router: router, experts: dense).forward(x, state: &s2).output.toFloats()
        assertClose(a, b, absolute: 1e-4)
    }

    func testDecodeSingleTokenAndEmptySelections() {
        let ex = makeExperts(experts, seed: 21)
        // One token whose null experts win everything: zero routed output, shared output only.
        let layer = MoELayer(gate: linearGate(experts + 2, seed: 13), router: NullExpertsRouter(experts: experts, nullExperts: 2, k: 2), experts: ex)
        var weight = [Float](repeating: 0, count: (experts + 2) * d)
        for j in 0..<d { weight[experts * d + j] = 1; weight[(experts + 1) * d + j] = 1 }
        let forced = MoELayer(gate: .linear(weight: Tensor(shape: [experts + 2, d], values: weight)), router: layer.router, experts: ex)
        var state = RouterState()
        let x = Tensor(shape: [1, d], values: [Float](repeating: 1, count: d))
        let out = forced.forward(x, state: &state)
        XCTAssertEqual(out.routing.assignmentCount, 0)
        XCTAssertEqual(out.output.toFloats(), [Float](repeating: 0, count: d))
        check(MoELayer(gate: linearGate(experts, seed: 14), router: TopKSoftmaxRouter(experts: experts, k: 2), experts: ex),
              label: "decode")
    }

    func testDispatchGroupsRowsByExpertInTokenOrder() {
        let routing = Routing(expertCount: 3, tokens: [[(2, 0.6), (0, 0.4)], [], [(0, 1)], [(2, 0.5), (1, 0.5)]])
        let dispatch = Dispatch(routing)
        XCTAssertEqual(dispatch.rowOffsets, [0, 2, 3, 5])
        XCTAssertEqual(dispatch.rowToken, [0, 2, 3, 0, 3])
        XCTAssertEqual(dispatch.assignmentRow, [3, 0, 1, 2, 4])  // token 3 tie: expert 1 sorts first
        let x = Tensor(shape: [4, 1], values: [10, 20, 30, 40])
        XCTAssertEqual(dispatch.gather(x).toFloats(), [10, 30, 40, 10, 40])
        let out = Tensor(zeros: [4, 1])
        dispatch.combine(Tensor(shape: [5, 1], values: [1, 2, 3, 4, 5]), routing: routing, into: out, pool: ThreadPool(threads: 1))
        let expected: [Float] = [0.6 * 4 + 0.4 * 1, 0, 2, 0.5 * 5 + 0.5 * 3]
        XCTAssertEqual(out.toFloats(), expected)
    }

    func testTraceCountsExpertsPerTokenAndDrops() {
        var trace = RoutingTrace()
        trace.record(layer: 0, routing: Routing(expertCount: 3, tokens: [[(0, 1)], [], [(1, 0.5), (2, 0.5)]]))
        var dropped = Routing(expertCount: 3)
        dropped.append([], dropped: [1])
        trace.record(layer: 1, routing: dropped)
        XCTAssertEqual(trace.expertsPerToken, [2, 1, 1])
        XCTAssertEqual(trace.tokensPerExpert[0], [1, 1, 1])
        XCTAssertEqual(trace.droppedAssignments, 1)
        XCTAssertEqual(trace.droppedTokens, 1)
        XCTAssertEqual(trace.records.count, 2)
        XCTAssertEqual(trace.meanExpertsPerToken, 0.75, accuracy: 1e-12)
    }
}

extension Tensor {
    /// [r, c] -> [c, r] copy (test helper).
    func transposedForTest() -> Tensor {
        let (r, c) = (shape[0], shape[1]), v = toFloats()
        return Tensor(shape: [c, r], values: (0..<(c * r)).map { v[($0 % r) * c + $0 / r] })
    }
}
