import Foundation
import MoEModels
import XCTest

/// Every family's config.json fed each of its numeric fields out of range: a typed error that
/// names the file and the field, never a trap, an allocation abort or a silent default.
final class ConfigBoundsTests: XCTestCase {
    /// The fixtures, one per family.
    static let families = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "deepseek_v2", "gpt_oss", "glm4_moe",
                           "llama", "mistral", "qwen2", "qwen3"]
    /// Integer fields no family reads (transformers' training and generation settings).
    static let unread: Set<String> = ["pad_token_id", "num_nextn_predict_layers", "num_mtp_layers", "initializer_range"]
    /// Fields for which a huge value is harmless and accepted: a window or a layer threshold
    /// beyond the model (no layer slides), a position limit that only matters beyond it, a
    /// special token id past the vocabulary (it never matches; transformers keeps it too).
    static let hugeIsHarmless: Set<String> = ["bos_token_id", "eos_token_id", "sliding_window", "max_window_layers", "max_position_embeddings", "first_k_dense_replace",
                                              "moe_layer_freq", "decoder_sparse_step", "clip_qkv"]

    func spec(_ config: [String: Any]) throws -> DecoderSpec {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-bounds-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("config.json")
        try JSONSerialization.data(withJSONObject: config).write(to: path)
        return try Architectures.spec(configAt: path.path)
    }

    func expectField(_ config: [String: Any], _ fields: [String], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try spec(config), what, file: file, line: line) { error in
            guard case let .invalidConfig(path, field, _)? = error as? ModelError else { return XCTFail("\(what): \(error)", file: file, line: line) }
            XCTAssertTrue(path.hasSuffix("config.json"), what, file: file, line: line)
            XCTAssertTrue(fields.contains { field.hasPrefix($0) }, "\(what): named \(field)", file: file, line: line)
        }
    }

    func testEveryIntegerFieldOutOfRangeIsATypedError() throws {
        for family in Self.families {
            let url = fixturesDirectory.appendingPathComponent(family).appendingPathComponent("config.json")
            let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
            XCTAssertNoThrow(try spec(config), family)
            for (key, value) in config where !Self.unread.contains(key) {
                guard let n = value as? NSNumber, String(cString: n.objCType) != "c", !(value is Bool), n.doubleValue == n.doubleValue.rounded() else { continue }
                var c = config
                c[key] = -3
                expectField(c, [key, "n_group", "topk_group", "num_experts_per_tok"], "\(family).\(key) = -3")
                if !Self.hugeIsHarmless.contains(key) {
                    c[key] = 1 << 40
                    expectField(c, [key, "(sizes)", "num_experts_per_tok", "topk_group", "n_group"], "\(family).\(key) = 2^40")
                }
                if !Self.hugeIsHarmless.contains(key) {
                    c[key] = 1e30
                    expectField(c, [key], "\(family).\(key) = 1e30")
                }
            }
        }
    }

    func testSizeProductsAreBoundedAndRoutingIsChecked() throws {
        let url = fixturesDirectory.appendingPathComponent("deepseek_v3").appendingPathComponent("config.json")
        var c = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        c["kv_lora_rank"] = 1 << 62
        expectField(c, ["kv_lora_rank"], "kv_lora_rank 2^62")
        c["kv_lora_rank"] = 16
        c["hidden_size"] = 100_000
        c["num_hidden_layers"] = 4000
        c["n_routed_experts"] = 60_000
        c["moe_intermediate_size"] = 100_000
        c["n_group"] = 1
        c["topk_group"] = 1
        expectField(c, ["(sizes)"], "a model of 10^19 weights")
        c = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        c["num_experts_per_tok"] = 9
        expectField(c, ["num_experts_per_tok"], "k above the experts")
        c["num_experts_per_tok"] = 2
        c["moekit_router"] = ["name": "topk-softmax", "k": "two"]
        expectField(c, ["moekit_router"], "a router option of the wrong type")
        c["moekit_router"] = ["name": "no-such-router"]
        expectField(c, ["moekit_router"], "an unknown router")
        c.removeValue(forKey: "moekit_router")
        c["rope_parameters"] = ["rope_type": "yarn", "rope_theta": 10000.0, "factor": -2.0]
        expectField(c, ["rope_parameters.factor"], "a negative YaRN factor")
        c["rope_parameters"] = ["rope_type": "default", "rope_theta": 0.5]
        expectField(c, ["rope_parameters.rope_theta"], "a RoPE base below 1")
        c["model_type"] = "gpt2"
        XCTAssertThrowsError(try spec(c)) { error in
            XCTAssertTrue((error as? ModelError)?.description.contains("model_type") ?? false, "\(error)")
        }
    }
}
