import Foundation
import MoECore
import XCTest

/// `--precision auto` (the default): bf16 activations for a GGUF file, as llama.cpp computes
/// one; f32 for a checkpoint folder, as transformers' contract here is.
final class PrecisionCLITests: XCTestCase {
    /// The logits `moe logits` prints for `model`, with `extra` options, as text.
    func logits(_ model: String, _ extra: [String] = []) throws -> String {
        let r = try runMoe(["logits", "--model", model, "--tokens", "1,5,9,200", "--threads", "1"] + extra)
        XCTAssertEqual(r.status, 0, r.err)
        return r.out
    }

    func testDefaultIsBF16ForAGGUFAndExactForAFolder() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-precision-\(getpid())")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let folder = tmp.appendingPathComponent("model").path, gguf = tmp.appendingPathComponent("model.bf16.gguf").path
        let made = try runMoe(["init-random", "--arch", "qwen3_moe", "--out", folder, "--vocab", "300", "--hidden", "128",
                               "--layers", "1", "--heads", "4", "--experts", "4", "--top-k", "2", "--expert-size", "96"])
        XCTAssertEqual(made.status, 0, made.err)
        let converted = try runMoe(["quantize", "--model", folder, "--type", "bf16", "--out", gguf])
        XCTAssertEqual(converted.status, 0, converted.err)

        let folderExact = try logits(folder, ["--precision", "exact"])
        XCTAssertEqual(try logits(folder), folderExact, "a folder's default is exact")
        let ggufBF16 = try logits(gguf, ["--precision", "bf16"]), ggufExact = try logits(gguf, ["--precision", "exact"])
        XCTAssertEqual(try logits(gguf), ggufBF16, "a GGUF's default is bf16")
        XCTAssertEqual(ggufExact, folderExact, "the same bf16 weights, exact either way")
        if Kernels.bf16ComputeSupported {
            XCTAssertNotEqual(ggufBF16, ggufExact, "bf16 activations change the logits")
        }
        let bench = try runMoe(["bench", "--model", gguf, "--prompt-tokens", "4", "--gen-tokens", "2", "--reps", "1", "--threads", "1"])
        XCTAssertEqual(bench.status, 0, bench.err)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bench.out.utf8)) as? [String: Any])
        XCTAssertEqual(report["precision"] as? String, Kernels.bf16ComputeSupported ? "bf16" : "exact", "what bench says it ran")
        let bad = try runMoe(["logits", "--model", gguf, "--tokens", "1", "--precision", "fp8"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("precision"), bad.err)
    }
}
