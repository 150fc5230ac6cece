import Foundation
import MoECore
import MoEModels
import XCTest

/// Every architecture `moe init-random` writes loads back and runs. (That transformers loads them
/// and agrees to 1e-6 was checked by hand; swift test needs no Python.)
final class RandomCheckpointTests: XCTestCase {
    func testEveryArchitectureRoundTrips() throws {
        for arch in RandomCheckpoint.architectures {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-rnd-\(arch)-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var shape = RandomCheckpoint.Shape()
            shape.vocabSize = 300
            shape.hiddenSize = 32
            shape.layers = 2
            shape.heads = 4
            shape.kvHeads = 2
            shape.experts = 4
            shape.expertSize = 16
            shape.denseSize = 24
            shape.kvLoraRank = 8
            shape.nopeDim = 8
            shape.ropeDim = 4
            shape.valueDim = 8
            shape.qLoraRank = arch == "deepseek_v2" ? nil : 12
            shape.groups = 2
            shape.denseLayers = 1
            try RandomCheckpoint.write(arch: arch, shape: shape, to: dir, seed: 5)
            let model = try DecoderModel(directory: dir)
            XCTAssertEqual(model.spec.modelType, arch)
            var cache = model.makeCache()
            let logits = try model.forward([1, 2, 3], cache: &cache)
            XCTAssertEqual(logits.shape, [3, 300], arch)
            XCTAssertTrue(logits.toFloats().allSatisfy(\.isFinite), arch)
            let tok = try Tokenizer(path: (dir as NSString).appendingPathComponent("tokenizer.json"))
            XCTAssertEqual(tok.decode(tok.encode("héllo 世界")), "héllo 世界", arch)
        }
    }
}
