import Foundation
import MoECore
import MoEModels
import _TestSupport
import XCTest

/// `kvCacheType = .f16`: a model's caches hold half the bytes, grow past their first capacity,
/// and give logits within f16 rounding of the f32 cache's through a prompt (blocked attention)
/// and decoding (row attention), for grouped-query and latent (MLA) attention.
final class KVCacheTypeTests: XCTestCase {
    func check(_ arch: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try DecoderModel(directory: fixturesDirectory.appendingPathComponent(arch).path, pool: ThreadPool(threads: 2))
        var rng = SplitMix64(seed: 11)
        let tokens = (0..<40).map { _ in Int.random(in: 0..<model.spec.vocabSize, using: &rng) }
        func run(_ type: DType) throws -> (logits: [[Float]], bytes: Int) {
            model.kvCacheType = type
            defer { model.kvCacheType = .f32 }
            var cache = model.makeCache(capacity: 4)
            XCTAssertEqual(cache.dtype, type, file: file, line: line)
            var out = [try model.forward(Array(tokens[..<20]), cache: &cache).toFloats()]
            for t in tokens[20...] { out.append(try model.forward([t], cache: &cache, lastOnly: true).toFloats()) }
            return (out, cache.byteCount)
        }
        let exact = try run(.f32), half = try run(.f16)
        XCTAssertEqual(half.bytes * 2, exact.bytes, "\(arch) cache bytes", file: file, line: line)
        XCTAssertNotEqual(half.logits, exact.logits, "\(arch): the f16 cache changed nothing", file: file, line: line)
        for (i, (h, e)) in zip(half.logits, exact.logits).enumerated() {
            assertClose(h, e, absolute: 2e-2, relative: 1e-2, "\(arch) step \(i)", file: file, line: line)
        }
    }

    func testQwen3MoE() throws { try check("qwen3_moe") }
    func testDeepSeekV2() throws { try check("deepseek_v2") }
}
