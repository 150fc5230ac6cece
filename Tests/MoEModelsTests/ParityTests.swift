import Foundation
import MoECore
import MoEModels
import _TestSupport
import XCTest

/// The folder of committed fixtures (made by scripts/make_fixtures.py).
let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures")

/// What transformers computed for a fixture.
struct Reference: Decodable {
    var architecture: String
    var prompt: [Int]
    var logits: [[Float]]
    var greedy: [Int]
}

/// Every architecture against transformers (MoE and dense; sliding windows are passed: prompt
/// and continuation run to 54 positions against windows of 8 to 12) on committed tiny checkpoints: every logit of a
/// 24-token prompt within 1e-4, and 30 greedy tokens equal, decoding one token at a time with
/// the KV cache.
final class ParityTests: XCTestCase {
    func check(_ arch: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = fixturesDirectory.appendingPathComponent(arch)
        let data = try Data(contentsOf: folder.appendingPathComponent("reference.json"))
        let ref = try JSONDecoder().decode(Reference.self, from: data)
        for threads in [1, 2] {
            let model = try DecoderModel(directory: folder.path, pool: ThreadPool(threads: threads))
            var cache = model.makeCache(capacity: 8)  // small, so the cache has to grow
            let logits = try model.forward(ref.prompt, cache: &cache)
            XCTAssertEqual(logits.shape, [ref.prompt.count, model.spec.vocabSize], file: file, line: line)
            assertClose(logits.toFloats(), ref.logits.flatMap { $0 }, absolute: 1e-4,
                        "\(arch) logits, threads=\(threads)", file: file, line: line)
            var next = Kernels.argmaxRow(UnsafeBufferPointer(rebasing: logits.floats[((ref.prompt.count - 1) * model.spec.vocabSize)...]))
            var generated: [Int] = []
            for _ in 0..<ref.greedy.count {
                generated.append(next)
                let step = try model.forward([next], cache: &cache, lastOnly: true)
                next = Kernels.argmax(step)[0]
            }
            XCTAssertEqual(generated, ref.greedy, "\(arch) greedy, threads=\(threads)", file: file, line: line)
        }
    }

    func testMixtral() throws { try check("mixtral") }
    func testQwen2MoE() throws { try check("qwen2_moe") }
    func testQwen3MoE() throws { try check("qwen3_moe") }
    func testOLMoE() throws { try check("olmoe") }
    func testDeepSeekV3() throws { try check("deepseek_v3") }
    func testDeepSeekV2() throws { try check("deepseek_v2") }
    func testGPTOSS() throws { try check("gpt_oss") }
    /// GPT-OSS with its experts in MXFP4 blocks and scales, as published (transformers'
    /// dequantization is the oracle; scripts/make_mxfp4_fixture.py).
    func testGPTOSSMXFP4() throws {
        Kernels.integerActivations = false  // exact to the dequantized experts; the 8-bit path is checked on GGUF
        defer { Kernels.integerActivations = true }
        let ck = try Checkpoint(directory: fixturesDirectory.appendingPathComponent("gpt_oss_mxfp4").path)
        XCTAssertFalse(ck.has("model.layers.0.mlp.experts.gate_up_proj"))
        XCTAssertEqual(try ck.tensor("model.layers.1.mlp.experts.3.up_proj.weight", shape: [32, 64]).dtype, .mxfp4)
        XCTAssertThrowsError(try ck.tensor("model.layers.1.mlp.experts.3.down_proj.weight", shape: [32, 64]))
        try check("gpt_oss_mxfp4")
    }
    func testGLM4MoE() throws { try check("glm4_moe") }
    func testLlama() throws { try check("llama") }
    func testMistral() throws { try check("mistral") }
    func testQwen2() throws { try check("qwen2") }
    func testQwen3() throws { try check("qwen3") }
}
