// AVX-512 path (F, BW, VL, DQ): chosen at run time, compiled with no global flags.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx2"))), apply_to = function)

#define INLINE static inline __attribute__((always_inline))

/// 16 weights from element i of `base`, widened to f32.
INLINE __m512 ld16(const void *base, size_t i, int dt) {
  if (dt == MOEK_BF16) {
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  if (dt == MOEK_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i)));
  return _mm512_loadu_ps((const float *)base + i);
}

/// As `ld16`, for the lanes in `m` only (the others are zero).
INLINE __m512 ld16_mask(const void *base, size_t i, int dt, __mmask16 m) {
  if (dt == MOEK_BF16) {
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  if (dt == MOEK_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i));
  return _mm512_maskz_loadu_ps(m, (const float *)base + i);
}

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
  for (int i = 0; i < R; i++)
    for (int m = 0; m < NX; m++) Y[(size_t)m * ldy + r + i] = _mm512_reduce_add_ps(acc[i][m]);
}

#define GEMV_TILE gemv_tile
#define GEMV_IMPL gemv_impl_avx512
#define GEMV_NAME gemv_rows_avx512
#include "gemv_driver.inc"

// MARK: - Matrix multiply

enum { Z_MR = 16, Z_NR = 24, Z_KC = 256 };

static void widen_row_avx512(const void *src, int dt, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, ld16(src, i, dt));
  if (i < n) {
    const __mmask16 mask = (__mmask16)((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(dst + i, mask, ld16_mask(src, i, dt, mask));
  }
}

/// C^T tile of at most 8 rows of A, in 256-bit registers: Zen 4 issues two 256-bit FMAs a
/// cycle against one 512-bit, so a short remainder panel costs half a full one.
static void ukernel_avx512_half(const float *Ap, const float *Wp, size_t kc, float *C, size_t ldc,
                                size_t mr, size_t nr, int first) {
  __m256 c[Z_NR];
#pragma clang loop unroll(full)
  for (int j = 0; j < Z_NR; j++) c[j] = _mm256_setzero_ps();
  for (size_t k = 0; k < kc; k++) {
    const __m256 a = _mm256_load_ps(Ap + k * Z_MR);
#pragma clang loop unroll(full)
    for (int j = 0; j < Z_NR; j++) c[j] = _mm256_fmadd_ps(a, _mm256_set1_ps(Wp[j * Z_KC + k]), c[j]);
  }
  float tile[Z_NR][8] __attribute__((aligned(32)));
#pragma clang loop unroll(full)
  for (int j = 0; j < Z_NR; j++) _mm256_store_ps(tile[j], c[j]);
  moek_store_tile(&tile[0][0], 8, C, ldc, mr, nr, first);
}

/// C^T tile: lanes run over 16 rows of A, each of the 24 accumulators is one weight row.
static void ukernel_avx512(const float *Ap, const float *Wp, size_t kc, float *C, size_t ldc,
                           size_t mr, size_t nr, int first) {
  if (mr <= 8) {
    ukernel_avx512_half(Ap, Wp, kc, C, ldc, mr, nr, first);
    return;
  }
  __m512 c[Z_NR];
#pragma clang loop unroll(full)
  for (int j = 0; j < Z_NR; j++) c[j] = _mm512_setzero_ps();
  for (size_t k = 0; k < kc; k++) {
    const __m512 a = _mm512_load_ps(Ap + k * Z_MR);
#pragma clang loop unroll(full)
    for (int j = 0; j < Z_NR; j++) c[j] = _mm512_fmadd_ps(a, _mm512_set1_ps(Wp[j * Z_KC + k]), c[j]);
  }
  float tile[Z_NR][Z_MR] __attribute__((aligned(64)));
#pragma clang loop unroll(full)
  for (int j = 0; j < Z_NR; j++) _mm512_store_ps(tile[j], c[j]);
  moek_store_tile(&tile[0][0], Z_MR, C, ldc, mr, nr, first);
}

#define GEMM_MR Z_MR
#define GEMM_NR Z_NR
#define GEMM_KC Z_KC
#define GEMM_NAME gemm_packed_avx512
#define GEMM_UKERNEL ukernel_avx512
#define GEMM_WIDEN_ROW widen_row_avx512
#define GEMM_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T1)
#include "gemm_driver.inc"

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

#define ELT(name) name##_avx512
#include "elementwise.inc"
#undef ELT

#pragma clang attribute pop

const moek_vtable moek_vt_avx512 = {
    gemv_rows_avx512, gemm_packed_avx512, GEMM_MR, GEMM_NR, GEMM_KC, fma_probe_avx512,
    silu_mul_avx512, silu_mul_backward_avx512, adamw_avx512, sum_squares_avx512, read_probe_avx512,
};
#endif
