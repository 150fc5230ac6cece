import Foundation
import MoECore
import MoEModels
import MoEQuant
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
    func testGPTOSS() throws { try check("gpt_oss") }
    /// DeepSeek-V3 (sigmoid routing with the correction bias, groups, YaRN) and V2 (softmax,
    /// group-limited greedy, a plain q projection), with the latent attention's kv_b put back
    /// together from llama.cpp's split attn_k_b and attn_v_b.
    func testDeepSeekV3() throws { try check("deepseek_v3") }
    func testDeepSeekV2() throws { try check("deepseek_v2") }
    /// GLM-4.5 (partial rotary, QK-norm, biases, sigmoid groups with the correction bias, a
    /// leading dense layer); the file counts a multi-token-prediction layer decoding skips.
    func testGLM4MoE() throws { try check("glm4_moe") }

    /// GPT-OSS as its published GGUFs hold it: experts in MXFP4 (written here by `moe quantize
    /// --type mxfp4_moe`, llama-quantize's bytes), the rest Q8_0; logits equal the same model on
    /// its dequantized weights with f32 activations, and stay close with 8-bit ones.
    func testGPTOSSWithMXFP4Experts() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-gptoss-mxfp4-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        try GGUFQuantizer.quantize(input: GGUFFile(path: folder.appendingPathComponent("gpt_oss.f32.gguf").path), preset: .mxfp4_moe, to: out)
        let weights = try GGUFWeights(path: out)
        XCTAssertEqual(weights.file.tensors["blk.0.ffn_gate_exps.weight"]?.dtype, .mxfp4)
        let oracle = try DecoderModel(weights: Dequantized(weights), spec: weights.spec)
        let prompt = Array(0..<12).map { ($0 * 53 + 7) % 256 }
        var c0 = oracle.makeCache()
        let want = try oracle.forward(prompt, cache: &c0).toFloats()
        Kernels.integerActivations = false
        let exact = try DecoderModel(path: out)
        var c1 = exact.makeCache()
        assertClose(try exact.forward(prompt, cache: &c1).toFloats(), want, absolute: 1e-4, "mxfp4, f32 activations")
        Kernels.integerActivations = true
        let model = try DecoderModel(path: out)
        var c2 = model.makeCache()
        let got = try model.forward(prompt, cache: &c2).toFloats()
        let spread = want.reduce(0.0) { $0 + Double(abs($1)) } / Double(want.count)
        let error = zip(got, want).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(want.count)
        XCTAssertLessThan(error, 0.05 * spread, "mxfp4 with 8-bit activations: mean error against mean |logit| \(spread)")
    }

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

    /// A GGUF's weights, each widened to an f32 copy: the oracle for the block-format kernels
    /// (the same model, every weight its exact dequantized value).
    final class Dequantized: WeightSource, @unchecked Sendable {
        let inner: GGUFWeights
        init(_ inner: GGUFWeights) { self.inner = inner }
        var configPath: String { inner.configPath }
        var names: [String] { inner.names }
        func has(_ name: String) -> Bool { inner.has(name) }
        func tensor(_ name: String, shape: [Int]?) throws(ModelError) -> Tensor {
            let t = try inner.tensor(name, shape: shape)
            return Tensor(shape: t.shape, values: t.toFloats())
        }
    }

    /// llama.cpp's own quantized files (llama-quantize: Q8_0, and a Q4_K_M that mixes Q4_K,
    /// Q6_K and the fallbacks of rows too short for them): with f32 activations, logits equal
    /// those of the same model run on its dequantized weights in f32, within summation order,
    /// on 1 and 2 threads; with 8-bit activations (the default), within their rounding.
    func testLlamaQuantizeFilesRunAsTheirDequantizedWeights() throws {
        Kernels.integerActivations = false
        defer { Kernels.integerActivations = true }
        for (stem, types) in [("qwen3_moe.q8_0", Set(["q8_0"])), ("wide_qwen3_moe.q4_k_m", Set(["q4_k", "q6_k"]))] {
            let path = folder.appendingPathComponent("\(stem).gguf").path
            let weights = try GGUFWeights(path: path)
            let stored = Set(weights.file.tensors.values.map(\.dtype.description))
            XCTAssertTrue(types.isSubset(of: stored), "\(stem) holds \(stored)")
            let oracle = try DecoderModel(weights: Dequantized(weights), spec: weights.spec)
            let prompt = Array(0..<12).map { ($0 * 53 + 7) % 256 }
            var c0 = oracle.makeCache()
            let want = try oracle.forward(prompt, cache: &c0).toFloats()
            for threads in [1, 2] {
                let model = try DecoderModel(path: path, pool: ThreadPool(threads: threads))
                var cache = model.makeCache()
                assertClose(try model.forward(prompt, cache: &cache).toFloats(), want, absolute: 1e-4, "\(stem), \(threads) threads")
                // Decoding one token at a time takes the matrix-vector path.
                var step = model.makeCache()
                _ = try model.forward(Array(prompt.dropLast()), cache: &step)
                let last = try model.forward([prompt[prompt.count - 1]], cache: &step, lastOnly: true).toFloats()
                assertClose(last, Array(want.suffix(model.spec.vocabSize)), absolute: 1e-4, "\(stem) decode")
            }
        }
    }

    /// The default integer products (8-bit activations, as llama.cpp's) against the exact f32
    /// products on the same quantized file: the logits differ by the activations' rounding
    /// only, a small fraction of their spread, and the greedy token stays the same.
    func testIntegerActivationsStayCloseToTheExactProducts() throws {
        for stem in ["qwen3_moe.q8_0", "wide_qwen3_moe.q4_k_m"] {
            let path = folder.appendingPathComponent("\(stem).gguf").path
            let prompt = Array(0..<12).map { ($0 * 53 + 7) % 256 }
            Kernels.integerActivations = false
            let exactModel = try DecoderModel(path: path)
            var c0 = exactModel.makeCache()
            let exact = try exactModel.forward(prompt, cache: &c0).toFloats()
            Kernels.integerActivations = true
            let model = try DecoderModel(path: path)
            var c1 = model.makeCache()
            let got = try model.forward(prompt, cache: &c1).toFloats()
            let vocab = model.spec.vocabSize
            let spread = exact.reduce(0.0) { $0 + Double(abs($1)) } / Double(exact.count)
            let meanError = zip(got, exact).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(exact.count)
            XCTAssertLessThan(meanError, 0.05 * spread, "\(stem): mean |int8 - f32| logit vs mean |logit| \(spread)")
            XCTAssertGreaterThan(meanError, 0, "\(stem): the integer path ran")
            let argmax = { (v: ArraySlice<Float>) in v.indices.max { v[$0] < v[$1] }! }
            let agree = (0..<prompt.count).filter { p in
                argmax(got[(p * vocab)..<((p + 1) * vocab)]) == argmax(exact[(p * vocab)..<((p + 1) * vocab)])
            }.count
            XCTAssertGreaterThanOrEqual(agree, prompt.count - 1, "\(stem): greedy tokens agree at \(agree) of \(prompt.count)")
        }
    }

    /// The Q8_0 file against transformers' f32 logits: close on average (a token whose router
    /// choice flips under quantization noise moves further, as in any quantized MoE).
    func testQ8FileIsCloseToTheCheckpoint() throws {
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("qwen3_moe.json")))
        let model = try DecoderModel(path: folder.appendingPathComponent("qwen3_moe.q8_0.gguf").path)
        var cache = model.makeCache()
        let got = try model.forward(ref.prompt, cache: &cache).toFloats(), want = ref.logits.flatMap { $0 }
        let meanError = zip(got, want).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(want.count)
        XCTAssertLessThan(meanError, 0.08, "mean |q8_0 - f32| logit (0.041 when written)")
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

extension GGUFModelTests {
    /// A NaN weight is an error naming the layer whose output it spoils, not NaN (or, after a
    /// router's comparisons, finite garbage) logits; a NaN embedding row names the embedding.
    func testNonFiniteWeightsNameTheLayer() throws {
        let source = folder.appendingPathComponent("qwen3_moe.f32.gguf")
        let file = try GGUFFile(path: source.path)
        for (tensor, field) in [("blk.1.attn_q.weight", "layer 1"), ("token_embd.weight", "model.embed_tokens.weight")] {
            var bytes = [UInt8](try Data(contentsOf: source))
            let info = try XCTUnwrap(file.tensors[tensor])
            let at = tensor == "token_embd.weight" ? info.offset + 7 * info.shape[1] * 4 : info.offset + 12
            withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { for i in 0..<4 { bytes[at + i] = $0[i] } }
            let bad = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-nanw-\(getpid()).gguf")
            defer { try? FileManager.default.removeItem(at: bad) }
            try Data(bytes).write(to: bad)
            let model = try DecoderModel(path: bad.path)
            var cache = model.makeCache()
            XCTAssertThrowsError(try model.forward([3, 7, 9], cache: &cache)) { error in
                guard case let .invalidFile(_, f, _)? = error as? ModelError else { return XCTFail("\(error)") }
                XCTAssertEqual(f, field, tensor)
            }
        }
    }
}
