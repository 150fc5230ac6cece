import Foundation
import MoECore
import MoEModels
import _TestSupport
import XCTest

/// `forward(batch:caches:)`, the pass continuous batching runs: several sequences, some
/// prefilling and some decoding, in one pass give each sequence the logits it gets alone
/// (every family with a different attention: GQA and QK-norm, MLA, sliding windows and sinks).
final class BatchedForwardTests: XCTestCase {
    func check(_ arch: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try DecoderModel(directory: fixturesDirectory.appendingPathComponent(arch).path, pool: ThreadPool(threads: 2))
        let v = model.spec.vocabSize
        var rng = SplitMix64(seed: 7)
        func tokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int.random(in: 0..<v, using: &rng) } }
        // Four sequences' prompts and continuations; D arrives late, while the others decode.
        let prompts = [tokens(9), tokens(3), tokens(14), tokens(5)]
        let steps = (0..<4).map { _ in tokens(20) }

        // Alone: each sequence on its own cache.
        var alone: [[[Float]]] = []
        for s in 0..<4 {
            var cache = model.makeCache(capacity: 4)
            var rows = [try model.forward(prompts[s], cache: &cache, lastOnly: true).toFloats()]
            for k in 0..<(s == 3 ? 17 : 20) { rows.append(try model.forward([steps[s][k]], cache: &cache, lastOnly: true).toFloats()) }
            alone.append(rows)
        }

        // Together: A, B, C prefill in one pass, decode 3 steps together, then D's prompt joins
        // a pass where the others decode; then all four decode together.
        var caches = (0..<3).map { _ in model.makeCache(capacity: 4) }
        let first = try model.forward(batch: Array(prompts[0..<3]), caches: &caches, lastOnly: true).toFloats()
        for s in 0..<3 { assertClose(Array(first[(s * v)..<((s + 1) * v)]), alone[s][0], absolute: 2e-4, "\(arch) prefill \(s)", file: file, line: line) }
        for k in 0..<3 {
            let out = try model.forward(batch: (0..<3).map { [steps[$0][k]] }, caches: &caches, lastOnly: true).toFloats()
            for s in 0..<3 { assertClose(Array(out[(s * v)..<((s + 1) * v)]), alone[s][k + 1], absolute: 2e-4, "\(arch) step \(k) seq \(s)", file: file, line: line) }
        }
        caches.append(model.makeCache(capacity: 4))
        let joined = try model.forward(batch: [[steps[0][3]], [steps[1][3]], [steps[2][3]], prompts[3]], caches: &caches, lastOnly: true).toFloats()
        for s in 0..<4 {
            assertClose(Array(joined[(s * v)..<((s + 1) * v)]), alone[s][s == 3 ? 0 : 4], absolute: 2e-4, "\(arch) join seq \(s)", file: file, line: line)
        }
        for k in 0..<16 {
            let batch = (0..<4).map { s in [steps[s][s == 3 ? k : k + 4]] }
            let out = try model.forward(batch: batch, caches: &caches, lastOnly: true).toFloats()
            for s in 0..<4 {
                assertClose(Array(out[(s * v)..<((s + 1) * v)]), alone[s][s == 3 ? k + 1 : k + 5], absolute: 2e-4,
                            "\(arch) decode \(k) seq \(s)", file: file, line: line)
            }
        }
        XCTAssertEqual(caches.map(\.length), [29, 23, 34, 21], file: file, line: line)
    }

    func testQwen3MoE() throws { try check("qwen3_moe") }
    func testDeepSeekV2() throws { try check("deepseek_v2") }
    func testGPTOSS() throws { try check("gpt_oss") }
    func testMixtral() throws { try check("mixtral") }

    func testEmptySequenceIsRefused() throws {
        let model = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("mixtral").path)
        var caches = [model.makeCache(), model.makeCache()]
        XCTAssertThrowsError(try model.forward(batch: [[1], []], caches: &caches, lastOnly: true))
    }
}
