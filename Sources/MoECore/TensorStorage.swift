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

    /// Allocates `byteCount` bytes, 64-byte aligned: zeroed, or with `zeroed: false` left as
    /// the allocator gives them (for outputs a kernel overwrites completely). Debug builds fill
    /// those with NaN bits, so an element a kernel fails to write shows up in tests.
    public init(byteCount: Int, zeroed: Bool = true) {
        precondition(byteCount >= 0, "negative byte count")
        var p: UnsafeMutableRawPointer?
        let size = max(byteCount, 64)
        guard posix_memalign(&p, 64, size) == 0, let memory = p else {
            preconditionFailure("out of memory allocating \(size) bytes")
        }
        if zeroed {
            memset(memory, 0, size)
        } else {
            #if DEBUG
            memset(memory, 0xff, size)  // NaN in every f32: a kernel that misses an element shows in tests
            #endif
        }
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
