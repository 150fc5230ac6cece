// Quantization of f32 rows into ggml's block formats, as ggml computes them: the reference
// quantizers (`quantize_row_*_ref` in ggml-quants.c), which llama-quantize uses without an
// importance matrix, and the importance-weighted ones (`quantize_row_*_impl`), which it uses
// with one; either way a tensor quantized here has the bytes llama.cpp would write.
// Layouts: dequant.c. Formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, MXFP4, Q4_K, Q5_K, Q6_K here; Q2_K,
// Q3_K, IQ4_NL and IQ4_XS in quantize_low_bits.c; the searches they share in quantize_search.h.
#include <float.h>
#include <math.h>
#include "internal.h"
#include "quantize_search.h"

static void q8_0(const float *x, uint8_t *b) {
  float amax = 0;
  for (int j = 0; j < 32; j++) amax = QMAX(amax, fabsf(x[j]));
  const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
  put_f16(b, d);
  for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/// The value of largest magnitude, with its sign (Q4_0 and Q5_0 scale by it).
static float signed_max(const float *x) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; j++)
    if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
  return max;
}

/// Packs 32 levels as Q4_0/Q4_1 store them: value j in the low nibble of byte j, value
/// 16 + j in the high one.
static void pack_nibbles(const uint8_t *L, uint8_t *qs) {
  for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((L[j] & 0xF) | (L[16 + j] & 0xF) << 4);
}

/// Packs 32 five-bit levels as Q5_0/Q5_1 store them: the nibbles, then the fifth bits in a u32.
static void pack_fives(const uint8_t *L, uint8_t *qs, uint8_t *qh_bytes) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; j++) {
    qh |= (uint32_t)((L[j] & 0x10u) >> 4) << j;
    qh |= (uint32_t)((L[16 + j] & 0x10u) >> 4) << (j + 16);
  }
  pack_nibbles(L, qs);
  memcpy(qh_bytes, &qh, 4);
}

static void q4_0(const float *x, uint8_t *b) {
  const float d = signed_max(x) / -8, id = d ? 1.0f / d : 0.0f;
  put_f16(b, d);
  uint8_t L[32];
  for (int j = 0; j < 32; j++) L[j] = (uint8_t)QMIN(15, (int8_t)(x[j] * id + 8.5f));
  pack_nibbles(L, b + 2);
}

static void q5_0(const float *x, uint8_t *b) {
  const float d = signed_max(x) / -16, id = d ? 1.0f / d : 0.0f;
  put_f16(b, d);
  uint8_t L[32];
  for (int j = 0; j < 32; j++) L[j] = (uint8_t)QMIN(31, (int8_t)(x[j] * id + 16.5f));
  pack_fives(L, b + 6, b + 2);
}

/// Q4_1 (bits 4) and Q5_1 (bits 5): x = d q + min over the block's range.
static void q_1(const float *x, uint8_t *b, int bits) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < 32; j++) min = QMIN(min, x[j]), max = QMAX(max, x[j]);
  const float d = (max - min) / (float)((1 << bits) - 1), id = d ? 1.0f / d : 0.0f;
  put_f16(b, d);
  put_f16(b + 2, min);
  uint8_t L[32];
  for (int j = 0; j < 32; j++) {
    const float v = (x[j] - min) * id + 0.5f;
    L[j] = bits == 4 ? (uint8_t)QMIN(15, (int8_t)v) : (uint8_t)v;
  }
  if (bits == 4) pack_nibbles(L, b + 4);
  else pack_fives(L, b + 8, b + 4);
}

static void mxfp4(const float *x, uint8_t *b) {
  float amax = 0;
  for (int j = 0; j < 32; j++) amax = QMAX(amax, fabsf(x[j]));
  const uint8_t e = amax > 0.0f ? (uint8_t)(floorf(log2f(amax)) - 2 + 127) : 0;
  const float d = moek_e8m0_half(e);
  b[0] = e;
  for (int j = 0; j < 16; j++) {
    uint8_t q[2];
    for (int h = 0; h < 2; h++) {
      const float v = x[j + 16 * h];
      int best = 0;
      float err = fabsf(moek_kvalues_mxfp4[0] * d - v);
      for (int i = 1; i < 16; i++) {
        const float e2 = fabsf(moek_kvalues_mxfp4[i] * d - v);
        if (e2 < err) best = i, err = e2;
      }
      q[h] = (uint8_t)best;
    }
    b[1 + j] = (uint8_t)(q[0] | q[1] << 4);
  }
}

/// Writes a Q4_K (nmax 15) or Q5_K (31) super-block from its 6-bit scales `ls` and mins `lm`
/// and the block's d and dmin: the packed scales, then every value re-rounded against them.
/// `L` holds the search's levels, kept where a sub-block's scale rounds to zero.
static void k45_pack(const float *x, uint8_t *b, int five, uint8_t *L, const uint8_t *ls, const uint8_t *lm,
                     float d_all, float dmin_all) {
  const int nmax = five ? 31 : 15;
  uint8_t *sc = b + 4;
  memset(sc, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      sc[j] = ls[j];
      sc[j + 4] = lm[j];
    } else {
      sc[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      sc[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
      sc[j - 0] |= (uint8_t)((lm[j] >> 4) << 6);
    }
  }
  put_f16(b, d_all);
  put_f16(b + 2, dmin_all);
  d_all = get_f16(b), dmin_all = get_f16(b + 2);
  for (int j = 0; j < 8; ++j) {
    int s, m;
    if (j < 4) {
      s = sc[j] & 63, m = sc[j + 4] & 63;
    } else {
      s = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
      m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
    const float d = d_all * s;
    if (!d) continue;
    const float dm = dmin_all * m;
    for (int ii = 0; ii < 32; ++ii) L[32 * j + ii] = (uint8_t)QMAX(0, QMIN(nmax, nearest_int((x[32 * j + ii] + dm) / d)));
  }
  if (!five) {
    uint8_t *q = b + 16;
    for (int j = 0; j < 256; j += 64, q += 32)
      for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    return;
  }
  uint8_t *qh = b + 16, *ql = b + 48, m1 = 1, m2 = 2;
  memset(qh, 0, 32);
  for (int n = 0; n < 256; n += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) l1 -= 16, qh[j] |= m1;
      if (l2 > 15) l2 -= 16, qh[j] |= m2;
      ql[j] = (uint8_t)(l1 | (l2 << 4));
    }
  }
}

/// Q4_K and Q5_K as the reference quantizer: per 32 values the scale and min that fit them
/// best, weighted by |x| plus the block's rms, then 6-bit scales relative to the largest.
static void k45(const float *x, uint8_t *b, int five) {
  const int nmax = five ? 31 : 15;
  uint8_t L[256], Laux[32], ls[8], lm[8];
  float weights[32], mins[8], scales[8], max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = sqrtf(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, five ? -0.5f : -1.f, 0.1f,
                                 five ? 15 : 20, 0);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; ++j) {
    ls[j] = (uint8_t)QMIN(63, (uint8_t)nearest_int(inv_scale * scales[j]));
    lm[j] = (uint8_t)QMIN(63, (uint8_t)nearest_int(inv_min * mins[j]));
  }
  k45_pack(x, b, five, L, ls, lm, max_scale / 63.f, max_min / 63.f);
}

/// Q6_K: per 16 values a signed scale (weighted by `qw` when given), 8-bit relative to the
/// largest, then every value re-rounded against them.
static void q6_k(const float *x, uint8_t *b, const float *qw) {
  int8_t L[256];
  float scales[16], max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : NULL);
    if (fabsf(scales[ib]) > max_abs_scale) max_abs_scale = fabsf(scales[ib]), max_scale = scales[ib];
  }
  memset(b, 0, 210);
  if (max_abs_scale < 1e-15f) return;
  const float iscale = -128.f / max_scale;
  put_f16(b + 208, 1 / iscale);
  int8_t *sc = (int8_t *)(b + 192);
  for (int ib = 0; ib < 16; ++ib) sc[ib] = (int8_t)QMIN(127, nearest_int(iscale * scales[ib]));
  const float d_all = get_f16(b + 208);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * sc[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = (int8_t)(QMAX(-32, QMIN(31, nearest_int(x[16 * j + ii] / d))) + 32);
  }
  uint8_t *ql = b, *qh = b + 128;
  for (int j = 0; j < 256; j += 128, ql += 64, qh += 32) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l] = (uint8_t)(q1 | (q3 << 4));
      ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
      qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                        ((L[j + l + 96] >> 4) << 6));
    }
  }
}

// MARK: importance-weighted quantizers (ggml's `quantize_row_*_impl`)

/// Each value's weight in a 32-value block: its importance times sqrt(sigma2 + x^2).
static void block_weights(const float *x, const float *qw, float sigma2, float *w) {
  for (int j = 0; j < 32; ++j) w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/// Q4_0 (bits 4) and Q5_0 (bits 5) weighted: the signed scale minimising the weighted error.
static void q_0_weighted(const float *x, uint8_t *b, int bits, float sigma2, const float *qw) {
  float w[32];
  int8_t L[32];
  block_weights(x, qw, sigma2, w);
  put_f16(b, make_qx_quants(32, bits == 4 ? 8 : 16, x, L, w));
  if (bits == 4) pack_nibbles((const uint8_t *)L, b + 2);
  else pack_fives((const uint8_t *)L, b + 6, b + 2);
}

/// Q4_1 and Q5_1 weighted: the scale and min minimising the weighted error.
static void q_1_weighted(const float *x, uint8_t *b, int bits, float sigma2, const float *qw) {
  float w[32], min;
  uint8_t L[32], Laux[32];
  block_weights(x, qw, sigma2, w);
  put_f16(b, make_qkx2_quants(32, bits == 4 ? 15 : 31, x, w, L, &min, Laux, -0.9f, 0.05f, 36, 0));
  put_f16(b + 2, -min);
  if (bits == 4) pack_nibbles(L, b + 4);
  else pack_fives(L, b + 8, b + 4);
}

/// Q4_K and Q5_K weighted: each 32 values' scale and min under the importance, then the
/// 6-bit scales and mins chosen by the same weighted error (`make_qp_quants`).
static void k45_weighted(const float *x, uint8_t *b, int five, const float *qw) {
  uint8_t L[256], Laux[32], ls[8], lm[8];
  float w[32], sw[8], mins[8], scales[8], sum_x2 = 0;
  for (int l = 0; l < 256; ++l) sum_x2 += x[l] * x[l];
  const float sigma2 = 2 * sum_x2 / 256;
  for (int j = 0; j < 8; ++j) {
    block_weights(x + 32 * j, qw + 32 * j, sigma2, w);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += w[l];
    sw[j] = sumw;
    scales[j] = make_qkx2_quants(32, five ? 31 : 15, x + 32 * j, w, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
  }
  const float d_block = make_qp_quants(8, 63, scales, ls, sw), m_block = make_qp_quants(8, 63, mins, lm, sw);
  if (five)
    for (int j = 0; j < 8; ++j) ls[j] = (uint8_t)QMIN(63, ls[j]), lm[j] = (uint8_t)QMIN(63, lm[j]);
  k45_pack(x, b, five, L, ls, lm, d_block, m_block);
}

int moek_quantize_row_weighted(const float *src, int dt, void *dst, size_t n, const float *qw) {
  if (!qw || dt == MOEK_Q8_0 || dt == MOEK_MXFP4) return moek_quantize(src, dt, dst, n);
  if (!moek_can_quantize(dt)) return 0;
  const size_t qk = (size_t)moek_block_elements(dt), bytes = (size_t)moek_block_bytes(dt);
  float sum_x2 = 0;
  for (size_t j = 0; j < n; ++j) sum_x2 += src[j] * src[j];
  const float sigma2 = sum_x2 / (float)n;  // the 32-value formats' row variance
  uint8_t *b = (uint8_t *)dst;
  for (size_t i = 0; i + qk <= n; i += qk, b += bytes) {
    const float *x = src + i, *w = qw + i;
    switch (dt) {
      case MOEK_Q4_0: q_0_weighted(x, b, 4, sigma2, w); break;
      case MOEK_Q5_0: q_0_weighted(x, b, 5, sigma2, w); break;
      case MOEK_Q4_1: q_1_weighted(x, b, 4, sigma2, w); break;
      case MOEK_Q5_1: q_1_weighted(x, b, 5, sigma2, w); break;
      case MOEK_Q4_K: k45_weighted(x, b, 0, w); break;
      case MOEK_Q5_K: k45_weighted(x, b, 1, w); break;
      case MOEK_Q6_K: q6_k(x, b, w); break;
      default: moek_quantize_low_bits(x, dt, b, w); break;
    }
  }
  return 1;
}

int moek_can_quantize(int dt) {
  switch (dt) {
    case MOEK_Q8_0: case MOEK_Q4_0: case MOEK_Q4_1: case MOEK_Q5_0: case MOEK_Q5_1: case MOEK_MXFP4:
    case MOEK_Q4_K: case MOEK_Q5_K: case MOEK_Q6_K: case MOEK_Q2_K: case MOEK_Q3_K: case MOEK_IQ4_NL: case MOEK_IQ4_XS:
      return 1;
    default: return 0;
  }
}

int moek_quantize(const float *src, int dt, void *dst, size_t n) {
  if (!moek_can_quantize(dt)) return 0;
  const size_t qk = (size_t)moek_block_elements(dt), bytes = (size_t)moek_block_bytes(dt);
  uint8_t *b = (uint8_t *)dst;
  for (size_t i = 0; i + qk <= n; i += qk, b += bytes) {
    const float *x = src + i;
    switch (dt) {
      case MOEK_Q8_0: q8_0(x, b); break;
      case MOEK_Q4_0: q4_0(x, b); break;
      case MOEK_Q4_1: q_1(x, b, 4); break;
      case MOEK_Q5_0: q5_0(x, b); break;
      case MOEK_Q5_1: q_1(x, b, 5); break;
      case MOEK_MXFP4: mxfp4(x, b); break;
      case MOEK_Q4_K: k45(x, b, 0); break;
      case MOEK_Q5_K: k45(x, b, 1); break;
      case MOEK_Q6_K: q6_k(x, b, NULL); break;
      default: moek_quantize_low_bits(x, dt, b, NULL); break;
    }
  }
  return 1;
}
