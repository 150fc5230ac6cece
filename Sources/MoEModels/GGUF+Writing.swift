import Foundation
import MoECore

/// Writes GGUF files (version 3), streamed and atomic: the header, metadata records and tensor
/// table first, then each tensor's bytes as its producer hands them over, padded to the
/// alignment, into a temporary file renamed over the target at the end. Only one tensor's
/// bytes need be in memory at a time.
public enum GGUFWriter {
    /// A metadata value with its exact GGUF type.
    public enum Value: Sendable {
        case u16(UInt16), u32(UInt32), i32(Int32), u64(UInt64), f32(Float), bool(Bool), string(String)
        case stringArray([String]), i32Array([Int32]), f32Array([Float])
    }

    /// One metadata record: copied bytes of a record of another GGUF file (`GGUFFile.records`),
    /// or a key and a typed value.
    public enum Record {
        case copied(key: String, bytes: Data)
        case value(key: String, Value)

        public var key: String {
            switch self {
            case let .copied(key, _), let .value(key, _): return key
            }
        }
    }

    /// One tensor to write: its name, row-major shape and stored type, and a body that writes
    /// exactly `dtype.storageBytes(elements:)` bytes of it to the sink.
    public struct TensorEntry {
        public var name: String
        public var shape: [Int]
        public var dtype: DType
        public var write: (AtomicFile.Sink) throws(ModelError) -> Void

        public init(name: String, shape: [Int], dtype: DType, write: @escaping (AtomicFile.Sink) throws(ModelError) -> Void) {
            (self.name, self.shape, self.dtype, self.write) = (name, shape, dtype, write)
        }

        var byteCount: Int { dtype.storageBytes(elements: shape.reduce(1, *)) }
    }

    /// ggml's type id of a stored type.
    static func ggmlType(_ dtype: DType) -> UInt32 {
        GGUFParser.types.first { $0.value == dtype }!.key
    }

    /// Writes `records` and `tensors` (in the given orders) to `path`; `alignment` must be the
    /// value of a `general.alignment` record if there is one (32 otherwise).
    public static func write(to path: String, records: [Record], tensors: [TensorEntry], alignment: Int = 32) throws(ModelError) {
        for names in [records.map(\.key), tensors.map(\.name)] {
            var seen = Set<String>()
            for name in names where !seen.insert(name).inserted {
                throw .invalidFile(path: path, field: name, reason: "would be written twice (a GGUF reader refuses the file)")
            }
        }
        var head = Data()
        head.append(contentsOf: Array("GGUF".utf8))
        append(UInt32(3), to: &head)
        append(UInt64(tensors.count), to: &head)
        append(UInt64(records.count), to: &head)
        for record in records {
            switch record {
            case let .copied(_, bytes): head.append(bytes)
            case let .value(key, value): encode(key: key, value: value, into: &head)
            }
        }
        var offset = 0
        for t in tensors {
            appendString(t.name, to: &head)
            append(UInt32(t.shape.count), to: &head)
            for d in t.shape.reversed() { append(UInt64(d), to: &head) }
            append(ggmlType(t.dtype), to: &head)
            append(UInt64(offset), to: &head)
            offset += padded(t.byteCount, alignment)
        }
        head.append(Data(count: padded(head.count, alignment) - head.count))
        try AtomicFile.write(to: path) { (out: AtomicFile.Sink) throws(ModelError) in
            try out.write(head)
            for t in tensors {
                try t.write(out)
                let pad = padded(t.byteCount, alignment) - t.byteCount
                if pad > 0 { try out.write(Data(count: pad)) }
            }
        }
    }

    static func padded(_ n: Int, _ alignment: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    static func append<T: FixedWidthInteger>(_ v: T, to data: inout Data) {
        withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) }
    }

    static func appendString(_ s: String, to data: inout Data) {
        let bytes = Array(s.utf8)
        append(UInt64(bytes.count), to: &data)
        data.append(contentsOf: bytes)
    }

    /// GGUF type ids of the values written here.
    enum TypeID: UInt32 { case u16 = 2, u32 = 4, i32 = 5, f32 = 6, bool = 7, string = 8, array = 9, u64 = 10 }

    static func encode(key: String, value: Value, into data: inout Data) {
        appendString(key, to: &data)
        switch value {
        case let .u16(v): append(TypeID.u16.rawValue, to: &data); append(v, to: &data)
        case let .u32(v): append(TypeID.u32.rawValue, to: &data); append(v, to: &data)
        case let .i32(v): append(TypeID.i32.rawValue, to: &data); append(v, to: &data)
        case let .u64(v): append(TypeID.u64.rawValue, to: &data); append(v, to: &data)
        case let .f32(v): append(TypeID.f32.rawValue, to: &data); append(v.bitPattern, to: &data)
        case let .bool(v): append(TypeID.bool.rawValue, to: &data); data.append(v ? 1 : 0)
        case let .string(v): append(TypeID.string.rawValue, to: &data); appendString(v, to: &data)
        case let .stringArray(vs):
            append(TypeID.array.rawValue, to: &data); append(TypeID.string.rawValue, to: &data); append(UInt64(vs.count), to: &data)
            for v in vs { appendString(v, to: &data) }
        case let .i32Array(vs):
            append(TypeID.array.rawValue, to: &data); append(TypeID.i32.rawValue, to: &data); append(UInt64(vs.count), to: &data)
            for v in vs { append(v, to: &data) }
        case let .f32Array(vs):
            append(TypeID.array.rawValue, to: &data); append(TypeID.f32.rawValue, to: &data); append(UInt64(vs.count), to: &data)
            for v in vs { append(v.bitPattern, to: &data) }
        }
    }
}
