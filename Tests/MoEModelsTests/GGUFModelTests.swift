import Foundation
import MoECore
import MoEModels
import _TestSupport
import XCTest

/// GGUF files made by llama.cpp's convert_hf_to_gguf.py from tiny transformers checkpoints
/// (scripts/make_gguf_model_fixtures.py) run as those checkpoints do: every logit within 1e-4
/// of transformers' on 1 and 2 threads (f32 files), and a bf16 file within bf16's rounding.
final class GGUFModelTests: XCTestCase {
    let folder = fixturesDirectory.appendingPathComponent("gguf_models")

    struct Reference: Decodable { var prompt: [Int], logits: [[Float]] }

    func check(_ family: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("\(family).json")))
        for threads in [1, 2] {
            let model = try DecoderModel(path: folder.appendingPathComponent("\(family).f32.gguf").path, pool: ThreadPool(threads: threads))
            var cache = model.makeCache(capacity: 4)
            let logits = try model.forward(ref.prompt, cache: &cache)
            assertClose(logits.toFloats(), ref.logits.flatMap { $0 }, absolute: 1e-4, "\(family), \(threads) threads", file: file, line: line)
        }
    }

    func testLlama() throws { try check("llama") }
    func testMixtral() throws { try check("mixtral") }
    func testQwen3MoE() throws { try check("qwen3_moe") }
    func testQwen2MoE() throws { try check("qwen2_moe") }
    func testOLMoE() throws { try check("olmoe") }

    func testBF16FileHoldsTheRoundedWeightsAndRunsClose() throws {
        let f32 = try GGUFFile(path: folder.appendingPathComponent("qwen3_moe.f32.gguf").path)
        let bf16 = try GGUFFile(path: folder.appendingPathComponent("qwen3_moe.bf16.gguf").path)
        let name = "blk.1.ffn_gate_exps.weight"
        let a = try f32.tensor(name), b = try bf16.tensor(name)
        XCTAssertEqual(b.dtype, .bf16)
        XCTAssertEqual(b.toFloats(), a.converted(to: .bf16).toFloats(), "bf16 weights are the f32 ones rounded")
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("qwen3_moe.json")))
        let model = try DecoderModel(path: bf16.path)
        var cache = model.makeCache()
        assertClose(try model.forward(ref.prompt, cache: &cache).toFloats(), ref.logits.flatMap { $0 }, absolute: 0.05, "bf16")
    }

    /// Quantized weights load only once their fused kernels exist: until then a typed error
    /// naming the tensor, never a model that cannot run.
    func testBlockFormatWeightsAreRefusedByName() throws {
        var bytes = [UInt8](try Data(contentsOf: folder.appendingPathComponent("llama.f32.gguf")))
        let name = Array("blk.0.attn_q.weight".utf8)
        let at = try XCTUnwrap((0..<(bytes.count - name.count)).first { Array(bytes[$0..<($0 + name.count)]) == name }) + name.count
        bytes[at + 4 + 16] = 8  // ggml type Q8_0 (its data, smaller than f32's, is there)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-q8-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        XCTAssertThrowsError(try DecoderModel(path: url.path)) { error in
            guard case let .unsupportedDType(path, tensor, dtype)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, url.path)
            XCTAssertEqual(tensor, "blk.0.attn_q.weight")
            XCTAssertEqual(dtype, "q8_0")
        }
    }

    func testUnsupportedArchitectureNamesTheKey() throws {
        var bytes = [UInt8](try Data(contentsOf: folder.appendingPathComponent("olmoe.f32.gguf")))
        // general.architecture's value "olmoe" becomes "olmoX".
        let name = Array("olmoe".utf8)
        let at = try XCTUnwrap((0..<(bytes.count - 5)).first { Array(bytes[$0..<($0 + 5)]) == name })
        bytes[at + 4] = UInt8(ascii: "X")
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-arch-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        XCTAssertThrowsError(try DecoderModel(path: url.path)) { error in
            guard case let .unknownArchitecture(path, arch)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, url.path)
            XCTAssertEqual(arch, "olmoX")
        }
    }
}
