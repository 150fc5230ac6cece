// AVX2 integer dot products of block-format weight rows against 8-bit activation rows
// (act_quant.c), for the AVX2 and AVX-512 paths, as llama.cpp's vec_dot leaves do: each
// weight block is unpacked to int8 (or uint8) lanes once, multiplied with `maddubs` against up
// to 4 activation rows, and its scales applied to the integer sums; no dequantized weight is
// stored. Every block format: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, MXFP4 against 32-value
// activation blocks; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS against 256-value ones. Layouts:
// dequant.c.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

#include "avx2_blocks.h"

/// Weight bytes fetched ahead of the block being multiplied: rows of a run are contiguous, so
/// this is one stream per thread, and the loads that start each block no longer wait on memory.
enum { PF = 1024 };

/// Prefetches the `bytes` (at most 256) that lie PF ahead of p.
INLINE void prefetch_ahead(const uint8_t *p, int bytes) {
  for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(p + PF + o), _MM_HINT_T0);
}

/// Signed int8 weights w times signed int8 activations x: 8 int32 sums of 4 products.
INLINE __m256i dot_s8(__m256i w, __m256i x) {
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/// Rows [r0, r1) of a 32-element format against nx activation rows. Two accumulators per row
/// alternate between blocks, so a single row does not wait on the FMA latency.
INLINE void rows_32(int dt, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                    size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 32, bytes = (size_t)moek_block_bytes(dt);
  const int8_t *table = dt == MOEK_MXFP4 ? moek_kvalues_mxfp4 : moek_kvalues_iq4nl;
  const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)table));
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *b = W + r * row_bytes;
    __m256 acc[4][2];
    for (int m = 0; m < 4; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 2 <= blocks; i += 2) {
      prefetch_ahead(b + i * bytes, 64);
#pragma clang loop unroll(full)
      for (int h = 0; h < 2; h++) {
        float dw;
        const __m256i w = unpack32(dt, b + (i + h) * bytes, lut, &dw);
        for (int m = 0; m < nx; m++) {
          const __m256i s = dot_s8(w, _mm256_loadu_si256((const __m256i *)(x[m].q + (i + h) * 32)));
          acc[m][h] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[m].d[i + h]), _mm256_cvtepi32_ps(s), acc[m][h]);
        }
      }
    }
    if (i < blocks) {
      float dw;
      const __m256i w = unpack32(dt, b + i * bytes, lut, &dw);
      for (int m = 0; m < nx; m++) {
        const __m256i s = dot_s8(w, _mm256_loadu_si256((const __m256i *)(x[m].q + i * 32)));
        acc[m][0] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[m].d[i]), _mm256_cvtepi32_ps(s), acc[m][0]);
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(_mm256_add_ps(acc[m][0], acc[m][1]));
  }
}

/// Q4_1 and Q5_1: x = d q + m with q unsigned (4 or 5 bits), so the dot is
/// d sum(q x) + m sum(x), the second from the activation's 16-value sums.
INLINE void rows_32_min(int five, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                        size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 32, bytes = five ? 24 : 20;
  const __m256i ones = _mm256_set1_epi16(1), bit5 = _mm256_set1_epi8(0x10);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[4];
    float mins[4] = {0, 0, 0, 0};
    for (int m = 0; m < 4; m++) acc[m] = _mm256_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * bytes;
      if ((i & 1) == 0) prefetch_ahead(b, 64);
      const float d = half(b), mn = half(b + 2);
      __m256i q = nibbles(b + (five ? 8 : 4));
      if (five) q = _mm256_or_si256(q, _mm256_and_si256(bytes_from_bits(b + 4), bit5));
      for (int m = 0; m < nx; m++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[m].q + i * 32));
        const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ones);
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[m].d[i]), _mm256_cvtepi32_ps(s), acc[m]);
        mins[m] += mn * x[m].d[i] * (float)(x[m].bs[2 * i] + x[m].bs[2 * i + 1]);
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]) + mins[m];
  }
}

/// Q4_K and Q5_K's 8 six-bit scales (bytes 0..7) and mins (8..15) from the 12 packed bytes.
INLINE __m256i k4_scales_mins(const uint8_t *packed) {
  uint32_t u[4];
  memcpy(u, packed, 12);
  const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
  u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
  const uint32_t mins_lo = u[1] & k1;
  u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
  u[2] = mins_lo;
  u[0] &= k1;
  return _mm256_cvtepu8_epi16(_mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]));
}

/// Shuffle picking int16 lane j of each 128-bit half into every lane.
INLINE __m256i lane16(int j) { return _mm256_set1_epi16((short)((2 * j + 1) << 8 | 2 * j)); }

/// Q4_K (hbits NULL) and Q5_K: x = d sc_j q - dmin m_j per 32, so the dot is
/// d sum_j sc_j (q . x_j) - dmin sum_j m_j sum(x_j), the second from the activation sums.
INLINE void rows_k45(int five, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                     size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256, bytes = five ? 176 : 144;
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[4];
    __m128 accm[4];
    for (int m = 0; m < 4; m++) acc[m] = _mm256_setzero_ps(), accm[m] = _mm_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * bytes;
      prefetch_ahead(b, five ? 192 : 128);
      const float d = half(b), dmin = half(b + 2);
      const __m256i sm = k4_scales_mins(b + 4);
      const __m128i mins = _mm256_extracti128_si256(sm, 1);
      const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
      const uint8_t *qs = b + (five ? 48 : 16);
      const __m256i hbits = five ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
      __m256i sumi[4];
      for (int m = 0; m < nx; m++) {
        const __m256i bs = _mm256_loadu_si256((const __m256i *)(x[m].bs + i * 16));
        const __m128i s32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        const __m128 prod = _mm_cvtepi32_ps(_mm_madd_epi16(mins, s32));
        accm[m] = _mm_fmadd_ps(_mm_set1_ps(dmin * x[m].d[i]), prod, accm[m]);
        sumi[m] = _mm256_setzero_si256();
      }
#pragma clang loop unroll(full)
      for (int j = 0; j < 4; j++) {
        __m256i lo, hi;
        k45_quants(five, qs, hbits, j, &lo, &hi);
        const __m256i sl = _mm256_shuffle_epi8(scales, lane16(2 * j));
        const __m256i sh = _mm256_shuffle_epi8(scales, lane16(2 * j + 1));
        for (int m = 0; m < nx; m++) {
          const int8_t *q8 = x[m].q + i * 256 + 64 * j;
          const __m256i pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8));
          const __m256i ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
          sumi[m] = _mm256_add_epi32(sumi[m], _mm256_add_epi32(_mm256_madd_epi16(sl, pl), _mm256_madd_epi16(sh, ph)));
        }
      }
      for (int m = 0; m < nx; m++)
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[m].d[i]), _mm256_cvtepi32_ps(sumi[m]), acc[m]);
    }
    for (int m = 0; m < nx; m++) {
      const __m128 t = _mm_add_ps(accm[m], _mm_movehl_ps(accm[m], accm[m]));
      Y[(size_t)m * ldy + r] = hsum(acc[m]) - _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
    }
  }
}

/// IQ4_XS: 256 values as 8 runs of 32 from the IQ4_NL code book, each with a 6-bit scale
/// minus 32 (4 low bits in scales_l, 2 high in scales_h) relative to d.
INLINE void rows_iq4_xs(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                        size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)moek_kvalues_iq4nl));
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[4];
    for (int m = 0; m < 4; m++) acc[m] = _mm256_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 136;
      prefetch_ahead(b, 128);
      const float d = half(b);
      uint16_t high;
      memcpy(&high, b + 2, 2);
      __m256i sumi[4];
      for (int m = 0; m < nx; m++) sumi[m] = _mm256_setzero_si256();
#pragma clang loop unroll(full)
      for (int ib = 0; ib < 8; ib++) {
        const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((high >> (2 * ib)) & 3) << 4);
        const __m256i scale = _mm256_set1_epi16((short)(ls - 32));
        const __m256i w = _mm256_shuffle_epi8(lut, nibbles(b + 8 + 16 * ib)), aw = _mm256_sign_epi8(w, w);
        for (int m = 0; m < nx; m++) {
          const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[m].q + i * 256 + 32 * ib));
          const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, w));
          sumi[m] = _mm256_add_epi32(sumi[m], _mm256_madd_epi16(p, scale));
        }
      }
      for (int m = 0; m < nx; m++)
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[m].d[i]), _mm256_cvtepi32_ps(sumi[m]), acc[m]);
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]);
  }
}

/// Shuffle that spreads int8 scales a (8 bytes) and a + 1 (8 bytes) over 16 bytes.
INLINE __m128i pair_shuffle(int a) {
  return _mm_set_epi8((char)(a + 1), (char)(a + 1), (char)(a + 1), (char)(a + 1), (char)(a + 1), (char)(a + 1),
                      (char)(a + 1), (char)(a + 1), (char)a, (char)a, (char)a, (char)a, (char)a, (char)a, (char)a,
                      (char)a);
}

/// Q6_K: q in 0..63 (4 low bits in ql, 2 in qh) minus 32, an int8 scale per 16. The -32 is
/// taken as 32 times the activation's sum (maddubs of 32 against x), so q stays unsigned.
INLINE void rows_q6_k(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const __m256i m32 = _mm256_set1_epi8(32);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[4];
    for (int m = 0; m < 4; m++) acc[m] = _mm256_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 210;
      prefetch_ahead(b, 192);
      const float d = half(b + 208);
      const __m128i sc = _mm_loadu_si128((const __m128i *)(b + 192));
      __m256i sumi[4];
      for (int m = 0; m < nx; m++) sumi[m] = _mm256_setzero_si256();
#pragma clang loop unroll(full)
      for (int n = 0; n < 2; n++) {
        __m256i q[4];
        q6_k_quants(b + 64 * n, b + 128 + 32 * n, q);
#pragma clang loop unroll(full)
        for (int k = 0; k < 4; k++) {
          const __m256i s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pair_shuffle(8 * n + 2 * k)));
          for (int m = 0; m < nx; m++) {
            const __m256i q8 = _mm256_loadu_si256((const __m256i *)(x[m].q + i * 256 + 128 * n + 32 * k));
            const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[k], q8), _mm256_maddubs_epi16(m32, q8));
            sumi[m] = _mm256_add_epi32(sumi[m], _mm256_madd_epi16(s16, p));
          }
        }
      }
      for (int m = 0; m < nx; m++)
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[m].d[i]), _mm256_cvtepi32_ps(sumi[m]), acc[m]);
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]);
  }
}

/// Q2_K: 256 values of 2 bits, an unsigned 4-bit scale and min per 16 (scales[16]: scale low,
/// min high) relative to d and dmin: the dot is d sum_g sc_g (q . x_g) - dmin sum_g m_g sum(x_g).
/// Value e sits in byte 32 (e / 128) + e % 32 of qs, bits 2 ((e % 128) / 32).
INLINE void rows_q2_k(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0xF);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[4];
    for (int m = 0; m < 4; m++) acc[m] = _mm256_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 84;
      prefetch_ahead(b, 64);
      const float d = half(b + 80), dmin = half(b + 82);
      const __m128i packed = _mm_loadu_si128((const __m128i *)b);
      const __m128i sc = _mm_and_si128(packed, m4);
      const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
      __m256i sumi[4];
      for (int m = 0; m < nx; m++) {
        const __m256i bs = _mm256_loadu_si256((const __m256i *)(x[m].bs + i * 16));
        const __m256 mv = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs));
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * x[m].d[i]), mv, acc[m]);
        sumi[m] = _mm256_setzero_si256();
      }
#pragma clang loop unroll(full)
      for (int n = 0; n < 2; n++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * n));
#pragma clang loop unroll(full)
        for (int j = 0; j < 4; j++) {
          const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
          const __m256i s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pair_shuffle(8 * n + 2 * j)));
          for (int m = 0; m < nx; m++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[m].q + i * 256 + 128 * n + 32 * j));
            sumi[m] = _mm256_add_epi32(sumi[m], _mm256_madd_epi16(s16, _mm256_maddubs_epi16(q, xv)));
          }
        }
      }
      for (int m = 0; m < nx; m++)
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[m].d[i]), _mm256_cvtepi32_ps(sumi[m]), acc[m]);
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]);
  }
}

/// Q3_K: 256 values of 2 low bits (as Q2_K) and a high bit in hmask (byte e % 32, bit
/// 4 (e / 128) + (e % 128) / 32; clear means minus 4), a signed 6-bit scale per 16 (minus 32,
/// packed in 12 bytes) relative to d.
INLINE void rows_q3_k(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[4];
    for (int m = 0; m < 4; m++) acc[m] = _mm256_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 110;
      prefetch_ahead(b, 128);
      const float d = half(b + 108);
      int8_t scales[16];
      q3_k_scales(b + 96, scales);
      const __m128i sc = _mm_loadu_si128((const __m128i *)scales);
      const __m256i hm = _mm256_loadu_si256((const __m256i *)b);
      __m256i sumi[4];
      for (int m = 0; m < nx; m++) sumi[m] = _mm256_setzero_si256();
#pragma clang loop unroll(full)
      for (int n = 0; n < 2; n++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * n));
#pragma clang loop unroll(full)
        for (int j = 0; j < 4; j++) {
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + j), one);
          const __m256i w = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3),
                                            _mm256_andnot_si256(_mm256_cmpeq_epi8(high, one), four));
          const __m256i aw = _mm256_sign_epi8(w, w);
          const __m256i s16 = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pair_shuffle(8 * n + 2 * j)));
          for (int m = 0; m < nx; m++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(x[m].q + i * 256 + 128 * n + 32 * j));
            const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, w));
            sumi[m] = _mm256_add_epi32(sumi[m], _mm256_madd_epi16(s16, p));
          }
        }
      }
      for (int m = 0; m < nx; m++)
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[m].d[i]), _mm256_cvtepi32_ps(sumi[m]), acc[m]);
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]);
  }
}

INLINE int hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1)));
}

void moek_q8_quantize_avx2(const float *x, size_t K, int block, int8_t *q, float *d, int16_t *bs) {
  const size_t B = (size_t)block;
  const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (size_t b = 0; b < K / B; b++) {
    const float *xb = x + b * B;
    __m256 amax = zero, poison = zero;  // poison: x * 0 summed, NaN when any x is not finite
    for (size_t j = 0; j < B; j += 8) {
      const __m256 v = _mm256_loadu_ps(xb + j);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v));
      poison = _mm256_add_ps(poison, _mm256_mul_ps(v, zero));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float top = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    const int finite = hsum(poison) == 0.0f;
    d[b] = finite ? top / 127.0f : __builtin_nanf("");
    const __m256 inv = _mm256_set1_ps(finite && top > 0 ? 127.0f / top : 0.0f);
    for (size_t j = 0; j < B; j += 32) {
      __m256i v[4];
      for (int u = 0; u < 4; u++) {
        const __m256 xv = finite ? _mm256_loadu_ps(xb + j + 8 * u) : zero;
        v[u] = _mm256_cvtps_epi32(_mm256_mul_ps(xv, inv));
      }
      if (bs) {
        bs[(b * B + j) / 16] = (int16_t)hsum_epi32(_mm256_add_epi32(v[0], v[1]));
        bs[(b * B + j) / 16 + 1] = (int16_t)hsum_epi32(_mm256_add_epi32(v[2], v[3]));
      }
      const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256((__m256i *)(q + b * B + j), _mm256_permutevar8x32_epi32(packed, order));
    }
  }
}

int moek_gemv_rows_q8_avx2(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K) {
  const int block = moek_q8_block(dt);
  if (block == 0 || K % (size_t)block != 0) return 0;
  const size_t row_bytes = ldw / (size_t)moek_block_elements(dt) * (size_t)moek_block_bytes(dt);
  const uint8_t *w = (const uint8_t *)W;
  for (int m0 = 0; m0 < nx; m0 += 4) {
    const int mn = nx - m0 < 4 ? nx - m0 : 4;
    moek_act_row x[4];
    for (int m = 0; m < mn; m++) x[m] = moek_act_row_at(XQ, ldxq, m0 + m, K, block);
    float *y = Y + (size_t)m0 * ldy;
#define BY_ROWS(call)          \
  switch (mn) {                \
    case 1: { const int n_ = 1; call; } break; \
    case 2: { const int n_ = 2; call; } break; \
    case 3: { const int n_ = 3; call; } break; \
    default: { const int n_ = 4; call; } break; \
  }
    switch (dt) {
      case MOEK_Q8_0: BY_ROWS(rows_32(MOEK_Q8_0, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q4_0: BY_ROWS(rows_32(MOEK_Q4_0, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q5_0: BY_ROWS(rows_32(MOEK_Q5_0, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q4_1: BY_ROWS(rows_32_min(0, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q5_1: BY_ROWS(rows_32_min(1, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_IQ4_NL: BY_ROWS(rows_32(MOEK_IQ4_NL, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_MXFP4: BY_ROWS(rows_32(MOEK_MXFP4, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q4_K: BY_ROWS(rows_k45(0, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q5_K: BY_ROWS(rows_k45(1, w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q6_K: BY_ROWS(rows_q6_k(w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_IQ4_XS: BY_ROWS(rows_iq4_xs(w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q2_K: BY_ROWS(rows_q2_k(w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      case MOEK_Q3_K: BY_ROWS(rows_q3_k(w, row_bytes, x, n_, y, ldy, r0, r1, K)); break;
      default: return 0;
    }
#undef BY_ROWS
  }
  return 1;
}

#pragma clang attribute pop
#else
#include "internal.h"
void moek_q8_quantize_avx2(const float *x, size_t K, int block, int8_t *q, float *d, int16_t *bs) {
  (void)x; (void)K; (void)block; (void)q; (void)d; (void)bs;
}
int moek_gemv_rows_q8_avx2(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K) {
  (void)W; (void)dt; (void)ldw; (void)XQ; (void)ldxq; (void)nx; (void)Y; (void)ldy; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
