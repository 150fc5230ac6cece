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

    /// Tensors made one at a time as the writer reaches them read back as made; one made in
    /// another shape than declared fails the write and leaves no file.
    func testLazySafetensorsEntriesAreMadeInTurnAndChecked() throws {
        let path = folder.appendingPathComponent("m.safetensors").path
        var made: [String] = []
        let a = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6], dtype: .bf16), b = Tensor(shape: [4], values: [7, 8, 9, 10])
        try SafetensorsWriter.write(entries: [
            .init(name: "a", shape: [2, 3], dtype: .bf16) { made.append("a"); return a },
            .init(name: "b", shape: [4], dtype: .f32) { made.append("b"); return b },
        ], to: path)
        XCTAssertEqual(made, ["a", "b"])
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(try file.tensor("a").toFloats(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try file.tensor("b").toFloats(), [7, 8, 9, 10])

        let other = folder.appendingPathComponent("bad.safetensors").path
        XCTAssertThrowsError(try SafetensorsWriter.write(entries: [.init(name: "w", shape: [3], dtype: .f32) { b }], to: other)) {
            guard case let .invalidFile(p, field, _)? = $0 as? ModelError else { return XCTFail("\($0)") }
            XCTAssertEqual(p, other)
            XCTAssertEqual(field, "w")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: other))
        XCTAssertThrowsError(try SafetensorsWriter.write(entries: [.init(name: "q", shape: [32], dtype: .q8_0) { b }], to: other))
    }
}
