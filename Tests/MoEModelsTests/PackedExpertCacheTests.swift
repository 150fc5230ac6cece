import Foundation
import MoE
import MoECore
import MoEModels
import XCTest

/// bf16 experts held packed in the expert cache (`ExpertCache.packBF16`), and the resident bf16
/// matrices with packed twins (`DecoderModel.packResidentMatrices`): logits
/// equal the resident model's bit for bit, at decode (packed leaves) and prefill (unpacked for
/// the call), with f32 and bf16 activations, with biases (GPT-OSS) and experts whose rows stay
/// raw (DeepSeek-V3's down projections of 48); the cache counts the packed bytes, so the same
/// budget holds more experts.
final class PackedExpertCacheTests: XCTestCase {
    let qwen3 = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/gguf_models/qwen3_moe.bf16.gguf").path

    func run(_ model: DecoderModel) throws -> [[UInt32]] { try stepLogitBits(model) }

    /// A random bf16 checkpoint of `arch` (hidden 64, 8 experts of `expertSize`), removed after the test.
    func randomBF16(_ arch: String, expertSize: Int = 64) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-packed-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        var shape = RandomCheckpoint.Shape()
        (shape.hiddenSize, shape.layers, shape.heads, shape.kvHeads, shape.experts, shape.topK) = (64, 2, 4, 2, 8, 2)
        (shape.expertSize, shape.sharedSize, shape.denseSize, shape.vocabSize) = (expertSize, 64, 128, 300)
        (shape.qLoraRank, shape.kvLoraRank, shape.nopeDim, shape.ropeDim, shape.valueDim) = (32, 32, 16, 16, 16)
        try RandomCheckpoint.write(arch: arch, shape: shape, to: path, seed: 11, dtype: .bf16, initialization: .normal(std: 0.05))
        return path
    }

    func testPackedExpertsGiveTheResidentLogits() throws {
        let bf16Dot = Kernels.bf16Activations
        defer { Kernels.bf16Activations = bf16Dot }
        let paths = [qwen3, try randomBF16("mixtral"), try randomBF16("gpt_oss"), try randomBF16("deepseek_v3", expertSize: 48)]
        for dot in Kernels.bf16ComputeSupported ? [false, true] : [false] {
            Kernels.bf16Activations = dot
            for path in paths {
                let plain = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
                let want = try run(plain)
                let resident = try plain.storedBytes() - plain.routedExpertBytes
                for extra in [2 * plain.largestExpertBytes + 6 * 8192, plain.routedExpertBytes * 2] {
                    for direct in [false, true] {
                        let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
                        let cache = try model.useExpertCache(budget: resident + extra, prefetch: true, directIO: direct, packBF16: true)
                        let what = "\(URL(fileURLWithPath: path).lastPathComponent), \(extra) bytes, direct \(direct), bf16 dot \(dot)"
                        XCTAssertEqual(try run(model), want, what)
                        XCTAssertLessThanOrEqual(cache.bytesHeld, cache.capacity, what)
                        XCTAssertEqual(cache.packBF16, PackedBF16Matrix.isFast)
                        // The resident matrices (attention, shared or dense FFNs, LM head) run packed too.
                        XCTAssertEqual(model.packResidentMatrices() > 0, PackedBF16Matrix.isFast, what)
                    }
                }
            }
        }
    }

    /// An expert held packed takes about 78% of its stored bytes (page granularity aside);
    /// `packBF16: false` holds them as stored.
    func testTheCacheCountsPackedBytes() throws {
        try XCTSkipUnless(PackedBF16Matrix.isFast, "the cache packs only where the packed leaves are faster (AVX-512)")
        let path = try randomBF16("mixtral", expertSize: 1024)
        var held: [Bool: Double] = [:]
        for pack in [false, true] {
            let model = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
            let resident = try model.storedBytes() - model.routedExpertBytes
            let cache = try model.useExpertCache(budget: resident + 2 * model.routedExpertBytes, packBF16: pack)
            for _ in 0..<3 { _ = try run(model) }
            XCTAssertGreaterThan(cache.count, 4)
            held[pack] = Double(cache.bytesHeld) / Double(cache.count)
        }
        let (raw, packed) = (try XCTUnwrap(held[false]), try XCTUnwrap(held[true]))
        XCTAssertGreaterThan(packed / raw, 0.74, "\(packed) of \(raw) bytes an expert")
        XCTAssertLessThan(packed / raw, 0.84, "\(packed) of \(raw) bytes an expert")
    }
}
