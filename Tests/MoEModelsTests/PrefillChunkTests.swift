import Foundation
import MoE
import MoECore
import MoEModels
import _TestSupport
import Synchronization
import XCTest

/// `prefillChunk`: a prompt longer than it runs in pieces that each continue the cache, so no
/// projection sees more rows than a piece; logits (every position, or the last) and the decode
/// after it match the one-pass prompt. Routers that choose across tokens, and routing traces,
/// keep the one pass.
final class PrefillChunkTests: XCTestCase {
    /// The logits of `tokens` then one decoded token, and the most rows any projection saw.
    func run(_ model: DecoderModel, _ tokens: [Int], chunk: Int, lastOnly: Bool,
             options: ForwardOptions = ForwardOptions()) throws -> (prompt: [Float], next: [Float], rows: Int) {
        let before = model.prefillChunk
        model.prefillChunk = chunk
        defer { model.prefillChunk = before }
        let rows = Mutex(0)
        Kernels.linearObserver = { input, _ in rows.withLock { $0 = max($0, input.shape[0]) } }
        defer { Kernels.linearObserver = nil }
        var cache = model.makeCache(capacity: 8)
        let prompt = try model.forward(tokens, cache: &cache, lastOnly: lastOnly, options: options).toFloats()
        XCTAssertEqual(cache.length, tokens.count)
        let next = try model.forward([tokens[0]], cache: &cache, lastOnly: true, options: options).toFloats()
        return (prompt, next, rows.withLock { $0 })
    }

    func check(_ arch: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try DecoderModel(directory: fixturesDirectory.appendingPathComponent(arch).path, pool: ThreadPool(threads: 2))
        var rng = SplitMix64(seed: 5)
        let tokens = (0..<40).map { _ in Int.random(in: 0..<model.spec.vocabSize, using: &rng) }
        for lastOnly in [false, true] {
            let whole = try run(model, tokens, chunk: 0, lastOnly: lastOnly)
            let pieces = try run(model, tokens, chunk: 16, lastOnly: lastOnly)  // 16, 16, 8
            XCTAssertEqual(whole.rows, 40, file: file, line: line)
            XCTAssertEqual(pieces.rows, 16, "\(arch): a piece's rows", file: file, line: line)
            XCTAssertEqual(pieces.prompt.count, whole.prompt.count, file: file, line: line)
            assertClose(pieces.prompt, whole.prompt, absolute: 2e-4, "\(arch) prompt, lastOnly \(lastOnly)", file: file, line: line)
            assertClose(pieces.next, whole.next, absolute: 2e-4, "\(arch) next token", file: file, line: line)
        }
    }

    func testQwen3MoE() throws { try check("qwen3_moe") }
    func testDeepSeekV2() throws { try check("deepseek_v2") }
    func testMixtral() throws { try check("mixtral") }

    func testRoutersAcrossTokensAndTracesKeepOnePass() throws {
        let model = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("mixtral").path, pool: ThreadPool(threads: 2))
        let tokens = (0..<30).map { $0 % model.spec.vocabSize }
        var choice = ForwardOptions()
        choice.router = { _, own in ExpertChoiceRouter(experts: own.expertCount, capacityFactor: 2) }
        let one = try run(model, tokens, chunk: 0, lastOnly: false, options: choice)
        let asked = try run(model, tokens, chunk: 8, lastOnly: false, options: choice)
        XCTAssertEqual(asked.rows, 30)
        XCTAssertEqual(asked.prompt.map(\.bitPattern), one.prompt.map(\.bitPattern))
        var traced = ForwardOptions()
        let calls = Mutex([Int]())
        traced.trace = { _, routing in calls.withLock { $0.append(routing.tokenCount) } }
        XCTAssertEqual(try run(model, tokens, chunk: 8, lastOnly: true, options: traced).rows, 30)
        XCTAssertTrue(calls.withLock { $0 }.contains(30))
        // A trace that takes pieces sees each piece's tokens (8, 8, 8, 6), then the decoded one.
        calls.withLock { $0 = [] }
        traced.traceTakesPieces = true
        XCTAssertEqual(try run(model, tokens, chunk: 8, lastOnly: true, options: traced).rows, 8)
        XCTAssertEqual(Set(calls.withLock { $0 }), [8, 6, 1])
    }
}
