// AVX2+FMA matrix-vector rows on block-format weights (Q8_0, Q4_K, Q6_K), for the AVX2 and
// AVX-512 paths: each block is widened to f32 in registers and multiplied in the same pass,
// against up to 4 activation rows; no dequantized weight is stored. The layouts are ggml's
// (dequant.c, the reference these are tested against).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#include "avx2_blocks.h"

/// 8 signed / unsigned bytes at p as 32-bit lanes.
INLINE __m256i s8x8(const uint8_t *p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
INLINE __m256i u8x8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }

/// Accumulators: 8 registers shared by the NX activation rows, `8 / NX` independent chains each
/// (one chain per row would wait on the FMA latency: decode has a single row). NX is a constant
/// after inlining, and the chain of each product is fixed by its place in the block, so the
/// accumulators stay in registers.
#define ACC_DECL                                                                                    \
  __m256 acc[8];                                                                                    \
  for (int a = 0; a < 8; a++) acc[a] = _mm256_setzero_ps();                                         \
  const int chains = 8 / nx

/// acc[m] += w * x[m][off .. off + 8) for the activation rows, on chain `k % chains`.
#define FMA_ROWS(w, off, k)                                                                         \
  do {                                                                                              \
    const int c = (k) % chains;                                                                     \
    for (int m = 0; m < nx; m++)                                                                    \
      acc[m * chains + c] = _mm256_fmadd_ps((w), _mm256_loadu_ps(xb[m] + (off)), acc[m * chains + c]); \
  } while (0)

/// Row m's sum over its chains.
INLINE float row_sum(const __m256 *acc, int m, int chains) {
  __m256 s = acc[m * chains];
  for (int c = 1; c < chains; c++) s = _mm256_add_ps(s, acc[m * chains + c]);
  return hsum(s);
}

/// Q8_0: 32 int8 and an f16 scale per block.
INLINE void rows_q8_0(const uint8_t *W, size_t row_bytes, const float *X, size_t ldx, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 32;
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *b = W + r * row_bytes;
    ACC_DECL;
    for (size_t i = 0; i < blocks; i++, b += 34) {
      const __m256 d = _mm256_set1_ps(half(b));
      const float *xb[4];
      for (int m = 0; m < nx; m++) xb[m] = X + (size_t)m * ldx + i * 32;
#pragma clang loop unroll(full)
      for (int j = 0; j < 32; j += 8) {
        const __m256 w = _mm256_mul_ps(_mm256_cvtepi32_ps(s8x8(b + 2 + j)), d);
        FMA_ROWS(w, j, j / 8);
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = row_sum(acc, m, chains);
  }
}

/// Q4_K sub-block j's 6-bit scale and min (as `scale_min_k4` in dequant.c).
INLINE void scale_min(int j, const uint8_t *q, int *d, int *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

/// Q4_K: 256 elements as 8 sub-blocks of 32, x = d sc_j q - dmin m_j, nibbles of 32-byte runs.
INLINE void rows_q4_k(const uint8_t *W, size_t row_bytes, const float *X, size_t ldx, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const __m256i low = _mm256_set1_epi32(0xF);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *b = W + r * row_bytes;
    ACC_DECL;
    for (size_t i = 0; i < blocks; i++, b += 144) {
      const float d = half(b), dmin = half(b + 2);
      const uint8_t *sc = b + 4, *q = b + 16;
      for (int c = 0; c < 4; c++, q += 32) {  // 64 elements: sub-blocks 2c (low nibbles), 2c + 1 (high)
        int s0, m0, s1, m1;
        scale_min(2 * c, sc, &s0, &m0);
        scale_min(2 * c + 1, sc, &s1, &m1);
        const __m256 d0 = _mm256_set1_ps(d * s0), n0 = _mm256_set1_ps(dmin * m0);
        const __m256 d1 = _mm256_set1_ps(d * s1), n1 = _mm256_set1_ps(dmin * m1);
        const float *xb[4];
        for (int m = 0; m < nx; m++) xb[m] = X + (size_t)m * ldx + i * 256 + c * 64;
#pragma clang loop unroll(full)
        for (int j = 0; j < 32; j += 8) {
          const __m256i v = u8x8(q + j);
          const __m256 lo = _mm256_fmsub_ps(d0, _mm256_cvtepi32_ps(_mm256_and_si256(v, low)), n0);
          const __m256 hi = _mm256_fmsub_ps(d1, _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4)), n1);
          FMA_ROWS(lo, j, j / 4);
          FMA_ROWS(hi, j + 32, j / 4 + 1);
        }
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = row_sum(acc, m, chains);
  }
}

/// Q6_K: 256 elements, 4 low bits in ql, 2 high bits in qh, an int8 scale per 16, minus 32.
INLINE void rows_q6_k(const uint8_t *W, size_t row_bytes, const float *X, size_t ldx, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const __m256i low = _mm256_set1_epi32(0xF), two = _mm256_set1_epi32(3), bias = _mm256_set1_epi32(32);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *b = W + r * row_bytes;
    ACC_DECL;
    for (size_t i = 0; i < blocks; i++, b += 210) {
      const float d = half(b + 208);
      const int8_t *sc = (const int8_t *)(b + 192);
      for (int n = 0; n < 2; n++) {  // halves of 128
        const uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
        const float *xb[4];
        for (int m = 0; m < nx; m++) xb[m] = X + (size_t)m * ldx + i * 256 + 128 * n;
#pragma clang loop unroll(full)
        for (int l = 0; l < 32; l += 8) {
          const int is = 8 * n + l / 16;
          const __m256i a = u8x8(ql + l), c = u8x8(ql + l + 32), h = u8x8(qh + l);
          const __m256i q1 = _mm256_or_si256(_mm256_and_si256(a, low), _mm256_slli_epi32(_mm256_and_si256(h, two), 4));
          const __m256i q2 = _mm256_or_si256(_mm256_and_si256(c, low),
                                             _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2), two), 4));
          const __m256i q3 = _mm256_or_si256(_mm256_srli_epi32(a, 4),
                                             _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 4), two), 4));
          const __m256i q4 = _mm256_or_si256(_mm256_srli_epi32(c, 4),
                                             _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 6), two), 4));
          const __m256 w1 = _mm256_mul_ps(_mm256_set1_ps(d * sc[is]), _mm256_cvtepi32_ps(_mm256_sub_epi32(q1, bias)));
          const __m256 w2 = _mm256_mul_ps(_mm256_set1_ps(d * sc[is + 2]), _mm256_cvtepi32_ps(_mm256_sub_epi32(q2, bias)));
          const __m256 w3 = _mm256_mul_ps(_mm256_set1_ps(d * sc[is + 4]), _mm256_cvtepi32_ps(_mm256_sub_epi32(q3, bias)));
          const __m256 w4 = _mm256_mul_ps(_mm256_set1_ps(d * sc[is + 6]), _mm256_cvtepi32_ps(_mm256_sub_epi32(q4, bias)));
          FMA_ROWS(w1, l, l / 2);
          FMA_ROWS(w2, l + 32, l / 2 + 1);
          FMA_ROWS(w3, l + 64, l / 2 + 2);
          FMA_ROWS(w4, l + 96, l / 2 + 3);
        }
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = row_sum(acc, m, chains);
  }
}

int moek_gemv_rows_blocks_avx2(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx, float *Y,
                               size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t row_bytes = ldw / (size_t)moek_block_elements(dt) * (size_t)moek_block_bytes(dt);
  for (int m0 = 0; m0 < nx; m0 += 4) {
    const int mn = nx - m0 < 4 ? nx - m0 : 4;
    const float *x = X + (size_t)m0 * ldx;
    float *y = Y + (size_t)m0 * ldy;
#define BY_ROWS(f)                                                        \
  switch (mn) {                                                           \
    case 1: f(W, row_bytes, x, ldx, 1, y, ldy, r0, r1, K); break;         \
    case 2: f(W, row_bytes, x, ldx, 2, y, ldy, r0, r1, K); break;         \
    case 3: f(W, row_bytes, x, ldx, 3, y, ldy, r0, r1, K); break;         \
    default: f(W, row_bytes, x, ldx, 4, y, ldy, r0, r1, K); break;        \
  }
    switch (dt) {
      case MOEK_Q8_0: BY_ROWS(rows_q8_0); break;
      case MOEK_Q4_K: BY_ROWS(rows_q4_k); break;
      case MOEK_Q6_K: BY_ROWS(rows_q6_k); break;
      default: return 0;
    }
  }
  return 1;
}

#pragma clang attribute pop
#else
#include "internal.h"
int moek_gemv_rows_blocks_avx2(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx, float *Y,
                               size_t ldy, size_t r0, size_t r1, size_t K) {
  (void)W; (void)dt; (void)ldw; (void)X; (void)ldx; (void)nx; (void)Y; (void)ldy; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
