import Foundation
import MoECore

extension GGUFWriter {
    /// One file (`write`), or with `splitMaxBytes` a split set of files of at most that much
    /// tensor data (`writeSplit`); returns the files written.
    @discardableResult
    public static func write(to path: String, records: [Record], tensors: [TensorEntry], alignment: Int = 32,
                             splitMaxBytes: Int?) throws(ModelError) -> [String] {
        if let splitMaxBytes {
            return try writeSplit(to: path, records: records, tensors: tensors, alignment: alignment, maxBytes: splitMaxBytes)
        }
        try write(to: path, records: records, tensors: tensors, alignment: alignment)
        return [path]
    }

    /// Writes `tensors` as a split set, as `llama-gguf-split --split-max-size` does: in order,
    /// into files of at most `maxBytes` of tensor data each (a larger tensor alone in its file),
    /// named from `path` (which must end in `.gguf`) `PREFIX-0000K-of-0000N.gguf`; `records` in
    /// the first file only (any split keys among them dropped), and in every file `split.no`,
    /// `split.count` (u16) and `split.tensors.count` (i32), the types llama.cpp reads them as.
    /// Each file is written atomically; the first file opens the set (`GGUFFile`). `alignment`
    /// is the first file's (its `general.alignment`); the others, which carry no such record,
    /// take GGUF's default of 32. Returns the files' paths.
    public static func writeSplit(to path: String, records: [Record], tensors: [TensorEntry], alignment: Int = 32,
                                  maxBytes: Int) throws(ModelError) -> [String] {
        guard path.hasSuffix(".gguf") else {
            throw .invalidConfig(path: path, field: "split", reason: "a split set's path must end in .gguf (its files are PREFIX-0000K-of-0000N.gguf)")
        }
        guard maxBytes > 0 else { throw .invalidConfig(path: path, field: "split", reason: "the largest file must hold more than 0 bytes") }
        var groups: [[TensorEntry]] = [], bytes = 0
        for t in tensors {
            if groups.isEmpty || (bytes + t.byteCount > maxBytes && !groups[groups.count - 1].isEmpty) {
                groups.append([])
                bytes = 0
            }
            groups[groups.count - 1].append(t)
            bytes += t.byteCount
        }
        if groups.isEmpty { groups = [[]] }
        guard groups.count <= Int(UInt16.max) else {
            throw .invalidConfig(path: path, field: "split", reason: "\(groups.count) files: a set holds at most \(UInt16.max)")
        }
        let prefix = String(path.dropLast(".gguf".count))
        let paths = groups.indices.map { GGUFFile.splitPath(prefix: prefix, index: $0, count: groups.count) }
        let kept = records.filter { !GGUFFile.splitKeys.contains($0.key) }
        for (k, group) in groups.enumerated() {
            let split: [Record] = [.value(key: "split.no", .u16(UInt16(k))), .value(key: "split.count", .u16(UInt16(groups.count))),
                                   .value(key: "split.tensors.count", .i32(Int32(clamping: tensors.count)))]
            try write(to: paths[k], records: (k == 0 ? kept : []) + split, tensors: group, alignment: k == 0 ? alignment : 32)
        }
        return paths
    }
}
