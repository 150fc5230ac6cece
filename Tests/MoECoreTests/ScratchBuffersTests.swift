@testable import MoECore
import XCTest

/// `ScratchBuffers`: a buffer holds at least what was asked, 64-byte aligned; one given back
/// serves the next request of its size class (with room kept); buffers past the largest kept
/// size are not kept; and tensors built on it hold what they are given (zeroed when asked).
final class ScratchBuffersTests: XCTestCase {
    func testBuffersComeBackByClass() {
        ScratchBuffers.drain()  // what earlier tests left could fill the kept bytes
        for size in [1, 100, 256, 257, 4096, 4097, 70_000] {
            let (p, capacity) = ScratchBuffers.take(size)
            XCTAssertGreaterThanOrEqual(capacity, size)
            XCTAssertEqual(Int(bitPattern: p) % 64, 0, "\(size)")
            p.storeBytes(of: UInt8(7), toByteOffset: size - 1, as: UInt8.self)
            ScratchBuffers.give(p, capacity: capacity)
            let (q, again) = ScratchBuffers.take(size)
            XCTAssertEqual(again, capacity, "\(size)")
            XCTAssertEqual(q, p, "\(size): the buffer given back is the one taken next")
            ScratchBuffers.give(q, capacity: again)
        }
        let big = ScratchBuffers.take(ScratchBuffers.largest + 1)
        XCTAssertGreaterThan(big.capacity, ScratchBuffers.largest)
        ScratchBuffers.give(big.pointer, capacity: big.capacity)  // deallocated, not kept
    }

    func testRecycledTensorStorageIsZeroedWhenAsked() {
        for _ in 0..<3 {
            let t = Tensor(zeros: [8, 96])
            XCTAssertTrue(t.toFloats().allSatisfy { $0 == 0 })
            _ = t.mutableFloats.update(fromContentsOf: [Float](repeating: 3, count: t.count))
        }
    }
}
