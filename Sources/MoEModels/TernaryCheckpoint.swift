import Foundation
import MoE
import MoECore

/// QMoE-coded experts in a checkpoint folder (written by `moe quantize --type qmoe`; the layout
/// is in the README). Every other tensor stays as stored; in place of each routed expert's
/// `P.weight` (its per-expert Hugging Face name) the safetensors hold
///   `P.qmoe_codes`   U16 [C]      the codes of every row, row after row (a row ends where its
///                                 runs add up to its width; the loader finds each row's start)
///   `P.qmoe_scales`  F16 [N, 2]   row r's lo and hi
/// (folders of an earlier MoEKit also hold `P.qmoe_offsets` U32 [N + 1], each row's first code;
/// they load too, the offsets checked against the codes),
/// and one `qmoe.dictionary` U64 [D] (D in 1...65536; every code is below D) serves them all;
/// config.json's
/// `quantization_config.quant_method` is "qmoe".
public enum TernaryCheckpoint {
    /// The shared dictionary's tensor name.
    public static let dictionaryName = "qmoe.dictionary"
    /// The quant_method in config.json's quantization_config.
    public static let quantMethod = "qmoe"

    /// The stem a coded weight's tensors share: the weight's name without ".weight".
    public static func stem(_ weightName: String) -> String {
        weightName.hasSuffix(".weight") ? String(weightName.dropLast(".weight".count)) : weightName
    }

    /// The three tensor names of the coded weight `weightName`.
    public static func names(_ weightName: String) -> (codes: String, offsets: String, scales: String) {
        let s = stem(weightName)
        return ("\(s).qmoe_codes", "\(s).qmoe_offsets", "\(s).qmoe_scales")
    }
}

extension Checkpoint {
    /// The shared QMoE dictionary, if the checkpoint has one (checked entry by entry once).
    func ternaryDictionary() throws(ModelError) -> TernaryDictionary? {
        if let known = ternaryDictionaryMemo.value { return known }
        let read = try readTernaryDictionary()
        ternaryDictionaryMemo.value = .some(read)
        return read
    }

    private func readTernaryDictionary() throws(ModelError) -> TernaryDictionary? {
        let name = TernaryCheckpoint.dictionaryName
        guard let file = files[name], let e = file.entries[name] else { return nil }
        guard e.dtypeName == "U64" || e.dtypeName == "I64", e.shape.count == 1, (1...TernaryDictionary.maxSize).contains(e.shape[0]) else {
            throw .invalidFile(path: file.path, field: name, reason: "is \(e.dtypeName) \(e.shape), not U64 [1 to \(TernaryDictionary.maxSize)]")
        }
        let count = e.shape[0], bytes = try file.bytes(name)
        guard bytes.count == count * 8 else {
            throw .invalidFile(path: file.path, field: name, reason: "holds \(bytes.count) bytes, not \(count * 8)")
        }
        var entries = [UInt64](repeating: 0, count: count)
        entries.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(bytes)) }
        do { return try TernaryDictionary(entries: entries.map { UInt64(littleEndian: $0) }, path: file.path) } catch {
            throw .invalidFile(path: file.path, field: name, reason: error.description)
        }
    }

    /// The coded weight `weightName` [rows, cols], or nil if the checkpoint stores it otherwise.
    func ternaryMatrix(_ weightName: String, rows: Int, cols: Int, dictionary: TernaryDictionary) throws(ModelError) -> TernaryMatrix? {
        let n = TernaryCheckpoint.names(weightName)
        guard let file = files[n.codes] else { return nil }
        let codes = try view(n.codes, dtype: "U16", shape: nil, elementSize: 2)
        let scales = try view(n.scales, dtype: "F16", shape: [rows, 2], elementSize: 2)
        let (c, s) = (codes.pointer.assumingMemoryBound(to: UInt16.self), scales.pointer.assumingMemoryBound(to: UInt16.self))
        let stored = files[n.offsets] == nil ? nil : try view(n.offsets, dtype: "U32", shape: [rows + 1], elementSize: 4)
        do {
            guard let offsets = stored else {
                return try TernaryMatrix(rows: rows, cols: cols, codes: c, codeCount: codes.count, scales: s,
                                         owners: [codes.owner, scales.owner], dictionary: dictionary, path: n.codes)
            }
            return try TernaryMatrix(rows: rows, cols: cols, codes: c, codeCount: codes.count,
                                     offsets: offsets.pointer.assumingMemoryBound(to: UInt32.self), scales: s,
                                     owners: [codes.owner, offsets.owner, scales.owner], dictionary: dictionary, path: n.codes)
        } catch {
            guard case let .invalidValue(_, field, reason) = error else { throw .invalidFile(path: file.path, field: n.codes, reason: error.description) }
            throw .invalidFile(path: file.path, field: "\(n.codes) \(field)", reason: reason)
        }
    }

    /// Tensor `name` of a raw dtype as a pointer, its element count and the storage keeping it
    /// alive: a view of the mapped file, or an aligned copy where the file's offset is not.
    private func view(_ name: String, dtype: String, shape: [Int]?, elementSize: Int) throws(ModelError)
        -> (pointer: UnsafeRawPointer, count: Int, owner: TensorStorage) {
        guard let file = files[name], let e = file.entries[name] else { throw .missingTensor(path: directory, name: name) }
        guard e.dtypeName == dtype else { throw .unsupportedDType(path: file.path, name: name, dtype: "\(e.dtypeName) (QMoE stores it as \(dtype))") }
        if let shape, e.shape != shape { throw .wrongShape(path: file.path, name: name, expected: shape, found: e.shape) }
        guard e.shape.count == (shape?.count ?? 1) else { throw .wrongShape(path: file.path, name: name, expected: [-1], found: e.shape) }
        let bytes = try file.bytes(name)
        guard let count = Tensor.checkedElementCount(e.shape), count.multipliedReportingOverflow(by: elementSize) == (bytes.count, false) else {
            throw .invalidFile(path: file.path, field: name, reason: "holds \(bytes.count) bytes for shape \(e.shape) of \(dtype)")
        }
        let mapped = TensorStorage(mapping: file.file)
        let pointer = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(mapped.base.assumingMemoryBound(to: UInt8.self)))
        if Int(bitPattern: pointer) % elementSize == 0 { return (pointer, count, mapped) }
        let copy = TensorStorage(byteCount: bytes.count)
        copy.base.copyMemory(from: pointer, byteCount: bytes.count)
        return (UnsafeRawPointer(copy.base), count, copy)
    }
}

/// A value computed once and kept, behind a lock.
final class Memo<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value?

    /// The value, if set.
    var value: Value? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}

extension DecoderModel {
    /// Layer i's routed experts as `TernaryExperts` if the checkpoint codes them (QMoE), else nil.
    static func loadTernaryExperts(_ ck: any WeightSource, _ s: DecoderSpec, layer i: Int) throws(ModelError) -> TernaryExperts? {
        guard let folder = ck as? Checkpoint, let dictionary = try folder.ternaryDictionary() else { return nil }
        let d = s.hiddenSize, inner = s.expertIntermediate
        var gate: [TernaryMatrix] = [], up: [TernaryMatrix] = [], down: [TernaryMatrix] = []
        for x in 0..<s.experts {
            let name = s.names.expert(i, x)
            guard let g = try folder.ternaryMatrix(name.gate, rows: inner, cols: d, dictionary: dictionary) else {
                if x == 0 { return nil }
                throw .missingTensor(path: folder.directory, name: TernaryCheckpoint.names(name.gate).codes)
            }
            func coded(_ w: String, _ rows: Int, _ cols: Int) throws(ModelError) -> TernaryMatrix {
                guard let m = try folder.ternaryMatrix(w, rows: rows, cols: cols, dictionary: dictionary) else {
                    throw .missingTensor(path: folder.directory, name: TernaryCheckpoint.names(w).codes)
                }
                return m
            }
            gate.append(g)
            up.append(try coded(name.up, inner, d))
            down.append(try coded(name.down, d, inner))
        }
        var experts = TernaryExperts(gate: gate, up: up, down: down)
        experts.activation = s.expertActivation
        experts.biases = try loadExpertBiases(ck, s, layer: i)
        return experts
    }
}
