#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
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
        let (n, k) = (w.shape[0], w.shape[1])
        var offsets = [UInt64](repeating: 0, count: n + 1)
        offsets.withUnsafeMutableBufferPointer { o in
            _ = moek_bf16p_pack(w.rawPointer.assumingMemoryBound(to: UInt16.self), n, k,
                                w.storage.base.assumingMemoryBound(to: UInt8.self), o.baseAddress!)
        }
        return PackedBF16Matrix(rows: n, columns: k, storage: w.storage, rowOffsets: offsets)
    }

    /// A packed copy of `w` (`canPack`) in memory of its own.
    public static func packing(_ w: Tensor) -> PackedBF16Matrix {
        let copy = Tensor(uninitialized: w.shape, dtype: .bf16)
        copy.mutableRawPointer.copyMemory(from: w.rawPointer, byteCount: w.byteCount)
        return packInPlace(copy)
    }

    /// Rows packed (the others are stored raw).
    public var packedRows: Int {
        (0..<rows).reduce(0) { $0 + (rowOffsets[$1 + 1] - rowOffsets[$1] == UInt64(2 * columns) ? 0 : 1) }
    }

    /// The bf16 weight again, bit for bit.
    public func unpacked() -> Tensor {
        let w = Tensor(uninitialized: [rows, columns], dtype: .bf16)
        rowOffsets.withUnsafeBufferPointer { o in
            moek_bf16p_unpack_rows(storage.base.assumingMemoryBound(to: UInt8.self), o.baseAddress!, columns, 0, rows,
                                   w.mutableRawPointer.assumingMemoryBound(to: UInt16.self))
        }
        return w
    }

    /// The first byte of row `r`.
    func row(_ r: Int) -> UnsafeRawPointer { UnsafeRawPointer(storage.base) + Int(rowOffsets[r]) }
}

extension Kernels {
    /// Most bytes of packed weights unpacked at once for jobs of many rows.
    static let unpackedBatchBytes = 16 << 20

    /// `linearBatch` of jobs some of which have packed weights: decode's (at most `gemvMaxRows`
    /// rows) read the blocks (`packedGemvJobs`); a job of more rows (a prompt's) is
    /// compute-bound and runs on its weight unpacked for the call, in batches of at most
    /// `unpackedBatchBytes` (or one job), so the copies stay a bounded few.
    static func runPackedBatch(_ jobs: [LinearJob], pool: ThreadPool) {
        var streamed: [LinearJob] = [], plain: [LinearJob] = [], unpack: [LinearJob] = []
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
            } else {
                unpack.append(job)
            }
        }
        if !streamed.isEmpty { packedGemvJobs(streamed, pool: pool) }
        if !plain.isEmpty { runLinearBatch(plain, pool: pool) }
        var start = 0
        while start < unpack.count {
            var end = start + 1, bytes = 2 * unpack[start].weight.count
            while end < unpack.count && bytes + 2 * unpack[end].weight.count <= unpackedBatchBytes {
                bytes += 2 * unpack[end].weight.count
                end += 1
            }
            runLinearBatch(unpack[start..<end].map { job in
                LinearJob(input: job.input, weight: job.packedWeight!.unpacked(), output: job.output)
            }, pool: pool)
            start = end
        }
    }

    /// Decode's products with packed weights (each job at most `gemvMaxRows` activation rows):
    /// streamed as bf16 weights are (`StreamedRuns`, each piece prefetching the next's start),
    /// through `moek_gemv_bf16p`, with the bf16 dot product under `bf16Activations`.
    static func packedGemvJobs(_ jobs: [LinearJob], pool: ThreadPool) {
        let bf16Dot: Int32 = usesBF16Dot(dtype: .bf16) ? 1 : 0
        let packed = jobs.map { $0.packedWeight! }
        let rowBytes = packed.map { max(1, $0.byteCount / max(1, $0.rows)) }
        StreamedRuns(zip(packed, rowBytes).map { ($0.rows, $1) }, threads: pool.threadCount).run(pool: pool) { piece, after in
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
