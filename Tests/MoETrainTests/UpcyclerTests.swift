import Foundation
import MoECore
import MoEModels
import MoETrain
import _TestSupport
import XCTest

/// Sparse upcycling: with a zero router and no noise the MoE computes the dense model (Mistral
/// into Mixtral exactly; a Llama cut into 4 slices, one shared, into Qwen2-MoE; a Qwen3 into
/// Qwen3-MoE of half-size experts), and what cannot be upcycled is refused by option or field.
/// scripts/check_upcycle_with_transformers.py checks the same folders in transformers.
final class UpcyclerTests: XCTestCase {
    let fixtures = trainFixture.deletingLastPathComponent()
    let tokens = [5, 9, 33, 2, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]

    func temporary() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-upcycle-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    func logits(_ path: String) throws -> [Float] {
        let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
        var cache = model.makeCache()
        return try model.forward(tokens, cache: &cache).toFloats()
    }

    func upcycled(_ model: String, experts: Int, topK: Int, granularity: Int = 1, shared: Int = 0, in dir: String) throws -> String {
        var o = Upcycler.Options(experts: experts, topK: topK)
        (o.granularity, o.sharedExperts, o.routerStd) = (granularity, shared, 0)
        let out = dir + "/moe-\(UUID().uuidString)"
        try Upcycler.upcycle(model: model, options: o, to: out)
        return out
    }

    func testMistralBecomesMixtralThatComputesTheSame() throws {
        let dense = fixtures.appendingPathComponent("mistral").path
        let out = try upcycled(dense, experts: 4, topK: 2, in: temporary())
        let moe = try DecoderModel(path: out)
        XCTAssertEqual(moe.spec.modelType, "mixtral")
        XCTAssertEqual(moe.spec.experts, 4)
        XCTAssertEqual(moe.spec.slidingWindows, try DecoderModel(path: dense).spec.slidingWindows)
        XCTAssertEqual(try logits(out), try logits(dense))
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/config.json"))
    }

    func testFineGrainedWithASharedExpertBecomesQwen2MoE() throws {
        let dir = temporary()
        var shape = RandomCheckpoint.Shape()
        (shape.vocabSize, shape.hiddenSize, shape.layers, shape.heads, shape.kvHeads, shape.denseSize) = (300, 64, 2, 4, 2, 96)
        let dense = dir + "/llama"
        try RandomCheckpoint.write(arch: "llama", shape: shape, to: dense, seed: 4, dtype: .f32)
        let out = try upcycled(dense, experts: 6, topK: 3, granularity: 4, shared: 1, in: dir)
        let moe = try DecoderModel(path: out)
        XCTAssertEqual(moe.spec.modelType, "qwen2_moe")
        XCTAssertEqual(moe.spec.expertIntermediate, 24)
        assertClose(try logits(out), try logits(dense), absolute: 1e-4, "upcycled Llama")
    }

    func testQwen3BecomesQwen3MoEOfHalfSizeExperts() throws {
        let dense = fixtures.appendingPathComponent("qwen3").path
        let out = try upcycled(dense, experts: 8, topK: 4, granularity: 2, in: temporary())
        XCTAssertEqual(try DecoderModel(path: out).spec.modelType, "qwen3_moe")
        assertClose(try logits(out), try logits(dense), absolute: 1e-4, "upcycled Qwen3")
    }

    func testRouterAndNoiseMoveItAwayFromTheDenseModel() throws {
        let dense = fixtures.appendingPathComponent("mistral").path
        var o = Upcycler.Options(experts: 8, topK: 2)
        (o.granularity, o.noise, o.routerStd, o.seed) = (2, 0.05, 0.02, 3)
        let out = temporary() + "/moe"
        try Upcycler.upcycle(model: dense, options: o, to: out)
        let (a, b) = (try logits(out), try logits(dense))
        XCTAssertGreaterThan(zip(a, b).map { abs($0 - $1) }.max() ?? 0, 1e-4)
    }

    func testWhatCannotBeUpcycledIsRefused() throws {
        let dir = temporary()
        let mistral = fixtures.appendingPathComponent("mistral").path
        let cases: [(model: String, experts: Int, topK: Int, granularity: Int, shared: Int, mentions: [String])] = [
            (mistral, 4, 2, 5, 0, ["--granularity", "96"]),
            (mistral, 5, 2, 2, 0, ["--experts", "2 routed slices"]),
            (mistral, 4, 5, 1, 0, ["--top-k"]),
            (mistral, 4, 2, 2, 2, ["--shared-experts"]),
            (mistral, 4, 2, 2, 1, ["sliding_window"]),
            (fixtures.appendingPathComponent("llama").path, 4, 2, 1, 0, ["attention_bias"]),
            (fixtures.appendingPathComponent("qwen2").path, 4, 2, 1, 0, ["--shared-experts", "Qwen2-MoE"]),
            (fixtures.appendingPathComponent("qwen3").path, 4, 2, 2, 1, ["--shared-experts", "Qwen3-MoE"]),
            (fixtures.appendingPathComponent("mixtral").path, 4, 2, 1, 0, ["not a dense model"]),
        ]
        for c in cases {
            var o = Upcycler.Options(experts: c.experts, topK: c.topK)
            (o.granularity, o.sharedExperts) = (c.granularity, c.shared)
            XCTAssertThrowsError(try Upcycler.upcycle(model: c.model, options: o, to: dir + "/never")) { error in
                for m in c.mentions { XCTAssertTrue("\(error)".contains(m), "\(error) should mention \(m)") }
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/never"))
        let out = try upcycled(mistral, experts: 2, topK: 1, in: dir)
        XCTAssertThrowsError(try Upcycler.upcycle(model: mistral, options: .init(experts: 2, topK: 1), to: out)) {
            XCTAssertTrue("\($0)".contains("already exists"), "\($0)")
        }
    }
}
