// AVX-512 path (F, BW, VL, DQ): chosen at run time, compiled with no global flags.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx2"))), apply_to = function)

#define INLINE static inline __attribute__((always_inline))

#include "avx512_loads.h"
#include "avx512_reduce.h"  // reduce16

// MARK: - Matrix-vector rows

enum { GEMV_PF = 4096 };

/// R weight rows against NX activation rows; R and NX are constants after inlining.
/// Weight lines are prefetched into L2 `GEMV_PF` bytes ahead of use; past the end of a row the
/// prefetch moves on to the same row of the next tile (`pf`, or NULL for the last tile), so short
/// rows do not stall while the hardware prefetcher finds each new stream.
INLINE void gemv_tile(const char *w, size_t wstride, const int dt, const float *X, size_t ldx,
                      const int NX, const int R, float *Y, size_t ldy, size_t r, size_t K,
                      const char *pf) {
  __m512 acc[4][4];
  for (int i = 0; i < R; i++)
    for (int m = 0; m < NX; m++) acc[i][m] = _mm512_setzero_ps();
  size_t k = 0;
  const size_t esz = moek_dtype_size(dt);
  for (; k + 16 <= K; k += 16) {
    if ((k * esz) % 64 == 0) {
      const size_t ahead = k * esz + GEMV_PF;
      for (int i = 0; i < R; i++) {
        if (ahead < K * esz) _mm_prefetch(w + i * wstride + ahead, _MM_HINT_T1);
        else if (pf) _mm_prefetch(pf + i * wstride + (ahead - K * esz), _MM_HINT_T1);
      }
    }
    __m512 xv[4];
    for (int m = 0; m < NX; m++) xv[m] = _mm512_loadu_ps(X + (size_t)m * ldx + k);
    for (int i = 0; i < R; i++) {
      const __m512 wv = ld16(w + i * wstride, k, dt);
      for (int m = 0; m < NX; m++) acc[i][m] = _mm512_fmadd_ps(wv, xv[m], acc[i][m]);
    }
  }
  if (k < K) {
    const __mmask16 mask = (__mmask16)((1u << (K - k)) - 1u);
    __m512 xv[4];
    for (int m = 0; m < NX; m++) xv[m] = _mm512_maskz_loadu_ps(mask, X + (size_t)m * ldx + k);
    for (int i = 0; i < R; i++) {
      const __m512 wv = ld16_mask(w + i * wstride, k, dt, mask);
      for (int m = 0; m < NX; m++) acc[i][m] = _mm512_fmadd_ps(wv, xv[m], acc[i][m]);
    }
  }
  if (R == 4 && NX == 4) {
    // The 16 totals in one shuffle tree (`reduce16`), bit for bit the separate reductions, which
    // took twice the products' operations at attention's K of 64: decode's scores of 4 heads
    // against 4096 f16 keys of 64, one thread in cache, 41.6 -> 26.7 us.
    __m512 a[16];
    for (int i = 0; i < 4; i++)
      for (int m = 0; m < 4; m++) a[4 * i + m] = acc[i][m];
    const __m512 s = reduce16(a);  // quarter m: rows r .. r + 3 against X row m
    _mm_storeu_ps(Y + r, _mm512_castps512_ps128(s));
    _mm_storeu_ps(Y + ldy + r, _mm512_extractf32x4_ps(s, 1));
    _mm_storeu_ps(Y + 2 * ldy + r, _mm512_extractf32x4_ps(s, 2));
    _mm_storeu_ps(Y + 3 * ldy + r, _mm512_extractf32x4_ps(s, 3));
    return;
  }
  for (int i = 0; i < R; i++)
    for (int m = 0; m < NX; m++) Y[(size_t)m * ldy + r + i] = _mm512_reduce_add_ps(acc[i][m]);
}

#define GEMV_TILE gemv_tile
#define GEMV_IMPL gemv_impl_avx512
#define GEMV_NAME gemv_tiles_avx512
#include "gemv_driver.inc"

/// One activation row against 16-bit weight rows whose f32 activations take at most a quarter
/// of L1 (`ROW1_MAX_K`): one weight row at a time, so each thread reads one sequential stream,
/// which the hardware prefetcher follows best (two threads, bf16 rows of 2048 and 4096: 1.2x
/// the 4-row tiles' GB/s); longer rows keep the tiles, which load each activation once for 4
/// weight rows (one row at a time, the activations no longer stayed in L1: 0.6x at 7168). Two
/// accumulators per row (k mod 32 below 16, and above). At the last row, the first 4 KiB of
/// `next` is prefetched into L2.
enum { ROW1_MAX_K = 4096 };

/// One weight row's two accumulators of `gemv_row1_avx512` (k mod 32 below 16, and above),
/// added: its total is this vector's sum.
INLINE __m512 row1_partials(const char *w, const int dt, const float *X, size_t K) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  size_t k = 0;
  for (; k + 32 <= K; k += 32) {
    a0 = _mm512_fmadd_ps(ld16(w, k, dt), _mm512_loadu_ps(X + k), a0);
    a1 = _mm512_fmadd_ps(ld16(w, k + 16, dt), _mm512_loadu_ps(X + k + 16), a1);
  }
  if (k + 16 <= K) {
    a0 = _mm512_fmadd_ps(ld16(w, k, dt), _mm512_loadu_ps(X + k), a0);
    k += 16;
  }
  if (k < K) {
    const __mmask16 m = (__mmask16)((1u << (K - k)) - 1u);
    a1 = _mm512_fmadd_ps(ld16_mask(w, k, dt, m), _mm512_maskz_loadu_ps(m, X + k), a1);
  }
  return _mm512_add_ps(a0, a1);
}

/// Rows this short (attention's keys, a head's 64-256 values) are summed 16 at a time, in one
/// `reduce16` (bit for bit the separate reductions, which took as many operations as the
/// products at 64): one head's scores against 4096 f16 keys of 64, one thread in cache,
/// 14.1 -> 12.6 us.
enum { ROW1_SHORT_K = 256 };

INLINE void gemv_row1_avx512(const void *W, const int dt, size_t ldw, const float *X, float *Y, size_t r0, size_t r1,
                        size_t K, const void *next) {
  const size_t stride = ldw * 2;
  size_t r = r0;
  if (K <= ROW1_SHORT_K)
    for (; r + 16 <= r1; r += 16) {
      if (r + 16 == r1 && next)
        for (int b = 0; b < 4096; b += 64) _mm_prefetch((const char *)next + b, _MM_HINT_T1);
      // Keys stream from memory at long contexts: the lines 4 KB ahead are fetched into L2.
      for (size_t b = 0; b < 16 * stride; b += 64) _mm_prefetch((const char *)W + r * stride + 4096 + b, _MM_HINT_T1);
      __m512 a[16];
      for (int j = 0; j < 16; j++)  // reduce16 puts a[4 u + t]'s total at lane 4 t + u
        a[j] = row1_partials((const char *)W + (r + 4 * (size_t)(j % 4) + (size_t)(j / 4)) * stride, dt, X, K);
      _mm512_storeu_ps(Y + r, reduce16(a));
    }
  for (; r < r1; r++) {
    const char *w = (const char *)W + r * stride;
    if (r + 1 == r1 && next)
      for (int b = 0; b < 4096; b += 64) _mm_prefetch((const char *)next + b, _MM_HINT_T1);
    Y[r] = _mm512_reduce_add_ps(row1_partials(w, dt, X, K));
  }
}

static void gemv_rows_avx512(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx, float *Y,
                             size_t ldy, size_t r0, size_t r1, size_t K, const void *next) {
  if (nx == 1 && (dt == MOEK_BF16 || dt == MOEK_F16) && K <= ROW1_MAX_K) {
    if (dt == MOEK_BF16) gemv_row1_avx512(W, MOEK_BF16, ldw, X, Y, r0, r1, K, next);
    else gemv_row1_avx512(W, MOEK_F16, ldw, X, Y, r0, r1, K, next);
    return;
  }
  gemv_tiles_avx512(W, dt, ldw, X, ldx, nx, Y, ldy, r0, r1, K, next);
}

// MARK: - Matrix multiply: kernels_avx512_gemm.c

// MARK: - Probes

static double fma_probe_avx512(size_t iters) {
  __m512 a[16];
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int j = 0; j < 16; j++) a[j] = _mm512_set1_ps((float)j);
  for (size_t it = 0; it < iters; it++)
#pragma clang loop unroll(full)
    for (int j = 0; j < 16; j++) a[j] = _mm512_fmadd_ps(a[j], b, c);
  __m512 s = a[0];
  for (int j = 1; j < 16; j++) s = _mm512_add_ps(s, a[j]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return (double)iters * 16.0 * 16.0 * 2.0;
}

static float read_probe_avx512(const float *p, size_t n) {
  // Integer adds: any bit pattern (bf16 weights seen as f32) costs the same; no denormal stalls.
  const int32_t *q = (const int32_t *)p;
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    if (i + 1024 + 64 <= n)  // the same L2 prefetch the matvec leaf uses
      for (int j = 0; j < 64; j += 16) _mm_prefetch((const char *)(q + i + 1024 + j), _MM_HINT_T1);
    s0 = _mm512_add_epi32(s0, _mm512_loadu_si512(q + i));
    s1 = _mm512_add_epi32(s1, _mm512_loadu_si512(q + i + 16));
    s2 = _mm512_add_epi32(s2, _mm512_loadu_si512(q + i + 32));
    s3 = _mm512_add_epi32(s3, _mm512_loadu_si512(q + i + 48));
  }
  int32_t s = _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3)));
  for (; i < n; i++) s += q[i];
  return (float)s;
}


// MARK: - Elementwise

/// n (16 or 32) f16 values widened to f32 (exact).
INLINE void widen_f16_avx512(const uint16_t *src, float *dst, size_t n) {
  for (size_t i = 0; i < n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
}

#define ELT(name) name##_avx512
#include "elementwise.inc"
#undef ELT

/// The rank of each of `c` values (with indices `ix`) among them: how many beat it (larger, or
/// equal with a lower index), counted 16 at a time with mask compares; ranks below k give the
/// output slots. No branch depends on the values.
static void rank_into_avx512(const float *vals, const int32_t *ix, size_t c, size_t k, intptr_t *out) {
  for (size_t i = 0; i < c; i++) {
    const __m512 xi = _mm512_set1_ps(vals[i]);
    const __m512i ii = _mm512_set1_epi32(ix[i]);
    unsigned rank = 0;
    for (size_t b = 0; b < c; b += 16) {
      const __mmask16 m = c - b >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (c - b)) - 1u);
      const __m512 v = _mm512_maskz_loadu_ps(m, vals + b);
      const __mmask16 eq = _mm512_mask_cmp_ps_mask(m, v, xi, _CMP_EQ_OQ);
      const __mmask16 lower = _mm512_mask_cmplt_epi32_mask(eq, _mm512_maskz_loadu_epi32(m, ix + b), ii);
      rank += (unsigned)__builtin_popcount((unsigned)(_mm512_mask_cmp_ps_mask(m, v, xi, _CMP_GT_OQ) | lower));
    }
    if (rank < k) out[rank] = (intptr_t)ix[i];
  }
}

/// `moek_topk_row` without a branch on the values (insertion into a sorted prefix mispredicts
/// on every random row): the k-th largest of the 16 lane-wise maxima bounds the k-th largest of
/// the row from below, so only the values at or above it (about k to 2k of them) are ranked.
/// 64 values, k 8: about 60 ns a row against 520 by insertion.
static int topk_row_avx512(const float *x, size_t n, size_t k, intptr_t *out) {
  if (n == 0 || n > 256 || k > n) return 0;
  const size_t blocks = (n + 15) / 16;
  __mmask16 nan = 0;
  __m512 colmax = _mm512_set1_ps(-__builtin_inff());
  for (size_t b = 0; b < blocks; b++) {
    const __mmask16 m = n - 16 * b >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - 16 * b)) - 1u);
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-__builtin_inff()), m, x + 16 * b);
    nan |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
    colmax = _mm512_max_ps(colmax, v);
  }
  if (nan) return 0;
  float bound = -__builtin_inff();
  if (k <= 16 && n >= 16) {  // the k-th largest lane maximum (lanes past n hold -inf)
    float cm[16];
    _mm512_storeu_ps(cm, colmax);
    for (int l = 0; l < 16; l++) {
      const __mmask16 gt = _mm512_cmp_ps_mask(colmax, _mm512_set1_ps(cm[l]), _CMP_GT_OQ);
      const __mmask16 eq = _mm512_cmp_ps_mask(colmax, _mm512_set1_ps(cm[l]), _CMP_EQ_OQ) & (__mmask16)((1u << l) - 1u);
      if ((size_t)__builtin_popcount((unsigned)(gt | eq)) == k - 1) bound = cm[l];
    }
  }
  float vals[256 + 16];  // each block stores 16 lanes, of which the kept ones count
  int32_t ix[256 + 16];
  size_t c = 0;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (size_t b = 0; b < blocks; b++) {
    const __mmask16 m = n - 16 * b >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - 16 * b)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + 16 * b);
    const __mmask16 keep = _mm512_mask_cmp_ps_mask(m, v, _mm512_set1_ps(bound), _CMP_GE_OQ);
    // Compress in registers, then a plain store: the memory form is microcoded on Zen 4.
    _mm512_storeu_ps(vals + c, _mm512_maskz_compress_ps(keep, v));
    _mm512_storeu_si512(ix + c, _mm512_maskz_compress_epi32(keep, _mm512_add_epi32(lane, _mm512_set1_epi32((int)(16 * b)))));
    c += (size_t)__builtin_popcount((unsigned)keep);
  }
  rank_into_avx512(vals, ix, c, k, out);
  return 1;
}

/// `rope_rows` with the rotate-half pairs 16 at a time: each masked run of both halves is
/// loaded before either is stored (so in place works), with no fused products. The
/// interleaved layout takes the generic loop. 4 heads of 24, 1024 tokens: 11 us against 21.
static void rope_rows_simd_avx512(const float *x, float *out, size_t heads, size_t hd, size_t rd, const float *c,
                                  const float *s, float sign, int rotate_half) {
  if (!rotate_half) {
    rope_rows_avx512(x, out, heads, hd, rd, c, s, sign, rotate_half);
    return;
  }
  const size_t half = rd / 2;
  const __m512 sg = _mm512_set1_ps(sign);
  for (size_t h = 0; h < heads; h++) {
    const float *v = x + h * hd;
    float *o = out + h * hd;
    if (rd < hd && o != v) memcpy(o + rd, v + rd, (hd - rd) * sizeof(float));
    for (size_t i0 = 0; i0 < half; i0 += 16) {
      const size_t n = half - i0 < 16 ? half - i0 : 16;
      const __mmask16 m = (__mmask16)((1u << n) - 1u);
      const __m512 x0 = _mm512_maskz_loadu_ps(m, v + i0), x1 = _mm512_maskz_loadu_ps(m, v + half + i0);
      const __m512 ci = _mm512_maskz_loadu_ps(m, c + i0), si = _mm512_mul_ps(sg, _mm512_maskz_loadu_ps(m, s + i0));
      _mm512_mask_storeu_ps(o + i0, m, _mm512_sub_ps(_mm512_mul_ps(x0, ci), _mm512_mul_ps(x1, si)));
      _mm512_mask_storeu_ps(o + half + i0, m, _mm512_add_ps(_mm512_mul_ps(x1, ci), _mm512_mul_ps(x0, si)));
    }
  }
}

#pragma clang attribute pop

const moek_vtable moek_vt_avx512 = {
    gemv_rows_avx512, moek_gemm_packed_avx512, MOEK_AVX512_MR, MOEK_AVX512_NR, MOEK_AVX512_KC, moek_gemm_pack_a_avx512, moek_gemm_pack_a_t_avx512, moek_gemm_direct_avx512, fma_probe_avx512,
    silu_mul_avx512, silu_mul_backward_avx512, silu_mul_backward_scaled_avx512, adamw_avx512, sum_squares_avx512, read_probe_avx512,
    scale_dot_avx512, rms_norm_row_avx512, rms_norm_backward_row_avx512,
    causal_softmax_rows_avx512, causal_softmax_backward_rows_avx512,
    softmax_row_f64_avx512, combine_rows_avx512, softmax_rows_avx512, topk_row_avx512, rope_rows_simd_avx512, dropout_avx512,
    weighted_rows_avx512, argmax_avx512, rms_norm_row_f64_avx512,
};
#endif
