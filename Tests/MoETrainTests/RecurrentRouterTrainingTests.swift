import Foundation
import MoE
import MoECore
import MoEModels
import MoETrain
import _TestSupport
import XCTest

/// RMoE's recurrent router in training: the GRU cell's backward, the gradient that flows back
/// across layers through the router state, and checkpoints that inference runs the same.
final class RecurrentRouterTrainingTests: XCTestCase {
    func gruInputs(n: Int, h: Int, seed: UInt64) -> [Tensor] {
        (0..<6).map { Tensor(randomUniform: [h, $0 < 3 ? n : h], in: -0.6...0.6, seed: seed + UInt64($0)) }
            + (0..<6).map { Tensor(randomUniform: [h], in: -0.5...0.5, seed: seed + 10 + UInt64($0)) }
    }

    func cell(_ v: ArraySlice<Variable>) -> GRUParameters {
        let v = Array(v)
        return GRUParameters(weightI: Array(v[0..<3]), weightH: Array(v[3..<6]), biasI: Array(v[6..<9]), biasH: Array(v[9..<12]))
    }

    func testGRUCellWithAndWithoutState() {
        let (t, n, h) = (4, 5, 3)
        let r = Tensor(randomUniform: [t, h], seed: 1)
        // x, state, then the cell.
        gradientCheck([Tensor(randomUniform: [t, n], seed: 2), Tensor(randomUniform: [t, h], seed: 3)] + gruInputs(n: n, h: h, seed: 10)) { tape, v in
            tape.weightedSum(tape.gruCell(v[0], state: v[1], cell(v[2...])), r)
        }
        gradientCheck([Tensor(randomUniform: [t, n], seed: 4)] + gruInputs(n: n, h: h, seed: 30)) { tape, v in
            tape.weightedSum(tape.gruCell(v[0], state: nil, cell(v[1...])), r)
        }
    }

    /// The GRU against a hand evaluation of PyTorch's formulas on one element.
    func testGRUCellForwardByHand() {
        let tape = Tape(pool: ThreadPool(threads: 1))
        func scalar(_ x: Float) -> Variable { Variable(Tensor(shape: [1, 1], values: [x])) }
        func bias(_ x: Float) -> Variable { Variable(Tensor(shape: [1], values: [x])) }
        let p = GRUParameters(weightI: [scalar(0.5), scalar(-1), scalar(2)], weightH: [scalar(1), scalar(0.25), scalar(-0.5)],
                              biasI: [bias(0.1), bias(0), bias(-0.2)], biasH: [bias(0), bias(0.3), bias(0.4)])
        let (x, h0): (Double, Double) = (0.7, -0.4)
        let y = tape.gruCell(scalar(Float(x)), state: scalar(Float(h0)), p).value.floats[0]
        func sigmoid(_ a: Double) -> Double { 1 / (1 + exp(-a)) }
        let rr = sigmoid(0.5 * x + 0.1 + 1 * h0), u = sigmoid(-1 * x + 0.25 * h0 + 0.3)
        let c = tanh(2 * x - 0.2 + rr * (-0.5 * h0 + 0.4))
        XCTAssertEqual(Double(y), (1 - u) * c + u * h0, accuracy: 1e-6)
    }

    func recurrentModel(layers: Int, seed: UInt64) throws -> (TrainableDecoder, RouterConfig) {
        var rc = RouterConfig(name: "recurrent")
        rc.k = 2
        rc.rnnHiddenSize = 6
        let s = TrainableDecoder.Shape(vocabSize: 23, hiddenSize: 8, layers: layers, heads: 2, kvHeads: 1, experts: 4, expertSize: 6)
        let model = TrainableDecoder(shape: s, router: try rc.makeRouter(experts: 4), seed: seed)
        // Weights large enough that the loss depends clearly on routing (the 0.02 init gives
        // near-uniform routing and experts whose output barely moves the loss).
        var counter: UInt64 = 0
        for (name, v) in model.namedVariables.sorted(by: { $0.key < $1.key }) where !name.contains("norm") {
            counter += 1
            v.value = Tensor(randomUniform: v.shape, in: -0.6...0.6, seed: seed * 100 + counter)
        }
        return (model, rc)
    }

    /// The whole model's loss against finite differences in every router tensor, over three
    /// layers, so the gradient reaches layer 1's router through the state of layers 2 and 3.
    func testGradientFlowsAcrossLayersThroughTheState() throws {
        let (model, _) = try recurrentModel(layers: 3, seed: 5)
        let names = model.namedVariables.keys.filter { $0.contains("rnn_router") || $0.contains("weight1") || $0.contains("weight2") }.sorted()
        XCTAssertEqual(names.count, 12 + 2 * 3)
        let ids = [[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]], targets = [[1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9]]
        // Cross-entropy plus the aux losses, whose gradients the MoE op applies inside.
        func loss(_ tape: Tape) -> Variable {
            let out = model.forward(ids, targets: targets, tape: tape, aux: AuxLossCoefficients(loadBalance: 0.1, zLoss: 0.01))
            return tape.add(out.loss, Variable(Tensor(shape: [1], values: [out.auxLoss]), requiresGrad: false))
        }
        let tape = Tape(pool: ThreadPool(threads: 1))
        tape.backward(from: loss(tape))
        var rng = SplitMix64(seed: 7)
        for name in names {
            let v = model.namedVariables[name]!
            let analytic = v.grad?.toFloats() ?? [Float](repeating: 0, count: v.value.count)
            for _ in 0..<6 {
                let i = Int(rng.next() % UInt64(v.value.count)), h: Float = 5e-3
                func lossAt(_ delta: Float) -> Float {
                    let saved = v.value.floats[i]
                    v.value.mutableFloats[i] = saved + delta
                    defer { v.value.mutableFloats[i] = saved }
                    return loss(Tape(pool: ThreadPool(threads: 1))).value.toFloats()[0]
                }
                let numeric = (lossAt(h) - lossAt(-h)) / (2 * h)
                XCTAssertEqual(analytic[i], numeric, accuracy: 3e-3 + 3e-2 * abs(numeric), "\(name)[\(i)]")
            }
        }
        // The first layer's input projection learns only through what later layers route.
        XCTAssertNotNil(model.namedVariables["model.layers.0.block_sparse_moe.weight1"]?.grad)
    }

    /// A recurrent model saves RMoE's tensor names and a `moekit_router` that makes
    /// `DecoderModel` (MoE's own GRU and gate) compute the same logits, decoding with a cache too.
    func testCheckpointRunsTheSameInInference() throws {
        let (model, rc) = try recurrentModel(layers: 3, seed: 9)
        let inference = try savedAndLoaded(model, routerConfig: rc)
        let tokens = [5, 9, 13, 2, 19, 17, 0]
        var cache = inference.makeCache()
        let expected = try inference.forward(tokens, cache: &cache).toFloats()
        let out = model.forward([tokens], targets: [tokens], tape: Tape(pool: ThreadPool(threads: 1)))
        assertClose(out.logits.value.toFloats(), expected, absolute: 1e-4)
        // Token by token through the KV cache: the recurrence is over depth, so it still holds.
        var stepCache = inference.makeCache()
        var last: [Float] = []
        for tok in tokens { last = try inference.forward([tok], cache: &stepCache).toFloats() }
        assertClose(last, Array(expected.suffix(23)), absolute: 1e-4)
        // Routing differs from layer to layer and token to token (the test is not trivially uniform).
        let experts = Set(out.routings.flatMap { $0.experts })
        XCTAssertGreaterThan(experts.count, 2)
    }
}
