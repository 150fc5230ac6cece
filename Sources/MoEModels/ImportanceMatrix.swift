import Foundation
import MoECore

/// An importance matrix, as llama.cpp's llama-imatrix computes and llama-quantize `--imatrix`
/// reads it: for every weight `blk.N.*` (llama.cpp's tensor names), the sum over calibration
/// tokens of each input column's square, and how many tokens went in; an MoE tensor's entry
/// holds one slice of sums and one count per expert (the tokens routed to it). Quantizing a
/// weight then weights each column's rounding error by its mean squared input.
///
/// Files: llama.cpp's GGUF format (`NAME.in_sum2` [slices, columns] and `NAME.counts`
/// [slices, 1], f32, with `imatrix.datasets`, `imatrix.chunk_count` and `imatrix.chunk_size`),
/// read and written; and its older `.dat` format, read.
public struct ImportanceMatrix: Sendable {
    /// One weight's statistics: `sums` holds `counts.count` slices of squared-input sums.
    public struct Entry: Sendable, Equatable {
        public var sums: [Float]
        public var counts: [Float]

        public init(sums: [Float], counts: [Float]) {
            self.sums = sums
            self.counts = counts
        }
    }

    public var entries: [String: Entry]
    /// The calibration files it was computed on.
    public var datasets: [String]
    /// Chunks of `chunkSize` tokens it was computed on.
    public var chunkCount: Int
    public var chunkSize: Int
    /// Whether it came from the `.dat` format, whose sums are already means times the call count.
    public var isLegacy: Bool

    public init(entries: [String: Entry] = [:], datasets: [String] = [], chunkCount: Int = 0, chunkSize: Int = 0, isLegacy: Bool = false) {
        self.entries = entries
        self.datasets = datasets
        self.chunkCount = chunkCount
        self.chunkSize = chunkSize
        self.isLegacy = isLegacy
    }

    /// llama-quantize's weights for tensor `name` whose rows have `columns` values, in
    /// `slices` slices (its experts, or 1): each slice's sums over its count (1 for a slice no
    /// token reached), or the legacy means. Nil when there is no entry, or (as llama-quantize
    /// allows only for it) when the token embedding's entry has another size. A wrong size, or a
    /// value that is not finite, is an error naming `path` and the entry.
    public func weights(for name: String, columns: Int, slices: Int, path: String) throws(ModelError) -> [Float]? {
        guard let e = entries[name] else { return nil }
        guard e.sums.count == columns * slices, !e.counts.isEmpty, e.sums.count % e.counts.count == 0 else {
            if name == "token_embd.weight" { return nil }
            throw .invalidFile(path: path, field: name, reason: "holds \(e.sums.count) values for \(e.counts.count) slice(s); the tensor needs \(columns) x \(slices)")
        }
        var out = [Float](repeating: 1, count: e.sums.count)
        if isLegacy {
            let calls = e.counts[0]
            for i in out.indices { out[i] = calls > 0 ? e.sums[i] / calls : e.sums[i] }
        } else {
            let n = e.sums.count / e.counts.count
            for (s, count) in e.counts.enumerated() where count > 0 {
                for i in (s * n)..<((s + 1) * n) { out[i] = e.sums[i] / count }
            }
        }
        guard out.allSatisfy(\.isFinite) else { throw .invalidFile(path: path, field: name, reason: "holds a value that is not finite") }
        return out
    }

    /// The metadata llama-quantize writes into a file it quantized with this matrix (from file `path`).
    public func quantizeRecords(path: String) -> [GGUFWriter.Record] {
        var records: [GGUFWriter.Record] = [.value(key: "quantize.imatrix.file", .string(String(path.utf8.prefix(127)) ?? path))]
        if let first = datasets.first { records.append(.value(key: "quantize.imatrix.dataset", .string(String(first.utf8.prefix(127)) ?? first))) }
        records.append(.value(key: "quantize.imatrix.entries_count", .u32(UInt32(clamping: entries.count))))
        if chunkCount > 0 { records.append(.value(key: "quantize.imatrix.chunks_count", .u32(UInt32(clamping: chunkCount)))) }
        return records
    }
}

extension ImportanceMatrix {
    /// Reads `path`: a GGUF importance matrix, or the older `.dat` format.
    public init(path: String) throws(ModelError) {
        if GGUFFile.isGGUF(path: path) { try self.init(gguf: try GGUFFile(path: path)) } else { try self.init(legacyAt: path) }
        guard !entries.isEmpty else { throw .invalidFile(path: path, field: "(entries)", reason: "holds no importance entries") }
    }

    init(gguf file: GGUFFile) throws(ModelError) {
        self.init()
        datasets = file.metadata["imatrix.datasets"]?.array?.compactMap(\.string) ?? []
        for key in ["imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"] where file.metadata[key] == nil {
            throw .invalidFile(path: file.path, field: key, reason: "is missing (llama-quantize needs it)")
        }
        chunkCount = file.metadata["imatrix.chunk_count"]?.int ?? 0
        chunkSize = file.metadata["imatrix.chunk_size"]?.int ?? 0
        for name in file.tensorNames where name.hasSuffix(".in_sum2") {
            let base = String(name.dropLast(".in_sum2".count)), countsName = base + ".counts"
            guard file.has(countsName) else { throw .missingTensor(path: file.path, name: countsName) }
            let sums = try file.tensor(name), counts = try file.tensor(countsName)
            guard sums.dtype == .f32, counts.dtype == .f32 else {
                throw .unsupportedDType(path: file.path, name: name, dtype: "\(sums.dtype)/\(counts.dtype) (sums and counts must be f32)")
            }
            guard counts.count > 0, sums.count % counts.count == 0 else {
                throw .invalidFile(path: file.path, field: name, reason: "\(sums.count) sums do not split into \(counts.count) slices")
            }
            entries[base] = Entry(sums: sums.toFloats(), counts: counts.toFloats().map { Float(Int(exactly: $0.rounded()) ?? 0) })
        }
        for name in file.tensorNames where name.hasSuffix(".counts") && entries[String(name.dropLast(".counts".count))] == nil {
            throw .missingTensor(path: file.path, name: String(name.dropLast(".counts".count)) + ".in_sum2")
        }
    }

    /// llama.cpp's `.dat` format: an i32 entry count; per entry its name (i32 length, bytes),
    /// an i32 call count, an i32 value count and the f32 values; optionally the chunk count and
    /// the dataset name. Every length is checked against the bytes left before it is used.
    init(legacyAt path: String) throws(ModelError) {
        self.init(isLegacy: true)
        let mapped = try MappedFile.model(path)
        var at = 0
        func int32(_ field: String) throws(ModelError) -> Int {
            guard at + 4 <= mapped.byteCount else { throw .invalidFile(path: path, field: field, reason: "the file ends at byte \(mapped.byteCount)") }
            var v: Int32 = 0
            memcpy(&v, mapped.base + at, 4)
            at += 4
            return Int(v)
        }
        func bytes(_ n: Int, _ field: String) throws(ModelError) -> UnsafeRawBufferPointer {
            guard n >= 0, n <= mapped.byteCount - at else { throw .invalidFile(path: path, field: field, reason: "\(n) bytes do not fit in the file") }
            defer { at += n }
            return UnsafeRawBufferPointer(start: mapped.base + at, count: n)
        }
        let n = try int32("(entry count)")
        guard n >= 1 else { throw .invalidFile(path: path, field: "(entry count)", reason: "is \(n): neither a GGUF nor a .dat importance matrix") }
        for i in 0..<n {
            let len = try int32("entry \(i) name length")
            guard len > 0, len <= 4096 else { throw .invalidFile(path: path, field: "entry \(i)", reason: "its name length \(len) is not in 1...4096") }
            let name = String(decoding: try bytes(len, "entry \(i) name"), as: UTF8.self)
            let calls = try int32("\(name) call count"), values = try int32("\(name) value count")
            guard values >= 1, values <= (mapped.byteCount - at) / 4 else {
                throw .invalidFile(path: path, field: name, reason: "\(values) values do not fit in the file")
            }
            let raw = try bytes(values * 4, name)
            entries[name] = Entry(sums: (0..<values).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }, counts: [Float(calls)])
        }
        if at + 4 <= mapped.byteCount {
            chunkCount = try int32("(chunk count)")
            if at + 4 <= mapped.byteCount, case let len = try int32("(dataset length)"), len > 0, len <= mapped.byteCount - at {
                datasets = [String(decoding: try bytes(len, "(dataset)"), as: UTF8.self)]
            }
        }
    }

    /// Writes this matrix to `path` in llama.cpp's GGUF format (entries by name), atomically.
    public func write(to path: String) throws(ModelError) {
        var tensors: [GGUFWriter.TensorEntry] = []
        for name in entries.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            let e = entries[name]!  // safe: the key comes from entries
            let slices = e.counts.count
            for (suffix, values, columns) in [(".in_sum2", e.sums, e.sums.count / max(1, slices)), (".counts", e.counts, 1)] {
                let t = Tensor(shape: [values.count], values: values)
                // ggml writes no trailing dimension of 1: one slice is a vector.
                let shape = slices == 1 ? [columns] : [slices, columns]
                tensors.append(GGUFWriter.TensorEntry(name: name + suffix, shape: shape, dtype: .f32) { sink throws(ModelError) in
                    try sink.write(UnsafeRawBufferPointer(start: t.rawPointer, count: t.byteCount))
                })
            }
        }
        let records: [GGUFWriter.Record] = [
            .value(key: "general.type", .string("imatrix")), .value(key: "imatrix.datasets", .stringArray(datasets)),
            .value(key: "imatrix.chunk_count", .u32(UInt32(clamping: chunkCount))),
            .value(key: "imatrix.chunk_size", .u32(UInt32(clamping: chunkSize))),
        ]
        try GGUFWriter.write(to: path, records: records, tensors: tensors)
    }
}
