import Foundation
import MoECore
import XCTest

@testable import MoEModels

/// Streamed atomic writes: the target is replaced whole or not at all, and no temporary file
/// is left behind either way.
final class AtomicFileTests: XCTestCase {
    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-atomic-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: folder) }

    private var entries: [String] { (try? FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()) ?? [] }

    func testStreamedPiecesReplaceTheFileWhole() throws {
        let path = folder.appendingPathComponent("f.bin").path
        try AtomicFile.write(Data("old".utf8), to: path)
        let big = Data((0..<300_000).map { UInt8($0 % 251) })
        try AtomicFile.write(to: path) { (out: AtomicFile.Sink) throws(ModelError) in
            try out.write(Data("head".utf8))
            try out.write(big)
            try out.write(Data())
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), Data("head".utf8) + big)
        XCTAssertEqual(entries, ["f.bin"])
    }

    func testAFailingBodyLeavesTheOldFileAndNoTemporary() throws {
        let path = folder.appendingPathComponent("f.bin").path
        try AtomicFile.write(Data("old".utf8), to: path)
        XCTAssertThrowsError(try AtomicFile.write(to: path) { (out: AtomicFile.Sink) throws(ModelError) in
            try out.write(Data("partial".utf8))
            throw ModelError.io(path: path, reason: "stopped")
        }) { XCTAssertEqual($0 as? ModelError, .io(path: path, reason: "stopped")) }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), Data("old".utf8))
        XCTAssertEqual(entries, ["f.bin"])
    }

    func testAMissingFolderIsAnIOErrorNamingThePath() {
        let path = folder.appendingPathComponent("no/such/f.safetensors").path
        XCTAssertThrowsError(try SafetensorsWriter.write([("a", Tensor(zeros: [2]))], to: path)) { error in
            guard case let .io(p, reason)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(p, path)
            XCTAssertTrue(reason.contains("cannot write"), reason)
        }
    }

    func testSafetensorsHeaderIsAlignedAndDataFollowsIt() throws {
        let path = folder.appendingPathComponent("t.safetensors").path
        let a = Tensor(randomUniform: [3, 5], seed: 3), b = Tensor(randomUniform: [4], seed: 4, dtype: .f16)
        try SafetensorsWriter.write([("a", a), ("b", b)], to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let n = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual((8 + n) % 8, 0)
        XCTAssertEqual(bytes.count, 8 + n + a.byteCount + b.byteCount)
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(try f.tensor("a").toFloats(), a.toFloats())
        XCTAssertEqual(try f.tensor("b").toFloats(), b.toFloats())
        XCTAssertEqual(entries, ["t.safetensors"])
    }
}
