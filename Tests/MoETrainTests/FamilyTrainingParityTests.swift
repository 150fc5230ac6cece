import Foundation
import MoE
import MoECore
import MoEModels
import MoETrain
import _TestSupport
import XCTest

/// One training step of each family `moe train --from` trains, against PyTorch on the same
/// checkpoint and batch (scripts/make_train_fixture.py): the loss within 1e-5 and every gradient
/// within 1e-4 of the largest of its tensor. The model is loaded the way `moe train --from`
/// loads it, through the family's spec and tensor names.
final class FamilyTrainingParityTests: XCTestCase {
    struct Reference: Decodable {
        var inputIds: [[Int]], targets: [[Int]], loss: Float
        enum CodingKeys: String, CodingKey { case inputIds = "input_ids", targets, loss }
    }

    func check(_ family: String, threads: Int = 2, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = trainFixture.deletingLastPathComponent().appendingPathComponent("train_\(family)")
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: dir.appendingPathComponent("reference.json")))
        let model = try TrainableDecoder(directory: dir.path)
        XCTAssertEqual(model.spec.modelType, family, file: file, line: line)
        let tape = Tape(pool: ThreadPool(threads: threads))
        let out = model.forward(ref.inputIds, targets: ref.targets, tape: tape, aux: AuxLossCoefficients())
        XCTAssertEqual(out.loss.value.floats[0], ref.loss, accuracy: 1e-5, "\(family) loss", file: file, line: line)
        tape.backward(from: out.loss)
        let grads = try SafetensorsFile(path: dir.appendingPathComponent("grads.safetensors").path)
        let variables = model.namedVariables
        XCTAssertEqual(Set(variables.keys), Set(grads.entries.keys), "\(family) parameters", file: file, line: line)
        for (name, v) in variables where grads.entries[name] != nil {
            let expected = try grads.tensor(name).toFloats()
            let scale = expected.map(abs).max() ?? 0
            assertClose(v.grad?.toFloats() ?? [], expected, absolute: 1e-6 + 1e-4 * scale, "\(family) gradient of \(name)",
                        file: file, line: line)
        }
    }

    func testQwen3MoE() throws { try check("qwen3_moe") }
    func testQwen2MoE() throws { try check("qwen2_moe") }
    func testOLMoE() throws { try check("olmoe", threads: 1) }
    func testGLM4MoE() throws { try check("glm4_moe") }
    func testGPTOSS() throws { try check("gpt_oss", threads: 1) }
    func testDeepSeekV3() throws { try check("deepseek_v3") }
    func testDeepSeekV2() throws { try check("deepseek_v2", threads: 1) }
    func testLlama() throws { try check("llama") }
    func testMistral() throws { try check("mistral", threads: 1) }

    /// A loaded model saved the way `moe train` saves it runs the same in inference.
    func testLoadedModelSavesAndRunsTheSame() throws {
        for family in ["glm4_moe", "qwen2_moe", "llama", "gpt_oss", "deepseek_v3", "deepseek_v2"] {
            let dir = trainFixture.deletingLastPathComponent().appendingPathComponent("train_\(family)")
            let model = try TrainableDecoder(directory: dir.path)
            let inference = try savedAndLoaded(model, routerConfig: nil)
            XCTAssertEqual(inference.spec.modelType, family)
            let tokens = [5, 9, 33, 2, 41, 17, 60]
            var cache = inference.makeCache()
            let expected = try inference.forward(tokens, cache: &cache).toFloats()
            let out = model.forward([tokens], targets: [tokens], tape: Tape(pool: ThreadPool(threads: 1)))
            assertClose(out.logits.value.toFloats(), expected, absolute: 1e-4, family)
        }
    }
}

/// Training from GGUF files: the trainable model loaded from llama.cpp's files (an f32 Mixtral,
/// whose q/k rows llama.cpp permuted, a Qwen3-MoE and a GPT-OSS) computes transformers' logits
/// for the checkpoint the file came from; a Q8_0 file loads widened to f32.
final class TrainFromGGUFTests: XCTestCase {
    struct Reference: Decodable { var prompt: [Int], logits: [[Float]] }

    func testGGUFFilesTrainFromTheirWeights() throws {
        let folder = trainFixture.deletingLastPathComponent().appendingPathComponent("gguf_models")
        for family in ["mixtral", "qwen3_moe", "gpt_oss"] {
            let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("\(family).json")))
            let model = try TrainableDecoder(path: folder.appendingPathComponent("\(family).f32.gguf").path)
            XCTAssertFalse(model.spec.ropeInterleaved)
            let out = model.forward([ref.prompt], targets: [ref.prompt], tape: Tape(pool: ThreadPool(threads: 2)))
            assertClose(out.logits.value.toFloats(), ref.logits.flatMap { $0 }, absolute: 1e-4, family)
        }
        let q8 = try TrainableDecoder(path: folder.appendingPathComponent("qwen3_moe.q8_0.gguf").path)
        XCTAssertTrue(q8.namedVariables.values.allSatisfy { $0.value.dtype == .f32 })
    }
}

/// What a run killed at any instant of a checkpoint swap leaves behind is recovered: the newest
/// complete checkpoint gets the usual name, stale temporary folders and `checkpoint.old` go.
final class CheckpointRecoveryTests: XCTestCase {
    func folder(_ url: URL, step: Int?) throws {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        if let step { try JSONSerialization.data(withJSONObject: ["step": step]).write(to: url.appendingPathComponent("trainer_state.json")) }
    }

    func step(_ url: URL) throws -> Int? {
        (try JSONSerialization.jsonObject(with: Data(contentsOf: url.appendingPathComponent("trainer_state.json"))) as? [String: Any])?["step"] as? Int
    }

    func testEveryInterruptedSwapRecovers() throws {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("moekit-recover-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: dir) }
        let final = dir.appendingPathComponent("checkpoint"), old = dir.appendingPathComponent("checkpoint.old")
        // Killed between the two renames: the new checkpoint is still in its temporary folder.
        try folder(old, step: 4)
        try folder(dir.appendingPathComponent(".checkpoint-77-5"), step: 5)
        try folder(dir.appendingPathComponent(".checkpoint-78-6"), step: nil)  // killed while writing: incomplete
        Trainer.recoverCheckpoint(in: dir)
        XCTAssertEqual(try step(final), 5)
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: dir.path), ["checkpoint"])
        // Killed after the first rename, with the temporary folder gone: the old one is the latest.
        try fm.moveItem(at: final, to: old)
        Trainer.recoverCheckpoint(in: dir)
        XCTAssertEqual(try step(final), 5)
        XCTAssertFalse(fm.fileExists(atPath: old.path))
        // Killed while writing the next one: the complete checkpoint stays, the partial one goes.
        try folder(dir.appendingPathComponent(".checkpoint-79-9"), step: nil)
        Trainer.recoverCheckpoint(in: dir)
        XCTAssertEqual(try step(final), 5)
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: dir.path), ["checkpoint"])
    }
}
