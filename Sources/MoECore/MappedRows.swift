#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import _MoEKernels

/// The rows of a matrix mapped from a file, read with `pread` instead of through the mapping:
/// for a weight read one row at a time (an untied embedding, a row a token). A fault on a
/// mapped file maps the pages around it that the page cache holds as well (Linux maps up to
/// 64 KiB around each fault), so a few hundred distinct tokens would map, and count as the
/// process's resident memory, most of a matrix of which they read a few KB. Read with `pread`,
/// its bytes stay in the page cache alone.
public final class MappedRows: @unchecked Sendable {
    /// The matrix [rows, width], a view on its mapped file.
    public let matrix: Tensor
    private let fd: Int32
    private let path: String

    /// Reads `matrix`'s rows from the file it is mapped from; nil when it is not a view on a
    /// mapped file (weights built or adapted in memory), is not two-dimensional, or the file
    /// cannot be opened again.
    public init?(_ matrix: Tensor) {
        guard matrix.rank == 2, let file = matrix.storage.mappedFile else { return nil }
        let fd = open(file.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        self.matrix = matrix
        self.fd = fd
        path = file.path
    }

    deinit { close(fd) }

    /// Row `i` widened to f32 into `dst` (the matrix's width of values, exact). Throws
    /// `MoECoreError.io` naming the file when the read fails or the file ends early (it shrank
    /// or changed under the model).
    public func widenRow(_ i: Int, into dst: UnsafeMutablePointer<Float>) throws(MoECoreError) {
        precondition(i >= 0 && i < matrix.shape[0], "MappedRows: row \(i) outside 0..<\(matrix.shape[0])")
        let width = matrix.shape[1], bytes = matrix.dtype.storageBytes(elements: width)
        let offset = matrix.byteOffset + i * bytes
        try withUnsafeTemporaryAllocation(byteCount: bytes, alignment: 64) { (buffer) throws(MoECoreError) in
            guard let base = buffer.baseAddress else { return }
            var done = 0
            while done < bytes {
                let n = pread(fd, base + done, bytes - done, off_t(offset + done))
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    let reason = n < 0 ? String(cString: strerror(errno)) : "the file ends early (it changed or shrank under the model)"
                    throw .io(path: path, reason: "row \(i): read \(done) of \(bytes) bytes at offset \(offset): \(reason)")
                }
                done += n
            }
            moek_to_f32(base, matrix.dtype.cValue, dst, width)
        }
    }
}
