import Foundation
import MoECore

/// A GGUF file (llama.cpp's format, versions 2 and 3): its metadata and tensors, every tensor a
/// zero-copy view of the memory-mapped file in its stored type (F32, F16, BF16 or a ggml block
/// format), the data section's alignment honoured.
///
/// The file is untrusted: every count and size is bounded by the bytes that are there before
/// anything is read or allocated, and every problem is a `ModelError` naming the file and the
/// key or tensor (`GGUFFile+Parsing.swift`).
///
/// ```swift
/// let file = try GGUFFile(path: "OLMoE-1B-7B-Q4_K_M.gguf")
/// file.metadata["olmoe.expert_count"]?.int          // 64
/// let w = try file.tensor("blk.0.ffn_down_exps.weight")  // [64, 2048, 1024] q4_k, no copy
/// ```
public final class GGUFFile: @unchecked Sendable {
    /// One tensor's place in the file.
    public struct TensorInfo: Sendable, Equatable {
        public var name: String
        /// Row-major (GGUF lists dimensions innermost first; this is that list reversed).
        public var shape: [Int]
        public var dtype: DType
        /// Where its data starts, from the start of its file.
        public var offset: Int
        /// The file of a split GGUF that holds it (`shardPaths`), 0 for a single file.
        public var shard = 0
    }

    public let path: String
    public let version: Int
    /// Every metadata key and value (of the first file, for a split GGUF: the others hold only
    /// their `split.*` keys).
    public let metadata: [String: GGUFValue]
    /// Tensors by name, and their names in file order (across the files of a split GGUF).
    public let tensors: [String: TensorInfo]
    public let tensorNames: [String]
    /// The data section's alignment (`general.alignment`, 32 when absent).
    public let alignment: Int
    /// Every metadata record (key, type and value) as it lies in the file, in file order: what
    /// a rewrite copies to keep each value's exact GGUF type.
    public let records: [Record]

    /// One metadata record's place in the file.
    public struct Record: Sendable, Equatable {
        public var key: String
        /// Its bytes, from the start of the file: key, type and value.
        public var bytes: Range<Int>
    }
    /// The first (or only) file, whose metadata and records these are.
    let file: MappedFile
    /// Every file of a split GGUF in order (`llama-gguf-split`'s `PREFIX-00001-of-0000N.gguf`
    /// ...), the first being `file`; one for a single file.
    let shards: [MappedFile]
    /// The paths of `shards`.
    public var shardPaths: [String] { shards.map(\.path) }

    /// Maps and parses `path`; for the first file of a split GGUF (`split.count` above 1, as
    /// `llama-gguf-split` writes), every other file of the set too (`GGUF+Split.swift`). With
    /// `alone`, any file of a set is read by itself: its own metadata and tensors only.
    public init(path: String, alone: Bool = false) throws(ModelError) {
        self.path = path
        file = try MappedFile.model(path)
        var parser = GGUFParser(file: file, path: path)
        let parsed = try parser.parse()
        (version, metadata, alignment) = (parsed.version, parsed.metadata, parsed.alignment)
        records = parsed.records
        let split = alone ? (tensors: parsed.tensors, names: parsed.names, files: [file]) : try Self.splitShards(first: file, parsed: parsed)
        (tensors, tensorNames, shards) = (split.tensors, split.names, split.files)
    }

    /// The tensor `name`, a zero-copy view of the file that holds it.
    public func tensor(_ name: String) throws(ModelError) -> Tensor {
        guard let info = tensors[name] else { throw .missingTensor(path: path, name: name) }
        let holder = shards[info.shard]
        do {
            return try Tensor(mapping: holder, byteOffset: info.offset, shape: info.shape, dtype: info.dtype, field: name)
        } catch {
            throw .invalidFile(path: holder.path, field: name, reason: error.description)
        }
    }

    /// The bytes of a metadata record (`records`), a view of the mapped file.
    public func recordBytes(_ record: Record) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: file.base + record.bytes.lowerBound, count: record.bytes.count)
    }

    /// The tensor `name` if present.
    public func has(_ name: String) -> Bool { tensors[name] != nil }

    /// The architecture (`general.architecture`), as llama.cpp names it (`llama`, `qwen3moe`, ...).
    public var architecture: String? { metadata["general.architecture"]?.string }
}

/// A GGUF metadata value.
public enum GGUFValue: Sendable, Equatable {
    case uint(UInt64), int(Int64), float(Double), bool(Bool), string(String)
    case array([GGUFValue])

    /// The value as an `Int`, if it is an integer that fits.
    public var int: Int? {
        switch self {
        case let .uint(v): return v <= UInt64(Int.max) ? Int(v) : nil
        case let .int(v): return Int(exactly: v)
        default: return nil
        }
    }
    /// The value as a `Double`, if it is a number.
    public var double: Double? {
        switch self {
        case let .float(v): return v
        case let .uint(v): return Double(v)
        case let .int(v): return Double(v)
        default: return nil
        }
    }
    public var string: String? { if case let .string(s) = self { return s } else { return nil } }
    public var bool: Bool? { if case let .bool(b) = self { return b } else { return nil } }
    public var array: [GGUFValue]? { if case let .array(a) = self { return a } else { return nil } }
}

extension GGUFFile {
    /// Whether `path` is a GGUF file: a regular file named `.gguf`, or starting with "GGUF".
    public static func isGGUF(path: String) -> Bool {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { return false }
        if path.lowercased().hasSuffix(".gguf") { return true }
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: 4)) == Data("GGUF".utf8)
    }
}
