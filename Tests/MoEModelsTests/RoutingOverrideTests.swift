import Foundation
import MoE
import MoECore
import MoEModels
import _TestSupport
import XCTest

/// Inference-time routing overrides (issue 18) on every MoE family: another top-k against
/// transformers with `num_experts_per_tok` changed (scripts/make_override_fixtures.py), and
/// top-p, thresholds and layer ranges against the settings they must reduce to.
final class RoutingOverrideTests: XCTestCase {
    struct Settings: Decodable {
        struct Setting: Decodable {
            var expertsPerToken: Int, logits: [[Float]]
            enum CodingKeys: String, CodingKey { case expertsPerToken = "experts_per_token", logits }
        }
        var prompt: [Int], settings: [Setting]
    }

    static let families = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "deepseek_v2", "gpt_oss", "glm4_moe"]

    func model(_ family: String) throws -> DecoderModel {
        try DecoderModel(directory: fixturesDirectory.appendingPathComponent(family).path, pool: ThreadPool(threads: 2))
    }

    func logits(_ m: DecoderModel, _ tokens: [Int], _ o: RoutingOverride, trace: ((Int, Routing) -> Void)? = nil) throws -> [Float] {
        var cache = m.makeCache(capacity: tokens.count)
        return try m.forward(tokens, cache: &cache, options: try o.forwardOptions(for: m, trace: trace)).toFloats()
    }

    func testExpertsPerTokenMatchesTransformersOnEveryFamily() throws {
        for family in Self.families {
            let data = try Data(contentsOf: fixturesDirectory.appendingPathComponent(family).appendingPathComponent("reference_k.json"))
            let ref = try JSONDecoder().decode(Settings.self, from: data)
            let m = try model(family)
            for s in ref.settings {
                var o = RoutingOverride()
                o.expertsPerToken = s.expertsPerToken
                var perToken: [Int] = []
                let got = try logits(m, ref.prompt, o) { _, r in perToken.append(r.assignmentCount / max(1, r.tokenCount)) }
                assertClose(got, s.logits.flatMap { $0 }, absolute: 1e-4, "\(family) with \(s.expertsPerToken) experts per token")
                XCTAssertEqual(Set(perToken), [s.expertsPerToken], family)
            }
        }
    }

    func testTopPAndThresholdReduceToTopOneAtTheirExtremes() throws {
        let m = try model("mixtral")  // renormalising top-2: top-1 gives the one expert weight 1
        let tokens = Array(3..<27)
        var top1 = RoutingOverride()
        top1.expertsPerToken = 1
        let expected = try logits(m, tokens, top1)
        var tinyP = RoutingOverride()
        tinyP.topP = 1e-6
        assertClose(try logits(m, tokens, tinyP), expected, absolute: 1e-5, "top-p with p -> 0 is top-1")
        var strict = RoutingOverride()
        strict.threshold = 0.999
        assertClose(try logits(m, tokens, strict), expected, absolute: 1e-5, "a threshold near 1 keeps the strongest expert only")
        var none = RoutingOverride()
        none.threshold = 0
        assertClose(try logits(m, tokens, none), try logits(m, tokens, RoutingOverride()), absolute: 0, "threshold 0 drops nothing")
        // Top-p = 1 reads (nearly: the strict cumsum > p can pass 1 by rounding, as in the
        // reference code) every expert, far more than the checkpoint's 2; max-experts caps it.
        var all = RoutingOverride()
        all.topP = 1
        var counts: [Int] = []
        _ = try logits(m, tokens, all) { _, r in counts.append(r.assignmentCount) }
        XCTAssertTrue(counts.allSatisfy { $0 > 6 * tokens.count }, "\(counts)")
        all.maxExperts = 3
        counts = []
        _ = try logits(m, tokens, all) { _, r in counts.append(r.assignmentCount) }
        XCTAssertEqual(Set(counts), [3 * tokens.count])
    }

    /// Top-p on a scored, group-limited router (DeepSeek-V2: softmax scores, 2 groups of 4, one
    /// kept, no renormalisation): p -> 0 is top-1, p = 1 takes the chosen group's 4 experts.
    func testTopPOnAGroupLimitedRouter() throws {
        let m = try model("deepseek_v2")
        let tokens = Array(3..<27)
        var top1 = RoutingOverride()
        top1.expertsPerToken = 1
        var tiny = RoutingOverride()
        tiny.topP = 1e-6
        assertClose(try logits(m, tokens, tiny), try logits(m, tokens, top1), absolute: 1e-5, "top-p with p -> 0 is top-1")
        var all = RoutingOverride()
        all.topP = 1
        var counts: [Int] = []
        _ = try logits(m, tokens, all) { _, r in counts.append(r.assignmentCount) }
        XCTAssertTrue(counts.allSatisfy { $0 > 3 * tokens.count && $0 <= 4 * tokens.count }, "\(counts)")
        for family in ["deepseek_v3", "glm4_moe"] {
            var o = RoutingOverride()
            o.topP = 0.5
            var perToken: [Double] = []
            _ = try logits(try model(family), tokens, o) { _, r in perToken.append(Double(r.assignmentCount) / Double(r.tokenCount)) }
            XCTAssertFalse(perToken.isEmpty, family)
        }
    }

    func testALayerRangeChangesOnlyThoseLayers() throws {
        let m = try model("mixtral")
        var o = RoutingOverride()
        o.expertsPerToken = 1
        o.layers = 1...1
        var perLayer: [Int: Int] = [:]
        _ = try logits(m, Array(3..<13), o) { layer, r in perLayer[layer] = r.assignmentCount }
        XCTAssertEqual(perLayer, [0: 20, 1: 10, 2: 20])
    }

    func testSettingsARouterCannotTakeAreTypedErrors() throws {
        let mixtral = try model("mixtral"), deepseek = try model("deepseek_v3")
        func fails(_ m: DecoderModel, _ edit: (inout RoutingOverride) -> Void, mentioning text: String) {
            var o = RoutingOverride()
            edit(&o)
            XCTAssertThrowsError(try o.forwardOptions(for: m)) { XCTAssertTrue("\($0)".contains(text), "\($0)") }
        }
        fails(mixtral, { $0.expertsPerToken = 9 }, mentioning: "--experts-per-token")
        fails(mixtral, { $0.expertsPerToken = 0 }, mentioning: "--experts-per-token")
        fails(mixtral, { $0.topP = 0 }, mentioning: "--expert-top-p")
        fails(mixtral, { $0.topP = 0.5; $0.expertsPerToken = 2 }, mentioning: "--expert-top-p")
        fails(mixtral, { $0.minExperts = 2 }, mentioning: "--min-experts")
        fails(mixtral, { $0.threshold = 1 }, mentioning: "--expert-threshold")
        fails(mixtral, { $0.expertsPerToken = 1; $0.layers = 2...7 }, mentioning: "--moe-layers")
        fails(deepseek, { $0.expertsPerToken = 5 }, mentioning: "groups")  // 2 of 4 groups of 2 experts
    }

    /// Skipping experts at load equals deleting them (weights and router rows) in transformers.
    func testSkippedExpertsEqualTransformersWithThemDeleted() throws {
        struct Pruned: Decodable { var prompt: [Int], skipped: [Int], logits: [[Float]] }
        for family in ["mixtral", "deepseek_v2"] {  // softmax top-k; softmax scores with group-limited top-k
            let data = try Data(contentsOf: fixturesDirectory.appendingPathComponent("\(family)/reference_pruned.json"))
            let ref = try JSONDecoder().decode(Pruned.self, from: data)
            let m = try model(family)
            var o = RoutingOverride()
            for layer in m.moeRouters.keys { o.skippedExperts[layer] = Set(ref.skipped) }
            var chosen = Set<Int>()
            let got = try logits(m, ref.prompt, o) { _, r in chosen.formUnion(r.experts) }
            assertClose(got, ref.logits.flatMap { $0 }, absolute: 1e-4, "\(family) without experts \(ref.skipped)")
            XCTAssertTrue(chosen.isDisjoint(with: ref.skipped))
        }
        let m = try model("mixtral")
        var o = RoutingOverride()
        o.skippedExperts = [0: Set(0..<8)]
        XCTAssertThrowsError(try o.forwardOptions(for: m)) { XCTAssertTrue("\($0)".contains("every expert"), "\($0)") }
        o.skippedExperts = [0: [9]]
        XCTAssertThrowsError(try o.forwardOptions(for: m)) { XCTAssertTrue("\($0)".contains("--skip-experts"), "\($0)") }
    }
}
