// AVX2 dequantization of every block format to f32, for the AVX2 and AVX-512 paths: the
// matmul driver widens a block-format weight tile with it (gemm_driver.inc), once per tile and
// reused by every panel of activation rows. Each block's values are unpacked to int8 lanes (as
// the integer leaves do), converted and scaled with the same operations, in the same order, as
// the scalar reference in dequant.c, so the results are bitwise equal to it.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#include "avx2_blocks.h"

/// Lanes [8c, 8c + 8) of 32 int8 lanes as f32.
INLINE __m256 lanes8(__m256i q, int c) {
  const __m128i half16 = c < 2 ? _mm256_castsi256_si128(q) : _mm256_extracti128_si256(q, 1);
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c % 2 ? _mm_srli_si128(half16, 8) : half16));
}

/// y[0..32) = d q (one scale for the 32 lanes).
INLINE void put32(float *y, __m256i q, float d) {
  const __m256 dv = _mm256_set1_ps(d);
#pragma clang loop unroll(full)
  for (int c = 0; c < 4; c++) _mm256_storeu_ps(y + 8 * c, _mm256_mul_ps(dv, lanes8(q, c)));
}

/// y[0..32) = d q + m (Q4_1, Q5_1).
INLINE void put32_plus(float *y, __m256i q, float d, float m) {
  const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m);
#pragma clang loop unroll(full)
  for (int c = 0; c < 4; c++) _mm256_storeu_ps(y + 8 * c, _mm256_add_ps(_mm256_mul_ps(dv, lanes8(q, c)), mv));
}

/// y[0..32) = d q - m (the K formats with mins, one scale and min per 32).
INLINE void put32_minus(float *y, __m256i q, float d, float m) {
  const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m);
#pragma clang loop unroll(full)
  for (int c = 0; c < 4; c++) _mm256_storeu_ps(y + 8 * c, _mm256_sub_ps(_mm256_mul_ps(dv, lanes8(q, c)), mv));
}

/// y[0..16) = d0 q, y[16..32) = d1 q (the formats with a scale per 16); with `mins`, minus m0
/// and m1.
INLINE void put32_by16(float *y, __m256i q, float d0, float d1, int mins, float m0, float m1) {
#pragma clang loop unroll(full)
  for (int c = 0; c < 4; c++) {
    const __m256 v = _mm256_mul_ps(_mm256_set1_ps(c < 2 ? d0 : d1), lanes8(q, c));
    _mm256_storeu_ps(y + 8 * c, mins ? _mm256_sub_ps(v, _mm256_set1_ps(c < 2 ? m0 : m1)) : v);
  }
}

/// Q4_K and Q5_K sub-block j's 6-bit scale and min (as `scale_min_k4` in dequant.c).
INLINE void k4_scale_min(int j, const uint8_t *q, int *d, int *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

static void block_k45(int five, const uint8_t *b, float *y) {
  const float d = half(b), dmin = half(b + 2);
  const __m256i hbits = five ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
  for (int j = 0; j < 4; j++) {
    __m256i lo, hi;
    k45_quants(five, b + (five ? 48 : 16), hbits, j, &lo, &hi);
    int s0, m0, s1, m1;
    k4_scale_min(2 * j, b + 4, &s0, &m0);
    k4_scale_min(2 * j + 1, b + 4, &s1, &m1);
    put32_minus(y + 64 * j, lo, d * (float)s0, dmin * (float)m0);
    put32_minus(y + 64 * j + 32, hi, d * (float)s1, dmin * (float)m1);
  }
}

static void block_q6_k(const uint8_t *b, float *y) {
  const float d = half(b + 208);
  const int8_t *sc = (const int8_t *)(b + 192);
  const __m256i m32 = _mm256_set1_epi8(32);
  for (int n = 0; n < 2; n++) {
    __m256i q[4];
    q6_k_quants(b + 64 * n, b + 128 + 32 * n, q);
    for (int k = 0; k < 4; k++) {
      const int is = 8 * n + 2 * k;
      put32_by16(y + 128 * n + 32 * k, _mm256_sub_epi8(q[k], m32), d * (float)sc[is], d * (float)sc[is + 1], 0, 0, 0);
    }
  }
}

static void block_q2_k(const uint8_t *b, float *y) {
  const float d = half(b + 80), dmin = half(b + 82);
  const __m256i m3 = _mm256_set1_epi8(3);
  for (int n = 0; n < 2; n++) {
    const __m256i bits = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * n));
    for (int j = 0; j < 4; j++) {
      const uint8_t s0 = b[8 * n + 2 * j], s1 = b[8 * n + 2 * j + 1];
      put32_by16(y + 128 * n + 32 * j, _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3), d * (float)(s0 & 0xF),
                 d * (float)(s1 & 0xF), 1, dmin * (float)(s0 >> 4), dmin * (float)(s1 >> 4));
    }
  }
}

static void block_q3_k(const uint8_t *b, float *y) {
  const float d = half(b + 108);
  int8_t scales[16];
  q3_k_scales(b + 96, scales);
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
  const __m256i hm = _mm256_loadu_si256((const __m256i *)b);
  for (int n = 0; n < 2; n++) {
    const __m256i bits = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * n));
    for (int j = 0; j < 4; j++) {
      const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + j), one);
      const __m256i w = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3),
                                        _mm256_andnot_si256(_mm256_cmpeq_epi8(high, one), four));
      const int is = 8 * n + 2 * j;
      put32_by16(y + 128 * n + 32 * j, w, d * (float)scales[is], d * (float)scales[is + 1], 0, 0, 0);
    }
  }
}

static void block_iq4_xs(const uint8_t *b, float *y, __m256i lut) {
  const float d = half(b);
  uint16_t high;
  memcpy(&high, b + 2, 2);
  for (int ib = 0; ib < 8; ib++) {
    const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((high >> (2 * ib)) & 3) << 4);
    put32(y + 32 * ib, _mm256_shuffle_epi8(lut, nibbles(b + 8 + 16 * ib)), d * (float)(ls - 32));
  }
}

int moek_dequantize_avx2(const void *src, int dt, float *dst, size_t n) {
  const size_t qk = (size_t)moek_block_elements(dt), bytes = (size_t)moek_block_bytes(dt);
  const int8_t *table = dt == MOEK_MXFP4 ? moek_kvalues_mxfp4 : moek_kvalues_iq4nl;
  const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)table));
  const uint8_t *b = (const uint8_t *)src;
  for (size_t i = 0; i + qk <= n; i += qk, b += bytes) {
    float *y = dst + i, d;
    switch (dt) {
      case MOEK_Q8_0: case MOEK_Q4_0: case MOEK_Q5_0: case MOEK_IQ4_NL: case MOEK_MXFP4: {
        const __m256i q = unpack32(dt, b, lut, &d);
        put32(y, q, d);
        break;
      }
      case MOEK_Q4_1: put32_plus(y, nibbles(b + 4), half(b), half(b + 2)); break;
      case MOEK_Q5_1:
        put32_plus(y, _mm256_or_si256(nibbles(b + 8), _mm256_and_si256(bytes_from_bits(b + 4), _mm256_set1_epi8(0x10))),
                   half(b), half(b + 2));
        break;
      case MOEK_Q4_K: block_k45(0, b, y); break;
      case MOEK_Q5_K: block_k45(1, b, y); break;
      case MOEK_Q6_K: block_q6_k(b, y); break;
      case MOEK_Q2_K: block_q2_k(b, y); break;
      case MOEK_Q3_K: block_q3_k(b, y); break;
      case MOEK_IQ4_XS: block_iq4_xs(b, y, lut); break;
      default: return 0;
    }
  }
  return 1;
}

#pragma clang attribute pop
#else
#include "internal.h"
int moek_dequantize_avx2(const void *src, int dt, float *dst, size_t n) {
  (void)src; (void)dt; (void)dst; (void)n;
  return 0;
}
#endif
