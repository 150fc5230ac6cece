import Foundation
import MoE
import MoECore
import MoEDistributed
import MoEModels
import XCTest

/// FSMoE's pipeline: a partitioned expert layer split into chunks whose exchanges overlap the
/// experts' work gives each row the output of the unchunked layer, bit for bit.
final class PipelinedExchangeTests: XCTestCase {
    /// 1 to 7 chunks (more chunks than some experts have rows, so some pieces are empty), on
    /// 2 and 3 ranks with ragged token counts and every router of `ExpertParallelTests`.
    func testChunkedEqualsUnchunkedExactly() {
        for (name, router) in ExpertParallelTests.routers {
            let layer = ExpertParallelTests.layer(router: router, seed: 31)
            for ranks in [2, 3] {
                let tokens = [11, 0, 6].prefix(ranks)
                let inputs = tokens.enumerated().map { ExpertParallelTests.input(tokens: $1, seed: 40 + UInt64($0)) }
                let results = ThreadCommunicator.run(ranks: ranks) { comm -> [[Float]] in
                    (1...7).map { chunks in
                        var sharded = layer
                        sharded.experts = ExpertParallelExperts(layer.experts, communicator: comm, mode: .partitioned)!.pipelined(chunks: chunks)
                        var state = RouterState()
                        return sharded.forward(inputs[comm.rank], state: &state, pool: ThreadPool(threads: 1)).output.toFloats()
                    }
                }
                for (r, outputs) in results.enumerated() {
                    XCTAssertEqual(outputs[0].count, tokens[r] * ExpertParallelTests.d)
                    for c in 1..<outputs.count { XCTAssertEqual(outputs[c], outputs[0], "\(name), \(ranks) ranks, rank \(r), \(c + 1) chunks") }
                }
            }
        }
    }

    /// One exchange record per layer call whatever the chunks; the bytes moved do not depend on
    /// the chunking; time in flight is at least the time exposed.
    func testStatisticsCountEveryChunk() {
        let layer = ExpertParallelTests.layer(router: TopKSoftmaxRouter(experts: ExpertParallelTests.experts, k: 2), seed: 3)
        let x = ExpertParallelTests.input(tokens: 16, seed: 4)
        let totals = ThreadCommunicator.run(ranks: 2) { comm -> [ExchangeStatistics.Totals] in
            [1, 4].map { chunks in
                let stats = ExchangeStatistics()
                var sharded = layer
                sharded.experts = ExpertParallelExperts(layer.experts, communicator: comm, mode: .partitioned, statistics: stats)!
                    .pipelined(chunks: chunks)
                var state = RouterState()
                _ = sharded.forward(x, state: &state, pool: ThreadPool(threads: 1))
                return stats.current
            }
        }
        for t in totals {
            XCTAssertEqual(t[0].exchanges, 1)
            XCTAssertEqual(t[1].exchanges, 1)
            XCTAssertEqual(t[0].bytesSent, t[1].bytesSent)
            XCTAssertGreaterThan(t[1].bytesSent, 0)
            XCTAssertGreaterThanOrEqual(t[1].flightNanoseconds, t[1].communicationNanoseconds)
            XCTAssertGreaterThanOrEqual(t[1].wallNanoseconds, t[1].computeNanoseconds)
        }
    }

    /// A whole model sharded with partitioned rows, every rank running the same prompt: a
    /// 4-chunk pipeline gives the unpipelined logits bit for bit, and both are the single
    /// process's to rounding (each expert's products take both ranks' copies of a row at once,
    /// and a product's rounding depends on its row count).
    func testPartitionedModelGivesTheSingleProcessLogits() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-pipe-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        var shape = RandomCheckpoint.Shape()
        (shape.hiddenSize, shape.layers, shape.heads, shape.kvHeads, shape.experts, shape.topK, shape.expertSize) = (64, 2, 4, 2, 8, 2, 64)
        try RandomCheckpoint.write(arch: "mixtral", shape: shape, to: path, seed: 9, dtype: .f32)
        @Sendable func run(_ model: DecoderModel) throws -> [[Float]] {
            var cache = model.makeCache()
            var out = [try model.forward([1, 5, 9, 13, 2, 8, 4], cache: &cache).toFloats()]
            out.append(try model.forward([7], cache: &cache).toFloats())
            return out
        }
        let want = try run(try DecoderModel(path: path, pool: ThreadPool(threads: 1)))
        let got = ThreadCommunicator.run(ranks: 2) { comm -> Result<[[[Float]]], Error> in
            Result {
                let model = try DecoderModel(path: path, pool: ThreadPool(threads: 1))
                try model.shardExperts(over: comm, mode: .partitioned)
                let plain = try run(model)
                model.pipelineExpertExchanges(chunks: 4)
                return [plain, try run(model)]
            }
        }
        for (r, result) in got.enumerated() {
            let (plain, pipelined) = try (result.get()[0], result.get()[1])
            XCTAssertEqual(pipelined, plain, "rank \(r)")
            for (a, b) in zip(plain.joined(), want.joined()) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(b)), "rank \(r)") }
            XCTAssertEqual(plain.joined().count, want.joined().count)
        }
    }
}
