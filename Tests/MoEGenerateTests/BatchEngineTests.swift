import Foundation
import MoECore
import MoEGenerate
import MoEModels
import XCTest

/// The continuous-batching engine on the embedded default model: many requests at once give
/// each the tokens it gets alone (greedy), prompts longer than a step's budget are prefilled in
/// chunks beside decoding sequences, and the limits (queue, cancellation, max tokens, stop
/// strings) hold.
final class BatchEngineTests: XCTestCase {
    static let modelPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources/moe/DefaultModel").path

    /// Collects a request's events until it finishes.
    final class Collector: @unchecked Sendable {
        let lock = NSCondition()
        var ids: [Int] = [], text = "", logprobs: [TokenLogprob] = [], alternatives: [[TokenLogprob]] = []
        var experts: [[Int: [Int]]] = []
        var finish: BatchFinish?
        var failure: String?

        func handle(_ event: BatchEvent) {
            lock.lock()
            defer { lock.unlock() }
            switch event {
            case let .token(id, piece, logprob, alts, routed):
                ids.append(id)
                text += piece
                if let logprob { logprobs.append(logprob) }
                alternatives.append(alts)
                if let routed { experts.append(routed) }
            case let .finished(f): finish = f; lock.broadcast()
            case let .failed(m): failure = m; lock.broadcast()
            }
        }

        func wait() -> BatchFinish? {
            lock.lock()
            defer { lock.unlock() }
            while finish == nil && failure == nil { _ = lock.wait(until: Date().addingTimeInterval(60)) ; if finish == nil && failure == nil { break } }
            return finish
        }
    }

    func testConcurrentGreedyRequestsMatchSingleRuns() throws {
        let model = try DecoderModel(path: Self.modelPath, pool: ThreadPool(threads: 2))
        let tokenizer = try Tokenizer.of(model: Self.modelPath)
        let generator = Generator(model: model, tokenizer: tokenizer)
        let prompts = ["add 12 35 =", "reverse abcdef =", "sort 5 3 9 1 =", "copy hello world =", "add 7 8 =",
                       "count a b c d e f g h =", String(repeating: "copy x y z ", count: 30) + "=", "max 3 9 2 ="]
        let expected = try prompts.map { p throws -> [Int] in
            try generator.generate(prompt: p, options: GenerationOptions(maxTokens: 12, stopOnEOS: false)).ids
        }
        // A step budget smaller than the long prompt: it prefills in chunks while others decode.
        let engine = BatchEngine(model: model, tokenizer: tokenizer,
                                 configuration: .init(maxSequences: 5, maxQueue: 16, stepTokens: 24))
        defer { engine.shutdown() }
        let collectors = prompts.map { _ in Collector() }
        for (p, c) in zip(prompts, collectors) {
            try engine.submit(BatchRequest(promptIDs: tokenizer.encode(p), maxTokens: 12, stopOnEOS: false, logprobs: 3,
                                           returnRouting: true)) { c.handle($0) }
        }
        for (k, c) in collectors.enumerated() {
            let finish = try XCTUnwrap(c.wait(), "request \(k): \(c.failure ?? "timed out")")
            XCTAssertEqual(c.ids, expected[k], "request \(k)")
            XCTAssertEqual(finish.reason, "max_tokens")
            XCTAssertEqual(finish.completionTokens, 12)
            XCTAssertEqual(c.text, tokenizer.decode(expected[k], skipSpecialTokens: true))
            // Greedy: the chosen token is the most likely one; log-probabilities are <= 0.
            for (lp, alts) in zip(c.logprobs, c.alternatives) {
                XCTAssertEqual(alts.count, 3)
                XCTAssertEqual(alts[0].id, lp.id)
                XCTAssertEqual(alts[0].logprob, lp.logprob, accuracy: 1e-6)
                XCTAssertLessThanOrEqual(lp.logprob, 0)
                XCTAssertGreaterThanOrEqual(alts[0].logprob, alts[1].logprob)
            }
            // Routing: each generated token's top-k experts in every MoE layer.
            XCTAssertEqual(c.experts.count, 12)
            XCTAssertEqual(c.experts.first?.count, model.spec.layers)
            XCTAssertEqual(c.experts.first?[0]?.count, model.spec.topK)
        }
        let snapshot = engine.snapshot
        XCTAssertEqual(snapshot.generatedTokens, 12 * prompts.count)
        XCTAssertEqual(snapshot.promptTokens, prompts.map { tokenizer.encode($0).count }.reduce(0, +))
        // Every row routed: the prompts and the 11 generated tokens of each fed back.
        XCTAssertEqual(snapshot.expertLoad[0]?.reduce(0, +), (snapshot.promptTokens + 11 * prompts.count) * model.spec.topK)
    }

    /// SCMoE requests (a weak pass beside the strong one) and a request with one expert per
    /// token, all in the same forward passes, each routed its own way: each equals the
    /// generator's sequential decoding with the same settings.
    func testSelfContrastRequestsMatchTheGenerator() throws {
        let model = try DecoderModel(path: Self.modelPath, pool: ThreadPool(threads: 2))
        let tokenizer = try Tokenizer.of(model: Self.modelPath)
        let generator = Generator(model: model, tokenizer: tokenizer)
        let prompts = ["add 12 35 =", "sort 5 3 9 1 =", "reverse abcdef ="]
        let contrasts: [SelfContrast?] = [SelfContrast(), nil, SelfContrast(weakRank: 1, alpha: 0.2, beta: 1)]
        var oneExpert = RoutingOverride()
        oneExpert.expertsPerToken = 1
        let routings = [RoutingOverride(), oneExpert, RoutingOverride()]
        var expected: [[Int]] = []
        for k in 0..<prompts.count {
            var options = GenerationOptions(maxTokens: 10, stopOnEOS: false)
            options.selfContrast = contrasts[k]
            options.routing = routings[k]
            expected.append(try generator.generate(prompt: prompts[k], options: options).ids)
        }
        var plain = GenerationOptions(maxTokens: 10, stopOnEOS: false)
        plain.routing = RoutingOverride()
        XCTAssertNotEqual(try generator.generate(prompt: prompts[1], options: plain).ids, expected[1], "k=1 changes the answer")
        let engine = BatchEngine(model: model, tokenizer: tokenizer, configuration: .init(maxSequences: 4, stepTokens: 8))
        defer { engine.shutdown() }
        let collectors = prompts.map { _ in Collector() }
        for (k, p) in prompts.enumerated() {
            try engine.submit(BatchRequest(promptIDs: tokenizer.encode(p), maxTokens: 10, stopOnEOS: false, routing: routings[k],
                                           selfContrast: contrasts[k])) { collectors[k].handle($0) }
        }
        for (k, c) in collectors.enumerated() {
            XCTAssertNotNil(c.wait(), "request \(k): \(c.failure ?? "timed out")")
            XCTAssertEqual(c.ids, expected[k], "request \(k)")
        }
    }

    func testLimitsStopsAndCancellation() throws {
        let model = try DecoderModel(path: Self.modelPath, pool: ThreadPool(threads: 2))
        let tokenizer = try Tokenizer.of(model: Self.modelPath)
        let engine = BatchEngine(model: model, tokenizer: tokenizer, configuration: .init(maxSequences: 1, maxQueue: 1, stepTokens: 64))
        defer { engine.shutdown() }
        let ids = tokenizer.encode("add 12 35 =")
        XCTAssertThrowsError(try engine.submit(BatchRequest(promptIDs: [], maxTokens: 4)) { _ in })
        // One runs, one waits, the third is refused.
        let long = Collector(), waiting = Collector()
        let first = try engine.submit(BatchRequest(promptIDs: ids, maxTokens: 100_000, stopOnEOS: false)) { long.handle($0) }
        try engine.submit(BatchRequest(promptIDs: ids, maxTokens: 3, stopOnEOS: false)) { waiting.handle($0) }
        XCTAssertThrowsError(try engine.submit(BatchRequest(promptIDs: ids, maxTokens: 3)) { _ in }) { error in
            XCTAssertEqual(error as? BatchEngineError, .queueFull(1))
        }
        engine.cancel(first)
        XCTAssertEqual(long.wait()?.reason, "cancelled")
        XCTAssertEqual(waiting.wait()?.reason, "max_tokens")
        XCTAssertEqual(waiting.ids.count, 3)

        // A stop string ends the request before it; the text never holds it.
        let full = Collector()
        try engine.submit(BatchRequest(promptIDs: ids, maxTokens: 8, stopOnEOS: false)) { full.handle($0) }
        let text = try XCTUnwrap(full.wait()).text
        let stop = String(text.dropFirst(1).prefix(1))
        let stopped = Collector()
        try engine.submit(BatchRequest(promptIDs: ids, maxTokens: 8, stopStrings: [stop], stopOnEOS: false)) { stopped.handle($0) }
        XCTAssertEqual(stopped.wait()?.reason, "stop_string")
        XCTAssertFalse(stopped.text.contains(stop))
        XCTAssertTrue(text.hasPrefix(stopped.text))
    }
}
