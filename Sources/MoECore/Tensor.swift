import _MoEKernels

/// An n-dimensional array: a shape, a dtype and contiguous row-major bytes.
///
/// A tensor is a view: copying the struct shares the storage. The storage is either owned
/// memory or a zero-copy window into a memory-mapped file (which the tensor keeps mapped).
/// Views of mapped files are read-only.
///
/// ```swift
/// let x = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
/// let w = x.converted(to: .bf16)          // [2, 3] bf16 copy
/// let row = x.rows(1..<2)                 // [1, 3] view, no copy
/// ```
public struct Tensor: @unchecked Sendable {
    /// Sizes of each dimension, outermost first.
    public let shape: [Int]
    /// Element type of the storage.
    public let dtype: DType
    /// The bytes this view reads from.
    public let storage: TensorStorage
    /// Where this view starts inside `storage`.
    public let byteOffset: Int

    /// A zero-filled tensor that owns its memory.
    public init(zeros shape: [Int], dtype: DType = .f32) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.dtype = dtype
        storage = TensorStorage(byteCount: dtype.storageBytes(elements: shape.reduce(1, *)))
        byteOffset = 0
    }

    /// A tensor that owns its memory, with unspecified contents: only for outputs that a kernel
    /// then overwrites completely (it saves the memset of `init(zeros:)`).
    public init(uninitialized shape: [Int], dtype: DType = .f32) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.dtype = dtype
        storage = TensorStorage(byteCount: dtype.storageBytes(elements: shape.reduce(1, *)), zeroed: false)
        byteOffset = 0
    }

    /// A tensor holding `values` (row-major), stored as `dtype` (rounded to nearest even).
    public init(shape: [Int], values: [Float], dtype: DType = .f32) {
        precondition(values.count == shape.reduce(1, *), "\(values.count) values for shape \(shape)")
        precondition(dtype.isElementFormat, "Tensor(values:) stores f32, f16 or bf16; \(dtype) needs a quantizer")
        self.init(uninitialized: shape, dtype: dtype)
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress {
                moek_from_f32(base, dtype.cValue, storage.base, values.count)
            }
        }
    }

    /// A zero-copy view of `shape` elements of `dtype` at `byteOffset` in a mapped file.
    /// Throws `MoECoreError.outOfBounds` naming the file and `field` if the bytes are not there.
    public init(mapping file: MappedFile, byteOffset: Int, shape: [Int], dtype: DType,
                field: String = "tensor") throws(MoECoreError) {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw .invalidValue(path: file.path, field: field, reason: "negative dimension in \(shape)")
        }
        let elements = Tensor.checkedElementCount(shape)
        let bytes = elements.flatMap { $0 > Int.max / max(1, dtype.blockBytes) ? nil : dtype.storageBytes(elements: $0) }
        let (end, overflow) = byteOffset.addingReportingOverflow(bytes ?? 0)
        guard byteOffset >= 0, bytes != nil, !overflow, end <= file.byteCount else {
            throw .outOfBounds(path: file.path, field: field, needed: bytes == nil || overflow ? Int.max : end,
                               available: file.byteCount)
        }
        self.init(storage: TensorStorage(mapping: file), byteOffset: byteOffset, shape: shape, dtype: dtype)
    }

    /// A view of `storage` (no checks beyond bounds; for code that builds views of its own).
    public init(storage: TensorStorage, byteOffset: Int, shape: [Int], dtype: DType) {
        precondition(byteOffset >= 0 && byteOffset + dtype.storageBytes(elements: shape.reduce(1, *)) <= storage.byteCount,
                     "view \(shape) \(dtype) at \(byteOffset) past the end of \(storage.byteCount) bytes")
        self.storage = storage
        self.byteOffset = byteOffset
        self.shape = shape
        self.dtype = dtype
    }

    /// The product of `shape`, or nil if a dimension is negative or the product overflows
    /// (shapes read from files go through this before anything is allocated or mapped).
    public static func checkedElementCount(_ shape: [Int]) -> Int? {
        var total = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, overflow) = total.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            total = p
        }
        return total
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Size in bytes of this view.
    public var byteCount: Int { dtype.storageBytes(elements: count) }
    /// True when this view reads a memory-mapped file.
    public var isMapped: Bool { storage.mappedFile != nil }

    /// First byte of this view.
    public var rawPointer: UnsafeRawPointer { UnsafeRawPointer(storage.base + byteOffset) }

    /// First byte of this view, for writing. Writing to a mapped (read-only) view is a
    /// programming error and traps.
    public var mutableRawPointer: UnsafeMutableRawPointer {
        precondition(storage.isWritable, "tensor is a read-only view of a mapped file")
        return storage.base + byteOffset
    }

    /// The elements of an `f32` tensor, for reading.
    public var floats: UnsafeBufferPointer<Float> {
        precondition(dtype == .f32, "floats needs f32, tensor is \(dtype)")
        return UnsafeBufferPointer(start: rawPointer.assumingMemoryBound(to: Float.self), count: count)
    }

    /// The elements of an `f32` tensor, for writing.
    public var mutableFloats: UnsafeMutableBufferPointer<Float> {
        precondition(dtype == .f32, "mutableFloats needs f32, tensor is \(dtype)")
        return UnsafeMutableBufferPointer(start: mutableRawPointer.assumingMemoryBound(to: Float.self), count: count)
    }

    /// All elements widened to `Float`, row-major.
    public func toFloats() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let base = buffer.baseAddress { moek_to_f32(rawPointer, dtype.cValue, base, count) }
            initialized = count
        }
    }

    /// An owned copy stored as `dtype` (round to nearest even when narrowing).
    public func converted(to dtype: DType) -> Tensor {
        if dtype == self.dtype { return copied() }
        return Tensor(shape: shape, values: toFloats(), dtype: dtype)
    }

    /// An owned, writable copy.
    public func copied() -> Tensor {
        let out = Tensor(uninitialized: shape, dtype: dtype)
        out.mutableRawPointer.copyMemory(from: rawPointer, byteCount: byteCount)
        return out
    }

    /// The same bytes seen with another shape of the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(storage: storage, byteOffset: byteOffset, shape: newShape, dtype: dtype)
    }

    /// Elements per step of the first dimension.
    public var rowCount: Int { shape.first ?? 1 }
    /// Elements in one slice along the first dimension.
    public var rowStride: Int { rank == 0 ? 1 : shape.dropFirst().reduce(1, *) }

    /// A view of `range` along the first dimension (no copy).
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "rows \(range) out of \(shape)")
        var newShape = shape
        newShape[0] = range.count
        return Tensor(storage: storage, byteOffset: byteOffset + dtype.storageBytes(elements: range.lowerBound * rowStride),
                      shape: newShape, dtype: dtype)
    }

    /// A view of index `i` along the first dimension, with that dimension removed.
    public subscript(_ i: Int) -> Tensor {
        rows(i..<(i + 1)).reshaped(Array(shape.dropFirst()))
    }
}
