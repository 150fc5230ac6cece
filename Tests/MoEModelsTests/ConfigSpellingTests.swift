import Foundation
import MoECore
import MoEModels
import XCTest

/// Both config.json spellings in the wild load to the same model.
final class ConfigSpellingTests: XCTestCase {
    func copyFixture(_ name: String) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-cfg-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: fixturesDirectory.appendingPathComponent(name), to: folder)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        return folder
    }

    func rewriteConfig(_ folder: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = folder.appendingPathComponent("config.json")
        var c = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&c)
        try JSONSerialization.data(withJSONObject: c).write(to: url)
    }

    func testOlderRopeScalingSpellingGivesTheSameLogits() throws {
        for name in ["qwen3_moe", "deepseek_v3", "mixtral"] {
            let folder = try copyFixture(name)
            try rewriteConfig(folder) { c in
                var p = c.removeValue(forKey: "rope_parameters") as? [String: Any] ?? [:]
                c["rope_theta"] = p.removeValue(forKey: "rope_theta")
                if let kind = p.removeValue(forKey: "rope_type") as? String, kind != "default" {
                    p["type"] = kind  // the oldest spelling
                    c["rope_scaling"] = p
                }
                c["num_experts"] = c.removeValue(forKey: "num_local_experts") ?? c["num_experts"]
            }
            let a = try DecoderModel(directory: fixturesDirectory.appendingPathComponent(name).path)
            let b = try DecoderModel(directory: folder.path)
            XCTAssertEqual(a.spec, b.spec, name)
            var c1 = a.makeCache(), c2 = b.makeCache()
            XCTAssertEqual(try a.forward([3, 9, 27], cache: &c1).toFloats(), try b.forward([3, 9, 27], cache: &c2).toFloats(), name)
        }
    }

    /// The spellings configs of the new families come in: RoPE as top-level `rope_theta` plus a
    /// `rope_scaling` object (`type`), GLM's `partial_rotary_factor` at the top level, and no
    /// `layer_types` (the family's own rule places the sliding windows).
    func testNewFamiliesLoadFromOlderSpellings() throws {
        for name in ["gpt_oss", "glm4_moe", "llama", "mistral", "qwen2", "qwen3"] {
            let folder = try copyFixture(name)
            try rewriteConfig(folder) { c in
                var p = c.removeValue(forKey: "rope_parameters") as? [String: Any] ?? [:]
                c["rope_theta"] = p.removeValue(forKey: "rope_theta")
                if let factor = p.removeValue(forKey: "partial_rotary_factor") { c["partial_rotary_factor"] = factor }
                if let kind = p.removeValue(forKey: "rope_type") as? String, kind != "default" {
                    p["type"] = kind
                    c["rope_scaling"] = p
                } else {
                    c["rope_scaling"] = NSNull()
                }
                c.removeValue(forKey: "layer_types")
            }
            let a = try DecoderModel(directory: fixturesDirectory.appendingPathComponent(name).path)
            let b = try DecoderModel(directory: folder.path)
            XCTAssertEqual(a.spec, b.spec, name)
            let tokens = Array(0..<20).map { ($0 * 37 + 5) % 256 }  // past every fixture's window
            var c1 = a.makeCache(), c2 = b.makeCache()
            XCTAssertEqual(try a.forward(tokens, cache: &c1).toFloats(), try b.forward(tokens, cache: &c2).toFloats(), name)
        }
    }

    func testUnsupportedRopeScalingNamesTheField() throws {
        let folder = try copyFixture("olmoe")
        try rewriteConfig(folder) { c in c["rope_parameters"] = ["rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0] }
        XCTAssertThrowsError(try DecoderModel(directory: folder.path)) { error in
            guard case let .invalidConfig(_, field, reason)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "rope_parameters.rope_type")
            XCTAssertTrue(reason.contains("dynamic"))
        }
    }
}
