import Foundation
import MoE
import MoECore

import MoEModels
import _TestSupport
import XCTest

/// `moe prune`'s writer: Mixtral's fixture without experts 2 and 5 (the least used by a
/// profile) against transformers with them deleted (reference_pruned.json), and its refusals.
final class ExpertPrunerTests: XCTestCase {
    struct Pruned: Decodable { var prompt: [Int], skipped: [Int], logits: [[Float]] }

    /// A pruned copy of `family`'s fixture by a profile ranking `ref.skipped` last, against
    /// transformers with them deleted; returns the source, spec, profile and output folder.
    func prune(_ family: String, countKey: String, groups: Int) throws -> (Checkpoint, DecoderSpec, ExpertProfile, String) {
        let folder = fixturesDirectory.appendingPathComponent(family).path
        let ref = try JSONDecoder().decode(Pruned.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("\(family)/reference_pruned.json")))
        let source = try Checkpoint(directory: folder)
        let spec = try Architectures.spec(configAt: source.configPath)
        let shares = (0..<spec.experts).map { ref.skipped.contains($0) ? 0.01 : 0.16 }
        let moe = (0..<spec.layers).filter { spec.moeLayers[$0] }
        let profile = ExpertProfile(tokens: 100, load: Dictionary(uniqueKeysWithValues: moe.map { (String($0), shares) }))
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("pruned-\(UUID())").path
        let kept = spec.experts - ref.skipped.count
        try ExpertPruner.prune(source: source, spec: spec, skipped: profile.skipped(keep: kept, perLayer: true, minimum: 1, groups: groups), out: out)
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any])
        XCTAssertEqual(config[countKey] as? Int, kept)
        let pruned = try DecoderModel(directory: out, pool: ThreadPool(threads: 2))
        XCTAssertEqual(pruned.spec.experts, kept)
        var cache = pruned.makeCache(capacity: ref.prompt.count)
        assertClose(try pruned.forward(ref.prompt, cache: &cache).toFloats(), ref.logits.flatMap { $0 }, absolute: 1e-4, "pruned \(family)")
        return (source, spec, profile, out)
    }

    func testAPrunedGroupLimitedCheckpointEqualsTransformers() throws {
        let (source, spec, profile, out) = try prune("deepseek_v2", countKey: "n_routed_experts", groups: 2)
        defer { try? FileManager.default.removeItem(atPath: out) }
        // One group losing more than the other would break the contiguous groups.
        XCTAssertThrowsError(try ExpertPruner.prune(source: source, spec: spec, skipped: [1: [0, 1], 2: [0, 1]], out: out + "-uneven")) {
            XCTAssertTrue("\($0)".contains("groups"), "\($0)")
        }
        _ = profile
    }

    func testAPrunedCheckpointEqualsTransformersWithTheExpertsDeleted() throws {
        let (source, spec, profile, out) = try prune("mixtral", countKey: "num_local_experts", groups: 1)
        defer { try? FileManager.default.removeItem(atPath: out) }
        XCTAssertThrowsError(try ExpertPruner.prune(source: source, spec: spec, skipped: [:], out: out)) {
            XCTAssertTrue("\($0)".contains("already exists"), "\($0)")
        }
        let ragged: [Int: Set<Int>] = [0: [1], 1: [1, 2]]
        XCTAssertThrowsError(try ExpertPruner.prune(source: source, spec: spec, skipped: ragged, out: out + "-ragged")) {
            XCTAssertTrue("\($0)".contains("as many experts"), "\($0)")
        }
        XCTAssertThrowsError(try ExpertPruner.prune(source: source, spec: spec, skipped: profile.skipped(keep: 1, perLayer: true, minimum: 1), out: out + "-small")) {
            XCTAssertTrue("\($0)".contains("experts per token"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "-ragged") || FileManager.default.fileExists(atPath: out + "-small"))
    }

    /// A GGUF file pruned byte for byte (Q8_0 experts cut out without requantizing) computes what
    /// skipping the same experts at load computes on the original.
    func testAPrunedGGUFEqualsSkippingTheExpertsAtLoad() throws {
        let path = fixturesDirectory.appendingPathComponent("gguf_models/qwen3_moe.q8_0.gguf").path
        let original = try DecoderModel(path: path, pool: ThreadPool(threads: 2))
        let skipped: [Int: Set<Int>] = Dictionary(uniqueKeysWithValues: original.moeRouters.keys.map { ($0, Set([$0 % 4])) })
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("pruned-\(UUID()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        try ExpertPruner.prune(source: try GGUFFile(path: path), skipped: skipped, out: out)
        let pruned = try DecoderModel(path: out, pool: ThreadPool(threads: 2))
        XCTAssertEqual(pruned.spec.experts, original.spec.experts - 1)
        let tokens = [5, 17, 42, 99, 7, 123]
        var o = RoutingOverride()
        o.skippedExperts = skipped
        var a = original.makeCache(), b = pruned.makeCache()
        let expected = try original.forward(tokens, cache: &a, options: try o.forwardOptions(for: original)).toFloats()
        assertClose(try pruned.forward(tokens, cache: &b).toFloats(), expected, absolute: 1e-5, "pruned GGUF")
        XCTAssertThrowsError(try ExpertPruner.prune(source: try GGUFFile(path: path), skipped: [0: [1], 1: [1, 2]], out: out + "2"))
    }

    /// Every family's pruned checkpoint computes what skipping the same experts at load computes
    /// on the original; families whose groups hold two experts (DeepSeek-V3 and GLM-4.5 here)
    /// cannot lose one, which is a typed error.
    func testEveryFamilyPrunesAsItSkips() throws {
        for family in ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v2", "deepseek_v3", "glm4_moe"] {
            let source = try Checkpoint(directory: fixturesDirectory.appendingPathComponent(family).path)
            let spec = try Architectures.spec(configAt: source.configPath)
            let size = spec.experts / spec.groups
            let moe = (0..<spec.layers).filter { spec.moeLayers[$0] }
            // One expert of each group, a different one per layer.
            let skipped = Dictionary(uniqueKeysWithValues: moe.map { layer in (layer, Set((0..<spec.groups).map { $0 * size + layer % size })) })
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("pruned-\(family)-\(UUID())").path
            defer { try? FileManager.default.removeItem(atPath: out) }
            if size <= 2 {
                XCTAssertThrowsError(try ExpertPruner.prune(source: source, spec: spec, skipped: skipped, out: out), family)
                continue
            }
            try ExpertPruner.prune(source: source, spec: spec, skipped: skipped, out: out)
            let original = try DecoderModel(weights: source, spec: spec, pool: ThreadPool(threads: 2))
            let pruned = try DecoderModel(directory: out, pool: ThreadPool(threads: 2))
            XCTAssertEqual(pruned.spec.experts, spec.experts - spec.groups, family)
            var o = RoutingOverride()
            o.skippedExperts = skipped
            let tokens = Array(3..<19)
            var a = original.makeCache(), b = pruned.makeCache()
            let expected = try original.forward(tokens, cache: &a, options: try o.forwardOptions(for: original)).toFloats()
            assertClose(try pruned.forward(tokens, cache: &b).toFloats(), expected, absolute: 1e-5, "pruned \(family)")
        }
    }
}
