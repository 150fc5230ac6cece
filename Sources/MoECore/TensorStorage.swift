#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

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
    /// Bytes of anonymous pages this storage maps (0 for heap memory and files).
    private let pages: Int
    /// Capacity of the `ScratchBuffers` buffer this storage holds (0: none).
    private let scratch: Int
    /// Lossless packed copies of bf16 matrices viewing this (read-only) storage, by the view's
    /// byte offset (`PackedBF16Matrix.attachTwin`).
    let packedTwins = Mutex<[Int: PackedBF16Matrix]>([:])

    /// Allocates `byteCount` bytes, 64-byte aligned: zeroed, or with `zeroed: false` left as
    /// the allocator gives them (for outputs a kernel overwrites completely). Debug builds fill
    /// those with NaN bits, so an element a kernel fails to write shows up in tests.
    public init(byteCount: Int, zeroed: Bool = true) {
        precondition(byteCount >= 0, "negative byte count")
        let size = max(byteCount, 64)
        let memory: UnsafeMutableRawPointer
        if size <= ScratchBuffers.largest {
            // Decode makes and drops a hundred small tensors a token: kept buffers, not malloc.
            (memory, scratch) = ScratchBuffers.take(size)
        } else {
            var p: UnsafeMutableRawPointer?
            guard posix_memalign(&p, 64, size) == 0, let allocated = p else {
                preconditionFailure("out of memory allocating \(size) bytes")
            }
            (memory, scratch) = (allocated, 0)
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
        pages = 0
    }

    /// `byteCount` bytes of fresh anonymous pages (zeroed, writable), handed back to the kernel
    /// when the storage goes: for long-lived buffers that come and go (the expert cache's
    /// entries), whose memory must leave the process with them whatever the allocator keeps.
    /// From 2 MiB on, the pages start on a 2 MiB boundary and are offered to the kernel as huge
    /// pages (Linux's `MADV_HUGEPAGE`, where transparent huge pages are on `madvise`), so a
    /// matrix-vector pass over them walks a fraction of the page tables. Nil when the kernel
    /// refuses the mapping.
    public init?(pagesFor byteCount: Int) {
        precondition(byteCount >= 0, "negative byte count")
        guard let (p, size) = Self.mapPages(max(byteCount, 1)) else { return nil }
        base = p
        self.byteCount = byteCount
        isWritable = true
        mapping = nil
        pages = size
        scratch = 0
    }

    /// `size` bytes of fresh anonymous pages and the bytes mapped; from 2 MiB on (Linux), on a
    /// 2 MiB boundary with `MADV_HUGEPAGE`. Nil when the kernel refuses.
    private static func mapPages(_ size: Int) -> (UnsafeMutableRawPointer, Int)? {
        #if os(Linux)
        let huge = 2 << 20
        if size >= huge {
            // Map a huge page's worth more, then unmap the ends around the aligned start.
            guard let raw = mmap(nil, size + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                  raw != MAP_FAILED else { return nil }
            let address = UInt(bitPattern: raw), aligned = (address + UInt(huge) - 1) / UInt(huge) * UInt(huge)
            let head = Int(aligned - address), tail = huge - head
            if head > 0 { munmap(raw, head) }
            let start = raw + head
            let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
            let mapped = (size + pageSize - 1) / pageSize * pageSize
            if tail + size - mapped > 0 { munmap(start + mapped, tail + size - mapped) }
            _ = madvise(start, mapped, 14)  // MADV_HUGEPAGE: advice only, refused quietly where unsupported
            return (start, mapped)
        }
        #endif
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else { return nil }
        return (p, size)
    }

    /// The whole of a mapped file, read-only and zero-copy.
    public init(mapping file: MappedFile) {
        base = UnsafeMutableRawPointer(mutating: file.base)
        byteCount = file.byteCount
        isWritable = false
        mapping = file
        pages = 0
        scratch = 0
    }

    /// Hands the pages past the first `used` bytes back to the kernel (they read as zeros when
    /// touched again), for page storage (`init(pagesFor:)`) whose tail a write left unused;
    /// returns the bytes of memory the storage now holds (all of it for other storage). The
    /// tail is first advised off huge pages (Linux), so that the kernel's background collapsing
    /// of huge pages (which fills the holes of a range it collapses) leaves it unmapped.
    @discardableResult
    public func releasePages(after used: Int) -> Int {
        guard pages > 0 else { return byteCount }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let keep = (max(0, used) + pageSize - 1) / pageSize * pageSize
        guard keep < byteCount else { return byteCount }
        #if os(Linux)
        _ = madvise(base + keep, pages - keep, 15)  // MADV_NOHUGEPAGE
        #endif
        _ = madvise(base + keep, pages - keep, MADV_DONTNEED)
        return keep
    }

    /// The file this storage maps, if any.
    public var mappedFile: MappedFile? { mapping }

    deinit {
        if pages > 0 {
            munmap(base, pages)
        } else if scratch > 0 {
            ScratchBuffers.give(base, capacity: scratch)
        } else if mapping == nil {
            free(base)
        }
    }
}
