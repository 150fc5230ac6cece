import Foundation
import MoECore
import MoEQuant

/// Rewrites a GGUF file in another quantization, as llama-quantize does: every metadata record
/// copied byte for byte (then `general.quantization_version` and `general.file_type` set),
/// tensors in llama.cpp's order, each in the type `QuantizationPlan` chooses, quantized from
/// its stored values widened to f32 by ggml's reference quantizers. Without overrides, the
/// output of an f32, f16 or bf16 file is the file llama-quantize writes, byte for byte.
///
/// ```swift
/// try GGUFQuantizer.quantize(input: GGUFFile(path: "olmoe.bf16.gguf"), preset: .q4_k_m, to: "olmoe.Q4_K_M.gguf")
/// ```
public enum GGUFQuantizer {
    /// One tensor's choice, for reporting.
    public struct Choice: Sendable {
        public var name: String, shape: [Int], stored: DType, written: DType
    }

    /// Progress after each tensor: its choice, the bytes read so far and the total.
    public typealias Progress = (_ choice: Choice, _ bytesDone: Int, _ bytesTotal: Int) -> Void

    /// An importance matrix to quantize with, and the file (or calibration text) it came from,
    /// which the output's `quantize.imatrix.file` names.
    public struct ImportanceInput: Sendable {
        public var matrix: ImportanceMatrix
        public var path: String

        public init(matrix: ImportanceMatrix, path: String) {
            self.matrix = matrix
            self.path = path
        }

        /// The weights tensor `name` of row-major `shape` is quantized with when written as
        /// `written`: its entry's (per expert for a stacked [E, rows, columns] tensor), for
        /// block formats only.
        func importance(name: String, shape: [Int], written: DType) throws(ModelError) -> Importance? {
            guard !written.isElementFormat, shape.count >= 2, let columns = shape.last, columns > 0 else { return nil }
            let slices = shape.count == 3 ? shape[0] : 1, rows = shape.dropLast().reduce(1, *) / slices
            guard rows > 0, let w = try matrix.weights(for: name, columns: columns, slices: slices, path: path) else { return nil }
            return Importance(values: w, rowsPerSlice: rows)
        }
    }

    /// The type of every tensor `input` would be written in, in the order written.
    public static func plan(input: GGUFFile, preset: QuantizationPreset,
                            overrides: [(pattern: NSRegularExpression, type: DType)] = [],
                            hasImportance: Bool = false) throws(ModelError) -> [Choice] {
        let arch = input.architecture ?? ""
        let layers = input.metadata["\(arch).block_count"]?.int ?? 0
        let experts = input.metadata["\(arch).expert_count"]?.int ?? 0
        // llama.cpp reads the first layer's head counts (the key-value count defaults to the heads').
        func first(_ key: String) -> Int? { input.metadata[key].flatMap { $0.int ?? $0.array?.first?.int } }
        let heads = first("\(arch).attention.head_count") ?? 0, kvHeads = first("\(arch).attention.head_count_kv") ?? heads
        let shape = QuantizationPlan.attentionShape(architecture: arch, layers: layers, heads: heads, kvHeads: kvHeads)
        var plan = QuantizationPlan(preset: preset, overrides: overrides, names: input.tensorNames, layers: layers, experts: experts,
                                    groupedQueries: shape.groupedQueries, is70B: shape.is70B, hasImportance: hasImportance)
        return QuantizationPlan.fileOrder(input.tensorNames).map { name in
            let info = input.tensors[name]!
            return Choice(name: name, shape: info.shape, stored: info.dtype,
                          written: plan.type(for: name, shape: info.shape, stored: info.dtype))
        }
    }

    /// Writes `input` quantized with `preset` (and `overrides`, first match wins) to `path`,
    /// atomically; with `importance`, block formats are weighted by it as llama-quantize
    /// `--imatrix` does; with `splitMaxBytes`, as a split set of files of at most that much
    /// tensor data (`GGUFWriter.writeSplit`). A tensor holding a non-finite value cannot be
    /// quantized: the error names it. Returns the files written.
    @discardableResult
    public static func quantize(input: GGUFFile, preset: QuantizationPreset,
                                overrides: [(pattern: NSRegularExpression, type: DType)] = [],
                                importance: ImportanceInput? = nil, to path: String, splitMaxBytes: Int? = nil,
                                pool: ThreadPool = .shared, progress: Progress? = nil) throws(ModelError) -> [String] {
        let choices = try plan(input: input, preset: preset, overrides: overrides, hasImportance: importance != nil)
        for c in choices where !c.written.isQuantizable && c.written != c.stored {
            throw .unsupportedDType(path: path, name: c.name, dtype: "\(c.written) (MoEKit does not write it)")
        }
        let replaced = GGUFFile.splitKeys.union(["general.quantization_version", "general.file_type"])
        var records: [GGUFWriter.Record] = input.records.filter { !replaced.contains($0.key) }.map {
            .copied(key: $0.key, bytes: Data(input.recordBytes($0)))
        }
        records.append(.value(key: "general.quantization_version", .u32(2)))
        records.append(.value(key: "general.file_type", .u32(preset.fileType)))
        if let importance { records += importance.matrix.quantizeRecords(path: importance.path) }
        let total = choices.reduce(0) { $0 + $1.stored.storageBytes(elements: $1.shape.reduce(1, *)) }
        var done = 0
        let entries = try choices.map { (c: Choice) throws(ModelError) -> GGUFWriter.TensorEntry in
            let source = try input.tensor(c.name)
            let weights = try importance?.importance(name: c.name, shape: c.shape, written: c.written)
            return GGUFWriter.TensorEntry(name: c.name, shape: c.shape, dtype: c.written) { (out: AtomicFile.Sink) throws(ModelError) in
                try write(source, as: c.written, importance: weights, name: c.name, path: input.path, to: out, pool: pool)
                done += source.byteCount
                progress?(c, done, total)
            }
        }
        return try GGUFWriter.write(to: path, records: records, tensors: entries, alignment: input.alignment, splitMaxBytes: splitMaxBytes)
    }

    /// Streams `source` as `type`: its own bytes when the type is unchanged, else quantized in
    /// slabs of whole rows (about 64 MB of f32 at a time), weighted by `importance` if given.
    static func write(_ source: Tensor, as type: DType, importance: Importance? = nil, name: String, path: String,
                      to out: AtomicFile.Sink, pool: ThreadPool) throws(ModelError) {
        if type == source.dtype {
            try out.write(UnsafeRawBufferPointer(start: source.rawPointer, count: source.byteCount))
            return
        }
        let k = max(1, source.shape.last ?? 1), rows = source.count / k
        let flat = source.reshaped([rows, k])
        let slab = max(1, (64 << 20) / (4 * k))
        for r0 in stride(from: 0, to: rows, by: slab) {
            let weights = importance.map { Importance(values: $0.values, rowsPerSlice: $0.rowsPerSlice, firstRow: r0) }
            guard let q = flat.rows(r0..<min(rows, r0 + slab)).quantized(to: type, importance: weights, pool: pool) else {
                throw .invalidFile(path: path, field: name, reason: "holds a value that is not finite, which \(type) cannot store")
            }
            try out.write(UnsafeRawBufferPointer(start: q.rawPointer, count: q.byteCount))
        }
    }
}
