import Foundation
import MoECore
import MoEModels
import _TestSupport
import XCTest

/// `DecoderModel.kvCacheLimitBytes`: positions past it are a typed error before any cache memory
/// is allocated, for a prompt in one pass or in pieces and for a decoded token; the cache grows
/// to the limit, not past it by doubling; `makeCache` allocates no more up front.
final class KVCacheLimitTests: XCTestCase {
    func testPositionsPastTheLimitAreATypedErrorBeforeAllocation() throws {
        let model = try DecoderModel(directory: fixturesDirectory.appendingPathComponent("mixtral").path)
        let perPosition = model.makeCache(capacity: 1).byteCount
        model.kvCacheLimitBytes = 10 * perPosition
        // A capacity from outside is a hint: no more than the limit allows.
        XCTAssertEqual(model.makeCache(capacity: 1_000_000).byteCount, 10 * perPosition)
        for chunk in [0, 4] {
            model.prefillChunk = chunk
            var cache = model.makeCache(capacity: 4)
            XCTAssertThrowsError(try model.forward(Array(repeating: 1, count: 11), cache: &cache, lastOnly: true)) { error in
                guard case let .invalidConfig(_, field, reason)? = error as? ModelError else { return XCTFail("\(error)") }
                XCTAssertEqual(field, "context")
                XCTAssertTrue(reason.contains("11 positions"), reason)
                XCTAssertTrue(reason.contains("--kv-cache f16"), "an f32 cache is told of the f16 one: \(reason)")
            }
            XCTAssertEqual(cache.length, 0, "chunk \(chunk): a refused prompt leaves the cache as it was")
            // Ten positions fit (8 + 1 + 1: the last two grow the cache to 9, then 10, where
            // doubling would pass the limit); an eleventh is refused and changes nothing.
            _ = try model.forward(Array(repeating: 1, count: 8), cache: &cache, lastOnly: true)
            _ = try model.forward([2], cache: &cache, lastOnly: true)
            _ = try model.forward([3], cache: &cache, lastOnly: true)
            XCTAssertEqual(cache.length, 10)
            XCTAssertEqual(cache.byteCount, model.kvCacheLimitBytes)
            XCTAssertThrowsError(try model.forward([4], cache: &cache, lastOnly: true))
            XCTAssertEqual(cache.length, 10)
        }
    }
}
