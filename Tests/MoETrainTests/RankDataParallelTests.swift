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

    /// `expert_parallel`: each rank runs, and trains, only its experts, on the rows every rank
    /// routed to them (all-to-all in the MoE op's forward and backward). Against one process
    /// running the same shards, a step differs only in the order of sums (an expert weight's
    /// gradient is one product over every rank's rows instead of one per shard; the clipping
    /// norm adds the ranks' expert parts): the first loss is equal, every gradient this rank
    /// holds agrees to 1e-5 of its tensor's largest (the others' experts have none here), and after 3 AdamW steps the losses agree
    /// to 1e-6 and the weights to 1e-7 (5e-9 seen); on 2 and 4 ranks (4 experts: one each), for
    /// routers with fixed, ragged and null choices.
    func testExpertParallelTrainsAsOneProcessWithShards() throws {
        for router in ["topk-softmax", "top-p", "null-experts"] {
            for ranks in [2, 4] {
                var c = config(router)
                c.expertParallel = ranks
                let alone = try Trainer(config: config(router), pool: ThreadPool(threads: ranks))
                _ = alone.computeGradients()
                let wantGrads = alone.model.parameters.map { $0.variable.grad?.toFloats() ?? [] }
                let want = Self.run(alone, steps: 3)
                let traffic = ThreadCommunicator.Results<(sent: Int, received: Int)>(count: ranks)
                let holdings = ThreadCommunicator.Results<Set<Int>>(count: ranks)  // per rank: the other ranks' experts' parameter indices
                let got = ThreadCommunicator.run(ranks: ranks) { [c] comm -> Result<([[Float]], [Float], [[Int]], [[Float]]), Error> in
                    Result {
                        let trainer = try Trainer(config: c, pool: ThreadPool(threads: 1))
                        try trainer.join(comm)
                        _ = trainer.computeGradients()
                        let grads = trainer.model.parameters.map { $0.variable.grad?.toFloats() ?? [] }
                        let r = Self.run(trainer, steps: 3)
                        let shard = ExpertShard(experts: 4, ranks: ranks)!
                        var others = Set<Int>()
                        for layer in trainer.model.layers {
                            guard let moe = layer.moe else { continue }
                            for kind in [moe.gate, moe.up, moe.down] {
                                for (e, v) in kind.enumerated() where !shard.experts(of: comm.rank).contains(e) {
                                    if let k = trainer.model.parameters.firstIndex(where: { $0.variable === v }) { others.insert(k) }
                                }
                            }
                        }
                        holdings.set(comm.rank, others)
                        let t = trainer.model.expertExchange.current
                        traffic.set(comm.rank, (t.bytesSent, t.bytesReceived))
                        return (grads, r.losses, r.loads, r.weights)
                    }
                }
                let othersExperts = holdings.values()
                let moved = traffic.values()
                XCTAssertGreaterThan(moved.reduce(0) { $0 + $1.sent }, 0, "\(router): rows crossed ranks")
                XCTAssertEqual(moved.reduce(0) { $0 + $1.sent }, moved.reduce(0) { $0 + $1.received }, "\(router): every byte sent arrived")
                for (rank, result) in got.enumerated() {
                    let (grads, losses, loads, weights) = try result.get()
                    let label = "\(router), \(ranks) ranks, rank \(rank)"
                    var checked = 0, elsewhere = 0
                    for (x, y) in zip(grads, wantGrads) {
                        if x.isEmpty && !y.isEmpty { elsewhere += 1; continue }  // an expert another rank runs
                        XCTAssertEqual(x.count, y.count, label)
                        let scale = y.map(abs).max() ?? 0
                        for (u, v) in zip(x, y) { XCTAssertEqual(u, v, accuracy: 1e-5 * scale + 1e-8, label) }
                        checked += x.count
                    }
                    XCTAssertGreaterThan(checked, 1000, label)
                    XCTAssertEqual(elsewhere, 2 * 3 * (4 - 4 / ranks), "\(label): only the other ranks' experts have no gradient here")
                    XCTAssertEqual(losses.first, want.losses.first, label)
                    for (a, b) in zip(losses, want.losses) { XCTAssertEqual(a, b, accuracy: 1e-6 * max(1, abs(b)), label) }
                    XCTAssertEqual(loads, want.loads, label)
                    var worst: Float = 0, compared = 0
                    for (k, (x, y)) in zip(weights, want.weights).enumerated() where !othersExperts[rank].contains(k) {
                        for (u, v) in zip(x, y) { worst = max(worst, abs(u - v)) }
                        compared += 1
                    }
                    XCTAssertLessThan(worst, 1e-7, label)
                    XCTAssertEqual(compared, weights.count - 2 * 3 * (4 - 4 / ranks), "\(label): each rank holds its experts alone")
                }
            }
        }
    }

    /// Under expert parallelism no rank holds the others' experts, yet: the ranks' checkpoint
    /// (rank 0 writes, each expert tensor sent by its rank) holds every expert as its rank
    /// trained it, with its AdamW moments; one process restored from it continues as the
    /// ranks do; and the ranks' evaluation forward (experts run where they are, outputs
    /// all-gathered) gives that process's logits bit for bit on every rank.
    func testExpertParallelCheckpointAndEvaluationNeedNoRankToHoldEveryExpert() throws {
        var c = config("topk-softmax")
        c.expertParallel = 2
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-ep-ckpt-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let ids = [1, 7, 3, 9, 4, 2]
        @Sendable func logits(_ t: Trainer) -> [Float] {
            t.model.expertParallelReplicated = true
            defer { t.model.expertParallelReplicated = false }
            return t.model.forward([ids], targets: [[Int](repeating: -1, count: ids.count)], tape: Tape(pool: t.pool),
                                   aux: AuxLossCoefficients()).logits.value.toFloats()
        }
        let got = ThreadCommunicator.run(ranks: 2) { [c] comm -> Result<(own: [String: [Float]], logits: [Float], next: Float), Error> in
            Result {
                let trainer = try Trainer(config: c, pool: ThreadPool(threads: 1))
                try trainer.join(comm)
                for _ in 0..<3 { _ = trainer.trainStep() }
                try trainer.save(to: dir)
                let owners = trainer.expertOwners
                var own: [String: [Float]] = [:]
                for (name, v) in trainer.model.namedVariables where owners[name] == comm.rank { own[name] = v.value.toFloats() }
                let l = logits(trainer)
                return (own, l, trainer.trainStep().loss)
            }
        }
        let alone = try Trainer(config: config("topk-softmax"), pool: ThreadPool(threads: 2))
        try alone.restore(from: dir)
        XCTAssertEqual(alone.step, 3)
        let want = logits(alone)
        let named = alone.model.namedVariables
        var experts = 0
        for (rank, result) in got.enumerated() {
            let r = try result.get()
            XCTAssertEqual(r.logits, want, "rank \(rank): the evaluation forward is one process's on the checkpoint")
            for (name, values) in r.own {
                XCTAssertEqual(named[name]?.value.toFloats(), values, "\(name): rank \(rank)'s expert as it trained it")
                XCTAssertNotNil(alone.optimizer.state(of: named[name]!), "\(name): its moments are in the checkpoint")
                experts += 1
            }
        }
        XCTAssertEqual(experts, 2 * 3 * 4, "every expert of both MoE layers, once")
        // One process restored from the checkpoint takes the ranks' next step: the same loss to rounding.
        let next = alone.trainStep().loss
        for result in got { XCTAssertEqual(try result.get().next, next, accuracy: 1e-5 * max(1, abs(next))) }
    }

    /// `overlap_chunks`: the MoE op's all-to-alls, forward and backward, pipelined in slices of
    /// the experts (each expert's rows still in one product, in the unchunked layout) trains
    /// exactly as unpipelined: the same losses, loads and weights, bit for bit, on 2
    /// ranks (2 chunks) and 4 (1 expert a rank: capped to 1), for fixed, ragged and null choices.
    func testPipelinedExpertParallelTrainsBitForBitAsUnpipelined() throws {
        for router in ["topk-softmax", "top-p", "null-experts"] {
            for ranks in [2, 4] {
                var results: [[Result<([Float], [[Int]], [[Float]]), Error>]] = []
                for chunks in [1, 2] {
                    var c = config(router)
                    c.expertParallel = ranks
                    c.overlapChunks = chunks
                    results.append(ThreadCommunicator.run(ranks: ranks) { [c] comm in
                        Result {
                            let trainer = try Trainer(config: c, pool: ThreadPool(threads: 1))
                            try trainer.join(comm)
                            let r = Self.run(trainer, steps: 3)
                            let owners = trainer.expertOwners  // the other ranks' experts are placeholders here
                            let held = trainer.model.namedVariables.filter { (owners[$0.key] ?? comm.rank) == comm.rank }
                            return (r.losses, r.loads, held.sorted { $0.key < $1.key }.map { $0.value.value.toFloats() })
                        }
                    })
                }
                for rank in 0..<ranks {
                    let (plain, piped) = try (results[0][rank].get(), results[1][rank].get())
                    let label = "\(router), \(ranks) ranks, rank \(rank)"
                    XCTAssertEqual(piped.0, plain.0, label)
                    XCTAssertEqual(piped.1, plain.1, label)
                    XCTAssertTrue(piped.2 == plain.2, "\(label): weights differ")
                }
            }
        }
    }

    /// The checks `join` makes before a rank trains.
    func testJoinRefusesConfigsTheRanksCannotRun() throws {
        let messages = ThreadCommunicator.run(ranks: 2) { comm -> [String] in
            var out: [String] = []
            for change in 0..<3 {
                var c = auxLossTrainingConfig(router: "topk-softmax", dataParallel: true)
                switch change {
                case 0: c.dataParallel = false
                case 1: c.batch = 5
                default: c.expertParallel = 4
                }
                do {
                    try Trainer(config: c, pool: ThreadPool(threads: 1)).join(comm, configPath: "t.json")
                    out.append("joined")
                } catch { out.append("\(error)") }
            }
            return out
        }
        for m in messages {
            XCTAssertTrue(m[0].contains("data_parallel"), m[0])
            XCTAssertTrue(m[1].contains("5 sequences do not divide among 2 ranks"), m[1])
            XCTAssertTrue(m[2].contains("t.json") && m[2].contains("expert_parallel"), m[2])
        }
    }
}
