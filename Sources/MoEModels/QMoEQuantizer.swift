import Foundation
import MoE
import MoECore
import MoEQuant

// Dimension legend: d hidden size, I expert intermediate size, E experts, R routed rows.

/// `moe quantize --type qmoe`: a checkpoint folder's routed experts compressed as QMoE does
/// (Frantar & Alistarh 2023). Calibration tokens run through the model; each expert's routed
/// inputs give the Hessians X^T X of its gate/up input and of its down input; every expert
/// projection is quantized to the ternary grid {lo, 0, hi} per row by GPTQ (`TernaryGPTQ`);
/// the ternary rows are dictionary-coded (`TernaryCodebook`) and written with every other tensor
/// as stored (`TernaryCheckpoint` gives the layout). An expert that received fewer than
/// `minTokens` calibration tokens rounds each weight to its nearest grid point (no Hessian).
public enum QMoEQuantizer {
    /// The knobs.
    public struct Options: Sendable {
        public var gptq = TernaryGPTQ.Options()
        /// Experts routed fewer calibration tokens than this are rounded to nearest.
        public var minTokens = 16
        /// Calibration tokens per forward pass (each pass starts a fresh sequence).
        public var sequenceLength = 256
        /// Bytes of Hessians held at once: layers are calibrated in groups that fit.
        public var hessianBudget = 4 << 30
        /// Pairs of weights sampled to build the dictionary.
        public var dictionarySamplePairs = 4 << 20
        public init() {}
    }

    /// What the quantization did, as `moe quantize --type qmoe` prints it.
    public struct Report: Encodable, Sendable {
        public var calibrationTokens = 0
        public var expertParameters = 0
        /// Bytes of codes and row scales over every coded expert, as written.
        public var codedBytes = 0
        /// Bytes of the row offsets the loader builds (4 a row): in memory, not in the file.
        public var offsetBytes = 0
        /// Bytes of the shared dictionary (8 per entry).
        public var dictionaryBytes = 0
        /// Entries in the dictionary: the power of two up to 65536 that codes the experts in
        /// the fewest bits, dictionary included.
        public var dictionaryEntries = 0
        /// Everything the file holds for the experts: (codes + scales + dictionary) * 8 / parameters.
        public var bitsPerExpertParameter = 0.0
        /// In memory once loaded: the file's bits plus the row offsets.
        public var residentBitsPerExpertParameter = 0.0
        /// Fraction of expert weights at 0.
        public var zeroFraction = 0.0
        /// Mean weights per code.
        public var weightsPerCode = 0.0
        /// Experts (over all layers) that got fewer than `minTokens` calibration tokens.
        public var expertsRoundedToNearest = 0
        public var seconds = 0.0
    }

    /// Calibrates, quantizes and codes the checkpoint folder `directory` and writes the result
    /// to the new folder `out` (atomically). `progress(label, done, total)` follows the experts.
    public static func quantize(directory: String, calibration tokens: [Int], options: Options = Options(), out: String,
                                pool: ThreadPool = .shared, progress: (String, Int, Int) -> Void = { _, _, _ in }) throws(ModelError) -> Report {
        let start = Date()
        guard !FileManager.default.fileExists(atPath: out) else { throw .io(path: out, reason: "already exists; not overwritten") }
        let ck = try Checkpoint(directory: directory)
        let spec = try Architectures.spec(configAt: ck.configPath)
        let model = try DecoderModel(weights: ck, spec: spec, pool: pool)
        var layers: [Int: SwiGLUExperts] = [:]
        for (i, layer) in model.layers.enumerated() {
            guard case let .moe(moe) = layer.ffn else { continue }
            guard let experts = moe.experts as? SwiGLUExperts else {
                throw .invalidConfig(path: ck.configPath, field: "layer \(i) experts", reason: "are already coded; quantize the unquantized checkpoint")
            }
            layers[i] = experts
        }
        guard !layers.isEmpty else { throw .invalidConfig(path: ck.configPath, field: "layers", reason: "the model has no MoE layer to quantize") }
        guard spec.hiddenSize % 2 == 0, spec.expertIntermediate % 2 == 0 else {
            throw .invalidConfig(path: ck.configPath, field: "hidden_size", reason: "QMoE codes pairs of weights: sizes must be even")
        }
        for t in tokens where t < 0 || t >= spec.vocabSize { throw .tokenOutOfRange(id: t, vocabularySize: spec.vocabSize) }
        var report = Report()
        report.calibrationTokens = tokens.count
        let order = layers.keys.sorted(), total = order.count * spec.experts
        let (coded, rounded) = try calibrateAndQuantize(model: model, layers: layers, tokens: tokens, options: options, pool: pool, progress: progress)
        report.expertsRoundedToNearest = rounded
        progress("coding", total, total)
        let dictionary = try dictionary(for: order.flatMap { i in coded[i]!.flatMap { $0 } }, options: options, out: out)
        var entries = try codedEntries(coded, order: order, spec: spec, dictionary: dictionary, out: out, report: &report)
        // Every other tensor as stored: all but the routed experts' weights (their biases stay).
        let expertPrefixes = order.map { i -> String in
            let stacked = spec.names.stackedExperts(i).gateUp
            return String(stacked[...(stacked.lastIndex(of: ".") ?? stacked.startIndex)])
        }
        let keptBiases = Set(order.flatMap { [spec.names.stackedExperts($0).gateUpBias, spec.names.stackedExperts($0).downBias] })
        for name in ck.names where keptBiases.contains(name) || !expertPrefixes.contains(where: { name.hasPrefix($0) }) {
            guard let file = ck.files[name], let e = file.entries[name] else { continue }
            entries.append(.init(name: name, dtype: e.dtypeName, shape: e.shape) { () throws(ModelError) -> Data in Data(try file.bytes(name)) })
        }
        let config = try quantizedConfig(ck.configPath, report: report)
        try CheckpointFolderWriter.write(out: out, copyingFrom: directory) { (tmp: String) throws(ModelError) in
            try AtomicFile.write(config, to: (tmp as NSString).appendingPathComponent("config.json"))
            try SafetensorsWriter.write(raw: entries, to: (tmp as NSString).appendingPathComponent("model.safetensors"))
        }
        report.seconds = Date().timeIntervalSince(start)
        progress("done", total, total)
        return report
    }

    /// Calibrates layer groups whose Hessians fit the budget and quantizes their experts:
    /// layer -> expert -> (gate, up, down), and how many experts rounded to nearest.
    static func calibrateAndQuantize(model: DecoderModel, layers: [Int: SwiGLUExperts], tokens: [Int], options: Options, pool: ThreadPool,
                                     progress: (String, Int, Int) -> Void) throws(ModelError) -> ([Int: [[TernaryGPTQ.Result]]], Int) {
        let spec = model.spec, order = layers.keys.sorted()
        let perLayer = spec.experts * (spec.hiddenSize * spec.hiddenSize + spec.expertIntermediate * spec.expertIntermediate) * 4
        let groupSize = max(1, options.hessianBudget / max(1, perLayer))
        var coded: [Int: [[TernaryGPTQ.Result]]] = [:]
        var rounded = 0, done = 0
        let total = order.count * spec.experts, minTokens = max(1, options.minTokens)
        for g in stride(from: 0, to: order.count, by: groupSize) {
            let group = Array(order[g..<min(order.count, g + groupSize)])
            let recorders = try record(model: model, layers: group.map { ($0, layers[$0]!) }, tokens: tokens, sequenceLength: options.sequenceLength)
            for (i, rec) in zip(group, recorders) {
                // Experts are independent: they split over the pool (each one's own loops then run inline).
                var perExpert = [[TernaryGPTQ.Result]](repeating: [], count: spec.experts)
                let x = layers[i]!, lock = NSLock()
                rounded += rec.tokens.filter { $0 < minTokens }.count
                pool.parallelFor(spec.experts) { e in
                    let enough = rec.tokens[e] >= minTokens
                    // Gate and up read the same inputs: one factored Hessian serves both.
                    let (d, inner, damp) = (spec.hiddenSize, spec.expertIntermediate, options.gptq.damp)
                    let hIn = enough ? TernaryGPTQ.Factor(hessian: rec.inputHessian(e), cols: d, damp: damp) : nil
                    let hDown = enough ? TernaryGPTQ.Factor(hessian: rec.downHessian(e), cols: inner, damp: damp) : nil
                    let results = [x.gate[e], x.up[e], x.down[e]].enumerated().map { j, w in
                        TernaryGPTQ.quantize(weight: w.toFloats(), rows: w.shape[0], cols: w.shape[1], factor: j < 2 ? hIn : hDown,
                                             options: options.gptq, pool: pool)
                    }
                    lock.withLock {
                        perExpert[e] = results
                        done += 1
                        progress("layer \(i) expert \(e)", done, total)
                    }
                }
                coded[i] = perExpert
            }
        }
        return (coded, rounded)
    }

    /// The dictionary, from rows sampled evenly across every quantized matrix (at most about
    /// `dictionarySamplePairs` pairs), sized for the whole model.
    static func dictionary(for matrices: [TernaryGPTQ.Result], options: Options, out: String) throws(ModelError) -> TernaryDictionary {
        let totalPairs = matrices.reduce(0) { $0 + $1.values.count / 2 }
        let every = max(1, totalPairs / max(1, options.dictionarySamplePairs))
        var sample: [ArraySlice<Int8>] = []
        var rowIndex = 0
        for m in matrices {
            let cols = m.values.count / max(1, m.lo.count)
            for r in 0..<m.lo.count {
                if rowIndex % every == 0 { sample.append(m.values[(r * cols)..<((r + 1) * cols)]) }
                rowIndex += 1
            }
        }
        do { return try TernaryCodebook.dictionary(rows: sample, weights: 2 * totalPairs) } catch { throw .invalidFile(path: out, field: "dictionary", reason: error.description) }
    }

    /// Every expert projection's codes and scales as tensors to write, with the
    /// dictionary, and the report's sizes filled in.
    static func codedEntries(_ coded: [Int: [[TernaryGPTQ.Result]]], order: [Int], spec: DecoderSpec, dictionary: TernaryDictionary,
                             out: String, report: inout Report) throws(ModelError) -> [SafetensorsWriter.RawEntry] {
        let encoder: TernaryCodebook.Encoder
        do { encoder = try TernaryCodebook.Encoder(dictionary) } catch { throw .invalidFile(path: out, field: "dictionary", reason: error.description) }
        var entries: [SafetensorsWriter.RawEntry] = []
        var codes = 0, zeros = 0
        for i in order {
            for (e, results) in coded[i]!.enumerated() {
                let names = spec.names.expert(i, e)
                for (name, r) in zip([names.gate, names.up, names.down], results) {
                    let rows = r.lo.count, cols = r.values.count / rows
                    let c = encoder.encode(r.values, rows: rows, cols: cols)
                    var scales = [Float](repeating: 0, count: 2 * rows)
                    for row in 0..<rows { scales[2 * row] = r.lo[row]; scales[2 * row + 1] = r.hi[row] }
                    let t = TernaryCheckpoint.names(name), bits = TernaryMatrix.f16Bits(scales)
                    entries.append(.init(name: t.codes, dtype: "U16", shape: [c.codes.count]) { c.codes.withUnsafeBytes { Data($0) } })
                    entries.append(.init(name: t.scales, dtype: "F16", shape: [rows, 2]) { bits.withUnsafeBytes { Data($0) } })
                    report.expertParameters += r.values.count
                    report.codedBytes += c.codes.count * 2 + rows * 4
                    report.offsetBytes += (rows + 1) * 4
                    codes += c.codes.count
                    zeros += r.values.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }
                }
            }
        }
        report.dictionaryEntries = dictionary.entries.count
        report.dictionaryBytes = dictionary.entries.count * 8
        entries.append(.init(name: TernaryCheckpoint.dictionaryName, dtype: "U64", shape: [dictionary.entries.count]) {
            dictionary.entries.withUnsafeBytes { Data($0) }
        })
        let parameters = Double(max(1, report.expertParameters))
        report.bitsPerExpertParameter = Double(report.codedBytes + report.dictionaryBytes) * 8 / parameters
        report.residentBitsPerExpertParameter = Double(report.codedBytes + report.offsetBytes + report.dictionaryBytes) * 8 / parameters
        report.zeroFraction = Double(zeros) / Double(max(1, report.expertParameters))
        report.weightsPerCode = Double(report.expertParameters) / Double(max(1, codes))
        return entries
    }

    /// The source's config.json with `quantization_config` naming QMoE.
    static func quantizedConfig(_ path: String, report: Report) throws(ModelError) -> Data {
        guard let data = FileManager.default.contents(atPath: path),
              var json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw .invalidFile(path: path, field: "(json)", reason: "is not a JSON object")
        }
        json["quantization_config"] = ["quant_method": TernaryCheckpoint.quantMethod, "format": "ternary dictionary codes",
                                       "bits_per_expert_parameter": report.bitsPerExpertParameter] as [String: Any]
        guard let out = try? JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys]) else {
            throw .invalidFile(path: path, field: "(json)", reason: "cannot encode")
        }
        return out
    }

    /// Runs the calibration tokens through the model with recorders in place of the `layers`'
    /// experts, then puts the experts back; returns the recorders.
    static func record(model: DecoderModel, layers: [(Int, SwiGLUExperts)], tokens: [Int],
                       sequenceLength: Int) throws(ModelError) -> [HessianRecorder] {
        let saved = model.layers
        defer { model.layers = saved }
        var recorders: [HessianRecorder] = []
        for (i, experts) in layers {
            guard case var .moe(moe) = model.layers[i].ffn else { continue }
            let rec = HessianRecorder(experts)
            moe.experts = rec
            let l = model.layers[i]
            model.layers[i] = .init(inputNorm: l.inputNorm, postNorm: l.postNorm, attention: l.attention, ffn: .moe(moe))
            recorders.append(rec)
        }
        let window = max(1, sequenceLength)
        for s in stride(from: 0, to: tokens.count, by: window) {
            let chunk = Array(tokens[s..<min(tokens.count, s + window)])
            var cache = model.makeCache(capacity: chunk.count)
            _ = try model.forward(chunk, cache: &cache, lastOnly: true)
        }
        return recorders
    }
}

/// Experts that run as they are and add each expert's routed inputs into its Hessians:
/// X^T X of the gate/up input and of the down input (the activation between), in f32.
final class HessianRecorder: ExpertFFN, @unchecked Sendable {
    let inner: SwiGLUExperts
    var input: [[Float]], down: [[Float]], tokens: [Int]

    init(_ inner: SwiGLUExperts) {
        self.inner = inner
        input = Array(repeating: [], count: inner.expertCount)
        down = Array(repeating: [], count: inner.expertCount)
        tokens = Array(repeating: 0, count: inner.expertCount)
    }

    var expertCount: Int { inner.expertCount }
    var hiddenSize: Int { inner.hiddenSize }
    func weightBytes(expert: Int) -> Int { inner.weightBytes(expert: expert) }

    func forward(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let h = inner.hidden(rows, rowOffsets: rowOffsets, pool: pool)
        for e in 0..<expertCount where rowOffsets[e] < rowOffsets[e + 1] {
            let span = rowOffsets[e]..<rowOffsets[e + 1]
            tokens[e] += span.count
            Self.accumulate(&input[e], rows.rows(span), pool: pool)
            Self.accumulate(&down[e], h.rows(span), pool: pool)
        }
        return inner.projectDown(h, rowOffsets: rowOffsets, pool: pool)
    }

    /// h += x^T x for x [n, c] (h [c, c], allocated on first use).
    static func accumulate(_ h: inout [Float], _ x: Tensor, pool: ThreadPool) {
        let n = x.shape[0], c = x.shape[1], v = x.floats
        var t = [Float](repeating: 0, count: c * n)
        for r in 0..<n { for j in 0..<c { t[j * n + r] = v[r * c + j] } }
        let xt = Tensor(shape: [c, n], values: t)
        let product = Kernels.matmul(xt, xt, pool: pool)  // held: `floats` is a view of its storage
        if h.isEmpty { h = [Float](repeating: 0, count: c * c) }
        withExtendedLifetime(product) {
            let p = product.floats
            for k in 0..<(c * c) { h[k] += p[k] }
        }
    }

    func inputHessian(_ e: Int) -> [Double] { input[e].map(Double.init) }
    func downHessian(_ e: Int) -> [Double] { down[e].map(Double.init) }
}
