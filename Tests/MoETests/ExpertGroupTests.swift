import MoE
import MoECore
import XCTest

/// A long prompt's MoE pass in groups of experts (`MoELayer.Options.groupRowBytes`,
/// `SwiGLUExperts.groupActivationBytes`) gives the same bits as one pass over every row, and
/// the experts' in-place forward the same bits as the one that allocates its output.
final class ExpertGroupTests: XCTestCase {
    let d = 64, experts = 8, tokens = 700

    func layer(inner: Int) -> MoELayer {
        let w = { (shape: [Int], seed: UInt64) in Tensor(randomUniform: shape, in: -0.3...0.3, seed: seed, dtype: .bf16) }
        let ffn = SwiGLUExperts(gate: (0..<experts).map { w([inner, d], 10 + UInt64($0)) },
                                up: (0..<experts).map { w([inner, d], 30 + UInt64($0)) },
                                down: (0..<experts).map { w([d, inner], 50 + UInt64($0)) })
        return MoELayer(gate: .linear(weight: w([experts, d], 1), bias: nil), router: TopKSoftmaxRouter(experts: experts, k: 2),
                        experts: ffn)
    }

    func run(_ layer: MoELayer, groupRowBytes: Int, pool: ThreadPool) -> [Float] {
        var options = MoELayer.Options()
        options.groupRowBytes = groupRowBytes
        var state = RouterState()
        let x = Tensor(randomUniform: [tokens, d], in: -1...1, seed: 7)
        return layer.forward(x, state: &state, options: options, pool: pool).output.toFloats()
    }

    func testGroupsOfExpertsGiveTheSameBits() {
        let pool = ThreadPool(threads: 2)
        let l = layer(inner: 32)
        let whole = run(l, groupRowBytes: Int.max, pool: pool)
        XCTAssertTrue(whole.contains { $0 != 0 })
        // 1400 rows: groups of one expert (about 175 rows), of a few, and of 3 rows (every
        // expert alone, above the bound).
        for bytes in [4 * d * 100, 4 * d * 500, 4 * d * 3] {
            XCTAssertEqual(run(l, groupRowBytes: bytes, pool: pool), whole, "groups of at most \(bytes / (4 * d)) rows")
        }
    }

    func testExpertsGroupTheirActivationsAndRunInPlace() {
        // I = 1024: 8 KB of gate and up activations a row, so 1400 rows take several groups
        // under `groupActivationBytes`.
        XCTAssertLessThan(SwiGLUExperts.groupActivationBytes, 2 * tokens * 8 << 10)
        let l = layer(inner: 1024), pool = ThreadPool(threads: 2)
        guard let ffn = l.experts as? SwiGLUExperts else { return XCTFail("SwiGLU experts") }
        let rows = Tensor(randomUniform: [2 * tokens, d], in: -1...1, seed: 9)
        var offsets = [0]
        for e in 0..<experts { offsets.append(offsets[e] + [90, 300, 0, 210, 180, 1, 400, 219][e]) }
        let fresh = ffn.forward(rows, rowOffsets: offsets, pool: pool).toFloats()
        // The whole pass at once, expert by expert: hidden then down.
        let reference = ffn.projectDown(ffn.hidden(rows, rowOffsets: offsets, pool: pool), rowOffsets: offsets, pool: pool).toFloats()
        XCTAssertEqual(fresh, reference)
        let copy = rows.copied()
        let inPlace = ffn.forward(consuming: copy, rowOffsets: offsets, pool: pool)
        XCTAssertEqual(inPlace.toFloats(), fresh)
        XCTAssertEqual(inPlace.rawPointer, copy.rawPointer, "written over the rows it was given")
    }
}
