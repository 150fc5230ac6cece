import Foundation
import MoE
import MoECore
import MoEModels
import XCTest

/// Per-call forward options reach every MoE layer: a router override gives what a checkpoint
/// configured that way computes, traces see each layer, and a mismatched override is refused.
final class ForwardOptionsTests: XCTestCase {
    func testTopKOverrideEqualsTheCheckpointConfiguredSo() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-opts-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: fixturesDirectory.appendingPathComponent("mixtral"), to: folder)
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        let url = folder.appendingPathComponent("config.json")
        var c = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        c["num_experts_per_tok"] = 3
        try JSONSerialization.data(withJSONObject: c).write(to: url)
        let three = try DecoderModel(directory: folder.path)
        let model = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("mixtral").path)
        let tokens = [3, 14, 15, 92, 65, 35]
        var traced: [Int] = []
        let options = ForwardOptions(router: { _, own in TopKSoftmaxRouter(experts: own.expertCount, k: 3) },
                                     trace: { layer, routing in
                                         traced.append(layer)
                                         XCTAssertEqual(routing.assignmentCount, 3 * tokens.count)
                                     })
        var a = model.makeCache(), b = three.makeCache()
        let overridden = try model.forward(tokens, cache: &a, options: options).toFloats()
        XCTAssertEqual(overridden, try three.forward(tokens, cache: &b).toFloats())
        XCTAssertEqual(traced, Array(0..<model.spec.layers))
        var c2 = model.makeCache()
        XCTAssertNotEqual(try model.forward(tokens, cache: &c2).toFloats(), overridden, "k = 3 must change the logits")
    }

    func testMismatchedOverrideIsATypedError() throws {
        let model = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("olmoe").path)
        var cache = model.makeCache()
        let options = ForwardOptions(router: { _, _ in TopKSoftmaxRouter(experts: 5, k: 2) })
        XCTAssertThrowsError(try model.forward([1, 2], cache: &cache, options: options)) { error in
            guard case let .invalidConfig(_, field, _)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "router")
        }
    }
}
