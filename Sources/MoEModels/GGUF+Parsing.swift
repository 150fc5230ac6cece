import Foundation
import MoECore

/// Reads a GGUF header, metadata and tensor table from a mapped file, bounding every count and
/// size by the bytes that are there. Layout (little-endian): "GGUF", version u32, tensor count
/// u64, metadata count u64; each metadata entry a string key, a u32 type and its value; each
/// tensor a string name, u32 dimension count, u64 dimensions (innermost first), u32 ggml type,
/// u64 offset into the data section; then the data section at the next multiple of the
/// alignment. A string is a u64 length and its UTF-8 bytes.
struct GGUFParser {
    let file: MappedFile
    let path: String
    var at = 0

    /// Deepest nesting of arrays in metadata.
    static let maxArrayDepth = 3
    /// Most dimensions a tensor may have (ggml's GGML_MAX_DIMS).
    static let maxDimensions = 4

    init(file: MappedFile, path: String) {
        self.file = file
        self.path = path
    }

    /// ggml's type ids for the types MoEKit reads.
    static let types: [UInt32: DType] = [0: .f32, 1: .f16, 30: .bf16, 8: .q8_0, 2: .q4_0, 3: .q4_1, 6: .q5_0, 7: .q5_1,
                                          10: .q2_K, 11: .q3_K, 12: .q4_K, 13: .q5_K, 14: .q6_K, 20: .iq4_NL, 23: .iq4_XS,
                                          39: .mxfp4]

    func fail(_ field: String, _ reason: String) -> ModelError { .invalidFile(path: path, field: field, reason: reason) }

    var remaining: Int { file.byteCount - at }

    mutating func bytes(_ n: Int, _ field: String) throws(ModelError) -> UnsafeRawPointer {
        guard n >= 0, n <= remaining else { throw fail(field, "needs \(n) bytes at offset \(at); the file ends \(remaining) bytes on (truncated?)") }
        defer { at += n }
        return file.base + at
    }

    mutating func u32(_ field: String) throws(ModelError) -> UInt32 { UInt32(littleEndian: try bytes(4, field).loadUnaligned(as: UInt32.self)) }
    mutating func u64(_ field: String) throws(ModelError) -> UInt64 { UInt64(littleEndian: try bytes(8, field).loadUnaligned(as: UInt64.self)) }

    /// A u64 count, bounded by the bytes left at `minimumBytes` each.
    mutating func count(_ field: String, minimumBytes: Int) throws(ModelError) -> Int {
        let n = try u64(field)
        guard n <= UInt64(remaining / max(1, minimumBytes)) else {
            throw fail(field, "count \(n) cannot fit in the \(remaining) bytes left")
        }
        return Int(n)
    }

    mutating func string(_ field: String) throws(ModelError) -> String {
        let n = try count(field, minimumBytes: 1)
        let p = try bytes(n, field)
        guard let s = String(validating: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self) else {
            throw fail(field, "not UTF-8")
        }
        return s
    }

    mutating func value(type: UInt32, _ field: String, depth: Int = 0) throws(ModelError) -> GGUFValue {
        switch type {
        case 0: return .uint(UInt64(try bytes(1, field).load(as: UInt8.self)))
        case 1: return .int(Int64(try bytes(1, field).load(as: Int8.self)))
        case 2: return .uint(UInt64(UInt16(littleEndian: try bytes(2, field).loadUnaligned(as: UInt16.self))))
        case 3: return .int(Int64(Int16(littleEndian: try bytes(2, field).loadUnaligned(as: Int16.self))))
        case 4: return .uint(UInt64(try u32(field)))
        case 5: return .int(Int64(Int32(bitPattern: try u32(field))))
        case 6: return .float(Double(Float(bitPattern: try u32(field))))
        case 7:
            let b = try bytes(1, field).load(as: UInt8.self)
            guard b <= 1 else { throw fail(field, "a bool must be 0 or 1, got \(b)") }
            return .bool(b == 1)
        case 8: return .string(try string(field))
        case 9:
            guard depth < Self.maxArrayDepth else { throw fail(field, "arrays nested deeper than \(Self.maxArrayDepth)") }
            let elementType = try u32(field)
            let n = try count(field, minimumBytes: Self.minimumBytes(elementType))
            var out: [GGUFValue] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try value(type: elementType, field, depth: depth + 1)) }
            return .array(out)
        case 10: return .uint(try u64(field))
        case 11: return .int(Int64(bitPattern: try u64(field)))
        case 12: return .float(Double(bitPattern: try u64(field)))
        default: throw fail(field, "unknown metadata type \(type)")
        }
    }

    /// The fewest bytes a value of `type` takes (so an array's count can be bounded up front).
    static func minimumBytes(_ type: UInt32) -> Int {
        switch type {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 8, 10, 11, 12: return 8
        case 9: return 12
        default: return 1
        }
    }

    /// A parsed header: version, metadata, the tensor table (by name and in file order), the
    /// data section's alignment and the metadata records.
    typealias Parsed = (version: Int, metadata: [String: GGUFValue], tensors: [String: GGUFFile.TensorInfo],
                        names: [String], alignment: Int, records: [GGUFFile.Record])

    mutating func parse() throws(ModelError) -> Parsed {
        let magic = try bytes(4, "magic")
        guard magic.load(fromByteOffset: 0, as: UInt8.self) == 0x47, magic.load(fromByteOffset: 1, as: UInt8.self) == 0x47,
              magic.load(fromByteOffset: 2, as: UInt8.self) == 0x55, magic.load(fromByteOffset: 3, as: UInt8.self) == 0x46 else {
            throw fail("magic", "not a GGUF file (no \"GGUF\" at the start)")
        }
        let version = try u32("version")
        guard version == 2 || version == 3 else { throw fail("version", "GGUF version \(version); MoEKit reads 2 and 3") }
        let tensorCount = try count("tensor_count", minimumBytes: 24)
        let kvCount = try count("metadata_kv_count", minimumBytes: 13)
        var metadata: [String: GGUFValue] = [:]
        var records: [GGUFFile.Record] = []
        for i in 0..<kvCount {
            let start = at
            let key = try string("metadata[\(i)].key")
            let type = try u32(key)
            guard metadata[key] == nil else { throw fail(key, "the key appears twice") }
            metadata[key] = try value(type: type, key)
            records.append(GGUFFile.Record(key: key, bytes: start..<at))
        }
        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.int, v > 0, v <= 1 << 20, v & (v - 1) == 0 else {
                throw fail("general.alignment", "must be a power of two up to 2^20, got \(a)")
            }
            alignment = v
        }
        var infos: [(name: String, dims: [Int], type: UInt32, offset: UInt64)] = []
        infos.reserveCapacity(tensorCount)
        for i in 0..<tensorCount {
            let name = try string("tensor[\(i)].name")
            let n = try u32(name)
            guard n >= 1, n <= UInt32(Self.maxDimensions) else { throw fail(name, "\(n) dimensions; 1 to \(Self.maxDimensions) are allowed") }
            var dims: [Int] = []
            for _ in 0..<n {
                let d = try u64(name)
                guard d <= UInt64(Int32.max) else { throw fail(name, "dimension \(d) is too large") }
                dims.append(Int(d))
            }
            infos.append((name, dims, try u32(name), try u64(name)))
        }
        let dataStart = (at + alignment - 1) / alignment * alignment
        // A vocabulary-only file ends with its metadata; with tensors, their data must follow.
        guard infos.isEmpty || dataStart <= file.byteCount else {
            throw fail("data", "the data section would start past the end of the file")
        }
        var tensors: [String: GGUFFile.TensorInfo] = [:], names: [String] = []
        for info in infos {
            guard tensors[info.name] == nil else { throw fail(info.name, "the tensor appears twice") }
            guard let dtype = Self.types[info.type] else {
                throw .unsupportedDType(path: path, name: info.name, dtype: "ggml type \(info.type)")
            }
            guard let elements = Tensor.checkedElementCount(info.dims) else { throw fail(info.name, "too many elements") }
            guard info.dims[0] % dtype.blockElements == 0 else {
                throw fail(info.name, "rows of \(info.dims[0]) are not a whole number of \(dtype) blocks of \(dtype.blockElements)")
            }
            guard info.offset % UInt64(alignment) == 0, info.offset <= UInt64(file.byteCount) else {
                throw fail(info.name, "offset \(info.offset) is not aligned to \(alignment) or lies past the end")
            }
            let start = dataStart + Int(info.offset)
            let (end, overflow) = start.addingReportingOverflow(elements > Int.max / 64 ? Int.max : dtype.storageBytes(elements: elements))
            guard !overflow, end <= file.byteCount else {
                throw .invalidFile(path: path, field: info.name, reason: "its data runs past the end of the file (truncated?)")
            }
            tensors[info.name] = GGUFFile.TensorInfo(name: info.name, shape: info.dims.reversed(), dtype: dtype, offset: start)
            names.append(info.name)
        }
        return (Int(version), metadata, tensors, names, alignment, records)
    }
}
