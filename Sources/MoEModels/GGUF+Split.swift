import Foundation
import MoECore

/// Split GGUF files, as `llama-gguf-split --split` writes them (and as large models are
/// published): `PREFIX-00001-of-0000N.gguf` ... `PREFIX-0000N-of-0000N.gguf`, each file a whole
/// GGUF with `split.no` (u16, 0-based), `split.count` (u16, N) and `split.tensors.count` (i32,
/// the tensors of all N), the model's metadata in the first alone, and each tensor in exactly
/// one file. Opening the first opens the set, as llama.cpp does; every file is mapped and
/// checked like a single file, and each tensor is a view of the file that holds it.
extension GGUFFile {
    /// Most files a split set may have: `split.count` is a u16.
    static let maxShards = Int(UInt16.max)

    /// The keys that describe a file's place in a split set: a rewrite into one file (quantize,
    /// prune) leaves them out.
    public static let splitKeys: Set<String> = ["split.no", "split.count", "split.tensors.count"]

    /// The tensors of `first` (already parsed) and, when it opens a split set, of the other
    /// files, merged in file order, with the mapped files.
    static func splitShards(first: MappedFile, parsed: GGUFParser.Parsed) throws(ModelError)
        -> (tensors: [String: TensorInfo], names: [String], files: [MappedFile]) {
        let path = first.path
        guard let countValue = parsed.metadata["split.count"] else { return (parsed.tensors, parsed.names, [first]) }
        guard let count = countValue.int, count >= 0, count <= maxShards else {
            throw .invalidFile(path: path, field: "split.count", reason: "must be 0 to \(maxShards), got \(countValue)")
        }
        // A set of one is a single file, and so is 0: what `llama-gguf-split --merge` writes.
        if count <= 1 { return (parsed.tensors, parsed.names, [first]) }
        let number = try splitNumber(parsed.metadata, path: path, count: count)
        let prefix = try splitPrefix(path, count: count)
        guard number == 0 else {
            throw .invalidFile(path: path, field: "split.no", reason: "this is file \(number + 1) of \(count) of a split GGUF: "
                + "open the first, \(splitPath(prefix: prefix, index: 0, count: count))")
        }
        var tensors = parsed.tensors, names = parsed.names, files = [first]
        for index in 1..<count {
            let shardPath = splitPath(prefix: prefix, index: index, count: count)
            let file: MappedFile
            do { file = try MappedFile(path: shardPath) } catch {
                let reason: String
                if case let .io(_, why) = error { reason = why } else { reason = error.description }
                throw .io(path: shardPath, reason: "file \(index + 1) of \(count) of the split GGUF \(path): \(reason)")
            }
            var parser = GGUFParser(file: file, path: shardPath)
            let shard = try parser.parse()
            guard let c = shard.metadata["split.count"]?.int, c == count else {
                throw .invalidFile(path: shardPath, field: "split.count", reason: "must be \(count), as in \(path); got \(shard.metadata["split.count"].map { "\($0)" } ?? "none")")
            }
            let n = try splitNumber(shard.metadata, path: shardPath, count: count)
            guard n == index else { throw .invalidFile(path: shardPath, field: "split.no", reason: "must be \(index) (file \(index + 1) of \(count)), got \(n)") }
            for name in shard.names {
                if let other = tensors[name] {
                    throw .invalidFile(path: shardPath, field: name, reason: "the tensor is also in \(files[other.shard].path)")
                }
                var info = shard.tensors[name]!
                info.shard = index
                tensors[name] = info
                names.append(name)
            }
            files.append(file)
        }
        if let total = parsed.metadata["split.tensors.count"] {
            guard total.int == names.count else {
                throw .invalidFile(path: path, field: "split.tensors.count", reason: "is \(total), but the \(count) files hold \(names.count) tensors")
            }
        }
        return (tensors, names, files)
    }

    /// `split.no` of a file's metadata, checked against the set's size.
    static func splitNumber(_ metadata: [String: GGUFValue], path: String, count: Int) throws(ModelError) -> Int {
        guard let v = metadata["split.no"] else { throw .invalidFile(path: path, field: "split.no", reason: "missing in a split GGUF (split.count \(count))") }
        guard let n = v.int, n >= 0, n < count else { throw .invalidFile(path: path, field: "split.no", reason: "must be 0 to \(count - 1), got \(v)") }
        return n
    }

    /// The part of a split file's path before `-0000K-of-0000N.gguf`; a typed error when the
    /// name does not end so with N = `count` (the other files could not be found).
    static func splitPrefix(_ path: String, count: Int) throws(ModelError) -> String {
        let tail = String(format: "-of-%05d.gguf", count)
        let number = path.hasSuffix(tail) ? path.dropLast(tail.count).suffix(6) : ""
        guard number.count == 6, number.first == "-", number.dropFirst().allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw .invalidFile(path: path, field: "split.count", reason: "\(count) files, but the name does not end in "
                + String(format: "-00001-of-%05d.gguf", count) + " as llama-gguf-split names them, so the others cannot be found")
        }
        return String(path.dropLast(tail.count + 6))
    }

    /// The path of file `index` (0-based) of a set of `count`, llama.cpp's `llama_split_path`.
    static func splitPath(prefix: String, index: Int, count: Int) -> String {
        prefix + String(format: "-%05d-of-%05d.gguf", index + 1, count)
    }
}
