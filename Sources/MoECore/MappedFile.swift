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

    /// Unmaps from this process the whole pages inside the `count` bytes from `byteOffset`
    /// (`MADV_DONTNEED`): they leave its resident memory, stay in the page cache, and read the
    /// same if touched again. For bytes the process has copied and will not read again.
    public func dropPages(byteOffset: Int, count: Int) {
        guard isMapped, count > 0, byteOffset >= 0, byteOffset + count <= byteCount else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (byteOffset + page - 1) / page * page, end = (byteOffset + count) / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED) }
    }

    /// `adviseNoHugePages` over the mapped bytes of `tensors`, merged into runs per file (one
    /// call a run, so a model's stacked experts split its mapping into a few regions, not one
    /// per tensor). Tensors in memory are skipped. Under an expert cache's budget a 242 MB budget
    /// peaked at 292 MB resident on a file read into the page cache just before, 279 MB with
    /// the advice (the budget plus the runtime; 248 MB from a cold page cache).
    public static func adviseNoHugePages(covering tensors: [Tensor]) {
        var runs: [ObjectIdentifier: (file: MappedFile, ranges: [(Int, Int)])] = [:]
        for t in tensors {
            guard let file = t.storage.mappedFile else { continue }
            runs[ObjectIdentifier(file), default: (file, [])].ranges.append((t.byteOffset, t.byteOffset + t.byteCount))
        }
        for (file, ranges) in runs.values {
            var merged: [(Int, Int)] = []
            for r in ranges.sorted(by: { $0.0 < $1.0 }) {
                if let last = merged.last, r.0 <= last.1 + 4096 { merged[merged.count - 1].1 = max(last.1, r.1) } else { merged.append(r) }
            }
            for (from, to) in merged { file.adviseNoHugePages(byteOffset: from, count: to - from) }
        }
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
