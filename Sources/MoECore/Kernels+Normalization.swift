import Foundation
import _MoEKernels

// Dimension legend: R rows (tokens, or tokens x heads), C columns (features).

extension Kernels {
    /// Below this many elements a row-wise kernel runs on the calling thread only: a few
    /// microseconds of work, about what handing a chunk to a spinning worker costs back.
    static let parallelThreshold = 1 << 13

    /// Softmax over the last dimension, in place, for an f32 tensor [..., C]. Subtracts the row
    /// maximum first, so large logits do not overflow. A row of all `-inf` becomes all zeros.
    /// The exponentials and their sum are the `moek_softmax_rows` leaf (vectorised, 16 f32 lanes).
    public static func softmax(_ x: Tensor, pool: ThreadPool = .shared) {
        let c = x.shape.last ?? 1
        let rows = c == 0 ? 0 : x.count / c
        let p = x.mutableFloats.baseAddress
        guard let p else { return }
        let grain = x.count >= parallelThreshold ? max(1, parallelThreshold / max(1, c)) : rows
        parallelChunks(rows, grain: grain, pool: pool) { range in
            moek_softmax_rows(p + range.lowerBound * c, c, c, range.count)
        }
    }

    /// RMSNorm over the last dimension: `out = x / sqrt(mean(x^2) + eps) * weight`.
    /// x and out are f32 [..., C] (they may be the same tensor); weight is [C] of any dtype.
    /// The mean is accumulated in double, as exact as the f32 reference can be (the
    /// `moek_rms_norm_row_f64` leaf: 8 partial sums in f64; a scalar loop in f64 cost a decode
    /// step 3-8 us a norm, four norms a layer, on the calling thread while the others waited).
    public static func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float, into out: Tensor,
                               pool: ThreadPool = .shared) {
        let c = x.shape.last ?? 1
        precondition(weight.count == c && out.shape == x.shape, "rmsNorm: x \(x.shape), weight \(weight.shape), out \(out.shape)")
        let w = weight.dtype == .f32 ? weight : weight.converted(to: .f32)
        let rows = c == 0 ? 0 : x.count / c
        let src = x.floats.baseAddress, dst = out.mutableFloats.baseAddress, wp = w.floats.baseAddress
        guard let src, let dst, let wp else { return }
        let grain = x.count >= parallelThreshold ? max(1, parallelThreshold / max(1, c)) : rows
        parallelChunks(rows, grain: grain, pool: pool) { range in
            for r in range { moek_rms_norm_row_f64(src + r * c, wp, eps, dst + r * c, c) }
        }
    }

    /// RMSNorm returning a new tensor.
    public static func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float, pool: ThreadPool = .shared) -> Tensor {
        let out = Tensor(uninitialized: x.shape)  // every row is written
        rmsNorm(x, weight: weight, eps: eps, into: out, pool: pool)
        return out
    }
}
