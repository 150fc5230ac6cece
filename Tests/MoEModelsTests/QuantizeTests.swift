import Foundation
import MoECore
import MoEModels
import MoEQuant
import _TestSupport
import XCTest

/// `moe quantize` against llama.cpp's llama-quantize (scripts/make_quantize_fixtures.py and
/// scripts/make_gguf_model_fixtures.py): the same bytes per block format on rows chosen to
/// break quantizers, the same type for every tensor of four model shapes under every preset,
/// and the same file, byte for byte, for a whole model.
final class QuantizeTests: XCTestCase {
    let folder = fixturesDirectory.appendingPathComponent("quantize")
    let models = fixturesDirectory.appendingPathComponent("gguf_models")

    struct Blocks: Decodable { var columns: Int, rows: Int, input: String, formats: [String: String] }
    struct Mix: Decodable {
        struct Entry: Decodable { var name: String, shape: [Int] }
        var arch: String, block_count: Int, expert_count: Int, tensors: [Entry], presets: [String: [String: String]]
    }

    func testEveryFormatQuantizesAsLlamaQuantize() throws {
        let blocks = try JSONDecoder().decode(Blocks.self, from: Data(contentsOf: folder.appendingPathComponent("blocks.json")))
        let input = try XCTUnwrap(Data(base64Encoded: blocks.input)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let x = Tensor(shape: [blocks.rows, blocks.columns], values: input)
        let writable = DType.allCases.filter { !$0.isElementFormat && $0.isQuantizable }
        XCTAssertEqual(Set(blocks.formats.keys), Set(writable.map(\.description)), "a fixture for every format MoEKit writes")
        for (name, encoded) in blocks.formats.sorted(by: { $0.key < $1.key }) {
            let dtype = try XCTUnwrap(DType(name: name))
            let want = [UInt8](try XCTUnwrap(Data(base64Encoded: encoded)))
            for threads in [1, 2] {
                let q = try XCTUnwrap(x.quantized(to: dtype, pool: ThreadPool(threads: threads)), name)
                let got = [UInt8](UnsafeRawBufferPointer(start: q.rawPointer, count: q.byteCount))
                XCTAssertEqual(got.count, want.count, name)
                let rowBytes = dtype.storageBytes(elements: blocks.columns)
                let bad = zip(got, want).enumerated().filter { $0.element.0 != $0.element.1 }.map { $0.offset / rowBytes }
                XCTAssertTrue(bad.isEmpty, "\(name), \(threads) threads: rows \(Set(bad).sorted()) differ from llama-quantize")
            }
        }
    }

    func testEveryPresetChoosesLlamaQuantizesTypes() throws {
        let mixes = try JSONDecoder().decode([String: Mix].self, from: Data(contentsOf: folder.appendingPathComponent("mixes.json")))
        XCTAssertEqual(mixes.count, 4)
        for (model, mix) in mixes.sorted(by: { $0.key < $1.key }) {
            let shapes = Dictionary(uniqueKeysWithValues: mix.tensors.map { ($0.name, $0.shape) })
            for (presetName, want) in mix.presets.sorted(by: { $0.key < $1.key }) {
                let preset = try XCTUnwrap(QuantizationPreset(rawValue: presetName), presetName)
                var plan = QuantizationPlan(preset: preset, names: Array(shapes.keys), layers: mix.block_count, experts: mix.expert_count)
                for name in QuantizationPlan.fileOrder(Array(shapes.keys)) {
                    let got = plan.type(for: name, shape: shapes[name]!, stored: .f32)
                    XCTAssertEqual(got.description, want[name], "\(model) \(presetName) \(name)")
                }
            }
        }
    }

    func testQ8FileIsByteForByteLlamaQuantizes() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-q8-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        try GGUFQuantizer.quantize(input: GGUFFile(path: models.appendingPathComponent("qwen3_moe.f32.gguf").path), preset: .q8_0, to: out)
        let got = try Data(contentsOf: URL(fileURLWithPath: out))
        let want = try Data(contentsOf: models.appendingPathComponent("qwen3_moe.q8_0.gguf"))
        XCTAssertEqual(got.count, want.count)
        XCTAssertTrue(got == want, "the Q8_0 file differs from llama-quantize's")
    }

    /// A Q4_K_M file MoEKit wrote runs in MoEKit close to the f32 model it came from, with
    /// `--tensor-type` overrides honoured.
    func testQuantizedFileRunsAndOverridesApply() throws {
        let source = models.appendingPathComponent("qwen3_moe.f32.gguf").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-q4km-\(getpid()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let experts = try NSRegularExpression(pattern: "ffn_.*_exps")
        var seen = 0
        try GGUFQuantizer.quantize(input: GGUFFile(path: source), preset: .q4_k_m, overrides: [(experts, .q8_0)], to: out) { _, done, total in
            seen += 1
            XCTAssertLessThanOrEqual(done, total)
        }
        let file = try GGUFFile(path: out)
        XCTAssertEqual(seen, file.tensorNames.count, "progress after every tensor")
        XCTAssertEqual(file.metadata["general.file_type"]?.int, 15)
        for name in file.tensorNames where name.contains("_exps") { XCTAssertEqual(file.tensors[name]?.dtype, .q8_0, name) }
        XCTAssertEqual(file.tensors["blk.0.attn_q.weight"]?.dtype, .q5_0, "rows of 64 fall back from q4_K")
        let prompt = Array(0..<12).map { ($0 * 37 + 3) % 256 }
        let exact = try DecoderModel(path: source), quantized = try DecoderModel(path: out)
        var c0 = exact.makeCache(), c1 = quantized.makeCache()
        let want = try exact.forward(prompt, cache: &c0).toFloats(), got = try quantized.forward(prompt, cache: &c1).toFloats()
        let spread = want.reduce(0.0) { $0 + Double(abs($1)) } / Double(want.count)
        let error = zip(got, want).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(want.count)
        // Rows of 64 leave q5_0 attention in this tiny random model (0.21 of the spread when
        // written; wrong weights give more than the spread); the all-q8_0 file is much closer.
        XCTAssertLessThan(error, 0.35 * spread, "mean |q4_k_m - f32| logit against mean |logit| \(spread)")
        let q8 = try DecoderModel(path: models.appendingPathComponent("qwen3_moe.q8_0.gguf").path)
        var c2 = q8.makeCache()
        let q8Error = zip(try q8.forward(prompt, cache: &c2).toFloats(), want).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(want.count)
        XCTAssertLessThan(q8Error, error / 2, "q8_0 is closer than q4_k_m with q5_0 attention")
    }

    func testNonFiniteWeightIsATypedErrorNamingTheTensor() throws {
        let source = models.appendingPathComponent("qwen3_moe.f32.gguf").path
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: source)))
        let file = try GGUFFile(path: source)
        let info = try XCTUnwrap(file.tensors["blk.1.ffn_up_exps.weight"])
        withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { for i in 0..<4 { bytes[info.offset + 40 + i] = $0[i] } }
        let dir = FileManager.default.temporaryDirectory
        let bad = dir.appendingPathComponent("moekit-nan-\(getpid()).gguf"), out = dir.appendingPathComponent("moekit-nan-out-\(getpid()).gguf")
        defer { try? FileManager.default.removeItem(at: bad) }
        try Data(bytes).write(to: bad)
        XCTAssertThrowsError(try GGUFQuantizer.quantize(input: GGUFFile(path: bad.path), preset: .q4_0, to: out.path)) { error in
            XCTAssertTrue("\(error)".contains("blk.1.ffn_up_exps.weight"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "nothing written on failure")
    }
}
