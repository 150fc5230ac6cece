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

    func testAPrunedCheckpointEqualsTransformersWithTheExpertsDeleted() throws {
        let folder = fixturesDirectory.appendingPathComponent("mixtral").path
        let ref = try JSONDecoder().decode(Pruned.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("mixtral/reference_pruned.json")))
        let source = try Checkpoint(directory: folder)
        let spec = try Architectures.spec(configAt: source.configPath)
        let shares = (0..<8).map { ref.skipped.contains($0) ? 0.01 : 0.16 }
        let profile = ExpertProfile(tokens: 100, load: Dictionary(uniqueKeysWithValues: (0..<spec.layers).map { (String($0), shares) }))
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("pruned-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        try ExpertPruner.prune(source: source, spec: spec, skipped: profile.skipped(keep: 6, perLayer: true, minimum: 1), out: out)
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any])
        XCTAssertEqual(config["num_local_experts"] as? Int, 6)
        let pruned = try DecoderModel(directory: out, pool: ThreadPool(threads: 2))
        XCTAssertEqual(pruned.spec.experts, 6)
        var cache = pruned.makeCache(capacity: ref.prompt.count)
        assertClose(try pruned.forward(ref.prompt, cache: &cache).toFloats(), ref.logits.flatMap { $0 }, absolute: 1e-4, "pruned Mixtral")
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
}
