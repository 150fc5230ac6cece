import Foundation
import MoE
import MoECore
import MoEDistributed
import MoETrain
import XCTest

/// `data_parallel` on ranks (`Trainer.communicator`; here ranks are threads, under `mpirun`
/// they are processes): each rank one shard of every batch. Against one process running the
/// same shards on replicas, the loss curve, the experts' loads and the weights are the same
/// bit for bit (threads add the ranks' gradients in rank order, as the replicas' are added).
final class RankDataParallelTests: XCTestCase {
    func config(_ router: String) -> TrainingConfig {
        var c = auxLossTrainingConfig(router: router, dataParallel: true)
        c.steps = 4
        return c
    }

    /// Losses of `steps` steps, and every parameter's value after them.
    static func run(_ trainer: Trainer, steps: Int) -> (losses: [Float], loads: [[Int]], weights: [[Float]]) {
        var losses: [Float] = []
        for _ in 0..<steps { losses.append(trainer.trainStep().loss) }
        return (losses, trainer.lastLoads, trainer.model.parameters.map { $0.variable.value.toFloats() })
    }

    func testRanksTrainAsOneProcessWithShards() throws {
        for router in ["topk-softmax", "topk-sigmoid", "top-p", "null-experts"] {
            let c = config(router)
            for ranks in [2, 4] {
                let alone = try Trainer(config: c, pool: ThreadPool(threads: ranks))
                let want = Self.run(alone, steps: 3)
                let got = ThreadCommunicator.run(ranks: ranks) { comm -> Result<([Float], [[Int]], [[Float]]), Error> in
                    Result {
                        let trainer = try Trainer(config: c, pool: ThreadPool(threads: 1))
                        trainer.communicator = comm
                        let r = Self.run(trainer, steps: 3)
                        return (r.losses, r.loads, r.weights)
                    }
                }
                for (rank, result) in got.enumerated() {
                    let (losses, loads, weights) = try result.get()
                    XCTAssertEqual(losses, want.losses, "\(router), \(ranks) ranks, rank \(rank)")
                    XCTAssertEqual(loads, want.loads, "\(router), \(ranks) ranks, rank \(rank)")
                    XCTAssertTrue(weights == want.weights, "\(router), \(ranks) ranks, rank \(rank): weights differ")
                }
                XCTAssertNotEqual(want.losses.first, want.losses.last, "\(router): the model trained")
            }
        }
    }
}
