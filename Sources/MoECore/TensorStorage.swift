#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The bytes behind one or more tensors: either memory this object owns (64-byte aligned,
/// zero-filled, writable), or a read-only region of a memory-mapped file that it keeps alive.
public final class TensorStorage: @unchecked Sendable {
    /// First byte.
    public let base: UnsafeMutableRawPointer
    /// Size in bytes.
    public let byteCount: Int
    /// False for mapped files: kernels must not write to them.
    public let isWritable: Bool
    private let mapping: MappedFile?

    /// Allocates `byteCount` zeroed bytes, 64-byte aligned.
    public init(byteCount: Int) {
        precondition(byteCount >= 0, "negative byte count")
        var p: UnsafeMutableRawPointer?
        let size = max(byteCount, 64)
        guard posix_memalign(&p, 64, size) == 0, let memory = p else {
            preconditionFailure("out of memory allocating \(size) bytes")
        }
        memset(memory, 0, size)
        base = memory
        self.byteCount = byteCount
        isWritable = true
        mapping = nil
    }

    /// The whole of a mapped file, read-only and zero-copy.
    public init(mapping file: MappedFile) {
        base = UnsafeMutableRawPointer(mutating: file.base)
        byteCount = file.byteCount
        isWritable = false
        mapping = file
    }

    /// The file this storage maps, if any.
    public var mappedFile: MappedFile? { mapping }

    deinit {
        if mapping == nil { free(base) }
    }
}
