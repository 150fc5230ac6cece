// Block formats: ggml's byte layouts (ggml-common.h) and their scalar dequantization, the
// reference every fused kernel is tested against. A block holds QK elements with its scales;
// the `moek_block_*` tables give each format's QK and bytes.
//
// Layouts (bytes, in order):
//   Q8_0   d f16, qs[32] int8                                   x = d q
//   Q4_0   d f16, qs[16] (low nibbles: 0..15, high: 16..31)     x = d (q - 8)
//   Q4_1   d f16, m f16, qs[16]                                 x = d q + m
//   Q5_0   d f16, qh u32 (bit j: 5th bit of element j), qs[16]  x = d (q - 16)
//   Q5_1   d f16, m f16, qh u32, qs[16]                         x = d q + m
//   IQ4_NL d f16, qs[16]                                        x = d kvalues[q]
//   MXFP4  e u8 (e8m0), qs[16]                                  x = 2^(e-128) kvalues_mxfp4[q]
//   Q2_K   scales[16] (low: scale, high: min), qs[64], d f16, dmin f16          (256 elements)
//   Q3_K   hmask[32], qs[64], scales[12] (6-bit, signed - 32), d f16            (256)
//   Q4_K   d f16, dmin f16, scales[12] (6-bit scale and min per 32), qs[128]    (256)
//   Q5_K   d f16, dmin f16, scales[12], qh[32], qs[128]                         (256)
//   Q6_K   ql[128], qh[64], scales[16] int8, d f16                              (256)
//   IQ4_XS d f16, scales_h u16, scales_l[4], qs[128]                            (256)

#include <stdint.h>
#include <string.h>

#include "internal.h"

static float f16(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return moek_f16_to_f32(h);
}



/// Q4_K and Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
static void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

static void block_q8_0(const uint8_t *b, float *y) {
  const float d = f16(b);
  for (int j = 0; j < 32; j++) y[j] = d * (float)(int8_t)b[2 + j];
}

static void block_q4_0(const uint8_t *b, float *y) {
  const float d = f16(b);
  for (int j = 0; j < 16; j++) {
    y[j] = d * (float)((b[2 + j] & 0xF) - 8);
    y[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
  }
}

static void block_q4_1(const uint8_t *b, float *y) {
  const float d = f16(b), m = f16(b + 2);
  for (int j = 0; j < 16; j++) {
    y[j] = d * (float)(b[4 + j] & 0xF) + m;
    y[j + 16] = d * (float)(b[4 + j] >> 4) + m;
  }
}

static void block_q5(const uint8_t *b, float *y, int with_min) {
  const float d = f16(b), m = with_min ? f16(b + 2) : 0.0f;
  const uint8_t *p = b + (with_min ? 4 : 2);
  uint32_t qh;
  memcpy(&qh, p, 4);
  const uint8_t *qs = p + 4;
  for (int j = 0; j < 16; j++) {
    const int lo = (qs[j] & 0xF) | (((qh >> j) & 1) << 4);
    const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = with_min ? d * (float)lo + m : d * (float)(lo - 16);
    y[j + 16] = with_min ? d * (float)hi + m : d * (float)(hi - 16);
  }
}

static void block_iq4_nl(const uint8_t *b, float *y) {
  const float d = f16(b);
  for (int j = 0; j < 16; j++) {
    y[j] = d * (float)moek_kvalues_iq4nl[b[2 + j] & 0xF];
    y[j + 16] = d * (float)moek_kvalues_iq4nl[b[2 + j] >> 4];
  }
}

static void block_mxfp4(const uint8_t *b, float *y) {
  const float d = moek_e8m0_half(b[0]);
  for (int j = 0; j < 16; j++) {
    y[j] = d * (float)moek_kvalues_mxfp4[b[1 + j] & 0xF];
    y[j + 16] = d * (float)moek_kvalues_mxfp4[b[1 + j] >> 4];
  }
}

static void block_q2_k(const uint8_t *b, float *y) {
  const uint8_t *scales = b, *q = b + 16;
  const float d = f16(b + 80), dmin = f16(b + 82);
  int is = 0;
  for (int n = 0; n < 256; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      uint8_t sc = scales[is++];
      float dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * (float)((q[l] >> shift) & 3) - ml;
      sc = scales[is++];
      dl = d * (sc & 0xF), ml = dmin * (sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * (float)((q[l + 16] >> shift) & 3) - ml;
      shift += 2;
    }
    q += 32;
  }
}

static void block_q3_k(const uint8_t *b, float *y) {
  const uint8_t *hm = b, *q = b + 32, *packed = b + 96;
  const float d_all = f16(b + 108);
  // The 16 six-bit scales: low 4 bits from bytes 0..7 (low nibble for 0..7, high for 8..15),
  // top 2 bits from bytes 8..11 (2 bits per scale, in four rounds).
  int8_t scales[16];
  for (int i = 0; i < 16; i++) {
    const int lo = i < 8 ? packed[i] & 0xF : packed[i - 8] >> 4;
    const int hi = (packed[8 + (i % 4)] >> (2 * (i / 4))) & 3;
    scales[i] = (int8_t)((lo | (hi << 4)) - 32);
  }
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < 256; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      float dl = d_all * (float)scales[is++];
      for (int l = 0; l < 16; ++l) *y++ = dl * (float)((int8_t)((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
      dl = d_all * (float)scales[is++];
      for (int l = 0; l < 16; ++l) *y++ = dl * (float)((int8_t)((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
      shift += 2;
      m <<= 1;
    }
    q += 32;
  }
}

static void block_q4_k(const uint8_t *b, float *y) {
  const float d = f16(b), dmin = f16(b + 2);
  const uint8_t *scales = b + 4, *q = b + 16;
  int is = 0;
  uint8_t sc, m;
  for (int j = 0; j < 256; j += 64) {
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (float)(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (float)(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

static void block_q5_k(const uint8_t *b, float *y) {
  const float d = f16(b), dmin = f16(b + 2);
  const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
  int is = 0;
  uint8_t sc, m, u1 = 1, u2 = 2;
  for (int j = 0; j < 256; j += 64) {
    scale_min_k4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 <<= 2;
    u2 <<= 2;
  }
}

static void block_q6_k(const uint8_t *b, float *y) {
  const uint8_t *ql = b, *qh = b + 128;
  const int8_t *sc = (const int8_t *)(b + 192);
  const float d = f16(b + 208);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

static void block_iq4_xs(const uint8_t *b, float *y) {
  const float d = f16(b);
  uint16_t scales_h;
  memcpy(&scales_h, b + 2, 2);
  const uint8_t *scales_l = b + 4, *qs = b + 8;
  for (int ib = 0; ib < 8; ++ib) {
    const int ls = ((scales_l[ib / 2] >> 4 * (ib % 2)) & 0xF) | (((scales_h >> 2 * ib) & 3) << 4);
    const float dl = d * (float)(ls - 32);
    for (int j = 0; j < 16; ++j) {
      y[j] = dl * (float)moek_kvalues_iq4nl[qs[j] & 0xF];
      y[j + 16] = dl * (float)moek_kvalues_iq4nl[qs[j] >> 4];
    }
    y += 32;
    qs += 16;
  }
}

int moek_block_elements(int dt) {
  switch (dt) {
    case MOEK_Q8_0: case MOEK_Q4_0: case MOEK_Q4_1: case MOEK_Q5_0: case MOEK_Q5_1: case MOEK_IQ4_NL: case MOEK_MXFP4:
      return 32;
    case MOEK_Q2_K: case MOEK_Q3_K: case MOEK_Q4_K: case MOEK_Q5_K: case MOEK_Q6_K: case MOEK_IQ4_XS:
      return 256;
    default: return 1;
  }
}

int moek_block_bytes(int dt) {
  switch (dt) {
    case MOEK_F32: return 4;
    case MOEK_F16: case MOEK_BF16: return 2;
    case MOEK_Q8_0: return 34;
    case MOEK_Q4_0: return 18;
    case MOEK_Q4_1: return 20;
    case MOEK_Q5_0: return 22;
    case MOEK_Q5_1: return 24;
    case MOEK_IQ4_NL: return 18;
    case MOEK_MXFP4: return 17;
    case MOEK_Q2_K: return 84;
    case MOEK_Q3_K: return 110;
    case MOEK_Q4_K: return 144;
    case MOEK_Q5_K: return 176;
    case MOEK_Q6_K: return 210;
    case MOEK_IQ4_XS: return 136;
    default: return 0;
  }
}

void moek_dequantize(const void *src, int dt, float *dst, size_t n) {
  const int isa = moek_isa();
  if ((isa == MOEK_ISA_AVX2 || isa == MOEK_ISA_AVX512) && moek_dequantize_avx2(src, dt, dst, n)) return;
  moek_dequantize_reference(src, dt, dst, n);
}

void moek_dequantize_reference(const void *src, int dt, float *dst, size_t n) {
  const size_t qk = (size_t)moek_block_elements(dt), bytes = (size_t)moek_block_bytes(dt);
  const uint8_t *b = (const uint8_t *)src;
  for (size_t i = 0; i + qk <= n; i += qk, b += bytes) {
    float *y = dst + i;
    switch (dt) {
      case MOEK_Q8_0: block_q8_0(b, y); break;
      case MOEK_Q4_0: block_q4_0(b, y); break;
      case MOEK_Q4_1: block_q4_1(b, y); break;
      case MOEK_Q5_0: block_q5(b, y, 0); break;
      case MOEK_Q5_1: block_q5(b, y, 1); break;
      case MOEK_IQ4_NL: block_iq4_nl(b, y); break;
      case MOEK_MXFP4: block_mxfp4(b, y); break;
      case MOEK_Q2_K: block_q2_k(b, y); break;
      case MOEK_Q3_K: block_q3_k(b, y); break;
      case MOEK_Q4_K: block_q4_k(b, y); break;
      case MOEK_Q5_K: block_q5_k(b, y); break;
      case MOEK_Q6_K: block_q6_k(b, y); break;
      case MOEK_IQ4_XS: block_iq4_xs(b, y); break;
      default: return;
    }
  }
}

void moek_gemv_rows_blocks(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx,
                           float *Y, size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t qk = (size_t)moek_block_elements(dt), bytes = (size_t)moek_block_bytes(dt);
  const size_t row_bytes = ldw / qk * bytes, blocks = K / qk;
  float buf[256];
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = (const uint8_t *)W + r * row_bytes;
    for (int m0 = 0; m0 < nx; m0 += 4) {
      const int mn = nx - m0 < 4 ? nx - m0 : 4;
      float acc[4] = {0, 0, 0, 0};
      for (size_t b = 0; b < blocks; b++) {
        moek_dequantize(row + b * bytes, dt, buf, qk);
        for (int m = 0; m < mn; m++) {
          const float *x = X + (size_t)(m0 + m) * ldx + b * qk;
          float s = 0;
          for (size_t j = 0; j < qk; j++) s += buf[j] * x[j];
          acc[m] += s;
        }
      }
      for (int m = 0; m < mn; m++) Y[(size_t)(m0 + m) * ldy + r] = acc[m];
    }
  }
}
