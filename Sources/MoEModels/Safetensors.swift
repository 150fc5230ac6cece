import Foundation
import MoECore

/// One `.safetensors` file, memory-mapped: an 8-byte little-endian header length, a JSON
/// header `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
/// then the tensor bytes (offsets are relative to the end of the header).
///
/// Opening validates the whole header: a file too short for its length field, a header
/// length past the end, malformed JSON, offsets out of range or disagreeing with shape and
/// dtype each throw a `ModelError` naming the file and the field. Tensors are zero-copy views.
public final class SafetensorsFile: @unchecked Sendable {
    /// One tensor's header entry.
    public struct Entry: Sendable, Equatable {
        /// The dtype as spelled in the file ("BF16", "F32", "I64", ...).
        public let dtypeName: String
        public let shape: [Int]
        /// Byte range in the file.
        public let begin: Int, end: Int
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    let file: MappedFile

    /// Safetensors caps its JSON header at 100 MB.
    static let maxHeader = 100_000_000

    public init(path: String) throws(ModelError) {
        self.path = path
        file = try MappedFile.model(path)
        let size = file.byteCount
        guard size >= 8 else { throw .invalidFile(path: path, field: "header length", reason: "file is \(size) bytes, too short for the 8-byte header length") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(file.base.load(fromByteOffset: i, as: UInt8.self)) << (8 * UInt64(i)) }
        guard n <= UInt64(Self.maxHeader) else { throw .invalidFile(path: path, field: "header length", reason: "\(n) bytes exceeds the 100 MB limit") }
        let headerLength = Int(n)
        guard 8 + headerLength <= size else {
            throw .invalidFile(path: path, field: "header length", reason: "header of \(headerLength) bytes runs past the end of the \(size)-byte file")
        }
        let headerData = Data(bytes: file.base + 8, count: headerLength)
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: headerData)
        } catch let DecodingError.keyNotFound(key, ctx) {
            throw .invalidFile(path: path, field: Self.field(ctx.codingPath + [key]), reason: "missing")
        } catch let DecodingError.typeMismatch(t, ctx) {
            throw .invalidFile(path: path, field: Self.field(ctx.codingPath), reason: "expected \(t)")
        } catch let DecodingError.valueNotFound(t, ctx) {
            throw .invalidFile(path: path, field: Self.field(ctx.codingPath), reason: "expected \(t), found null")
        } catch let DecodingError.dataCorrupted(ctx) {
            throw .invalidFile(path: path, field: Self.field(ctx.codingPath), reason: "malformed JSON header: \(ctx.debugDescription)")
        } catch {
            throw .invalidFile(path: path, field: "header", reason: "\(error)")
        }
        let dataStart = 8 + headerLength, dataSize = size - dataStart
        var entries: [String: Entry] = [:]
        for (name, raw) in header.tensors {
            let shape = raw.shape, off = raw.dataOffsets
            guard shape.allSatisfy({ $0 >= 0 }) else {
                throw .invalidFile(path: path, field: "\(name).shape", reason: "negative dimension in \(shape)")
            }
            guard off.count == 2 else { throw .invalidFile(path: path, field: "\(name).data_offsets", reason: "expected [begin, end]") }
            guard off[0] >= 0, off[0] <= off[1], off[1] <= dataSize else {
                throw .invalidFile(path: path, field: "\(name).data_offsets",
                                   reason: "[\(off[0]), \(off[1])] is outside the \(dataSize) data bytes (file truncated?)")
            }
            if let esize = Self.elementSize(raw.dtype) {
                let count = Tensor.checkedElementCount(shape + [esize])
                guard count == off[1] - off[0] else {
                    throw .invalidFile(path: path, field: "\(name).data_offsets",
                                       reason: "\(off[1] - off[0]) bytes do not hold shape \(shape) of \(raw.dtype)")
                }
            }
            entries[name] = Entry(dtypeName: raw.dtype, shape: shape, begin: dataStart + off[0], end: dataStart + off[1])
        }
        // As the safetensors library requires: the tensors tile the data section exactly, in
        // offset order, with no overlap, gap or unindexed tail. (Otherwise a header length a few
        // bytes short, overlapping tensors or a duplicate name would read shifted or shared
        // bytes without a word.)
        var next = 0, previous = "the start of the data"
        for (name, e) in entries.sorted(by: { ($0.value.begin, $0.value.end, $0.key) < ($1.value.begin, $1.value.end, $1.key) }) {
            let begin = e.begin - dataStart
            guard begin == next else {
                throw .invalidFile(path: path, field: "\(name).data_offsets",
                                   reason: "starts at byte \(begin), but \(previous) ends at \(next) (\(begin < next ? "overlap" : "gap"))")
            }
            next = e.end - dataStart
            previous = name
        }
        guard next == dataSize else {
            throw .invalidFile(path: path, field: "header length",
                               reason: "the tensors end at data byte \(next) of \(dataSize): the header length or the offsets are wrong")
        }
        let metadata = header.metadata
        self.entries = entries
        self.metadata = metadata
    }

    /// A coding path as a field name: `name.shape[0]`.
    static func field(_ path: [any CodingKey]) -> String {
        let s = path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        return s.isEmpty ? "header" : s.replacingOccurrences(of: ".[", with: "[")
    }

    /// The JSON header: one entry per tensor, and the optional `__metadata__` strings.
    struct Header: Decodable {
        struct RawEntry: Decodable {
            var dtype: String
            var shape: [Int]
            var dataOffsets: [Int]
            enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }
        }
        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
        var tensors: [String: RawEntry] = [:]
        var metadata: [String: String] = [:]

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            for key in c.allKeys {
                if key.stringValue == "__metadata__" {
                    metadata = try c.decode([String: String].self, forKey: key)
                } else {
                    tensors[key.stringValue] = try c.decode(RawEntry.self, forKey: key)
                }
            }
        }
    }

    /// Bytes per element of a safetensors dtype, or nil when unknown.
    static func elementSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F64", "I64", "U64": return 8
        case "F32", "I32", "U32": return 4
        case "F16", "BF16", "I16", "U16": return 2
        case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": return 1
        default: return nil
        }
    }

    /// The tensor `name` as a zero-copy view (F32, F16 or BF16).
    public func tensor(_ name: String) throws(ModelError) -> Tensor {
        guard let e = entries[name] else { throw .missingTensor(path: path, name: name) }
        guard let dtype = DType(name: e.dtypeName), dtype.isElementFormat else { throw .unsupportedDType(path: path, name: name, dtype: e.dtypeName) }
        do {
            return try Tensor(mapping: file, byteOffset: e.begin, shape: e.shape, dtype: dtype, field: name)
        } catch {
            throw .invalidFile(path: path, field: name, reason: error.description)
        }
    }
}

/// Writes `.safetensors` files atomically (a temporary file in the same folder, then rename).
public enum SafetensorsWriter {
    /// One tensor to write: its name, shape and dtype (for the header), and how to make its
    /// values when its turn comes, so a file larger than memory can be written tensor by tensor.
    public struct Entry {
        public var name: String, shape: [Int], dtype: DType
        public var make: () throws(ModelError) -> Tensor
        public init(name: String, shape: [Int], dtype: DType, make: @escaping () throws(ModelError) -> Tensor) {
            self.name = name; self.shape = shape; self.dtype = dtype; self.make = make
        }
    }

    /// Writes `tensors` in the given order, with `metadata`, to `path`.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:],
                             to path: String) throws(ModelError) {
        try write(entries: tensors.map { t in Entry(name: t.name, shape: t.tensor.shape, dtype: t.tensor.dtype) { t.tensor } },
                  metadata: metadata, to: path)
    }

    /// Writes `entries` in the given order, with `metadata`, to `path`, making each tensor only
    /// when it is written; one that comes out in another shape or dtype than its entry declared
    /// is an error, not a corrupt file.
    public static func write(entries: [Entry], metadata: [String: String] = [:], to path: String) throws(ModelError) {
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            guard [.f32, .f16, .bf16].contains(e.dtype) else {
                throw .invalidFile(path: path, field: e.name, reason: "safetensors holds f32, f16 or bf16, not \(e.dtype)")
            }
            let spelling = e.dtype == .f32 ? "F32" : e.dtype == .f16 ? "F16" : "BF16"
            let bytes = e.dtype.storageBytes(elements: e.shape.reduce(1, *))
            header[e.name] = ["dtype": spelling, "shape": e.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        guard var json = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]) else {
            throw .invalidFile(path: path, field: "header", reason: "cannot encode")
        }
        while (8 + json.count) % 8 != 0 { json.append(0x20) }  // pad with spaces to 8-byte alignment
        // Streamed from each tensor's own memory: no copy of the file is built in memory.
        try AtomicFile.write(to: path) { (out: AtomicFile.Sink) throws(ModelError) in
            var n = UInt64(json.count).littleEndian
            try out.write(withUnsafeBytes(of: &n) { Data($0) })
            try out.write(json)
            for e in entries {
                let t = try e.make()
                guard t.shape == e.shape, t.dtype == e.dtype else {
                    throw .invalidFile(path: path, field: e.name, reason: "made as \(t.dtype) \(t.shape), declared \(e.dtype) \(e.shape)")
                }
                try out.write(UnsafeRawBufferPointer(start: t.rawPointer, count: t.byteCount))
            }
        }
    }
}

extension SafetensorsWriter {
    /// A tensor of any safetensors dtype ("U16", "U64", "F32", ...), its bytes made when its
    /// turn comes.
    public struct RawEntry {
        public var name: String, dtype: String, shape: [Int]
        public var bytes: () throws(ModelError) -> Data
        public init(name: String, dtype: String, shape: [Int], bytes: @escaping () throws(ModelError) -> Data) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }
    }

    /// Writes `entries` to `path`, widest elements first (8-byte dtypes, then 4, 2, 1; in the
    /// given order within each), so that every tensor's data starts aligned to its element size.
    public static func write(raw entries: [RawEntry], metadata: [String: String] = [:], to path: String) throws(ModelError) {
        var sized: [(entry: RawEntry, size: Int, bytes: Int)] = []
        for e in entries {
            guard let size = SafetensorsFile.elementSize(e.dtype), let n = Tensor.checkedElementCount(e.shape) else {
                throw .invalidFile(path: path, field: e.name, reason: "\(e.dtype) \(e.shape) is not a safetensors tensor")
            }
            sized.append((e, size, n * size))
        }
        let ordered = sized.enumerated().sorted { a, b in a.element.size != b.element.size ? a.element.size > b.element.size : a.offset < b.offset }.map(\.element)
        var header: [String: Any] = [:]
        var offset = 0
        for e in ordered {
            header[e.entry.name] = ["dtype": e.entry.dtype, "shape": e.entry.shape, "data_offsets": [offset, offset + e.bytes]] as [String: Any]
            offset += e.bytes
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        guard var json = try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]) else {
            throw .invalidFile(path: path, field: "header", reason: "cannot encode")
        }
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        try AtomicFile.write(to: path) { (out: AtomicFile.Sink) throws(ModelError) in
            var n = UInt64(json.count).littleEndian
            try out.write(withUnsafeBytes(of: &n) { Data($0) })
            try out.write(json)
            for e in ordered {
                let data = try e.entry.bytes()
                guard data.count == e.bytes else {
                    throw .invalidFile(path: path, field: e.entry.name, reason: "made \(data.count) bytes, declared \(e.bytes)")
                }
                try out.write(data)
            }
        }
    }
}

/// Atomic writes: the bytes go to a temporary file beside the target, which is then renamed
/// over it, so a reader never sees a half-written file (rename(2) replaces atomically). There
/// is no fsync: a killed process loses nothing written, only a power cut could.
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws(ModelError) {
        try write(to: path) { (out: Sink) throws(ModelError) in try out.write(data) }
    }

    /// Where `write(to:_:)`'s body writes its bytes, in order.
    public struct Sink {
        let fd: Int32, path: String

        /// Writes all of `bytes` (retrying short writes and interruptions).
        public func write(_ bytes: UnsafeRawBufferPointer) throws(ModelError) {
            guard var p = bytes.baseAddress else { return }
            var left = bytes.count
            while left > 0 {
                let n = Foundation.write(fd, p, min(left, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw .io(path: path, reason: "cannot write: \(String(cString: strerror(errno)))")
                }
                p += n
                left -= n
            }
        }

        /// Writes all of `data`.
        public func write(_ data: Data) throws(ModelError) {
            let written: Result<Void, ModelError> = data.withUnsafeBytes { b in Result { () throws(ModelError) in try write(b) } }
            try written.get()
        }
    }

    /// Streams a file: `body` writes it piece by piece to a temporary file, which is renamed
    /// to `path` once complete (and removed if `body` or a write fails).
    public static func write(to path: String, _ body: (Sink) throws(ModelError) -> Void) throws(ModelError) {
        let url = URL(fileURLWithPath: path)
        let tmp = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(path: path, reason: "cannot write: \(String(cString: strerror(errno)))") }
        do {
            try body(Sink(fd: fd, path: path))
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        guard close(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw .io(path: path, reason: "cannot write: \(reason)")
        }
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw .io(path: path, reason: "cannot write: \(reason)")
        }
    }
}
