#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file mapped read-only into memory. Tensors viewing it keep it mapped; it is unmapped when
/// the last of them goes away.
public final class MappedFile: @unchecked Sendable {
    /// The path it was opened from (used in error messages).
    public let path: String
    /// First byte of the mapping.
    public let base: UnsafeRawPointer
    /// Length of the file in bytes.
    public let byteCount: Int
    private let isMapped: Bool

    /// Maps `path` read-only. Throws `MoECoreError.io` naming the file if it cannot.
    public init(path: String) throws(MoECoreError) {
        self.path = path
        let fd = open(path, O_RDONLY)
        if fd < 0 { throw .io(path: path, reason: Self.errnoText()) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw .io(path: path, reason: Self.errnoText()) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw .io(path: path, reason: "is a directory") }
        byteCount = Int(st.st_size)
        if byteCount == 0 {
            // mmap rejects empty ranges; an empty file is a valid (empty) mapping.
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            isMapped = false
            return
        }
        let p = mmap(nil, byteCount, PROT_READ, MAP_PRIVATE, fd, 0)
        guard p != MAP_FAILED, let mapped = p else {
            throw .io(path: path, reason: "mmap: " + Self.errnoText())
        }
        base = UnsafeRawPointer(mapped)
        isMapped = true
    }

    /// Asks the kernel never to map the whole pages holding `count` bytes from `byteOffset`
    /// with huge (2 MiB) page-table entries (`MADV_NOHUGEPAGE`; elsewhere than Linux, nothing).
    /// A file read or written just before sits in the page cache as large folios; touching one
    /// byte of a 2 MiB one then maps, and counts as resident, all of it: weights read row by
    /// row (an embedding) or never through the mapping (experts an expert cache reads with
    /// `pread`) would count whole. Advice only: the bytes read the same.
    public func adviseNoHugePages(byteOffset: Int, count: Int) {
        #if os(Linux)
        guard isMapped, count > 0, byteOffset >= 0, byteOffset + count <= byteCount else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = byteOffset / page * page, end = min(byteCount, byteOffset + count)
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, 15)  // MADV_NOHUGEPAGE
        #endif
    }

    deinit {
        if isMapped {
            munmap(UnsafeMutableRawPointer(mutating: base), byteCount)
        } else {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}
