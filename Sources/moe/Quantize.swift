import ArgumentParser
import Foundation
import MoECore
import MoEModels
import MoEQuant

/// `moe quantize`: a GGUF file rewritten in another quantization, as llama-quantize does.
struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a GGUF file llama.cpp runs, from a GGUF file or a checkpoint folder, in any of llama.cpp's quantization types; or QMoE's dictionary-coded ternary experts.",
        discussion: """
            Types: \(QuantizationPreset.allCases.map(\.rawValue).joined(separator: ", ")). Without overrides, \
            quantizing an f32, f16 or bf16 file writes the same bytes llama-quantize writes. \
            --type qmoe reads a checkpoint folder and --calibration text, and writes a checkpoint folder whose \
            routed experts are GPTQ-quantized to {lo, 0, hi} per row and dictionary-coded (the README gives the layout).
            """)

    @Option(help: "The GGUF file (of a split set, the first), or Hugging Face checkpoint folder (Llama, Mistral, Mixtral, Qwen2/3, Qwen2/3-MoE, OLMoE, DeepSeek-V2/V3, GLM-4.5, GPT-OSS), to quantize.")
    var model: String

    @Option(help: "Quantization type (llama.cpp's names, lower case), e.g. q4_k_m; or qmoe (sub-1-bit ternary experts, a checkpoint folder in and out).")
    var type: String

    @Option(help: "Output GGUF file, or with --type qmoe a new checkpoint folder (written atomically).")
    var out: String

    @Option(help: "Calibration text. With a block-format type: an importance matrix is computed from it first (as moe imatrix) and weights each block's rounding, as llama-quantize --imatrix does. With --type qmoe: each expert's routed inputs drive its GPTQ updates.")
    var calibration: String?

    @Option(help: "An importance matrix file (moe imatrix's or llama-imatrix's, GGUF or .dat) to weight the rounding with, as llama-quantize --imatrix does.")
    var imatrix: String?

    @OptionGroup var chunking: ImportanceChunking

    @Option(name: .customLong("calibration-tokens"), help: "With --type qmoe: at most this many calibration tokens.")
    var calibrationTokens = 16384

    @Option(help: "With --type qmoe: each row's grid, minmax (QMoE's: {min, 0, max}) or mse (scaled in to the least rounding error: fewer zeros, more bits).")
    var grid = "minmax"

    @Option(help: "With --type qmoe: GPTQ's dampening, this fraction of the Hessian's mean diagonal added to it; more dampening, less error feedback, more zeros.")
    var damp = 0.01

    @Option(name: .customLong("dead-zone"), help: "With --type qmoe: a weight rounds to 0 unless it passes this fraction of its row's max (or min); 0.5 rounds to nearest, more gives more zeros and fewer bits (GPTQ feeds the error forward).")
    var deadZone = 0.5

    @Option(name: .customLong("min-tokens"), help: "With --type qmoe: experts routed fewer calibration tokens round to nearest instead of GPTQ.")
    var minTokens = 16

    @Option(name: .customLong("tensor-type"), parsing: .singleValue,
            help: "REGEX=TYPE: tensors whose name matches REGEX are written as TYPE (e.g. 'ffn_.*_exps=q4_k', 'attn_=q8_0'). Repeatable; the first match wins.")
    var tensorTypes: [String] = []

    @Flag(name: .customLong("dry-run"), help: "Print each tensor's type and sizes without writing.")
    var dryRun = false

    @Option(name: .customLong("split-max-size"),
            help: "Write a split set, as llama-gguf-split --split-max-size: files of at most SIZE of tensor data (e.g. 45GB), OUT-00001-of-0000N.gguf ..., which llama.cpp and --model OUT-00001-of-0000N.gguf read. --out must end in .gguf.")
    var splitMaxSize: String?

    @Option(help: "Threads to run on (default: the active cores).")
    var threads: Int?

    mutating func validate() throws {
        try OptionLimits.check(threads: threads)
        try OptionLimits.check(calibrationTokens, "--calibration-tokens", in: 1...OptionLimits.tokens)
        try OptionLimits.check(minTokens, "--min-tokens", in: 0...Int(Int32.max))
        if TernaryGPTQ.Grid(rawValue: grid) == nil { throw ValidationError("--grid: '\(grid)' is not minmax or mse") }
        guard damp > 0 && damp <= 1000 else { throw ValidationError("--damp: \(damp) is not in (0, 1000]") }
        guard deadZone >= 0.5 && deadZone < 1 else { throw ValidationError("--dead-zone: \(deadZone) is not in [0.5, 1)") }
        if isQMoE {
            if calibration == nil { throw ValidationError("--type qmoe needs --calibration TEXT") }
            if !tensorTypes.isEmpty || dryRun || splitMaxSize != nil {
                throw ValidationError("--type qmoe takes none of --tensor-type, --dry-run and --split-max-size")
            }
            return
        }
        if splitMaxSize != nil {
            _ = try splitMaxBytes()
            guard out.hasSuffix(".gguf") else { throw ValidationError("--split-max-size: --out '\(out)' must end in .gguf (the files are OUT-0000K-of-0000N.gguf)") }
        }
        if calibration != nil && imatrix != nil { throw ValidationError("--calibration and --imatrix are two ways to give one importance matrix: give one") }
        try chunking.validate()
        _ = try preset()
        _ = try overrides()
    }

    func preset() throws -> QuantizationPreset {
        guard let p = QuantizationPreset(rawValue: type.lowercased()) else {
            throw ValidationError("--type: '\(type)' is not one of \(QuantizationPreset.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return p
    }

    func overrides() throws -> [(pattern: NSRegularExpression, type: DType)] {
        try tensorTypes.map { spec in
            guard let eq = spec.lastIndex(of: "=") else { throw ValidationError("--tensor-type: '\(spec)' is not REGEX=TYPE") }
            let pattern = String(spec[..<eq]), name = String(spec[spec.index(after: eq)...]).lowercased()
            guard let dtype = DType(name: name), dtype.isQuantizable else {
                let names = DType.allCases.filter(\.isQuantizable).map(\.description).joined(separator: ", ")
                throw ValidationError("--tensor-type: '\(name)' is not a type MoEKit writes (\(names))")
            }
            guard let regex = try? NSRegularExpression(pattern: pattern) else {
                throw ValidationError("--tensor-type: '\(pattern)' is not a regular expression")
            }
            return (regex, dtype)
        }
    }

    var isQMoE: Bool { type.lowercased() == "qmoe" }

    /// `--split-max-size` in bytes, nil when not given.
    func splitMaxBytes() throws -> Int? {
        guard let splitMaxSize else { return nil }
        guard let bytes = MemoryOptions.parseSize(splitMaxSize) else {
            throw ValidationError("--split-max-size: '\(splitMaxSize)' is not a size such as 45GB, 500MB or 2GiB")
        }
        return bytes
    }

    func run() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: model, isDirectory: &isDirectory) else {
            throw ValidationError("--model: '\(model)' does not exist")
        }
        if isQMoE { return try runQMoE(isDirectory: isDirectory.boolValue) }
        let preset = try preset(), overrides = try overrides()
        let pool = ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)
        var importance: GGUFQuantizer.ImportanceInput?
        if let imatrix {
            importance = .init(matrix: try ImportanceMatrix(path: imatrix), path: imatrix)
        } else if let calibration, !dryRun, !preset.baseType.isElementFormat {
            importance = .init(matrix: try chunking.collect(model: model, calibration: calibration, includeOutput: false, pool: pool),
                               path: calibration)
        }
        if isDirectory.boolValue {  // a checkpoint folder: converted as convert_hf_to_gguf.py + llama-quantize would
            if dryRun { throw ValidationError("--dry-run reads GGUF files; convert the folder first") }
            let bar = ProgressBar()
            let written = try GGUFConverter.convert(directory: model, preset: preset, overrides: overrides, importance: importance, to: out,
                                                    splitMaxBytes: try splitMaxBytes(), pool: pool) { choice, done, total in
                bar.show(fraction: Double(done) / Double(max(1, total)), label: "\(choice.name) \(choice.written)")
            }
            bar.finish()
            report(written)
            return
        }
        guard GGUFFile.isGGUF(path: model) else { throw ValidationError("--model: '\(model)' is neither a GGUF file nor a checkpoint folder") }
        let input = try GGUFFile(path: model)
        if dryRun {
            var before = 0, after = 0
            for c in try GGUFQuantizer.plan(input: input, preset: preset, overrides: overrides, hasImportance: importance != nil || calibration != nil) {
                let n = c.shape.reduce(1, *)
                before += c.stored.storageBytes(elements: n)
                after += c.written.storageBytes(elements: n)
                print("\(c.name.padding(toLength: 36, withPad: " ", startingAt: 0)) \(c.shape) \(c.stored) -> \(c.written)")
            }
            print(String(format: "%.2f MiB -> %.2f MiB", Double(before) / 1_048_576, Double(after) / 1_048_576))
            return
        }
        let bar = ProgressBar()
        let written = try GGUFQuantizer.quantize(input: input, preset: preset, overrides: overrides, importance: importance, to: out,
                                                 splitMaxBytes: try splitMaxBytes(), pool: pool) { choice, done, total in
            bar.show(fraction: Double(done) / Double(max(1, total)), label: "\(choice.name) \(choice.written)")
        }
        bar.finish()
        report(written)
    }

    /// `--type qmoe`: calibrate, quantize and code the experts; print the report as JSON.
    func runQMoE(isDirectory: Bool) throws {
        guard isDirectory else { throw ValidationError("--model: --type qmoe reads a checkpoint folder, not '\(model)'") }
        guard !FileManager.default.fileExists(atPath: out) else { throw ModelError.io(path: out, reason: "already exists; not overwritten") }
        let text = try PerplexityCommand.read(calibration!)
        let tokens = Array(try Tokenizer.of(model: model).encode(text).prefix(calibrationTokens))
        guard tokens.count >= 2 else { throw ModelError.invalidFile(path: calibration!, field: "(text)", reason: "has \(tokens.count) token(s)") }
        let bar = ProgressBar()
        var options = QMoEQuantizer.Options()
        options.gptq.grid = TernaryGPTQ.Grid(rawValue: grid) ?? .minMax
        options.minTokens = minTokens
        options.gptq.damp = damp
        options.gptq.deadZone = deadZone
        let report = try QMoEQuantizer.quantize(directory: model, calibration: tokens, options: options, out: out,
                                                pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount)) { label, done, total in
            bar.show(fraction: Double(done) / Double(max(1, total)), label: label)
        }
        bar.finish()
        try printJSON(report, pretty: true)
    }

    /// Names each file written, with its size, on standard error.
    func report(_ paths: [String]) {
        for path in paths {
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            FileHandle.standardError.write(Data(String(format: "wrote %@ (%.2f MiB)\n", path, Double(size) / 1_048_576).utf8))
        }
    }
}

/// A one-line progress bar on standard error, redrawn in place.
final class ProgressBar {
    let width = 30
    let start = Date()

    func show(fraction: Double, label: String) {
        let filled = Int((fraction * Double(width)).rounded(.down))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = String(format: "\r[%@] %3d%% %5.1fs %@", bar, Int(fraction * 100), Date().timeIntervalSince(start),
                          String(label.prefix(48)).padding(toLength: 48, withPad: " ", startingAt: 0))
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() { FileHandle.standardError.write(Data("\n".utf8)) }
}
