// AVX2 + FMA + F16C path (Haswell, Zen 1-3): chosen at run time, compiled with no global flags.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#define INLINE static inline __attribute__((always_inline))

/// 8 weights from element i of `base`, widened to f32.
INLINE __m256 ld8(const void *base, size_t i, int dt) {
  if (dt == MOEK_BF16) {
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)base + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  if (dt == MOEK_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
  return _mm256_loadu_ps((const float *)base + i);
}

INLINE float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// MARK: - Matrix-vector rows

enum { GEMV_PF = 4096 };

/// As the AVX-512 tile: weight lines are prefetched into L2 GEMV_PF bytes ahead, moving on to
/// the next tile's rows (`pf`) past the end of a row.
INLINE void gemv_tile(const char *w, size_t wstride, const int dt, const float *X, size_t ldx,
                      const int NX, const int R, float *Y, size_t ldy, size_t r, size_t K,
                      const char *pf) {
  __m256 acc[4][4];
  for (int i = 0; i < R; i++)
    for (int m = 0; m < NX; m++) acc[i][m] = _mm256_setzero_ps();
  size_t k = 0;
  const size_t esz = moek_dtype_size(dt);
  for (; k + 8 <= K; k += 8) {
    if ((k * esz) % 64 == 0) {
      const size_t ahead = k * esz + GEMV_PF;
      for (int i = 0; i < R; i++) {
        if (ahead < K * esz) _mm_prefetch(w + i * wstride + ahead, _MM_HINT_T1);
        else if (pf) _mm_prefetch(pf + i * wstride + (ahead - K * esz), _MM_HINT_T1);
      }
    }
    __m256 xv[4];
    for (int m = 0; m < NX; m++) xv[m] = _mm256_loadu_ps(X + (size_t)m * ldx + k);
    for (int i = 0; i < R; i++) {
      const __m256 wv = ld8(w + i * wstride, k, dt);
      for (int m = 0; m < NX; m++) acc[i][m] = _mm256_fmadd_ps(wv, xv[m], acc[i][m]);
    }
  }
  for (int i = 0; i < R; i++)
    for (int m = 0; m < NX; m++) {
      float s = hsum8(acc[i][m]);
      for (size_t kk = k; kk < K; kk++) s += moek_load_f32(w + i * wstride, kk, dt) * X[(size_t)m * ldx + kk];
      Y[(size_t)m * ldy + r + i] = s;
    }
}

#define GEMV_TILE gemv_tile
#define GEMV_IMPL gemv_impl_avx2
#define GEMV_NAME gemv_rows_avx2
#include "gemv_driver.inc"

// MARK: - Matrix multiply

enum { Y_MR = 16, Y_NR = 6, Y_KC = 256 };

static void widen_row_avx2(const void *src, int dt, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, ld8(src, i, dt));
  for (; i < n; i++) dst[i] = moek_load_f32(src, i, dt);
}

/// C^T tile: two vectors over 16 rows of A, times 6 weight rows.
static void ukernel_avx2(const float *Ap, const float *Wp, size_t kc, float *C, size_t ldc,
                         size_t mr, size_t nr, int first) {
  __m256 c0[Y_NR], c1[Y_NR];
#pragma clang loop unroll(full)
  for (int j = 0; j < Y_NR; j++) { c0[j] = _mm256_setzero_ps(); c1[j] = _mm256_setzero_ps(); }
  for (size_t k = 0; k < kc; k++) {
    const __m256 a0 = _mm256_load_ps(Ap + k * Y_MR), a1 = _mm256_load_ps(Ap + k * Y_MR + 8);
#pragma clang loop unroll(full)
    for (int j = 0; j < Y_NR; j++) {
      const __m256 w = _mm256_broadcast_ss(Wp + j * Y_KC + k);
      c0[j] = _mm256_fmadd_ps(a0, w, c0[j]);
      c1[j] = _mm256_fmadd_ps(a1, w, c1[j]);
    }
  }
  float tile[Y_NR][Y_MR] __attribute__((aligned(32)));
#pragma clang loop unroll(full)
  for (int j = 0; j < Y_NR; j++) { _mm256_store_ps(tile[j], c0[j]); _mm256_store_ps(tile[j] + 8, c1[j]); }
  moek_store_tile(&tile[0][0], Y_MR, C, ldc, mr, nr, first);
}

#define GEMM_MR Y_MR
#define GEMM_NR Y_NR
#define GEMM_KC Y_KC
#define GEMM_NAME gemm_packed_avx2
#define GEMM_UKERNEL ukernel_avx2
#define GEMM_WIDEN_ROW widen_row_avx2
#define GEMM_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T1)
#include "gemm_driver.inc"

// MARK: - Probes

static double fma_probe_avx2(size_t iters) {
  __m256 a[12];
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int j = 0; j < 12; j++) a[j] = _mm256_set1_ps((float)j);
  for (size_t it = 0; it < iters; it++)
#pragma clang loop unroll(full)
    for (int j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], b, c);
  __m256 s = a[0];
  for (int j = 1; j < 12; j++) s = _mm256_add_ps(s, a[j]);
  volatile float sink = hsum8(s);
  (void)sink;
  return (double)iters * 12.0 * 8.0 * 2.0;
}

static float read_probe_avx2(const float *p, size_t n) {
  const int32_t *q = (const int32_t *)p;  // integer adds: no denormal stalls on any bits
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_add_epi32(s0, _mm256_loadu_si256((const __m256i *)(q + i)));
    s1 = _mm256_add_epi32(s1, _mm256_loadu_si256((const __m256i *)(q + i + 8)));
    s2 = _mm256_add_epi32(s2, _mm256_loadu_si256((const __m256i *)(q + i + 16)));
    s3 = _mm256_add_epi32(s3, _mm256_loadu_si256((const __m256i *)(q + i + 24)));
  }
  int32_t lanes[8];
  _mm256_storeu_si256((__m256i *)lanes, _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3)));
  int32_t s = 0;
  for (int j = 0; j < 8; j++) s += lanes[j];
  for (; i < n; i++) s += q[i];
  return (float)s;
}


// MARK: - Elementwise

/// n (16 or 32) f16 values widened to f32 (exact).
static inline __attribute__((always_inline)) void widen_f16_avx2(const uint16_t *src, float *dst, size_t n) {
  for (size_t i = 0; i < n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
}

#define ELT(name) name##_avx2
#include "elementwise.inc"
#undef ELT

#pragma clang attribute pop

const moek_vtable moek_vt_avx2 = {
    gemv_rows_avx2, gemm_packed_avx2, GEMM_MR, GEMM_NR, GEMM_KC, NULL, NULL, NULL, fma_probe_avx2,
    silu_mul_avx2, silu_mul_backward_avx2, silu_mul_backward_scaled_avx2, adamw_avx2, sum_squares_avx2, read_probe_avx2,
    scale_dot_avx2, rms_norm_row_avx2, rms_norm_backward_row_avx2,
    causal_softmax_rows_avx2, causal_softmax_backward_rows_avx2,
    softmax_row_f64_avx2, combine_rows_avx2, softmax_rows_avx2, NULL, rope_rows_avx2, dropout_avx2,
    weighted_rows_avx2, argmax_avx2, rms_norm_row_f64_avx2,
};
#endif
