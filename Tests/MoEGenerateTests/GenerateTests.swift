import Foundation
import MoE
import MoECore
import MoEGenerate
import MoEModels
import XCTest

final class SamplerTests: XCTestCase {
    func sample(_ logits: [Float], _ options: SamplingOptions, draws: Int = 1) -> [Int] {
        var s = Sampler(options)
        return logits.withUnsafeBufferPointer { p in (0..<draws).map { _ in s.sample(p) } }
    }

    func testGreedyIsArgmaxWithTiesToTheLowerId() {
        XCTAssertEqual(sample([0.1, 3, 3, -1], .greedy), [1])
    }

    func testFiltersKeepTheRightCandidates() {
        // Logits are log-probabilities: ids 0...3 have p = 0.5, 0.3, 0.15, 0.05.
        let probs: [Float] = [log(0.5), log(0.3), log(0.15), log(0.05)]
        func ids(_ o: SamplingOptions) -> [Int] { probs.withUnsafeBufferPointer { Sampler(o).candidates($0).map(\.id) } }
        XCTAssertEqual(ids(SamplingOptions(temperature: 1, topK: 2)), [0, 1])
        XCTAssertEqual(ids(SamplingOptions(temperature: 1, topP: 0.5)), [0])
        XCTAssertEqual(ids(SamplingOptions(temperature: 1, topP: 0.79)), [0, 1])
        XCTAssertEqual(ids(SamplingOptions(temperature: 1, minP: 0.5)), [0, 1], "0.15 < 0.5 * 0.5")
        XCTAssertEqual(ids(SamplingOptions(temperature: 1)), [0, 1, 2, 3])
        let p = probs.withUnsafeBufferPointer { Sampler(SamplingOptions(temperature: 1, topK: 2)).candidates($0).map(\.p) }
        XCTAssertEqual(p[0], 0.625, accuracy: 1e-5)
        XCTAssertEqual(p[1], 0.375, accuracy: 1e-5)
    }

    func testSeededSamplingIsReproducibleAndFollowsTheDistribution() {
        let probs: [Float] = [log(0.5), log(0.3), log(0.2)]
        let a = sample(probs, SamplingOptions(temperature: 1, seed: 7), draws: 3000)
        XCTAssertEqual(a, sample(probs, SamplingOptions(temperature: 1, seed: 7), draws: 3000))
        XCTAssertNotEqual(a, sample(probs, SamplingOptions(temperature: 1, seed: 8), draws: 3000))
        let share = Double(a.filter { $0 == 0 }.count) / 3000
        XCTAssertEqual(share, 0.5, accuracy: 0.04)
        // A low temperature sharpens towards the argmax.
        let cold = sample(probs, SamplingOptions(temperature: 0.05, seed: 1), draws: 200)
        XCTAssertEqual(cold.filter { $0 == 0 }.count, 200)
    }
}

final class GeneratorTests: XCTestCase {
    static let folder: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-gen-\(getpid())").path
        var shape = RandomCheckpoint.Shape()
        shape.vocabSize = 300
        shape.hiddenSize = 32
        shape.layers = 2
        shape.experts = 4
        shape.expertSize = 16
        try? RandomCheckpoint.write(arch: "qwen3_moe", shape: shape, to: path, seed: 3)
        return path
    }()

    func generator() throws -> Generator {
        Generator(model: try DecoderModel(directory: Self.folder),
                  tokenizer: try Tokenizer(path: (Self.folder as NSString).appendingPathComponent("tokenizer.json")))
    }

    func testGreedyIsDeterministicAndStreamsTheWholeText() throws {
        let g = try generator()
        var streamed = ""
        let a = try g.generate(prompt: "abc", options: GenerationOptions(maxTokens: 12, stopOnEOS: false)) { streamed += $0 }
        let b = try g.generate(prompt: "abc", options: GenerationOptions(maxTokens: 12, stopOnEOS: false))
        XCTAssertEqual(a.ids, b.ids)
        XCTAssertEqual(a.ids.count, 12)
        XCTAssertEqual(a.stopReason, .maxTokens)
        XCTAssertEqual(streamed, a.text)
        XCTAssertEqual(a.text, g.tokenizer.decode(a.ids, skipSpecialTokens: true))
        // The greedy tokens are the argmax of the model's own logits, step by step.
        var cache = g.model.makeCache()
        var logits = try g.model.forward(a.promptIDs, cache: &cache, lastOnly: true)
        for id in a.ids {
            XCTAssertEqual(Kernels.argmax(logits)[0], id)
            logits = try g.model.forward([id], cache: &cache, lastOnly: true)
        }
    }

    /// Routed experts that pass rows on to `inner` and keep the most rows one call gave them.
    final class RowCounter: ExpertFFN, @unchecked Sendable {
        let inner: any ExpertFFN
        var mostRows = 0
        init(_ inner: any ExpertFFN) { self.inner = inner }
        var expertCount: Int { inner.expertCount }
        var hiddenSize: Int { inner.hiddenSize }
        func weightBytes(expert: Int) -> Int { inner.weightBytes(expert: expert) }
        func forward(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
            mostRows = max(mostRows, rows.shape[0])
            return inner.forward(rows, rowOffsets: rowOffsets, pool: pool)
        }
    }

    func testALongPromptRunsInPiecesOfThePrefillChunk() throws {
        let g = try generator()
        var counters: [RowCounter] = []
        g.model.replaceRoutedExperts { _, experts in
            let c = RowCounter(experts)
            counters.append(c)
            return c
        }
        // 16 prompt tokens in pieces of 2: at most 2 x top-k (<= 4 experts) = 8 rows a call, where
        // the prompt in one pass gives the experts 16 or more.
        g.model.prefillChunk = 2
        let prompt = Array(1...16)
        let result = try g.generate(promptIDs: prompt, options: GenerationOptions(maxTokens: 4, stopOnEOS: false))
        XCTAssertFalse(counters.isEmpty)
        for c in counters { XCTAssertLessThanOrEqual(c.mostRows, 8) }
        // The same tokens as the model's own prompt path (in the same pieces) and greedy steps.
        var cache = g.model.makeCache()
        var logits = try g.model.forward(prompt, cache: &cache, lastOnly: true)
        for id in result.ids {
            XCTAssertEqual(Kernels.argmax(logits)[0], id)
            logits = try g.model.forward([id], cache: &cache, lastOnly: true)
        }
    }

    func testStopStringsCutTheTextAndAreNeverStreamed() throws {
        let g = try generator()
        let full = try g.generate(prompt: "abc", options: GenerationOptions(maxTokens: 12, stopOnEOS: false))
        let chars = Array(full.text)
        guard chars.count >= 6 else { return }
        let stop = String(chars[3...4])
        var streamed = ""
        let cut = try g.generate(prompt: "abc", options: GenerationOptions(maxTokens: 12, stopStrings: [stop], stopOnEOS: false)) { streamed += $0 }
        XCTAssertEqual(cut.stopReason, .stopString)
        XCTAssertFalse(cut.text.contains(stop))
        XCTAssertTrue(full.text.hasPrefix(cut.text))
        XCTAssertEqual(streamed, cut.text)
    }

    func testEOSStopsGeneration() throws {
        let g = try generator()
        let full = try g.generate(prompt: "abc", options: GenerationOptions(maxTokens: 8, stopOnEOS: false))
        // A copy of the model whose end-of-sequence token is the one greedy decoding gives third.
        let eos = full.ids[2], stopAt = full.ids.firstIndex(of: eos) ?? 2
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-eos-\(UUID().uuidString)")
        try FileManager.default.copyItem(atPath: Self.folder, toPath: copy.path)
        defer { try? FileManager.default.removeItem(at: copy) }
        let configURL = copy.appendingPathComponent("config.json")
        var config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        config["eos_token_id"] = eos
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        let stopped = try Generator(model: try DecoderModel(directory: copy.path), tokenizer: g.tokenizer)
            .generate(promptIDs: full.promptIDs, options: GenerationOptions(maxTokens: 8))
        XCTAssertEqual(stopped.stopReason, .eos)
        XCTAssertEqual(stopped.ids, Array(full.ids.prefix(stopAt)))
    }
}
