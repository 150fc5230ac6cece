#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import _MoEKernels

// Dimension legend: N rows (output features), K columns (input features).

/// A bf16 weight [N, K] held losslessly in fewer bytes: the expert cache's form for bf16
/// experts, so a token's experts stream from memory in about 78% of their bytes and a budget
/// holds about 28% more of them.
///
/// A bf16 weight's exponents vary little among 32 neighbours: each block of 32 keeps one base
/// exponent, 4-bit offsets from it and each weight's sign and mantissa, 49 bytes for 64. A row
/// with a block whose exponents span more than 16 values (a zero among normal weights, say)
/// stays as stored. The products read the blocks directly (`Kernels.linearBatch` with
/// `LinearJob.packedWeight`) and give the bf16 weight's results bit for bit: the words are
/// rebuilt in registers and go through the bf16 leaves' arithmetic in its order.
public struct PackedBF16Matrix: @unchecked Sendable {
    /// N and K.
    public let rows: Int, columns: Int
    /// The packed rows, from `storage.base`.
    public let storage: TensorStorage
    /// Byte offset of each row in the packed bytes, then their end (N + 1 values): a row of 2K
    /// bytes is stored raw, one of 49K/32 packed.
    public let rowOffsets: [UInt64]

    /// Bytes of the packed rows.
    public var byteCount: Int { Int(rowOffsets[rows]) }

    /// Whether the products with packed weights run faster than with bf16 ones on this CPU
    /// (AVX-512; elsewhere they unpack rows for the bf16 leaf, at half its speed or less).
    public static var isFast: Bool { moek_bf16p_fast() != 0 }

    /// Whether `w` can be packed: bf16, [N, K] with K a positive multiple of 32.
    public static func canPack(_ w: Tensor) -> Bool {
        w.dtype == .bf16 && w.rank == 2 && w.shape[1] > 0 && w.shape[1] % 32 == 0
    }

    /// Packs `w` (`canPack`) over its own bytes: the packed rows are written from the start of
    /// its storage, which must be writable and hold nothing else that is still needed; `w`'s
    /// values are gone afterwards.
    public static func packInPlace(_ w: Tensor) -> PackedBF16Matrix {
        precondition(canPack(w) && w.storage.isWritable, "PackedBF16Matrix: \(w.dtype) \(w.shape) cannot be packed in place")
        return pack(w, into: w.storage)
    }

    /// A packed copy of `w` (`canPack`) in memory of its own.
    public static func packing(_ w: Tensor) -> PackedBF16Matrix {
        precondition(canPack(w), "PackedBF16Matrix: \(w.dtype) \(w.shape) cannot be packed")
        return pack(w, into: TensorStorage(byteCount: w.byteCount, zeroed: false))
    }

    /// `w`'s rows packed from the start of `storage` (at least `w`'s bytes; `w` itself, or
    /// memory at or below its bytes, for packing in place).
    private static func pack(_ w: Tensor, into storage: TensorStorage) -> PackedBF16Matrix {
        let (n, k) = (w.shape[0], w.shape[1])
        var offsets = [UInt64](repeating: 0, count: n + 1)
        offsets.withUnsafeMutableBufferPointer { o in
            _ = moek_bf16p_pack(w.rawPointer.assumingMemoryBound(to: UInt16.self), n, k,
                                storage.base.assumingMemoryBound(to: UInt8.self), o.baseAddress!)
        }
        return PackedBF16Matrix(rows: n, columns: k, storage: storage, rowOffsets: offsets)
    }

    /// Twins attached in this process so far (`attachTwin`): products look for one only once
    /// there is one.
    static let twinsAttached = Atomic<Int>(0)

    /// Packs the read-only bf16 matrix `w` (`canPack`, viewing a mapped file) into memory of its
    /// own and attaches the copy to `w`'s storage as its twin: from then on every product with
    /// `w` (`Kernels.matmul`, `matvec`, `linearBatch`: the same storage, byte offset and shape)
    /// reads the twin, with the same results bit for bit, and the pages of the file `w` touched
    /// leave the process (they stay in the page cache). The expert cache packs the experts it
    /// reads; this is the form for the weights that stay resident. Returns the twin.
    @discardableResult
    public static func attachTwin(to w: Tensor) -> PackedBF16Matrix {
        precondition(canPack(w) && !w.storage.isWritable, "PackedBF16Matrix: a twin needs a read-only bf16 matrix, not \(w.dtype) \(w.shape)")
        if let twin = twin(of: w) { return twin }
        let twin = pack(w, into: TensorStorage(pagesFor: w.byteCount) ?? TensorStorage(byteCount: w.byteCount, zeroed: false))
        twin.storage.releasePages(after: twin.byteCount)
        w.storage.packedTwins.withLock { $0[w.byteOffset] = twin }
        twinsAttached.add(1, ordering: .relaxed)
        w.storage.mappedFile?.dropPages(byteOffset: w.byteOffset, count: w.byteCount)
        return twin
    }

    /// Whether any twin has been attached in this process.
    static var anyTwins: Bool { twinsAttached.load(ordering: .relaxed) > 0 }

    /// The twin attached to `w` (`attachTwin`), if any.
    public static func twin(of w: Tensor) -> PackedBF16Matrix? {
        guard w.dtype == .bf16, w.rank == 2, anyTwins,
              let twin = w.storage.packedTwins.withLock({ $0[w.byteOffset] }),
              twin.rows == w.shape[0], twin.columns == w.shape[1] else { return nil }
        return twin
    }

    /// Rows packed (the others are stored raw).
    public var packedRows: Int {
        (0..<rows).reduce(0) { $0 + (rowOffsets[$1 + 1] - rowOffsets[$1] == UInt64(2 * columns) ? 0 : 1) }
    }

    /// The bf16 weight again, bit for bit.
    public func unpacked() -> Tensor {
        let w = Tensor(uninitialized: [rows, columns], dtype: .bf16)
        unpack(rows: 0..<rows, into: w.mutableRawPointer.assumingMemoryBound(to: UInt16.self), pool: nil)
        return w
    }

    /// Rows `range` back to bf16 words into `out` (rows `columns` apart), split over `pool`'s
    /// threads when given.
    func unpack(rows range: Range<Int>, into out: UnsafeMutablePointer<UInt16>, pool: ThreadPool?) {
        rowOffsets.withUnsafeBufferPointer { o in
            let p = storage.base.assumingMemoryBound(to: UInt8.self), k = columns
            guard let pool, range.count * k >= 1 << 16 else {
                moek_bf16p_unpack_rows(p, o.baseAddress!, k, range.lowerBound, range.upperBound, out)
                return
            }
            Kernels.parallelChunks(range.count, grain: max(1, (1 << 15) / k), pool: pool) { r in
                moek_bf16p_unpack_rows(p, o.baseAddress!, k, range.lowerBound + r.lowerBound, range.lowerBound + r.upperBound,
                                       out + r.lowerBound * k)
            }
        }
    }

    /// The first byte of row `r`.
    func row(_ r: Int) -> UnsafeRawPointer { UnsafeRawPointer(storage.base) + Int(rowOffsets[r]) }
}

extension Kernels {
    /// Most bytes of packed weights unpacked at once for jobs of many rows.
    static let unpackedBatchBytes = 16 << 20

    /// `linearBatch` of jobs some of which have packed weights: decode's (at most `gemvMaxRows`
    /// rows) read the blocks (`packedGemvJobs`); a job of more rows (a prompt's) is
    /// compute-bound and runs on its weight unpacked for the call: weights of at most
    /// `unpackBytes` in batches of at most that many bytes, a larger one (an LM head) in pieces
    /// of its rows, so the copies stay a bounded few whatever the weight.
    static func runPackedBatch(_ jobs: [LinearJob], pool: ThreadPool, unpackBytes: Int = unpackedBatchBytes) {
        var streamed: [LinearJob] = [], plain: [LinearJob] = [], unpack: [LinearJob] = [], pieces: [LinearJob] = []
        for job in jobs where job.input.rank == 2 && job.input.shape[0] > 0 {
            guard let w = job.packedWeight else {
                plain.append(job)
                continue
            }
            precondition(job.weight.rank == 2 && w.rows == job.weight.shape[0] && w.columns == job.weight.shape[1],
                         "linearBatch: packed weight [\(w.rows), \(w.columns)] for weight \(job.weight.shape)")
            if job.input.shape[0] <= gemvMaxRows && job.input.shape[1] == w.columns && job.input.dtype == .f32
                && job.output.dtype == .f32 && job.output.shape == [job.input.shape[0], w.rows] {
                streamed.append(job)
            } else if 2 * job.weight.count > unpackBytes && w.rows >= 2 * unpackedPieceRows {
                pieces.append(job)
            } else {
                unpack.append(job)
            }
        }
        if !streamed.isEmpty { packedGemvJobs(streamed, pool: pool) }
        if !plain.isEmpty { runLinearBatch(plain, pool: pool) }
        var start = 0
        while start < unpack.count {
            var end = start + 1, bytes = 2 * unpack[start].weight.count
            while end < unpack.count && bytes + 2 * unpack[end].weight.count <= unpackBytes {
                bytes += 2 * unpack[end].weight.count
                end += 1
            }
            runLinearBatch(unpack[start..<end].map { job in
                let w = job.packedWeight!, copy = Tensor(uninitialized: [w.rows, w.columns], dtype: .bf16)
                w.unpack(rows: 0..<w.rows, into: copy.mutableRawPointer.assumingMemoryBound(to: UInt16.self), pool: pool)
                return LinearJob(input: job.input, weight: copy, output: job.output)
            }, pool: pool)
            start = end
        }
        for job in pieces { runUnpackedPieces(job, unpackBytes: unpackBytes, pool: pool) }
    }

    /// Rows of each piece a large packed weight is unpacked in (`runUnpackedPieces`), at least:
    /// a multiple of every leaf's tile of weight rows, and past the widths that choose another
    /// leaf (`narrowMaxColumns`, `readsAUnpacked`), so each output takes the path, and the
    /// summation order, it takes on the whole weight.
    static let unpackedPieceRows = 96

    /// A prompt's product with a packed weight larger than `unpackBytes`: its rows unpacked a
    /// piece at a time into one scratch and multiplied into their columns of the output.
    static func runUnpackedPieces(_ job: LinearJob, unpackBytes: Int, pool: ThreadPool) {
        let w = job.packedWeight!, (n, k, m) = (w.rows, w.columns, job.input.shape[0])
        precondition(job.input.dtype == .f32 && job.output.dtype == .f32 && job.input.shape == [m, k] && job.output.shape == [m, n],
                     "linearBatch: input \(job.input.shape), packed weight [\(n), \(k)], output \(job.output.shape)")
        let step = unpackedPieceRows
        let rows = max(step, unpackBytes / max(1, 2 * k) / step * step)
        let scratch = Tensor(uninitialized: [min(n, rows), k], dtype: .bf16)
        let x = job.input.rawPointer.assumingMemoryBound(to: Float.self)
        let out = job.output.mutableRawPointer.assumingMemoryBound(to: Float.self)
        var n0 = 0
        while n0 < n {
            // The last piece takes a remainder too short to be a piece of its own.
            let n1 = n - n0 < rows + step ? n : n0 + rows
            let piece = n1 - n0 <= scratch.shape[0] ? scratch : Tensor(uninitialized: [n1 - n0, k], dtype: .bf16)
            w.unpack(rows: n0..<n1, into: piece.mutableRawPointer.assumingMemoryBound(to: UInt16.self), pool: pool)
            linear(x: x, ldx: k, rows: m, w: piece.rawPointer, dtype: .bf16, n: n1 - n0, k: k, out: out + n0, ldo: n, pool: pool)
            n0 = n1
        }
    }

    /// Decode's products with packed weights (each job at most `gemvMaxRows` activation rows):
    /// streamed as bf16 weights are (`StreamedRuns`, each piece prefetching the next's start),
    /// through `moek_gemv_bf16p`, with the bf16 dot product under `bf16Activations`.
    static func packedGemvJobs(_ jobs: [LinearJob], pool: ThreadPool) {
        let bf16Dot: Int32 = usesBF16Dot(dtype: .bf16) ? 1 : 0
        let packed = jobs.map { $0.packedWeight! }
        let rowBytes = packed.map { max(1, $0.byteCount / max(1, $0.rows)) }
        StreamedRuns.cached(zip(packed, rowBytes).map { ($0.rows, $1) }, threads: pool.threadCount).run(pool: pool) { piece, after in
            let job = jobs[piece.job], w = packed[piece.job], k = w.columns
            let x = job.input.rawPointer.assumingMemoryBound(to: Float.self)
            let out = job.output.mutableRawPointer.assumingMemoryBound(to: Float.self)
            let next = after.map { packed[$0.job].row($0.n0) }
            w.rowOffsets.withUnsafeBufferPointer { o in
                moek_gemv_bf16p(w.storage.base.assumingMemoryBound(to: UInt8.self), o.baseAddress!, k, x, k,
                                Int32(job.input.shape[0]), out, w.rows, piece.n0, piece.n1, bf16Dot, next)
            }
        }
    }
}
