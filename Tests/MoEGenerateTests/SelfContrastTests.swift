import Foundation
import MoE
import MoECore
import MoEGenerate
import MoEModels
import XCTest

/// SCMoE decoding against a reference written here from ROUTING.md §5: two passes with their
/// own caches, the weak one routed to the rank-2 expert with weight 1, the plausibility set
/// z_s >= log(alpha) + max z_s, the score (1 + beta) z_s - beta z_w, greedy argmax.
final class SelfContrastTests: XCTestCase {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/gguf_models/qwen3_moe.q8_0.gguf").path

    func testRankRouterPicksTheRankedExpertWithWeightOne() {
        let logits = Tensor(shape: [2, 4], values: [0.1, 3, 2, -1, 5, 5, 0, 1])
        XCTAssertEqual(Array(RankRouter(experts: 4, rank: 0).route(logits).experts), [1, 0])
        let r = RankRouter(experts: 4, rank: 2).route(logits)
        XCTAssertEqual(Array(r.experts), [0, 3], "ties rank the lower id first")
        XCTAssertEqual(Array(r.weights), [1, 1])
    }

    func testGreedySCMoEMatchesTheReference() throws {
        let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
        let tokenizer = try GGUFFile(path: path).tokenizer()
        let prompt = [5, 17, 42, 99, 7, 123, 64]
        let steps = 12, alpha: Float = 0.1, beta: Float = 0.5
        let weakOptions = ForwardOptions(router: { _, own in RankRouter(experts: own.expertCount, rank: 2) })
        var strongCache = model.makeCache(), weakCache = model.makeCache()
        var zs = try model.forward(prompt, cache: &strongCache, lastOnly: true).toFloats()
        var zw = try model.forward(prompt, cache: &weakCache, lastOnly: true, options: weakOptions).toFloats()
        var expected: [Int] = [], differs = false
        for _ in 0..<steps {
            let best = zs.max()!
            var score = [Float](repeating: -.infinity, count: zs.count)
            for v in zs.indices where zs[v] >= log(alpha) + best { score[v] = (1 + beta) * zs[v] - beta * zw[v] }
            let next = score.indices.max { score[$0] < score[$1] || (score[$0] == score[$1] && $0 > $1) }!
            if next != zs.indices.max(by: { zs[$0] < zs[$1] || (zs[$0] == zs[$1] && $0 > $1) })! { differs = true }
            expected.append(next)
            zs = try model.forward([next], cache: &strongCache, lastOnly: true).toFloats()
            zw = try model.forward([next], cache: &weakCache, lastOnly: true, options: weakOptions).toFloats()
        }
        var options = GenerationOptions(maxTokens: steps, stopOnEOS: false)
        options.selfContrast = SelfContrast()
        let got = try Generator(model: model, tokenizer: tokenizer).generate(promptIDs: prompt, options: options)
        XCTAssertEqual(got.ids, expected)
        XCTAssertTrue(differs, "the contrast changed at least one choice from plain greedy")
    }
}
