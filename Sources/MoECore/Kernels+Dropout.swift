import _MoEKernels

extension Kernels {
    /// Inverted dropout over `count` elements: `dst[i] = src[i] · f` (or `dst[i] += src[i] · f`
    /// with `accumulate`), where f is 0 for a dropped element and 1 / (1 - p) otherwise. The
    /// elements are `first ..< first + count` of the mask drawn from `seed`: element j is dropped
    /// when the top 24 bits of `fmix32(lo(j) · 0x9E3779B9 + key)` fall below p · 2^24, with
    /// `key = lo(seed) ^ fmix32(hi(seed) + hi(j) · 0x632BE5AB)` (lo, hi: 32-bit halves; fmix32:
    /// MurmurHash3's finaliser), so a mask is drawn in any pieces, in parallel, and drawn again in
    /// a backward pass, the same on every ISA. `dst` may be `src`; 0 <= p < 1.
    public static func dropout(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, count: Int, seed: UInt64,
                               first: Int, p: Float, accumulate: Bool = false) {
        precondition(p >= 0 && p < 1 && count >= 0 && first >= 0, "dropout: p \(p), count \(count), first \(first)")
        moek_dropout(dst, src, count, seed, UInt64(first), p, accumulate ? 1 : 0)
    }
}
