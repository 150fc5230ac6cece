// Portable scalar path: correct everywhere, fast nowhere. The vector paths are tested against it.
#include "internal.h"

static void widen_row_scalar(const void *src, int dt, float *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = moek_load_f32(src, i, dt);
}

static void gemv_rows_scalar(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx,
                             float *Y, size_t ldy, size_t r0, size_t r1, size_t K, const void *next) {
  (void)next;
  const size_t esz = moek_dtype_size(dt);
  for (size_t r = r0; r < r1; r++) {
    const void *row = (const char *)W + r * ldw * esz;
    float acc[4] = {0, 0, 0, 0};
    for (size_t k = 0; k < K; k++) {
      const float w = moek_load_f32(row, k, dt);
      for (int m = 0; m < nx; m++) acc[m] += w * X[(size_t)m * ldx + k];
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

enum { SC_MR = 4, SC_NR = 4, SC_KC = 256 };

static void ukernel_scalar(const float *Ap, const float *Wp, size_t kc, float *C,
                           size_t ldc, size_t mr, size_t nr, int first) {
  float acc[SC_NR][SC_MR] = {{0}};
  for (size_t k = 0; k < kc; k++)
    for (int j = 0; j < SC_NR; j++) {
      const float w = Wp[j * SC_KC + k];
      for (int i = 0; i < SC_MR; i++) acc[j][i] += Ap[k * SC_MR + i] * w;
    }
  moek_store_tile(&acc[0][0], SC_MR, C, ldc, mr, nr, first);
}

#define GEMM_MR SC_MR
#define GEMM_NR SC_NR
#define GEMM_KC SC_KC
#define GEMM_NAME gemm_packed_scalar
#define GEMM_UKERNEL ukernel_scalar
#define GEMM_WIDEN_ROW widen_row_scalar
#define GEMM_PREFETCH(p) __builtin_prefetch((p), 0, 2)
#include "gemm_driver.inc"

static double fma_probe_scalar(size_t iters) {
  float a[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  const float b = 0.999999f, c = 1e-7f;
  for (size_t it = 0; it < iters; it++)
    for (int j = 0; j < 8; j++) a[j] = a[j] * b + c;
  volatile float sink = a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
  (void)sink;
  return (double)iters * 8.0 * 2.0;
}

static float read_probe_scalar(const float *p, size_t n) {
  const uint32_t *q = (const uint32_t *)p;  // integer adds: no denormal stalls on any bits
  uint32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) { s0 += q[i]; s1 += q[i + 1]; s2 += q[i + 2]; s3 += q[i + 3]; }
  for (; i < n; i++) s0 += q[i];
  return (float)(s0 + s1 + s2 + s3);
}


// MARK: - Elementwise

/// n (16 or 32) f16 values widened to f32 (exact).
static inline void widen_f16_scalar(const uint16_t *src, float *dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = moek_f16_to_f32(src[i]);
}

#define ELT(name) name##_scalar
#include "elementwise.inc"
#undef ELT

const moek_vtable moek_vt_scalar = {
    gemv_rows_scalar, gemm_packed_scalar, GEMM_MR, GEMM_NR, GEMM_KC, NULL, NULL, NULL, fma_probe_scalar,
    silu_mul_scalar, silu_mul_backward_scalar, silu_mul_backward_scaled_scalar, adamw_scalar, sum_squares_scalar, read_probe_scalar,
    scale_dot_scalar, rms_norm_row_scalar, rms_norm_backward_row_scalar,
    causal_softmax_rows_scalar, causal_softmax_backward_rows_scalar,
    softmax_row_f64_scalar, combine_rows_scalar, softmax_rows_scalar, NULL, rope_rows_scalar, dropout_scalar,
    weighted_rows_scalar, argmax_scalar, rms_norm_row_f64_scalar,
};
