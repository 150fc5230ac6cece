import Foundation
import MoE
import MoECore
import MoETrain
import XCTest

/// `data_parallel`: a step's batch as shards on replicas, one per thread, with the auxiliary
/// losses of the whole batch. Checked against the same step run as one batch, for every router
/// that routes token by token and every auxiliary loss.
final class DataParallelTests: XCTestCase {
    func config(_ router: String, parallel: Bool) -> TrainingConfig { auxLossTrainingConfig(router: router, dataParallel: parallel) }

    func gradients(_ t: Trainer) -> [[Float]] { t.model.parameters.map { $0.variable.grad?.toFloats() ?? [] } }

    func testShardsGiveTheOneBatchStep() throws {
        for router in ["topk-softmax", "topk-sigmoid", "top-p", "null-experts"] {
            let whole = try Trainer(config: config(router, parallel: false), pool: ThreadPool(threads: 1))
            for shards in [2, 4] {
                let split = try Trainer(config: config(router, parallel: true), pool: ThreadPool(threads: shards))
                let a = whole.computeGradients(), b = split.computeGradients()
                XCTAssertGreaterThan(a.aux, 0, router)
                XCTAssertEqual(a.aux, b.aux, accuracy: 1e-6 * max(1, a.aux), "\(router), \(shards) shards")
                XCTAssertEqual(a.loss, b.loss, accuracy: 1e-5 * max(1, a.loss), "\(router), \(shards) shards")
                XCTAssertEqual(whole.lastLoads, split.lastLoads, router)
                var checked = 0
                for (x, y) in zip(gradients(whole), gradients(split)) {
                    XCTAssertEqual(x.count, y.count, router)
                    let scale = x.map(abs).max() ?? 0
                    for (u, v) in zip(x, y) { XCTAssertEqual(u, v, accuracy: 1e-4 * scale + 1e-7, "\(router), \(shards) shards") }
                    checked += x.count
                }
                XCTAssertGreaterThan(checked, 1000)
            }
        }
    }

    /// The auxiliary losses' gradients themselves agree (not only the cross-entropy's): the
    /// router weights' gradients with a large balance coefficient.
    func testBalanceGradientsAreTheBatchs() throws {
        var a = config("topk-softmax", parallel: false), b = config("topk-softmax", parallel: true)
        (a.loadBalance, b.loadBalance, a.zLoss, b.zLoss) = (5, 5, 1, 1)
        let whole = try Trainer(config: a, pool: ThreadPool(threads: 1))
        let split = try Trainer(config: b, pool: ThreadPool(threads: 2))
        _ = whole.computeGradients()
        _ = split.computeGradients()
        for (layer, (p, q)) in zip(whole.model.layers, split.model.layers).enumerated() {
            guard case let .linear(wp)? = p.moe?.router, case let .linear(wq)? = q.moe?.router else { return XCTFail("linear routers") }
            let x = wp.grad!.toFloats(), y = wq.grad!.toFloats(), scale = x.map(abs).max() ?? 0
            for (u, v) in zip(x, y) { XCTAssertEqual(u, v, accuracy: 1e-4 * scale, "layer \(layer)") }
        }
    }

    func testRoutersThatSeeTheWholeBatchAreRefused() {
        for (router, capacity) in [("expert-choice", nil), ("switch", nil), ("topk-softmax", Float(1.25))] as [(String, Float?)] {
            var c = config(router, parallel: true)
            c.router.k = router == "switch" ? 1 : 2
            c.router.capacityFactor = capacity
            XCTAssertThrowsError(try c.validate(path: "t.json"), router) { error in
                XCTAssertTrue("\(error)".contains("data_parallel"), "\(error)")
            }
        }
        var c = config("topk-softmax", parallel: true)
        c.gradAccum = 2
        XCTAssertThrowsError(try c.validate(path: "t.json")) { XCTAssertTrue("\($0)".contains("data_parallel")) }
        XCTAssertNoThrow(try config("top-p", parallel: true).validate(path: "t.json"))
    }
}
