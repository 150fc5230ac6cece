// NEON path (AArch64: Apple silicon, Graviton, Ampere). Advanced SIMD is mandatory there.
#if defined(__aarch64__)
#include <arm_neon.h>
#include "internal.h"

#define INLINE static inline __attribute__((always_inline))

/// 4 weights from element i of `base`, widened to f32.
INLINE float32x4_t ld4(const void *base, size_t i, int dt) {
  if (dt == MOEK_BF16) {
    uint16x4_t h = vld1_u16((const uint16_t *)base + i);
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
  }
  if (dt == MOEK_F16) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)base + i)));
  return vld1q_f32((const float *)base + i);
}

// MARK: - Matrix-vector rows

enum { GEMV_PF = 4096 };

/// As the AVX-512 tile: weight lines are prefetched GEMV_PF bytes ahead, moving on to the next
/// tile's rows (`pf`) past the end of a row.
INLINE void gemv_tile(const char *w, size_t wstride, const int dt, const float *X, size_t ldx,
                      const int NX, const int R, float *Y, size_t ldy, size_t r, size_t K,
                      const char *pf) {
  float32x4_t acc[4][4];
  for (int i = 0; i < R; i++)
    for (int m = 0; m < NX; m++) acc[i][m] = vdupq_n_f32(0.0f);
  size_t k = 0;
  const size_t esz = moek_dtype_size(dt);
  for (; k + 4 <= K; k += 4) {
    if ((k * esz) % 64 == 0) {
      const size_t ahead = k * esz + GEMV_PF;
      for (int i = 0; i < R; i++) {
        if (ahead < K * esz) __builtin_prefetch(w + i * wstride + ahead, 0, 2);
        else if (pf) __builtin_prefetch(pf + i * wstride + (ahead - K * esz), 0, 2);
      }
    }
    float32x4_t xv[4];
    for (int m = 0; m < NX; m++) xv[m] = vld1q_f32(X + (size_t)m * ldx + k);
    for (int i = 0; i < R; i++) {
      const float32x4_t wv = ld4(w + i * wstride, k, dt);
      for (int m = 0; m < NX; m++) acc[i][m] = vfmaq_f32(acc[i][m], wv, xv[m]);
    }
  }
  for (int i = 0; i < R; i++)
    for (int m = 0; m < NX; m++) {
      float s = vaddvq_f32(acc[i][m]);
      for (size_t kk = k; kk < K; kk++) s += moek_load_f32(w + i * wstride, kk, dt) * X[(size_t)m * ldx + kk];
      Y[(size_t)m * ldy + r + i] = s;
    }
}

#define GEMV_TILE gemv_tile
#define GEMV_IMPL gemv_impl_neon
#define GEMV_NAME gemv_rows_neon
#include "gemv_driver.inc"

// MARK: - Matrix multiply

enum { N_MR = 8, N_NR = 12, N_KC = 256 };

static void widen_row_neon(const void *src, int dt, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, ld4(src, i, dt));
  for (; i < n; i++) dst[i] = moek_load_f32(src, i, dt);
}

/// C^T tile: two vectors over 8 rows of A, times 12 weight rows.
static void ukernel_neon(const float *Ap, const float *Wp, size_t kc, float *C, size_t ldc,
                         size_t mr, size_t nr, int first) {
  float32x4_t c0[N_NR], c1[N_NR];
  for (int j = 0; j < N_NR; j++) { c0[j] = vdupq_n_f32(0.0f); c1[j] = vdupq_n_f32(0.0f); }
  for (size_t k = 0; k < kc; k++) {
    const float32x4_t a0 = vld1q_f32(Ap + k * N_MR), a1 = vld1q_f32(Ap + k * N_MR + 4);
    for (int j = 0; j < N_NR; j++) {
      const float w = Wp[j * N_KC + k];
      c0[j] = vfmaq_n_f32(c0[j], a0, w);
      c1[j] = vfmaq_n_f32(c1[j], a1, w);
    }
  }
  float tile[N_NR][N_MR] __attribute__((aligned(16)));
  for (int j = 0; j < N_NR; j++) { vst1q_f32(tile[j], c0[j]); vst1q_f32(tile[j] + 4, c1[j]); }
  moek_store_tile(&tile[0][0], N_MR, C, ldc, mr, nr, first);
}

#define GEMM_MR N_MR
#define GEMM_NR N_NR
#define GEMM_KC N_KC
#define GEMM_NAME gemm_packed_neon
#define GEMM_UKERNEL ukernel_neon
#define GEMM_WIDEN_ROW widen_row_neon
#define GEMM_PREFETCH(p) __builtin_prefetch((p), 0, 2)
#include "gemm_driver.inc"

// MARK: - Probes

static double fma_probe_neon(size_t iters) {
  float32x4_t a[16];
  const float32x4_t b = vdupq_n_f32(0.999999f), c = vdupq_n_f32(1e-7f);
  for (int j = 0; j < 16; j++) a[j] = vdupq_n_f32((float)j);
  for (size_t it = 0; it < iters; it++)
    for (int j = 0; j < 16; j++) a[j] = vfmaq_f32(c, a[j], b);
  float32x4_t s = a[0];
  for (int j = 1; j < 16; j++) s = vaddq_f32(s, a[j]);
  volatile float sink = vaddvq_f32(s);
  (void)sink;
  return (double)iters * 16.0 * 4.0 * 2.0;
}

static float read_probe_neon(const float *p, size_t n) {
  const uint32_t *q = (const uint32_t *)p;  // integer adds: no denormal stalls on any bits
  uint32x4_t s0 = vdupq_n_u32(0), s1 = s0, s2 = s0, s3 = s0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = vaddq_u32(s0, vld1q_u32(q + i));
    s1 = vaddq_u32(s1, vld1q_u32(q + i + 4));
    s2 = vaddq_u32(s2, vld1q_u32(q + i + 8));
    s3 = vaddq_u32(s3, vld1q_u32(q + i + 12));
  }
  uint32_t s = vaddvq_u32(vaddq_u32(vaddq_u32(s0, s1), vaddq_u32(s2, s3)));
  for (; i < n; i++) s += q[i];
  return (float)s;
}


// MARK: - Elementwise

/// n (16 or 32) f16 values widened to f32 (exact).
static inline __attribute__((always_inline)) void widen_f16_neon(const uint16_t *src, float *dst, size_t n) {
  for (size_t i = 0; i < n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
}

#define ELT(name) name##_neon
#include "elementwise.inc"
#undef ELT

const moek_vtable moek_vt_neon = {
    gemv_rows_neon, gemm_packed_neon, GEMM_MR, GEMM_NR, GEMM_KC, NULL, NULL, NULL, fma_probe_neon,
    silu_mul_neon, silu_mul_backward_neon, silu_mul_backward_scaled_neon, adamw_neon, sum_squares_neon, read_probe_neon,
    scale_dot_neon, rms_norm_row_neon, rms_norm_backward_row_neon,
    causal_softmax_rows_neon, causal_softmax_backward_rows_neon,
    softmax_row_f64_neon, combine_rows_neon, softmax_rows_neon, NULL, rope_rows_neon, dropout_neon,
    weighted_rows_neon, argmax_neon, rms_norm_row_f64_neon,
};
#endif
