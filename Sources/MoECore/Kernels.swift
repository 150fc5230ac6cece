import Synchronization
import _MoEKernels

/// The CPU kernels, as static functions: linear layers (matvec, matmul, grouped matmul over
/// experts), softmax, RMSNorm, activations, argmax and top-k. RoPE is `RotaryEmbedding`.
///
/// Activations are `f32`; weights are `f32`, `bf16` or `f16` in Hugging Face Linear layout
/// `[out, in]`, widened in registers and accumulated in `f32`. Every kernel takes the
/// `ThreadPool` to run on (default: `ThreadPool.shared`).
public enum Kernels {
    private static let bf16Flag = Atomic<Bool>(false)

    /// Opt-in: products with bf16 weights round the activations to bf16 and use the CPU's bf16
    /// dot product (AVX512-BF16), accumulating in f32, as PyTorch and oneDNN do for bf16 models
    /// and llama.cpp for bf16 files: twice the f32 FMA rate at prefill, and at decode (up to 4
    /// rows, memory-bound) half the bytes of activations to hold in L1 and fewer instructions
    /// per weight byte. Off by default here: the library's contract is activations kept in f32
    /// (the `moe` commands turn it on for a GGUF file, `--precision auto`). Has no effect where
    /// the CPU lacks the instruction.
    public static var bf16Activations: Bool {
        get { bf16Flag.load(ordering: .relaxed) }
        set { bf16Flag.store(newValue, ordering: .relaxed) }
    }

    /// Whether this CPU has the bf16 dot product `bf16Activations` uses.
    public static var bf16ComputeSupported: Bool { moek_bf16_compute_supported() != 0 }

    /// Whether a matmul of `rows` rows against a `dtype` weight takes the bf16 dot-product path.
    static func usesBF16Path(rows: Int, dtype: DType) -> Bool {
        rows > gemvMaxRows && usesBF16Dot(dtype: dtype)
    }

    /// Whether a product of `rows` activation rows (5 to `rowsLeafMaxRows`) with a `dtype`
    /// weight takes the exact row leaf (`moek_gemm_rows`: bf16 or f16 weights, f32 activations,
    /// AVX-512, K a multiple of 32) rather than the packed matmul leaf, whose transposing weight
    /// packer dominated at an expert's few rows.
    static func usesRowsLeaf(rows: Int, dtype: DType, k: Int) -> Bool {
        rows > gemvMaxRows && rows <= rowsLeafMaxRows && k % 32 == 0 && (dtype == .bf16 || dtype == .f16)
            && !usesBF16Dot(dtype: dtype) && moek_rows_supported(dtype.cValue) != 0
    }

    /// Whether a bf16 dot-product product (`usesBF16Path`) of `rows` activation rows takes the
    /// row leaf of that arithmetic (`moek_gemm_bf16_dot_rows`, up to `rowsLeafMaxRows`, K a
    /// multiple of 32) rather than the packed bf16 leaf, whose copy of each weight block weighed
    /// at an expert's few rows.
    static func usesBF16DotRows(rows: Int, k: Int) -> Bool {
        rows <= rowsLeafMaxRows && k % 32 == 0 && moek_bf16_dot_rows_supported() != 0
    }

    /// Above this many activation rows the packed matmul leaf is kept: the row leaf re-reads
    /// every activation row for each 3 weight rows, which stops fitting the caches (square
    /// products of 512 to 2048 ran at 56-68% of the FMA peak through it, 81-89% packed; at 128
    /// rows against 14336x4096 it was level or ahead, `moe bench-kernels`).
    static let rowsLeafMaxRows = 128

    /// Whether products with a `dtype` weight take the bf16 dot product (the matmul above 4
    /// rows, `moek_gemv_bf16_dot` at up to 4).
    static func usesBF16Dot(dtype: DType) -> Bool {
        dtype == .bf16 && bf16Activations && bf16ComputeSupported && moek_isa() == Int32(MOEK_ISA_AVX512.rawValue)
    }

    /// Decode's product of `m` (at most 4) activation rows `x` (ldx apart) with weight rows
    /// [n0, n1) of W [n, k] (`dtype`, rows k apart) into `out` (rows ldo apart): the bf16 dot
    /// product when `bf16Dot` (`usesBF16Dot`), else the f32 leaf; `next` is the weight that
    /// follows, for prefetching (nil: none).
    static func gemvPiece(_ w: UnsafeRawPointer, dtype: Int32, bf16Dot: Bool, k: Int, x: UnsafePointer<Float>, ldx: Int, m: Int,
                          out: UnsafeMutablePointer<Float>, ldo: Int, n0: Int, n1: Int, next: UnsafeRawPointer? = nil) {
        if bf16Dot {
            moek_gemv_bf16_dot(w.assumingMemoryBound(to: UInt16.self), k, x, ldx, Int32(m), out, ldo, n0, n1, k, next)
        } else {
            moek_gemv_rows_next(w, dtype, k, x, ldx, Int32(m), out, ldo, n0, n1, k, next)
        }
    }

    /// The instruction-set path the leaf kernels use ("avx512", "avx2", "neon" or "scalar").
    public static var isaName: String { String(cString: moek_isa_name(moek_isa())) }

    /// Runs `body(i)` for every row i in `0..<count`, in parallel when the work (`cost`
    /// elements per row) is large enough to pay for it.
    public static func parallelRows(_ count: Int, cost: Int, pool: ThreadPool = .shared, _ body: (Int) -> Void) {
        let grain = max(1, parallelThreshold / max(1, cost))
        parallelChunks(count, grain: grain, pool: pool) { range in for i in range { body(i) } }
    }

    /// `parallelRows` on `pool`, or in order on the calling thread when `pool` is nil (for
    /// callers whose pool is optional, such as code that also runs inside a pool task).
    public static func parallelRows(_ count: Int, cost: Int, pool: ThreadPool?, _ body: (Int) -> Void) {
        if let pool { parallelRows(count, cost: cost, pool: pool, body) } else { for i in 0..<count { body(i) } }
    }

    /// Writes `count` f32 values into `dst` as `dtype` (f32, f16 round to nearest even, bf16).
    public static func narrow(_ src: UnsafePointer<Float>, count: Int, to dtype: DType, into dst: UnsafeMutableRawPointer) {
        precondition(dtype.isElementFormat, "narrow: \(dtype) is not an element format")
        moek_from_f32(src, dtype.cValue, dst, count)
    }

    /// Asks for `bytes` from `p` (at most the first 64 KiB) to be brought into L2 ahead of use:
    /// for short runs read soon after (a decode step's cached keys and values of one head),
    /// which the hardware prefetcher would meet only after several misses.
    public static func prefetch(_ p: UnsafeRawPointer, bytes: Int) {
        moek_prefetch_l2(p, min(max(0, bytes), 64 << 10))
    }

    /// Reads `count` values of element format `dtype` at `src` into `dst` as f32 (exact).
    public static func widen(_ src: UnsafeRawPointer, count: Int, from dtype: DType, into dst: UnsafeMutablePointer<Float>) {
        precondition(dtype.isElementFormat, "widen: \(dtype) is not an element format")
        moek_to_f32(src, dtype.cValue, dst, count)
    }

    /// Splits `0..<count` into contiguous chunks of at least `grain` items (about four per
    /// thread, for balance) and runs `body` on each chunk in parallel.
    static func parallelChunks(_ count: Int, grain: Int, pool: ThreadPool,
                               _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let wanted = max(1, min(pool.threadCount * 4, count / max(1, grain)))
        let chunk = (count + wanted - 1) / wanted
        let tasks = (count + chunk - 1) / chunk
        pool.parallelFor(tasks) { t in
            body((t * chunk)..<min(count, (t + 1) * chunk))
        }
    }
}

/// Runs `body` with a 64-byte aligned scratch buffer of `count` floats, freed afterwards.
func withScratchFloats<R>(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
    let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64)
    defer { raw.deallocate() }
    return body(raw.bindMemory(to: Float.self, capacity: max(1, count)))
}
