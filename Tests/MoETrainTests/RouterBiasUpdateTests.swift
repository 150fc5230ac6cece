import Foundation
import MoE
import MoECore
import MoETrain
import XCTest

/// DeepSeek-V3's auxiliary-loss-free balancing in training (ROUTING.md §2): after each step,
/// b_i += speed * sign(mean load - load_i), per layer.
final class RouterBiasUpdateTests: XCTestCase {
    func trainer(speed: Float, accum: Int = 1) throws -> Trainer {
        var c = tinyTrainingConfig(router: "topk-sigmoid", experts: 6, expertSize: 8, seqLen: 10)
        c.gradAccum = accum
        c.biasUpdateSpeed = speed
        return try Trainer(config: c, pool: ThreadPool(threads: 2))
    }

    func testBiasMovesAgainstEachLayersLoad() throws {
        for accum in [1, 2] {
            let t = try trainer(speed: 0.01, accum: accum)
            // The step's routing, recomputed independently: the same weights, biases and batch.
            let (inputs, targets) = t.batch(at: 0)
            let out = t.model.forward(inputs, targets: targets, tape: Tape(pool: t.pool))
            var expected: [[Float]] = []
            for (l, r) in out.routings.enumerated() {
                var load = [Int](repeating: 0, count: 6)
                for tok in 0..<r.tokenCount { for e in r.experts(of: tok) { load[e] += 1 } }
                let mean = Float(load.reduce(0, +)) / 6
                let before = try XCTUnwrap(t.model.layers[l].routerBias)
                expected.append((0..<6).map { i in
                    before[i] + (Float(load[i]) < mean ? 0.01 : (Float(load[i]) > mean ? -0.01 : 0))
                })
            }
            t.trainStep()
            XCTAssertEqual(t.model.layers.map(\.routerBias), expected.map { Optional($0) }, "grad_accum \(accum)")
            XCTAssertTrue(expected.joined().contains { $0 != 0 }, "a random router is not balanced")
        }
    }

    func testZeroSpeedKeepsTheBiasAndCheckpointsCarryIt() throws {
        let still = try trainer(speed: 0)
        still.trainStep()
        XCTAssertEqual(still.model.layers.map(\.routerBias), [[Float]](repeating: [Float](repeating: 0, count: 6), count: 2))
        let moved = try trainer(speed: 0.01)
        moved.trainStep()
        moved.trainStep()
        let saved = Dictionary(uniqueKeysWithValues: moved.model.namedTensors.map { ($0.name, $0.tensor) })
        let restored = try trainer(speed: 0.01)
        try restored.model.load { name in try XCTUnwrap(saved[name], name) }
        XCTAssertEqual(restored.model.layers.map(\.routerBias), moved.model.layers.map(\.routerBias))
        XCTAssertNotNil(saved["model.layers.1.block_sparse_moe.gate.e_score_correction_bias"])
    }
}
