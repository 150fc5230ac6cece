import Foundation
import MoE
import MoECore
@testable import MoEGenerate
import MoEModels
import XCTest

/// `RoutingAnalysis` counts against hand-counted routings, and the pruning choices of
/// `ExpertProfile`.
final class RoutingAnalysisTests: XCTestCase {
    func testCountsLoadCoactivationHistogramAndConsistency() {
        let a = RoutingAnalysis()
        // Tokens 7, 7, 9, 7: top experts 0, 0, 1, 2; token 2 gets one expert, the others two.
        let r = Routing(expertCount: 3, tokens: [[(0, 0.6), (1, 0.4)], [(0, 0.7), (2, 0.3)], [(1, 1)], [(2, 0.5), (0, 0.4)]])
        a.record(layer: 1, routing: r, ids: [7, 7, 9, 7], group: "x")
        a.record(layer: 1, routing: Routing(expertCount: 3, tokens: [[(1, 1)]]), ids: [9], group: "y")
        let l = a.layers[1]!
        XCTAssertEqual(l.load, [3, 3, 2])
        XCTAssertEqual(l.coactivation, [0, 1, 2, 1, 0, 0, 2, 0, 0])
        XCTAssertEqual(l.expertsPerTokenHistogram, [1: 2, 2: 3])
        XCTAssertEqual(l.expertsPerToken, 8.0 / 5, accuracy: 1e-12)
        // id 7: tops 0, 0, 2 (2 of 3 the same); id 9: tops 1, 1 (2 of 2).
        XCTAssertEqual(l.tokenConsistency, 4.0 / 5, accuracy: 1e-12)
        XCTAssertEqual(l.loadByGroup, ["x": [3, 2, 2], "y": [0, 1, 0]])
        XCTAssertEqual(l.expertsPerTokenByGroup, ["x": 7.0 / 4, "y": 1])
        XCTAssertEqual(a.profile.load["1"]!, [3.0 / 8, 3.0 / 8, 2.0 / 8])
    }

    func testPruningKeepsTheMostUsedExperts() {
        let p = ExpertProfile(tokens: 10, load: ["0": [0.5, 0.1, 0.3, 0.1], "2": [0.05, 0.05, 0.1, 0.8]])
        XCTAssertEqual(p.skipped(keep: 2, perLayer: true, minimum: 1), [0: [1, 3], 2: [0, 1]])
        // Globally the 4 largest shares are 0.8 (layer 2), 0.5, 0.3 and 0.1 (layer 0; of the three
        // 0.1s the lowest (layer, expert) wins): layer 2 keeps one expert, layer 0 three.
        XCTAssertEqual(p.skipped(keep: 2, perLayer: false, minimum: 1), [0: [3], 2: [0, 1, 2]])
        XCTAssertEqual(p.skipped(keep: 1, perLayer: false, minimum: 1), [0: [1, 2, 3], 2: [0, 1, 2]], "at least one per layer")
    }

    func testTracingTheEmbeddedShapeCountsEveryToken() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/mixtral").path
        let m = try DecoderModel(directory: folder, pool: ThreadPool(threads: 2))
        let a = RoutingAnalysis()
        try a.run(model: m, windows: [(Array(3..<20), "a"), (Array(30..<40), "b")])
        XCTAssertEqual(a.tokens, 27)
        XCTAssertEqual(a.layers.keys.sorted(), [0, 1, 2])
        for l in a.layers.values {
            XCTAssertEqual(l.load.reduce(0, +), 2 * 27)
            XCTAssertEqual(l.tokensByGroup, ["a": 17, "b": 10])
        }
        let svg = SVGPlot.heatmap([[0, 1], [0.5, 0.25]], rows: ["a", "b"], columns: ["x", "<y>"], title: "t & u", rowAxis: "r", columnAxis: "c")
        XCTAssertTrue(svg.hasPrefix("<svg") && svg.hasSuffix("</svg>") && svg.contains("&lt;y&gt;") && svg.contains("t &amp; u"))
    }
}
