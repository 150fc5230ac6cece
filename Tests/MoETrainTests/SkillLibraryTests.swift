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
}
