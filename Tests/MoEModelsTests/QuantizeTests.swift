import Foundation
import MoECore
import MoEModels
import MoEQuant
import _TestSupport
import XCTest

/// `moe quantize` against llama.cpp's llama-quantize (scripts/make_quantize_fixtures.py and
/// scripts/make_gguf_model_fixtures.py): the same bytes per block format on rows chosen to
/// break quantizers, the same type for every tensor of five model shapes under every preset,
/// and the same file, byte for byte, for a whole model.
final class QuantizeTests: XCTestCase {
    let folder = fixturesDirectory.appendingPathComponent("quantize")
    let models = fixturesDirectory.appendingPathComponent("gguf_models")

    struct Blocks: Decodable {
        var columns: Int, rows: Int, input: String, formats: [String: String]
        var importance: String, weighted_formats: [String: String]
    }
    struct Mix: Decodable {
        struct Entry: Decodable { var name: String, shape: [Int] }
        var arch: String, block_count: Int, expert_count: Int, head_count: Int, head_count_kv: Int
        var tensors: [Entry], presets: [String: [String: String]]
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

    /// With an importance matrix (llama-quantize --imatrix): ggml's weighted quantizers, byte
    /// for byte, on the same rows; and the weights matter (the bytes differ from unweighted ones).
    func testImportanceWeightedFormatsQuantizeAsLlamaQuantizeWithAnImatrix() throws {
        let blocks = try JSONDecoder().decode(Blocks.self, from: Data(contentsOf: folder.appendingPathComponent("blocks.json")))
        func floats(_ s: String) throws -> [Float] {
            try XCTUnwrap(Data(base64Encoded: s)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        let x = Tensor(shape: [blocks.rows, blocks.columns], values: try floats(blocks.input))
        // The fixture's imatrix holds sums of 3 times the importance over a count of 3: weights
        // are llama-quantize's quotient (a rounding off the importance for some columns).
        let matrix = ImportanceMatrix(entries: ["w": .init(sums: try floats(blocks.importance).map { $0 * 3 }, counts: [3])])
        let weights = try XCTUnwrap(try matrix.weights(for: "w", columns: blocks.columns, slices: 1, path: "blocks.json"))
        let importance = Importance(values: weights, rowsPerSlice: 256)
        XCTAssertEqual(blocks.weighted_formats.count, 12)
        for (name, encoded) in blocks.weighted_formats.sorted(by: { $0.key < $1.key }) {
            let dtype = try XCTUnwrap(DType(name: name))
            let want = [UInt8](try XCTUnwrap(Data(base64Encoded: encoded)))
            let q = try XCTUnwrap(x.quantized(to: dtype, importance: importance, pool: ThreadPool(threads: 2)), name)
            let got = [UInt8](UnsafeRawBufferPointer(start: q.rawPointer, count: q.byteCount))
            let rowBytes = dtype.storageBytes(elements: blocks.columns)
            let bad = zip(got, want).enumerated().filter { $0.element.0 != $0.element.1 }.map { $0.offset / rowBytes }
            XCTAssertEqual(got.count, want.count, name)
            XCTAssertTrue(bad.isEmpty, "\(name): rows \(Set(bad).sorted()) differ from llama-quantize --imatrix")
            if dtype != .q8_0 {
                XCTAssertNotEqual(want, [UInt8](try XCTUnwrap(Data(base64Encoded: blocks.formats[name]!))), "\(name): weights change the bytes")
            }
        }
        // An entry too short for the rows is refused, not read past its end.
        XCTAssertNil(x.quantized(to: .q4_K, importance: Importance(values: [Float](repeating: 1, count: 256), rowsPerSlice: 256)))
    }

    func testEveryPresetChoosesLlamaQuantizesTypes() throws {
        let mixes = try JSONDecoder().decode([String: Mix].self, from: Data(contentsOf: folder.appendingPathComponent("mixes.json")))
        XCTAssertEqual(mixes.count, 5)
        for (model, mix) in mixes.sorted(by: { $0.key < $1.key }) {
            let shapes = Dictionary(uniqueKeysWithValues: mix.tensors.map { ($0.name, $0.shape) })
            for (presetName, want) in mix.presets.sorted(by: { $0.key < $1.key }) {
                let preset = try XCTUnwrap(QuantizationPreset(rawValue: presetName), presetName)
                var plan = QuantizationPlan(preset: preset, names: Array(shapes.keys), layers: mix.block_count, experts: mix.expert_count,
                                            groupedQueries: mix.head_count / mix.head_count_kv)
                for name in QuantizationPlan.fileOrder(Array(shapes.keys)) {
                    let got = plan.type(for: name, shape: shapes[name]!, stored: .f32)
                    XCTAssertEqual(got.description, want[name], "\(model) \(presetName) \(name)")
                }
            }
        }
    }

    /// llama.cpp's rule for a 70B Llama (80 layers, grouped keys): `attn_v` that a preset leaves in
    /// Q3_K or Q4_K goes to Q5_K (no fixture model has 80 layers; the rule as llama-quant.cpp has it).
    func testA70BModelsAttentionVGetsQ5_K() {
        let names = (0..<80).flatMap { ["blk.\($0).attn_v.weight", "blk.\($0).attn_q.weight"] } + ["output.weight", "token_embd.weight"]
        for (preset, rest) in [(QuantizationPreset.q4_k_m, DType.q4_K), (.q3_k_s, .q3_K)] {
            var plan = QuantizationPlan(preset: preset, names: names, layers: 80, experts: 0, groupedQueries: 8, is70B: true)
            var plain = QuantizationPlan(preset: preset, names: names, layers: 80, experts: 0, groupedQueries: 8)
            for name in QuantizationPlan.fileOrder(names) {
                let (a, b) = (plan.type(for: name, shape: [1024, 8192], stored: .f32), plain.type(for: name, shape: [1024, 8192], stored: .f32))
                XCTAssertEqual(a, name.contains("attn_v") && b == rest ? .q5_K : b, "\(preset) \(name)")
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

/// `moe quantize --model DIR`: checkpoint folders written as GGUF (convert_hf_to_gguf.py's
/// names, metadata and Llama q/k order), checked by running them: the logits of every
/// converted family equal transformers' for the checkpoint.
final class GGUFConverterTests: XCTestCase {
    func testConvertedFamiliesGiveTransformersLogits() throws {
        for family in ["qwen3_moe", "mixtral", "olmoe", "qwen3", "mistral", "deepseek_v2", "deepseek_v3", "glm4_moe"] {
            let folder = fixturesDirectory.appendingPathComponent(family)
            let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("reference.json")))
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-conv-\(family)-\(getpid()).gguf").path
            defer { try? FileManager.default.removeItem(atPath: out) }
            try GGUFConverter.convert(directory: folder.path, preset: .f32, to: out)
            let file = try GGUFFile(path: out)
            XCTAssertEqual(file.architecture, GGUFConverter.architectures[family], family)
            let model = try DecoderModel(path: out)
            var cache = model.makeCache()
            assertClose(try model.forward(ref.prompt, cache: &cache).toFloats(), ref.logits.flatMap { $0 }, absolute: 1e-4, family)
        }
    }

    /// Converting straight to Q8_0 writes the same bytes as converting to f32 and then
    /// quantizing that file (one plan, one writer), and the Llama-family permutation is undone
    /// by the reader (Mixtral's logits above).
    func testConvertingToQ8EqualsConvertingThenQuantizing() throws {
        let folder = fixturesDirectory.appendingPathComponent("mixtral").path, tmp = FileManager.default.temporaryDirectory
        let direct = tmp.appendingPathComponent("moekit-conv-q8-\(getpid()).gguf").path
        let f32 = tmp.appendingPathComponent("moekit-conv-f32-\(getpid()).gguf").path
        let twoStep = tmp.appendingPathComponent("moekit-conv-2s-\(getpid()).gguf").path
        defer { for p in [direct, f32, twoStep] { try? FileManager.default.removeItem(atPath: p) } }
        try GGUFConverter.convert(directory: folder, preset: .q8_0, to: direct)
        try GGUFConverter.convert(directory: folder, preset: .f32, to: f32)
        try GGUFQuantizer.quantize(input: GGUFFile(path: f32), preset: .q8_0, to: twoStep)
        XCTAssertTrue(try Data(contentsOf: URL(fileURLWithPath: direct)) == Data(contentsOf: URL(fileURLWithPath: twoStep)))
    }

    /// GPT-OSS (its checkpoint folder and its MXFP4 one): the fixtures clamp SwiGLU at 1, which
    /// llama.cpp cannot hold (a typed error); at llama.cpp's 7 the converted file gives the
    /// folder's logits (which the model tests check against transformers at 1).
    /// A copy of fixture folder `name` in the temporary folder, `edit` applied to its config.json.
    func editedFixture(_ name: String, edit: (inout [String: Any]) -> Void) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-conv-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.copyItem(at: fixturesDirectory.appendingPathComponent(name), to: folder)
        let configURL = folder.appendingPathComponent("config.json")
        var config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        return folder
    }

    func testGPTOSSConvertsAtLlamaCppsClamp() throws {
        for fixture in ["gpt_oss", "gpt_oss_mxfp4"] {
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-conv-\(fixture)-\(getpid()).gguf").path
            defer { try? FileManager.default.removeItem(atPath: out) }
            XCTAssertThrowsError(try GGUFConverter.convert(directory: fixturesDirectory.appendingPathComponent(fixture).path, preset: .f32, to: out)) { error in
                guard case let .invalidConfig(_, field, _)? = error as? ModelError else { return XCTFail("\(error)") }
                XCTAssertEqual(field, "swiglu_limit")
            }
            let folder = try editedFixture(fixture) { $0["swiglu_limit"] = nil }  // the default, 7
            defer { try? FileManager.default.removeItem(at: folder) }
            try GGUFConverter.convert(directory: folder.path, preset: .f32, to: out)
            XCTAssertEqual(try GGUFFile(path: out).architecture, "gpt-oss")
            let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("reference.json")))
            // Exact products on both sides: the folder's MXFP4 experts would otherwise meet 8-bit activations.
            Kernels.integerActivations = false
            defer { Kernels.integerActivations = true }
            var (c1, c2) = (try DecoderModel(path: folder.path).makeCache(), try DecoderModel(path: out).makeCache())
            let want = try DecoderModel(path: folder.path).forward(ref.prompt, cache: &c1).toFloats()
            assertClose(try DecoderModel(path: out).forward(ref.prompt, cache: &c2).toFloats(), want, absolute: 1e-4, fixture)
        }
    }

    /// A DeepSeek-V3 rotating halves, a GPT-OSS windowing every layer, a Qwen2-MoE with a dense layer
    /// (which llama.cpp's qwen2moe cannot hold) and a Qwen2 with sliding windows on some layers only are typed errors
    /// naming the config, and write nothing.
    func testUnconvertibleModelsAreTypedErrors() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-conv-bad-\(getpid()).gguf").path
        // A DeepSeek-V3 that rotates halves (llama.cpp's deepseek2 rotates interleaved pairs only)
        // and a GPT-OSS windowing every layer (llama.cpp's gpt-oss windows even layers only).
        for (fixture, key, value) in [("deepseek_v3", "rope_interleave", false as Any),
                                      ("gpt_oss", "layer_types", ["sliding_attention", "sliding_attention", "sliding_attention"] as Any)] {
            let edited = try editedFixture(fixture) { config in
                config[key] = value
                config["swiglu_limit"] = nil  // GPT-OSS: llama.cpp's clamp, so that the window pattern is what fails
            }
            defer { try? FileManager.default.removeItem(at: edited) }
            XCTAssertThrowsError(try GGUFConverter.convert(directory: edited.path, preset: .q8_0, to: out)) { error in
                guard case let .invalidConfig(_, field, _)? = error as? ModelError else { return XCTFail("\(error)") }
                XCTAssertEqual(field, key)
            }
        }
        XCTAssertThrowsError(try GGUFConverter.convert(directory: fixturesDirectory.appendingPathComponent("qwen2_moe").path,
                                                       preset: .q8_0, to: out)) { error in
            guard case let .invalidConfig(_, field, _)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "mlp_only_layers")
        }
        XCTAssertThrowsError(try GGUFConverter.convert(directory: fixturesDirectory.appendingPathComponent("qwen2").path,
                                                       preset: .q8_0, to: out)) { error in
            guard case let .invalidConfig(_, field, _)? = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertEqual(field, "layer_types")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
