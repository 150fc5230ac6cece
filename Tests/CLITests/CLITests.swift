import Foundation
import XCTest

/// End-to-end: runs the built `moe` executable and checks its output and exit status.
final class CLITests: XCTestCase {
    /// The folder holding the built products (the `moe` executable sits beside the test bundle).
    var productsDirectory: URL {
        #if os(macOS)
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            return bundle.bundleURL.deletingLastPathComponent()
        }
        #endif
        return Bundle.main.bundleURL
    }

    /// Runs `moe` with `arguments`; returns its exit status, standard output and standard error.
    func moe(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = productsDirectory.appendingPathComponent("moe")
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    func testVersionAndHelp() throws {
        let version = try moe(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertEqual(version.out.trimmingCharacters(in: .whitespacesAndNewlines), "0.1.0")
        let help = try moe(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.out.contains("bench-kernels"))
    }

    func testBenchKernelsPrintsTheContractKeys() throws {
        let run = try moe(["bench-kernels", "--quick", "--threads", "2"])
        XCTAssertEqual(run.status, 0, run.err)
        let object = try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any]
        let json = try XCTUnwrap(object)
        for key in ["read_bandwidth_gbs", "fma_peak_gflops", "matvec", "matmul", "grouped_matmul"] {
            XCTAssertNotNil(json[key], "missing \(key)")
        }
        let matvec = try XCTUnwrap((json["matvec"] as? [[String: Any]])?.first)
        for key in ["rows", "cols", "dtype", "gbs"] { XCTAssertNotNil(matvec[key], "matvec lacks \(key)") }
        let matmul = try XCTUnwrap((json["matmul"] as? [[String: Any]])?.first)
        for key in ["m", "n", "k", "dtype", "gflops"] { XCTAssertNotNil(matmul[key], "matmul lacks \(key)") }
        let grouped = try XCTUnwrap((json["grouped_matmul"] as? [[String: Any]])?.first)
        for key in ["experts", "tokens", "top_k", "rows", "cols", "gflops"] {
            XCTAssertNotNil(grouped[key], "grouped_matmul lacks \(key)")
        }
    }

    func testBadOptionsExitNonZeroWithAMessage() throws {
        let zero = try moe(["bench-kernels", "--threads", "0"])
        XCTAssertNotEqual(zero.status, 0)
        XCTAssertTrue(zero.err.contains("--threads"), zero.err)
        let bogus = try moe(["bench-kernels", "--only", "bogus"])
        XCTAssertNotEqual(bogus.status, 0)
        XCTAssertTrue(bogus.err.contains("bogus"), bogus.err)
    }
}
