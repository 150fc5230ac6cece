import Foundation
import MoE
import MoECore
import MoEDistributed
import MoEModels
import XCTest

/// Expert parallelism on ranks that are threads: the sharded layer against the single process,
/// for routers with fixed, ragged and dropped assignments.
final class ExpertParallelTests: XCTestCase {
    static let d = 32, experts = 8

    /// A layer with random weights (seeded), an 8-expert SwiGLU FFN and `router`.
    static func layer(router: any Router, seed: UInt64) -> MoELayer {
        var rng = SplitMix64(seed: seed)
        func random(_ shape: [Int], scale: Float) -> Tensor {
            Tensor(shape: shape, values: (0..<shape.reduce(1, *)).map { _ in (rng.nextUnitFloat() - 0.5) * scale })
        }
        let i = 24
        let experts = SwiGLUExperts(gate: (0..<Self.experts).map { _ in random([i, d], scale: 0.6) },
                                    up: (0..<Self.experts).map { _ in random([i, d], scale: 0.6) },
                                    down: (0..<Self.experts).map { _ in random([d, i], scale: 0.6) })
        return MoELayer(gate: .linear(weight: random([router.logitCount, d], scale: 2)), router: router, experts: experts)
    }

    static func input(tokens: Int, seed: UInt64) -> Tensor {
        var rng = SplitMix64(seed: seed)
        return Tensor(shape: [tokens, d], values: (0..<(tokens * d)).map { _ in rng.nextUnitFloat() * 2 - 1 })
    }

    static let routers: [(String, any Router)] = [
        ("top-2 softmax", TopKSoftmaxRouter(experts: experts, k: 2)),
        ("top-p (ragged)", TopPRouter(experts: experts, p: 0.5)),
        ("null experts (some tokens use none)", NullExpertsRouter(experts: experts, nullExperts: 8, k: 2)),
        ("capacity (drops)", CapacityLimitedRouter(TopKSoftmaxRouter(experts: experts, k: 2), capacity: Capacity(factor: 0.5))),
    ]

    /// Inference: every rank runs the same tokens; each rank's output is the single process's,
    /// bit for bit, for 1 to 4 ranks (3 ranks: uneven shards of 3, 3 and 2 experts).
    func testReplicatedEqualsSingleProcessExactly() {
        for (name, router) in Self.routers {
            let layer = Self.layer(router: router, seed: 7)
            let x = Self.input(tokens: 19, seed: 8)
            var state = RouterState()
            let want = layer.forward(x, state: &state, pool: ThreadPool(threads: 1)).output.toFloats()
            for ranks in 1...4 {
                let got = ThreadCommunicator.run(ranks: ranks) { comm -> [Float] in
                    var sharded = layer
                    sharded.experts = ExpertParallelExperts(layer.experts, communicator: comm, mode: .replicated)!
                    var state = RouterState()
                    return sharded.forward(x, state: &state, pool: ThreadPool(threads: 1)).output.toFloats()
                }
                for r in 0..<ranks { XCTAssertEqual(got[r], want, "\(name), \(ranks) ranks, rank \(r)") }
            }
        }
    }

    /// Data parallel: each rank has its own tokens (a different count each, one rank none).
    /// Rows cross ranks by all-to-all and come back; each rank's output is what the single
    /// process computes for the whole batch, bit for bit, on the rows that are that rank's (the
    /// experts see the same rows in the same order). Capacity limits are per rank's batch, so
    /// that router is checked against each rank's batch alone, to rounding.
    func testPartitionedEqualsSingleProcess() {
        for (name, router) in Self.routers {
            let layer = Self.layer(router: router, seed: 11)
            for ranks in 2...4 {
                let tokens = (0..<ranks).map { [5, 0, 9, 3][$0] }
                let inputs = (0..<ranks).map { Self.input(tokens: tokens[$0], seed: 20 + UInt64($0)) }
                let results = ThreadCommunicator.run(ranks: ranks) { comm -> ([Float], ExchangeStatistics.Totals) in
                    var sharded = layer
                    let stats = ExchangeStatistics()
                    sharded.experts = ExpertParallelExperts(layer.experts, communicator: comm, mode: .partitioned, statistics: stats)!
                    var state = RouterState()
                    return (sharded.forward(inputs[comm.rank], state: &state, pool: ThreadPool(threads: 1)).output.toFloats(), stats.current)
                }
                let pool = ThreadPool(threads: 1)
                if router is CapacityLimitedRouter {
                    for r in 0..<ranks {
                        var state = RouterState()
                        let want = layer.forward(inputs[r], state: &state, pool: pool).output.toFloats()
                        XCTAssertEqual(results[r].0.count, want.count)
                        for (a, b) in zip(results[r].0, want) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(b)), "\(name), rank \(r)") }
                    }
                    continue
                }
                let whole = Tensor(shape: [tokens.reduce(0, +), Self.d], values: inputs.flatMap { $0.toFloats() })
                var state = RouterState()
                let want = layer.forward(whole, state: &state, pool: pool).output.toFloats()
                var start = 0
                for r in 0..<ranks {
                    let n = tokens[r] * Self.d
                    XCTAssertEqual(results[r].0, Array(want[start..<(start + n)]), "\(name), \(ranks) ranks, rank \(r)")
                    start += n
                    XCTAssertEqual(results[r].1.exchanges, 1)
                }
                let sent = results.reduce(0) { $0 + $1.1.bytesSent }, received = results.reduce(0) { $0 + $1.1.bytesReceived }
                XCTAssertEqual(sent, received, "\(name): every byte sent is received")
                XCTAssertGreaterThan(sent, 0, "\(name): rows crossed ranks")
            }
        }
    }

    /// A whole model (random Mixtral layout, 3 MoE layers), each rank holding its share of
    /// every layer's experts: prefill and decode logits equal the single process's exactly, and
    /// each rank counts only its experts' bytes.
    func testShardedModelGivesTheSingleProcessLogits() throws {
        let path = try randomMixtral(hidden: 64, layers: 3, experts: 8, topK: 2)
        @Sendable func run(_ model: DecoderModel) throws -> [[Float]] {
            var cache = model.makeCache()
            var out = [try model.forward([1, 5, 9, 13, 2], cache: &cache).toFloats()]
            for t in [7, 3] { out.append(try model.forward([t], cache: &cache).toFloats()) }
            return out
        }
        let single = try DecoderModel(path: path, pool: ThreadPool(threads: 1))
        let want = try run(single)
        let wholeBytes = single.routedExpertBytes
        for ranks in [2, 3] {
            let got = ThreadCommunicator.run(ranks: ranks) { comm -> Result<([[Float]], Int, Int), Error> in
                Result {
                    let model = try DecoderModel(path: path, pool: ThreadPool(threads: 1))
                    let stats = try model.shardExperts(over: comm)
                    return (try run(model), model.routedExpertBytes, stats.current.exchanges)
                }
            }
            var bytes = 0
            for (r, result) in got.enumerated() {
                let (logits, mine, exchanges) = try result.get()
                XCTAssertEqual(logits, want, "\(ranks) ranks, rank \(r)")
                XCTAssertEqual(exchanges, 3 * 3, "one exchange per MoE layer per forward")
                bytes += mine
            }
            XCTAssertEqual(bytes, wholeBytes, "the ranks' shares add up to the model's experts")
        }
    }

    /// More ranks than a layer has experts is refused with the layer named.
    func testTooManyRanksIsATypedError() throws {
        let path = try randomMixtral(hidden: 32, layers: 1, experts: 2, topK: 1)
        let messages = ThreadCommunicator.run(ranks: 3) { comm -> String in
            do {
                try DecoderModel(path: path, pool: ThreadPool(threads: 1)).shardExperts(over: comm)
                return "no error"
            } catch { return "\(error)" }
        }
        for m in messages { XCTAssertTrue(m.contains("layer 0 has 2 routed experts, fewer than the 3 ranks"), m) }
    }

    /// A random f32 Mixtral-layout checkpoint (experts of width hidden), removed after the test.
    func randomMixtral(hidden: Int, layers: Int, experts: Int, topK: Int) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-ep-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        var shape = RandomCheckpoint.Shape()
        (shape.hiddenSize, shape.layers, shape.heads, shape.kvHeads, shape.experts, shape.topK, shape.expertSize) = (hidden, layers, 4, 2, experts, topK, hidden)
        try RandomCheckpoint.write(arch: "mixtral", shape: shape, to: path, seed: 5, dtype: .f32)
        return path
    }
}
