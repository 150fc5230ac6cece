// NEON integer dot products of block-format weight rows against 8-bit activation rows
// (act_quant.c), for AArch64: each weight block is unpacked to int8 lanes once and multiplied
// against up to 4 activation rows with widening multiply-accumulates (vmull_s8/vmlal_s8, then
// pairwise adds into int32; every AArch64 core has them), its scales applied to the integer
// sums. Formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, MXFP4 (32-value activation blocks),
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS (256-value ones). Layouts: dequant.c. Checked under qemu
// by scripts/check-neon.sh.
#include "internal.h"
#if defined(__aarch64__)
#include <arm_neon.h>

#define INLINE static inline __attribute__((always_inline))

INLINE float half(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return moek_f16_to_f32(h);
}

/// The dot product of 16 int8 pairs (|products| <= 128 * 127, so pairs fit int16).
INLINE int32_t dot16(int8x16_t a, int8x16_t b) {
  int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
  p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(b));
  return vaddlvq_s16(p);
}

/// Lane j of 16 is 0x10 when bit j of `v` is set: the fifth bit of Q5_0's and Q5_1's values.
INLINE uint8x16_t fifth_bits(uint16_t v) {
  static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t b = vcombine_u8(vdup_n_u8((uint8_t)(v & 0xFF)), vdup_n_u8((uint8_t)(v >> 8)));
  return vandq_u8(vtstq_u8(b, vld1q_u8(bit)), vdupq_n_u8(0x10));
}

/// A 32-element block's int8 weights (w0: values 0..15, w1: 16..31) and scale, by format:
/// Q8_0 as stored; Q4_0 nibbles minus 8; Q5_0 five bits minus 16; IQ4_NL and MXFP4 nibbles
/// through their code books (MXFP4's e8m0 scale halved, its values being stored doubled).
INLINE void unpack32(int dt, const uint8_t *b, int8x16_t lut, int8x16_t *w0, int8x16_t *w1, float *d) {
  const uint8x16_t m4 = vdupq_n_u8(0xF);
  switch (dt) {
    case MOEK_Q8_0:
      *d = half(b);
      *w0 = vld1q_s8((const int8_t *)(b + 2));
      *w1 = vld1q_s8((const int8_t *)(b + 18));
      return;
    case MOEK_Q4_0: {
      *d = half(b);
      const uint8x16_t v = vld1q_u8(b + 2);
      *w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, m4)), vdupq_n_s8(8));
      *w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
      return;
    }
    case MOEK_Q5_0: {
      *d = half(b);
      uint32_t qh;
      memcpy(&qh, b + 2, 4);
      const uint8x16_t v = vld1q_u8(b + 6);
      *w0 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(v, m4), fifth_bits((uint16_t)qh))), vdupq_n_s8(16));
      *w1 = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(v, 4), fifth_bits((uint16_t)(qh >> 16)))), vdupq_n_s8(16));
      return;
    }
    default: {  // IQ4_NL, MXFP4
      const uint8_t *qs = dt == MOEK_MXFP4 ? b + 1 : b + 2;
      *d = dt == MOEK_MXFP4 ? moek_e8m0_half(b[0]) : half(b);
      const uint8x16_t v = vld1q_u8(qs);
      *w0 = vqtbl1q_s8(lut, vandq_u8(v, m4));
      *w1 = vqtbl1q_s8(lut, vshrq_n_u8(v, 4));
      return;
    }
  }
}

/// Rows [r0, r1) of a 32-element format without a minimum: x = d w per 32.
INLINE void rows_32(int dt, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                    size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 32, bytes = (size_t)moek_block_bytes(dt);
  const int8x16_t lut = vld1q_s8(dt == MOEK_MXFP4 ? moek_kvalues_mxfp4 : moek_kvalues_iq4nl);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    float acc[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < blocks; i++) {
      int8x16_t w0, w1;
      float d;
      unpack32(dt, row + i * bytes, lut, &w0, &w1, &d);
      for (int m = 0; m < nx; m++) {
        const int8_t *q = x[m].q + i * 32;
        const int32_t s = dot16(w0, vld1q_s8(q)) + dot16(w1, vld1q_s8(q + 16));
        acc[m] += d * x[m].d[i] * (float)s;
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

/// Q4_1 and Q5_1: x = d q + m with q unsigned (4 or 5 bits), so the dot is d sum(q x) +
/// m sum(x), the second from the activation row's 16-value sums.
INLINE void rows_32_min(int five, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                        size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 32, bytes = five ? 24 : 20;
  const uint8x16_t m4 = vdupq_n_u8(0xF);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    float acc[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * bytes;
      const float d = half(b), mn = half(b + 2);
      const uint8x16_t v = vld1q_u8(b + (five ? 8 : 4));
      uint8x16_t lo = vandq_u8(v, m4), hi = vshrq_n_u8(v, 4);
      if (five) {
        uint32_t qh;
        memcpy(&qh, b + 4, 4);
        lo = vorrq_u8(lo, fifth_bits((uint16_t)qh));
        hi = vorrq_u8(hi, fifth_bits((uint16_t)(qh >> 16)));
      }
      const int8x16_t w0 = vreinterpretq_s8_u8(lo), w1 = vreinterpretq_s8_u8(hi);
      for (int m = 0; m < nx; m++) {
        const int8_t *q = x[m].q + i * 32;
        const int32_t s = dot16(w0, vld1q_s8(q)) + dot16(w1, vld1q_s8(q + 16));
        acc[m] += d * x[m].d[i] * (float)s + mn * x[m].d[i] * (float)(x[m].bs[2 * i] + x[m].bs[2 * i + 1]);
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

/// The 6-bit scales of a Q4_K or Q5_K block (dequant.c's scale_min_k4), and its mins, each
/// given to both 16-value halves of its sub-block (min16[2j] = min16[2j + 1] = min j).
INLINE void scales_k4(const uint8_t *sc, int scale[8], int min16[16]) {
  for (int j = 0; j < 8; j++) {
    int min;
    if (j < 4) {
      scale[j] = sc[j] & 63;
      min = sc[j + 4] & 63;
    } else {
      scale[j] = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
      min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
    min16[2 * j] = min16[2 * j + 1] = min;
  }
}

/// Adds a K-quant block with minimums to each activation row's sum: dx (d sumi - dmin sum_g
/// min16[g] bs[g]), bs the row's 16-value sums in block i.
INLINE void add_with_mins(float acc[4], const moek_act_row *x, int nx, size_t i, float d, float dmin,
                          const int32_t sumi[4], const int min16[16]) {
  for (int m = 0; m < nx; m++) {
    const int16_t *bs = x[m].bs + i * 16;
    int32_t summ = 0;
    for (int g = 0; g < 16; g++) summ += min16[g] * bs[g];
    acc[m] += x[m].d[i] * (d * (float)sumi[m] - dmin * (float)summ);
  }
}

/// Q5_K: Q4_K's scales and mins, and a fifth bit per value from qh (bit 2j for sub-block 2j's
/// values, 2j + 1 for 2j + 1's).
INLINE void rows_q5_k(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const uint8x16_t m4 = vdupq_n_u8(0xF), b16 = vdupq_n_u8(0x10);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    float acc[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 176, *qh = b + 16, *qs = b + 48;
      const float d = half(b), dmin = half(b + 2);
      int scale[8], min16[16];
      scales_k4(b + 4, scale, min16);
      const uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
      int32_t sumi[4] = {0, 0, 0, 0};
      for (int j = 0; j < 4; j++) {
        const uint8x16_t lo_bit = vdupq_n_u8((uint8_t)(1 << (2 * j))), hi_bit = vdupq_n_u8((uint8_t)(2 << (2 * j)));
        const uint8x16_t v0 = vld1q_u8(qs + 32 * j), v1 = vld1q_u8(qs + 32 * j + 16);
        const int8x16_t lo0 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(v0, m4), vandq_u8(vtstq_u8(h0, lo_bit), b16)));
        const int8x16_t lo1 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(v1, m4), vandq_u8(vtstq_u8(h1, lo_bit), b16)));
        const int8x16_t hi0 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(v0, 4), vandq_u8(vtstq_u8(h0, hi_bit), b16)));
        const int8x16_t hi1 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(v1, 4), vandq_u8(vtstq_u8(h1, hi_bit), b16)));
        for (int m = 0; m < nx; m++) {
          const int8_t *q = x[m].q + i * 256 + 64 * j;
          const int32_t a = dot16(lo0, vld1q_s8(q)) + dot16(lo1, vld1q_s8(q + 16));
          const int32_t c = dot16(hi0, vld1q_s8(q + 32)) + dot16(hi1, vld1q_s8(q + 48));
          sumi[m] += scale[2 * j] * a + scale[2 * j + 1] * c;
        }
      }
      add_with_mins(acc, x, nx, i, d, dmin, sumi, min16);
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

/// Q4_K: per 32 a 6-bit scale and min (as dequant.c's scale_min_k4); the dot is
/// d sum_j sc_j (q . x_j) - dmin sum_j m_j sum(x_j).
INLINE void rows_q4_k(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    float acc[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 144, *sc = b + 4, *qs = b + 16;
      const float d = half(b), dmin = half(b + 2);
      int scale[8], min16[16];
      scales_k4(sc, scale, min16);
      int32_t sumi[4] = {0, 0, 0, 0};
      for (int j = 0; j < 4; j++) {  // 64 values: low nibbles are sub-block 2j, high 2j + 1
        const uint8x16_t v0 = vld1q_u8(qs + 32 * j), v1 = vld1q_u8(qs + 32 * j + 16);
        const int8x16_t lo0 = vreinterpretq_s8_u8(vandq_u8(v0, vdupq_n_u8(0xF)));
        const int8x16_t lo1 = vreinterpretq_s8_u8(vandq_u8(v1, vdupq_n_u8(0xF)));
        const int8x16_t hi0 = vreinterpretq_s8_u8(vshrq_n_u8(v0, 4)), hi1 = vreinterpretq_s8_u8(vshrq_n_u8(v1, 4));
        for (int m = 0; m < nx; m++) {
          const int8_t *q = x[m].q + i * 256 + 64 * j;
          const int32_t a = dot16(lo0, vld1q_s8(q)) + dot16(lo1, vld1q_s8(q + 16));
          const int32_t c = dot16(hi0, vld1q_s8(q + 32)) + dot16(hi1, vld1q_s8(q + 48));
          sumi[m] += scale[2 * j] * a + scale[2 * j + 1] * c;
        }
      }
      add_with_mins(acc, x, nx, i, d, dmin, sumi, min16);
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

/// Q6_K: q in 0..63 (4 bits in ql, 2 in qh) minus 32, an int8 scale per 16.
INLINE void rows_q6_k(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const uint8x16_t m4 = vdupq_n_u8(0xF), m2 = vdupq_n_u8(3);
  const int8x16_t m32 = vdupq_n_s8(32);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    float acc[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 210;
      const int8_t *sc = (const int8_t *)(b + 192);
      const float d = half(b + 208);
      int32_t sumi[4] = {0, 0, 0, 0};
      for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
        for (int l = 0; l < 32; l += 16) {  // values l.. of each of the four 32-value runs
          const uint8x16_t a = vld1q_u8(ql + l), c = vld1q_u8(ql + l + 32), h = vld1q_u8(qh + l);
          int8x16_t q[4];
          q[0] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(a, m4), vshlq_n_u8(vandq_u8(h, m2), 4)));
          q[1] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(c, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(h, 2), m2), 4)));
          q[2] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(a, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(h, 4), m2), 4)));
          q[3] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(c, 4), vshlq_n_u8(vshrq_n_u8(h, 6), 4)));
          for (int k = 0; k < 4; k++) q[k] = vsubq_s8(q[k], m32);
          const int is = 8 * n + l / 16;
          for (int m = 0; m < nx; m++) {
            const int8_t *xq = x[m].q + i * 256 + 128 * n + l;
            for (int k = 0; k < 4; k++) sumi[m] += sc[is + 2 * k] * dot16(q[k], vld1q_s8(xq + 32 * k));
          }
        }
      }
      for (int m = 0; m < nx; m++) acc[m] += d * x[m].d[i] * (float)sumi[m];
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

/// Q2_K: 2-bit values (value e in byte 32 (e / 128) + e % 32 of qs, bits 2 ((e % 128) / 32)),
/// a 4-bit scale (low nibble) and min (high) per 16 relative to d and dmin: the dot is
/// d sum_g sc_g (q . x_g) - dmin sum_g m_g sum(x_g).
INLINE void rows_q2_k(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const uint8x16_t m3 = vdupq_n_u8(3);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    float acc[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 84, *qs = b + 16;
      const float d = half(b + 80), dmin = half(b + 82);
      int32_t sumi[4] = {0, 0, 0, 0};
      for (int n = 0; n < 2; n++) {
        const uint8x16_t b0 = vld1q_u8(qs + 32 * n), b1 = vld1q_u8(qs + 32 * n + 16);
        for (int j = 0; j < 4; j++) {
          const int8x16_t q0 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b0, vdupq_n_s8((int8_t)(-2 * j))), m3));
          const int8x16_t q1 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(b1, vdupq_n_s8((int8_t)(-2 * j))), m3));
          const int g = 8 * n + 2 * j;
          for (int m = 0; m < nx; m++) {
            const int8_t *xq = x[m].q + i * 256 + 128 * n + 32 * j;
            sumi[m] += (b[g] & 0xF) * dot16(q0, vld1q_s8(xq)) + (b[g + 1] & 0xF) * dot16(q1, vld1q_s8(xq + 16));
          }
        }
      }
      int min16[16];
      for (int g = 0; g < 16; g++) min16[g] = b[g] >> 4;
      add_with_mins(acc, x, nx, i, d, dmin, sumi, min16);
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

/// Q3_K: Q2_K's low bits and a high bit in hmask (byte e % 32, bit 4 (e / 128) + (e % 128) / 32;
/// clear means minus 4), a signed 6-bit scale per 16 relative to d.
INLINE void rows_q3_k(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                      size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const uint8x16_t m3 = vdupq_n_u8(3), four = vdupq_n_u8(4);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    float acc[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 110, *qs = b + 32;
      const float d = half(b + 108);
      int8_t scales[16];
      q3_k_scales(b + 96, scales);
      const uint8x16_t h0 = vld1q_u8(b), h1 = vld1q_u8(b + 16);
      int32_t sumi[4] = {0, 0, 0, 0};
      for (int n = 0; n < 2; n++) {
        const uint8x16_t b0 = vld1q_u8(qs + 32 * n), b1 = vld1q_u8(qs + 32 * n + 16);
        for (int j = 0; j < 4; j++) {
          const uint8x16_t bit = vdupq_n_u8((uint8_t)(1 << (4 * n + j)));
          // low bits, minus 4 where the high bit is clear (vtst gives 0xFF where it is set)
          const int8x16_t q0 = vreinterpretq_s8_u8(vsubq_u8(vandq_u8(vshlq_u8(b0, vdupq_n_s8((int8_t)(-2 * j))), m3),
                                                            vbicq_u8(four, vtstq_u8(h0, bit))));
          const int8x16_t q1 = vreinterpretq_s8_u8(vsubq_u8(vandq_u8(vshlq_u8(b1, vdupq_n_s8((int8_t)(-2 * j))), m3),
                                                            vbicq_u8(four, vtstq_u8(h1, bit))));
          const int g = 8 * n + 2 * j;
          for (int m = 0; m < nx; m++) {
            const int8_t *xq = x[m].q + i * 256 + 128 * n + 32 * j;
            sumi[m] += scales[g] * dot16(q0, vld1q_s8(xq)) + scales[g + 1] * dot16(q1, vld1q_s8(xq + 16));
          }
        }
      }
      for (int m = 0; m < nx; m++) acc[m] += d * x[m].d[i] * (float)sumi[m];
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

/// IQ4_XS: 8 runs of 32 values from the IQ4_NL code book (16 bytes of nibbles each: low ones
/// values 0..15, high ones 16..31), each with a 6-bit scale minus 32 (4 low bits in scales_l, 2
/// high in scales_h) relative to d.
INLINE void rows_iq4_xs(const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y, size_t ldy,
                        size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256;
  const int8x16_t lut = vld1q_s8(moek_kvalues_iq4nl);
  const uint8x16_t m4 = vdupq_n_u8(0xF);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    float acc[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 136;
      const float d = half(b);
      uint16_t high;
      memcpy(&high, b + 2, 2);
      int32_t sumi[4] = {0, 0, 0, 0};
      for (int ib = 0; ib < 8; ib++) {
        const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((high >> (2 * ib)) & 3) << 4);
        const uint8x16_t v = vld1q_u8(b + 8 + 16 * ib);
        const int8x16_t w0 = vqtbl1q_s8(lut, vandq_u8(v, m4)), w1 = vqtbl1q_s8(lut, vshrq_n_u8(v, 4));
        for (int m = 0; m < nx; m++) {
          const int8_t *xq = x[m].q + i * 256 + 32 * ib;
          sumi[m] += (ls - 32) * (dot16(w0, vld1q_s8(xq)) + dot16(w1, vld1q_s8(xq + 16)));
        }
      }
      for (int m = 0; m < nx; m++) acc[m] += d * x[m].d[i] * (float)sumi[m];
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = acc[m];
  }
}

int moek_gemv_rows_q8_neon(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
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
    switch (dt) {
      case MOEK_Q8_0: case MOEK_Q4_0: case MOEK_Q5_0: case MOEK_IQ4_NL: case MOEK_MXFP4:
        rows_32(dt, w, row_bytes, x, mn, y, ldy, r0, r1, K);
        break;
      case MOEK_Q4_1: rows_32_min(0, w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q5_1: rows_32_min(1, w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q4_K: rows_q4_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q5_K: rows_q5_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q6_K: rows_q6_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q2_K: rows_q2_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q3_K: rows_q3_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_IQ4_XS: rows_iq4_xs(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      default: return 0;
    }
  }
  return 1;
}
#else
int moek_gemv_rows_q8_neon(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K) {
  (void)W; (void)dt; (void)ldw; (void)XQ; (void)ldxq; (void)nx; (void)Y; (void)ldy; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
