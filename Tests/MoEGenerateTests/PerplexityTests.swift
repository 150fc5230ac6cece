import Foundation
import MoECore
@testable import MoEGenerate
import MoEModels
import XCTest

/// `Perplexity` against a reference written here (one forward over the whole text, log-softmax
/// by hand), sliding windows scoring each token once, and the saved log-probability file.
final class PerplexityTests: XCTestCase {
    let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/mixtral").path
    let tokens = (0..<40).map { 3 + ($0 * 37) % 250 }

    /// Mean NLL of `tokens` from one forward pass, in f64.
    func reference(_ m: DecoderModel) throws -> Double {
        var cache = m.makeCache(capacity: tokens.count)
        let logits = try m.forward(tokens, cache: &cache).toFloats()
        let v = m.spec.vocabSize
        var nll = 0.0
        for j in 1..<tokens.count {
            let row = logits[((j - 1) * v)..<(j * v)].map(Double.init)
            let mx = row.max()!
            let lse = mx + log(row.reduce(0) { $0 + exp($1 - mx) })
            nll += lse - row[tokens[j]]
        }
        return nll / Double(tokens.count - 1)
    }

    func testOneWindowEqualsTheReferenceAndSlidingWindowsScoreEachTokenOnce() throws {
        let m = try DecoderModel(directory: folder, pool: ThreadPool(threads: 2))
        let whole = try Perplexity.run(model: m, tokens: tokens, context: 64, stride: 64)
        XCTAssertEqual(whole.scored, tokens.count - 1)
        XCTAssertEqual(whole.meanNll, try reference(m), accuracy: 1e-5)
        XCTAssertEqual(whole.perplexity, exp(whole.meanNll), accuracy: 1e-9)
        XCTAssertEqual(whole.expertsPerTokenByLayer, [0: 2, 1: 2, 2: 2])
        var positions: [Int] = []
        let sliding = try Perplexity.run(model: m, tokens: tokens, context: 16, stride: 6) { p, _ in positions.append(p) }
        XCTAssertEqual(positions, Array(0..<(tokens.count - 1)), "every target once, in order")
        XCTAssertNotEqual(sliding.meanNll, whole.meanNll, "shorter contexts change the scores")
        var top1 = RoutingOverride()
        top1.expertsPerToken = 1
        let one = try Perplexity.run(model: m, tokens: tokens, context: 64, stride: 64, routing: top1)
        XCTAssertEqual(one.expertsPerToken, 1)
        XCTAssertThrowsError(try Perplexity.run(model: m, tokens: [5], context: 8, stride: 8))
    }

    /// llama-perplexity's chunks: whole chunks only, each from the BOS, the second half scored.
    func testLlamaChunksScoreTheSecondHalfOfEachWholeChunk() throws {
        let m = try DecoderModel(directory: folder, pool: ThreadPool(threads: 2))
        var positions: [Int] = []
        let r = try Perplexity.runChunks(model: m, tokens: tokens, context: 16, bos: 1) { p, _ in positions.append(p) }
        XCTAssertEqual(positions, Array(8..<15) + Array(24..<31), "40 tokens make 2 chunks of 16; positions 8...14 of each")
        // The reference: chunk 2 with its first token replaced by the BOS, by hand.
        var chunk = Array(tokens[16..<32])
        chunk[0] = 1
        var cache = m.makeCache(capacity: 16)
        let logits = try m.forward(chunk, cache: &cache).toFloats()
        let v = m.spec.vocabSize
        var nll = 0.0
        for j in 8..<15 {
            let row = logits[(j * v)..<((j + 1) * v)].map(Double.init)
            let mx = row.max()!
            nll += mx + log(row.reduce(0) { $0 + exp($1 - mx) }) - row[chunk[j + 1]]
        }
        let one = try Perplexity.runChunks(model: m, tokens: Array(tokens[16..<32]), context: 16, bos: 1)
        XCTAssertEqual(one.meanNll, nll / 7, accuracy: 1e-5)
        XCTAssertEqual(r.scored, 14)
        XCTAssertThrowsError(try Perplexity.runChunks(model: m, tokens: Array(tokens.prefix(10)), context: 16, bos: nil))
    }

    func testSavedLogProbabilitiesRoundTripAndBadFilesAreTypedErrors() throws {
        let m = try DecoderModel(directory: folder, pool: ThreadPool(threads: 2))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lp-\(UUID()).bin").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try LogProbFile.Writer(path: path, vocab: m.spec.vocabSize, tokens: tokens)
        var saved: [[Float]] = []
        _ = try Perplexity.run(model: m, tokens: tokens, context: 16, stride: 8) { p, lp throws(ModelError) in
            try writer.append(position: p, logProbs: lp)
            saved.append(Array(lp))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "nothing in place before finish")
        try writer.finish(tokenCount: tokens.count)
        let reader = try LogProbFile.Reader(path: path)
        XCTAssertEqual(reader.tokens, tokens)
        XCTAssertEqual(reader.rows, saved.count)
        for i in [0, 7, saved.count - 1] {
            let (position, lp) = reader.row(i)
            XCTAssertEqual(position, i)
            for (a, b) in zip(lp, saved[i]) { XCTAssertEqual(a, b, accuracy: abs(b) * 1e-3 + 1e-3) }  // f16
        }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count - 3).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try LogProbFile.Reader(path: path)) { XCTAssertTrue("\($0)".contains("rows"), "\($0)") }
        bytes[0] = 0
        try bytes.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try LogProbFile.Reader(path: path)) { XCTAssertTrue("\($0)".contains("magic"), "\($0)") }
    }
}
