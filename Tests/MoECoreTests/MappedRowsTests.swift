import Foundation
@testable import MoECore
import XCTest

/// `MappedRows`: a mapped matrix's rows read with `pread` widen to the values the mapping holds,
/// for element and block formats, and a file that shrinks under it gives a typed error.
final class MappedRowsTests: XCTestCase {
    /// `matrix`'s bytes written at `offset` in a fresh file, mapped back as a view.
    func mapped(_ matrix: Tensor, offset: Int = 96) throws -> (Tensor, String) {
        var bytes = Data(repeating: 0xA5, count: offset)
        bytes.append(Data(bytes: matrix.rawPointer, count: matrix.byteCount))
        bytes.append(Data(repeating: 0x5A, count: 40))
        let path = NSTemporaryDirectory() + "moekit-rows-\(UUID().uuidString).bin"
        try bytes.write(to: URL(fileURLWithPath: path))
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        let file = try MappedFile(path: path)
        return (try Tensor(mapping: file, byteOffset: offset, shape: matrix.shape, dtype: matrix.dtype), path)
    }

    func testRowsEqualTheMappedRows() throws {
        let values = Tensor(randomNormal: [37, 256], std: 0.3, seed: 11)  // a K-quant block a row
        for matrix in [values.converted(to: .bf16), values.converted(to: .f16), values,
                       try XCTUnwrap(values.quantized(to: .q8_0)), try XCTUnwrap(values.quantized(to: .q4_K))] {
            let (view, _) = try mapped(matrix)
            let rows = try XCTUnwrap(MappedRows(view), "\(matrix.dtype)")
            var out = [Float](repeating: .nan, count: 256)
            for i in [0, 1, 17, 36] {
                try out.withUnsafeMutableBufferPointer { try rows.widenRow(i, into: $0.baseAddress!) }
                XCTAssertEqual(out.map { $0.bitPattern }, view[i].toFloats().map { $0.bitPattern }, "\(matrix.dtype) row \(i)")
            }
        }
        XCTAssertNil(MappedRows(values), "a matrix in memory has no file to read")
    }

    func testAFileThatShrinksGivesATypedError() throws {
        let (view, path) = try mapped(Tensor(randomNormal: [20, 32], std: 1, seed: 2))
        let rows = try XCTUnwrap(MappedRows(view))
        XCTAssertEqual(truncate(path, off_t(96 + 10 * 32 * 4 + 8)), 0)
        var out = [Float](repeating: 0, count: 32)
        try out.withUnsafeMutableBufferPointer { try rows.widenRow(9, into: $0.baseAddress!) }  // still whole
        XCTAssertThrowsError(try out.withUnsafeMutableBufferPointer { try rows.widenRow(12, into: $0.baseAddress!) }) { error in
            guard case let MoECoreError.io(p, reason) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(p, path)
            XCTAssertTrue(reason.contains("row 12") && reason.contains("ends early"), reason)
        }
        XCTAssertThrowsError(try out.withUnsafeMutableBufferPointer { try rows.widenRow(10, into: $0.baseAddress!) },
                             "a row cut in the middle")
    }
}
