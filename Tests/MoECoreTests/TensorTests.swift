import Foundation
import MoECore
import _MoEKernels
import XCTest

/// Tensor construction, views, dtype conversion and memory-mapped views with their errors.
final class TensorTests: XCTestCase {
    func bits(_ t: Tensor) -> [UInt16] {
        Array(UnsafeBufferPointer(start: t.rawPointer.assumingMemoryBound(to: UInt16.self), count: t.count))
    }

    func testBF16RoundsToNearestEvenAndKeepsNaN() {
        let values: [Float] = [1, -2, Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000),
                               Float(bitPattern: 0x3F80_8001), .infinity, .nan]
        let t = Tensor(shape: [values.count], values: values, dtype: .bf16)
        let b = bits(t)
        XCTAssertEqual(Array(b[0..<6]), [0x3F80, 0xC000, 0x3F80, 0x3F82, 0x3F81, 0x7F80])
        XCTAssertTrue(t.toFloats()[6].isNaN)
    }

    func testF16KnownValues() {
        let values: [Float] = [1, -2, 65504, 65520, 1e-8, 0x1p-24, 0x1p-14, 0.1, -.infinity]
        let t = Tensor(shape: [values.count], values: values, dtype: .f16)
        XCTAssertEqual(bits(t), [0x3C00, 0xC000, 0x7BFF, 0x7C00, 0x0000, 0x0001, 0x0400, 0x2E66, 0xFC00])
    }

    func testEveryHalfAndBFloatBitPatternRoundTrips() {
        for dtype in [DType.f16, .bf16] {
            let all = Tensor(zeros: [65536], dtype: dtype)
            let p = all.mutableRawPointer.assumingMemoryBound(to: UInt16.self)
            for i in 0..<65536 { p[i] = UInt16(i) }
            let back = Tensor(shape: [65536], values: all.toFloats(), dtype: dtype)
            let q = bits(back)
            for i in 0..<65536 {
                let isNaN = dtype == .f16 ? (i & 0x7C00) == 0x7C00 && (i & 0x3FF) != 0
                                          : (i & 0x7F80) == 0x7F80 && (i & 0x7F) != 0
                if isNaN { continue }
                if q[i] != UInt16(i) { XCTFail("\(dtype) pattern \(i) came back as \(q[i])"); break }
            }
        }
    }

    /// Narrowing f32 to f16 and bf16 (the vector paths, 8 at a time, and the scalar tail) rounds
    /// to nearest even as IEEE says: f16 against Swift's `Float16`, bf16 against the rounding
    /// done here on the bits; every NaN comes out quiet with its sign (f16: 0x7e00). A sample of
    /// 2^32 / 4099 patterns and the edges (the C conversion was also checked by hand over all 2^32
    /// patterns against its scalar one).
    func testNarrowingRoundsToNearestEvenOnEveryPath() {
        var patterns: [UInt32] = stride(from: UInt64(0), to: 1 << 32, by: 4099).map { UInt32($0) }
        for edge: UInt32 in [0x477F_E000, 0x477F_EFFF, 0x477F_F000, 0x477F_F001, 0x4780_0000, 0x3880_0000, 0x387F_FFFF,
                             0x3300_0000, 0x3300_0001, 0x32FF_FFFF, 0x0000_0001, 0x7F80_0000, 0x7F80_0001, 0x7FC0_1234,
                             0xFFC0_0000, 0x3F80_8000, 0x3F81_8000, 0x3F80_7FFF, 0x7F7F_FFFF] {
            patterns += [edge, edge | 0x8000_0000]
        }
        let values = patterns.map { Float(bitPattern: $0) }
        for dtype in [DType.f16, .bf16] {
            let narrowed = bits(Tensor(shape: [values.count], values: values, dtype: dtype))
            for (i, x) in values.enumerated() {
                let u = x.bitPattern, want: UInt16
                if x.isNaN {
                    want = dtype == .f16 ? UInt16(0x7E00 | (u >> 16) & 0x8000) : UInt16(truncatingIfNeeded: (u >> 16) | 0x40)
                } else if dtype == .bf16 {
                    want = UInt16(truncatingIfNeeded: (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
                } else {
                    #if arch(arm64) || (arch(x86_64) && !os(macOS))
                    want = Float16(x).bitPattern
                    #else
                    continue
                    #endif
                }
                if narrowed[i] != want {
                    XCTFail("\(dtype) of \(String(u, radix: 16)): \(String(narrowed[i], radix: 16)), want \(String(want, radix: 16))")
                    break
                }
            }
        }
    }

    func testViewsShareStorage() {
        let t = Tensor(shape: [3, 2], values: [1, 2, 3, 4, 5, 6])
        let row = t.rows(1..<3)
        XCTAssertEqual(row.shape, [2, 2])
        XCTAssertEqual(row.toFloats(), [3, 4, 5, 6])
        XCTAssertEqual(t[2].toFloats(), [5, 6])
        row.mutableFloats[0] = 30
        XCTAssertEqual(t.toFloats(), [1, 2, 30, 4, 5, 6])
        XCTAssertEqual(t.reshaped([6]).shape, [6])
        let c = t.copied()
        c.mutableFloats[0] = 9
        XCTAssertEqual(t.toFloats()[0], 1)
    }

    func tempFile(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-\(UUID().uuidString).bin").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func testMappedViewIsZeroCopyAndOutlivesItsFileObject() throws {
        // 3 bytes of header, then 4 bf16 values: 1, 2, -1, 0.5.
        let path = try tempFile([9, 9, 9, 0x80, 0x3F, 0x00, 0x40, 0x80, 0xBF, 0x00, 0x3F])
        var view: Tensor
        do {
            let file = try MappedFile(path: path)
            view = try Tensor(mapping: file, byteOffset: 3, shape: [2, 2], dtype: .bf16)
            XCTAssertEqual(view.rawPointer, file.base + 3, "a view points into the mapping")
        }
        XCTAssertTrue(view.isMapped)
        XCTAssertEqual(view.toFloats(), [1, 2, -1, 0.5])
        view.storage.mappedFile?.adviseNoHugePages(byteOffset: 3, count: 8)  // advice only: the bytes stay
        view.storage.mappedFile?.adviseNoHugePages(byteOffset: 8, count: 100)  // past the end: ignored
        XCTAssertEqual(view.toFloats(), [1, 2, -1, 0.5])
        let w = Tensor(randomUniform: [1, 2], seed: 1)
        XCTAssertEqual(Kernels.matmul(w, view).toFloats().count, 2, "kernels read mapped weights")
    }

    func testMappedViewPastTheEndNamesFileAndField() throws {
        let path = try tempFile([1, 2, 3, 4, 5, 6, 7, 8])
        let file = try MappedFile(path: path)
        XCTAssertThrowsError(try Tensor(mapping: file, byteOffset: 4, shape: [2], dtype: .f32, field: "model.w")) { error in
            XCTAssertEqual(error as? MoECoreError, .outOfBounds(path: path, field: "model.w", needed: 12, available: 8))
            XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("model.w"))
        }
        XCTAssertThrowsError(try Tensor(mapping: file, byteOffset: 0, shape: [-1], dtype: .f32))
        XCTAssertThrowsError(try Tensor(mapping: file, byteOffset: 0, shape: [Int.max / 2, 4], dtype: .f32))
    }

    func testMissingFileAndDirectoryAreIOErrors() throws {
        XCTAssertThrowsError(try MappedFile(path: "/nonexistent/moekit.bin")) { error in
            guard case let .io(path, _)? = error as? MoECoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "/nonexistent/moekit.bin")
        }
        XCTAssertThrowsError(try MappedFile(path: NSTemporaryDirectory()))
        let empty = try MappedFile(path: try tempFile([]))
        XCTAssertEqual(empty.byteCount, 0)
    }

    func testDTypeNames() {
        XCTAssertEqual(DType(name: "BF16"), .bf16)
        XCTAssertEqual(DType(name: "F16"), .f16)
        XCTAssertEqual(DType(name: "float32"), .f32)
        XCTAssertNil(DType(name: "I8"))
        XCTAssertEqual(DType.bf16.description, "bf16")
    }

    /// Page buffers are zeroed, writable and of the asked size; from 2 MiB on (Linux) they start
    /// on a 2 MiB boundary, where the kernel can back them with huge pages.
    func testPageBuffersAreZeroedAndLargeOnesStartOnAHugePage() throws {
        for bytes in [1, 4096 * 3 + 5, (3 << 20) + 4096, 5 << 20] {
            let s = try XCTUnwrap(TensorStorage(pagesFor: bytes))
            XCTAssertEqual(s.byteCount, bytes)
            XCTAssertTrue(s.isWritable)
            let p = s.base.assumingMemoryBound(to: UInt8.self)
            XCTAssertEqual(p[0], 0)
            XCTAssertEqual(p[bytes - 1], 0)
            p[bytes - 1] = 7  // the last byte is mapped and writable
            XCTAssertEqual(p[bytes - 1], 7)
            #if os(Linux)
            if bytes >= 2 << 20 { XCTAssertEqual(UInt(bitPattern: s.base) % UInt(2 << 20), 0, "\(bytes) bytes") }
            #endif
        }
    }
}
