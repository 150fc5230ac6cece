import Foundation
import MoECore
import MoEModels
import MoETrain
import _TestSupport
import XCTest

/// The skill library: entries added whole with their base's fingerprint, refused for another
/// base; composition in parameter space is exact (two adapters composed with weights 1 and 1
/// give the logits of both stacked); similarity is a cosine; the K-shot scorer ranks.
/// scripts/skills-demo.sh runs selection and composition end to end.
final class SkillLibraryTests: XCTestCase {
    let fixtures = trainFixture.deletingLastPathComponent()

    func testAddListRefuseAndComposeExactly() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-skills-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        let llama = fixtures.appendingPathComponent("llama").path, qwen = fixtures.appendingPathComponent("qwen2_moe").path
        let first = fixtures.appendingPathComponent("lora/llama").path, second = fixtures.appendingPathComponent("lora_train/llama").path
        let library = SkillLibrary(path: root + "/library")
        try library.add(adapter: first, name: "one", base: llama, tags: ["a", "b"], data: nil)
        try library.add(adapter: second, name: "two", base: llama, tags: [], data: first + "/adapter_config.json")
        XCTAssertEqual(try library.skills().map(\.name), ["one", "two"])
        XCTAssertEqual(try library.skills().first?.tags, ["a", "b"])
        XCTAssertNotNil(try library.skills().last?.dataHash)
        XCTAssertEqual(try library.skills(for: qwen).count, 0, "no skill of another base")
        XCTAssertThrowsError(try library.skills(for: qwen, only: ["one"])) { XCTAssertTrue("\($0)".contains("another base"), "\($0)") }
        XCTAssertThrowsError(try library.add(adapter: first, name: "three", base: qwen, tags: [], data: nil)) {
            XCTAssertTrue("\($0)".contains("lora/llama"), "\($0)")  // the adapter does not fit that base
        }
        XCTAssertThrowsError(try library.add(adapter: first, name: "one", base: llama, tags: [], data: nil))
        XCTAssertThrowsError(try library.add(adapter: first, name: "../x", base: llama, tags: [], data: nil))

        let a = try LoRAAdapterFolder(path: first), b = try LoRAAdapterFolder(path: second)
        XCTAssertEqual(SkillSelection.similarity(a, a), 1, accuracy: 1e-9)
        XCTAssertLessThan(abs(SkillSelection.similarity(a, b)), 0.5)
        try SkillSelection.compose([a, b], weights: [1, 1], base: llama, to: root + "/composed")
        let tokens = [5, 9, 33, 2, 7, 8]
        func logits(_ adapters: [String]) throws -> [Float] {
            let model = try DecoderModel(path: llama, adapters: adapters)
            var cache = model.makeCache()
            return try model.forward(tokens, cache: &cache).toFloats()
        }
        assertClose(try logits([root + "/composed"]), try logits([first, second]), absolute: 1e-4, "composed = stacked")
        try SkillSelection.compose([a], weights: [0], base: llama, to: root + "/zero")
        assertClose(try logits([root + "/zero"]), try logits([]), absolute: 1e-5, "weight 0 = the base")
    }

    /// Two skills mounted as LoRA experts on the Llama fixture's FFNs (attention composed): the
    /// routers alone train and lower the shots' answer loss, the adapter written runs through
    /// `DecoderModel` to the loss training reports, and it holds one mixture per layer.
    func testMountTrainsRoutersOverFrozenSkills() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-mount-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        let llama = fixtures.appendingPathComponent("llama").path
        let skills = try ["lora/llama", "lora_train/llama"].map { try LoRAAdapterFolder(path: fixtures.appendingPathComponent($0).path) }
        let shots = (0..<8).map { i in
            InstructionCorpus.Example(ids: (0..<10).map { (i * 37 + $0 * 11) % 200 + 3 }, answer: (0..<10).map { $0 >= 6 })
        }
        var options = SkillSelection.MountOptions()
        options.steps = 20
        options.lr = 0.05
        let (before, after) = try SkillSelection.mount(skills, weights: [0.5, 0.5], base: llama, shots: shots, options: options,
                                                      to: root + "/mounted", pool: ThreadPool(threads: 2))
        XCTAssertLessThan(after, before - 1e-3, "the routers learn the shots")
        let folder = try LoRAAdapterFolder(path: root + "/mounted")
        XCTAssertEqual(folder.mixtures.count, 3, "a mixture on each of the fixture's three layers")
        XCTAssertEqual(folder.mixtures.values.first?.topK, 2)
        let model = try DecoderModel(path: llama, adapters: [root + "/mounted"])
        var total = 0.0
        for e in shots {
            var cache = model.makeCache()
            let logits = try model.forward(e.ids, cache: &cache).toFloats(), v = model.spec.vocabSize
            var sum = 0.0, count = 0
            for p in 0..<(e.ids.count - 1) where e.answer[p + 1] {
                let row = Array(logits[(p * v)..<((p + 1) * v)]).map(Double.init), mx = row.max() ?? 0
                sum += mx + log(row.reduce(0) { $0 + exp($1 - mx) }) - row[e.ids[p + 1]]
                count += 1
            }
            total += sum / Double(count)
        }
        XCTAssertEqual(total / Double(shots.count), after, accuracy: 1e-4, "inference runs the trained routers")
        XCTAssertThrowsError(try SkillSelection.mount([skills[0]], weights: [1], base: llama, shots: shots, to: root + "/one"))
        // Its mixtures on a model without those dense FFNs (Mixtral: every layer an MoE): a typed error naming the adapter.
        let moe = try TrainableDecoder(path: fixtures.appendingPathComponent("mixtral").path, frozenProjections: true)
        XCTAssertThrowsError(try moe.attachLoRA(folder)) { XCTAssertTrue("\($0)".contains(root + "/mounted"), "\($0)") }
    }
}
