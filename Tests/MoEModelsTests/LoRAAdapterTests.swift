import Foundation
import MoECore
import MoEModels
import _TestSupport
import XCTest

/// PEFT LoRA adapters folded into a model as it loads (`AdaptedWeights`), against the logits
/// PEFT computes with the same adapters (scripts/make_lora_fixtures.py): every attention and
/// MLP projection of a dense Llama; rsLoRA with per-module alpha and rank, the shared expert,
/// its gate, the embedding and the LM head of a Qwen2-MoE; two adapters stacked; the same
/// Llama adapter on a GGUF of the checkpoint (q and k rows in llama.cpp's order); and the
/// adapters PEFT can save that MoEKit cannot apply, refused by field.
final class LoRAAdapterTests: XCTestCase {
    let lora = fixturesDirectory.appendingPathComponent("lora")
    struct Reference: Decodable { var base: String, prompt: [Int], logits: [[Float]] }

    func reference(_ name: String) throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: lora.appendingPathComponent("\(name)/reference.json")))
    }

    func check(model path: String, adapters: [String], reference name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try reference(name)
        let model = try DecoderModel(path: path, adapters: adapters.map { lora.appendingPathComponent($0).path }, pool: ThreadPool(threads: 2))
        var cache = model.makeCache(capacity: 8)
        let logits = try model.forward(ref.prompt, cache: &cache)
        assertClose(logits.toFloats(), ref.logits.flatMap { $0 }, absolute: 1e-4, "\(adapters) on \(path)", file: file, line: line)
    }

    func testLlamaAdapterEqualsPEFT() throws {
        try check(model: fixturesDirectory.appendingPathComponent("llama").path, adapters: ["llama"], reference: "llama")
        // Without the adapter the logits differ: the test sees the adapter.
        let ref = try reference("llama")
        let plain = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("llama").path)
        var cache = plain.makeCache()
        let base = try plain.forward(ref.prompt, cache: &cache).toFloats()
        XCTAssertGreaterThan(zip(base, ref.logits.flatMap { $0 }).map { abs($0 - $1) }.max() ?? 0, 0.01)
    }

    func testRSLoRAPatternsEmbeddingAndHeadEqualPEFT() throws {
        try check(model: fixturesDirectory.appendingPathComponent("qwen2_moe").path, adapters: ["qwen2_moe"], reference: "qwen2_moe")
    }

    func testStackedAdaptersEqualPEFTWithBothActive() throws {
        try check(model: fixturesDirectory.appendingPathComponent("qwen2_moe").path, adapters: ["qwen2_moe", "qwen2_moe_q"],
                  reference: "qwen2_moe_q")
    }

    /// PEFT's `target_parameters` adapters on transformers 5's stacked expert tensors: on
    /// Mixtral's gate_up_proj and down_proj (nested wrappers; the checkpoint stores w1/w3/w2 per
    /// expert) with q_proj, also through its GGUF (stacked `ffn_*_exps`), under an expert cache
    /// and merged by `moe merge`; and on GPT-OSS's gate_up_proj alone (stored stacked input-major, gate and up interleaved).
    func testStackedExpertAdaptersEqualPEFT() throws {
        let (folder, gguf, _) = try fixtureAndItsGGUF("mixtral")
        try check(model: folder, adapters: ["mixtral_experts"], reference: "mixtral_experts")
        try check(model: gguf, adapters: ["mixtral_experts"], reference: "mixtral_experts")
        let model = try DecoderModel(path: folder, adapters: [lora.appendingPathComponent("mixtral_experts").path])
        try model.useExpertCache(budget: try model.storedBytes() - model.routedExpertBytes + 3 * model.largestExpertBytes)
        var cache = model.makeCache()
        let ref = try reference("mixtral_experts")
        assertClose(try model.forward(ref.prompt, cache: &cache).toFloats(), ref.logits.flatMap { $0 }, absolute: 1e-4, "under an expert cache")
        let merged = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-merged-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: merged) }
        try LoRAMerge.merge(model: folder, adapters: [lora.appendingPathComponent("mixtral_experts").path], to: merged)
        try check(model: merged, adapters: [], reference: "mixtral_experts")
        try check(model: fixturesDirectory.appendingPathComponent("gpt_oss").path, adapters: ["gpt_oss_experts"], reference: "gpt_oss_experts")
        let plain = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("gpt_oss").path)
        var plainCache = plain.makeCache()
        let base = try plain.forward(try reference("gpt_oss_experts").prompt, cache: &plainCache).toFloats()
        XCTAssertGreaterThan(zip(base, try reference("gpt_oss_experts").logits.flatMap { $0 }).map { abs($0 - $1) }.max() ?? 0, 0.01)
    }

    /// Fixture `name`'s folder, an f32 GGUF of it in a temporary folder (removed after the
    /// test), and that folder.
    func fixtureAndItsGGUF(_ name: String) throws -> (folder: String, gguf: String, tmp: URL) {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-lora-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: tmp) }
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        let folder = fixturesDirectory.appendingPathComponent(name).path, gguf = tmp.appendingPathComponent("m.gguf").path
        try GGUFConverter.convert(directory: folder, preset: .f32, to: gguf)
        return (folder, gguf, tmp)
    }

    /// A PEFT adapter folder in `tmp` holding `tensors`.
    func writeAdapter(_ tensors: [(String, Tensor)], r: Int, alpha: Int, in tmp: URL) throws -> URL {
        let adapter = tmp.appendingPathComponent("adapter")
        try FileManager.default.createDirectory(at: adapter, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: ["peft_type": "LORA", "r": r, "lora_alpha": alpha]).write(to: adapter.appendingPathComponent("adapter_config.json"))
        try SafetensorsWriter.write(tensors, to: adapter.appendingPathComponent("adapter_model.safetensors").path)
        return adapter
    }

    /// An adapter on q and k of a Llama-family GGUF (Mistral: llama.cpp permutes q and k rows for
    /// its interleaved RoPE) gives the logits the same adapter gives on the checkpoint folder
    /// (the path PEFT checks above).
    func testAdapterOnAGGUFOfTheCheckpoint() throws {
        let (folder, gguf, tmp) = try fixtureAndItsGGUF("mistral")
        var tensors: [(String, Tensor)] = []
        for (i, (module, rows)) in [("q_proj", 96), ("k_proj", 48), ("v_proj", 48)].enumerated() {
            let p = "base_model.model.model.layers.1.self_attn.\(module)"
            tensors.append(("\(p).lora_A.weight", Tensor(randomUniform: [3, 64], in: -0.3...0.3, seed: UInt64(2 * i))))
            tensors.append(("\(p).lora_B.weight", Tensor(randomUniform: [rows, 3], in: -0.3...0.3, seed: UInt64(2 * i + 1))))
        }
        let adapter = try writeAdapter(tensors, r: 3, alpha: 6, in: tmp)
        let prompt = [5, 17, 99, 3, 250, 41, 8, 77, 120, 9, 64, 200, 13, 31]
        func logits(_ path: String, _ adapters: [String]) throws -> [Float] {
            let model = try DecoderModel(path: path, adapters: adapters)
            var cache = model.makeCache()
            return try model.forward(prompt, cache: &cache).toFloats()
        }
        let adapted = try logits(folder, [adapter.path])
        assertClose(try logits(gguf, [adapter.path]), adapted, absolute: 1e-4, "GGUF with the adapter")
        XCTAssertGreaterThan(zip(try logits(folder, []), adapted).map { abs($0 - $1) }.max() ?? 0, 0.01)
    }

    /// Routed experts stored one by one (Mixtral's `experts.N.w1/w2/w3`, as PEFT on
    /// transformers 4 names them): an adapter on two experts gives the same logits on the
    /// folder and on its GGUF (stacked `ffn_*_exps`, read per expert), under an expert cache
    /// too, and they differ from the base model's.
    func testAdapterOnRoutedExperts() throws {
        let (folder, gguf, tmp) = try fixtureAndItsGGUF("mixtral")
        let base = try DecoderModel(directory: folder)
        let names = base.spec.names
        var tensors: [(String, Tensor)] = []
        for (i, (layer, expert)) in [(0, 1), (1, 0), (1, 1), (2, 3)].enumerated() {
            let x = names.expert(layer, expert)
            for (j, (name, rows, cols)) in [(x.gate, base.spec.expertIntermediate, base.spec.hiddenSize),
                                            (x.down, base.spec.hiddenSize, base.spec.expertIntermediate)].enumerated() {
                let module = "base_model.model." + String(name.dropLast(".weight".count))
                let seed = UInt64(10 * i + 2 * j)
                tensors.append(("\(module).lora_A.weight", Tensor(randomUniform: [2, cols], in: -0.5...0.5, seed: seed)))
                tensors.append(("\(module).lora_B.weight", Tensor(randomUniform: [rows, 2], in: -0.5...0.5, seed: seed + 1)))
            }
        }
        let adapter = try writeAdapter(tensors, r: 2, alpha: 4, in: tmp)
        let prompt = [3, 9, 27, 81, 243, 7, 49, 100, 200, 11, 121, 5]
        func logits(_ path: String, _ adapters: [String], budget: Bool = false) throws -> [Float] {
            let model = try DecoderModel(path: path, adapters: adapters)
            if budget { try model.useExpertCache(budget: try model.storedBytes() - model.routedExpertBytes + 3 * model.largestExpertBytes) }
            var cache = model.makeCache()
            return try model.forward(prompt, cache: &cache).toFloats()
        }
        let adapted = try logits(folder, [adapter.path])
        assertClose(try logits(gguf, [adapter.path]), adapted, absolute: 1e-4, "GGUF with the expert adapter")
        assertClose(try logits(folder, [adapter.path], budget: true), adapted, absolute: 0, "under an expert cache")
        XCTAssertGreaterThan(zip(try logits(folder, []), adapted).map { abs($0 - $1) }.max() ?? 0, 0.01)
    }

    /// `moe merge`: the merged folder runs as the adapted model (f32 fixture: the same sums),
    /// copies the tokenizer files, and refuses an existing folder and a GGUF base.
    func testMergedCheckpointEqualsPEFT() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-merged-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let base = fixturesDirectory.appendingPathComponent("qwen2_moe").path
        let adapters = ["qwen2_moe", "qwen2_moe_q"].map { lora.appendingPathComponent($0).path }
        try LoRAMerge.merge(model: base, adapters: adapters, to: out)
        try check(model: out, adapters: [], reference: "qwen2_moe_q")
        XCTAssertThrowsError(try LoRAMerge.merge(model: base, adapters: adapters, to: out))
        XCTAssertThrowsError(try LoRAMerge.merge(model: fixturesDirectory.appendingPathComponent("gguf_models/llama.f32.gguf").path,
                                                 adapters: adapters, to: out + "-gguf"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "-gguf"))
    }

    /// An adapter naming modules the model lacks, a bad config and a bad shape: typed errors
    /// naming the adapter's file and the field.
    func testRefusals() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-lora-bad-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let llama = fixturesDirectory.appendingPathComponent("llama").path
        func adapter(config: [String: Any], tensors: [(String, Tensor)]) throws -> String {
            try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("adapter_config.json"))
            try SafetensorsWriter.write(tensors, to: dir.appendingPathComponent("adapter_model.safetensors").path)
            return dir.path
        }
        func field(_ body: () throws -> Void) -> String? {
            do { try body() } catch let e as ModelError {
                if case let .invalidFile(_, f, _) = e { return f }
                return "\(e)"
            } catch { return "\(error)" }
            return nil
        }
        let a = Tensor(shape: [2, 64], values: [Float](repeating: 0.01, count: 128))
        let b = Tensor(shape: [64, 2], values: [Float](repeating: 0.01, count: 128))
        // A module the model does not have.
        var path = try adapter(config: ["peft_type": "LORA", "r": 2, "lora_alpha": 4],
                               tensors: [("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", a),
                                         ("base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight", b)])
        XCTAssertEqual(field { _ = try DecoderModel(path: llama, adapters: [path]) }, "model.layers.9.self_attn.q_proj")
        // B A in the wrong shape for the weight (k_proj is [32, 64]).
        path = try adapter(config: ["r": 2, "lora_alpha": 4],
                           tensors: [("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", a),
                                     ("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", b)])
        XCTAssertEqual(field { _ = try DecoderModel(path: llama, adapters: [path]) }, "model.layers.0.self_attn.k_proj")
        // A and B whose product would be 250,000 x 250,000 floats: refused before it is made.
        path = try adapter(config: ["r": 1], tensors: [("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", Tensor(zeros: [1, 250_000])),
                                                      ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", Tensor(zeros: [250_000, 1]))])
        XCTAssertEqual(field { _ = try DecoderModel(path: llama, adapters: [path]) }, "model.layers.0.self_attn.q_proj")
        // A without B.
        path = try adapter(config: ["r": 2], tensors: [("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", a)])
        XCTAssertEqual(field { _ = try DecoderModel(path: llama, adapters: [path]) }, "model.layers.0.self_attn.q_proj")
        // What PEFT saves that is not a plain LoRA delta.
        for (key, value) in [("use_dora", true as Any), ("fan_in_fan_out", true), ("modules_to_save", ["lm_head"]), ("bias", "all"),
                             ("peft_type", "IA3"), ("lora_bias", true), ("layer_replication", [[0, 1]])] {
            path = try adapter(config: ["r": 2, key: value], tensors: [("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", a),
                                                                       ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", b)])
            XCTAssertEqual(field { _ = try DecoderModel(path: llama, adapters: [path]) }, key)
        }
        // Embeddings the tied LM head shares.
        path = try adapter(config: ["r": 2], tensors: [("base_model.model.model.embed_tokens.lora_embedding_A", Tensor(zeros: [2, 256])),
                                                       ("base_model.model.model.embed_tokens.lora_embedding_B", Tensor(zeros: [64, 2]))])
        XCTAssertEqual(field { _ = try DecoderModel(path: llama, adapters: [path]) }, "model.embed_tokens.weight")
        // PEFT `target_parameters` on the Mixtral fixture (8 experts of 32, d 64): a target that is
        // not a stacked expert tensor, A and B that are not rank times experts, and experts of
        // another count than the model's.
        let mixtral = fixturesDirectory.appendingPathComponent("mixtral").path
        let stacked = "base_model.model.model.layers.0.mlp.experts"
        path = try adapter(config: ["r": 2, "target_parameters": ["mlp.experts.w1"]],
                           tensors: [("\(stacked).lora_A.weight", Tensor(zeros: [16, 64])), ("\(stacked).lora_B.weight", Tensor(zeros: [64, 16]))])
        XCTAssertEqual(field { _ = try DecoderModel(path: mixtral, adapters: [path]) }, "target_parameters")
        path = try adapter(config: ["r": 3, "target_parameters": ["mlp.experts.gate_up_proj"]],
                           tensors: [("\(stacked).lora_A.weight", Tensor(zeros: [16, 64])), ("\(stacked).lora_B.weight", Tensor(zeros: [64, 16]))])
        XCTAssertEqual(field { _ = try DecoderModel(path: mixtral, adapters: [path]) }, "\(stacked).lora_B.weight")
        path = try adapter(config: ["r": 2, "target_parameters": ["mlp.experts.gate_up_proj"]],
                           tensors: [("\(stacked).lora_A.weight", Tensor(zeros: [8, 64])), ("\(stacked).lora_B.weight", Tensor(zeros: [64, 8]))])
        XCTAssertEqual(field { _ = try DecoderModel(path: mixtral, adapters: [path]) }, "model.layers.0.mlp.experts.gate_up_proj")
        // No folder.
        XCTAssertThrowsError(try DecoderModel(path: llama, adapters: [dir.appendingPathComponent("missing").path]))
    }
}
