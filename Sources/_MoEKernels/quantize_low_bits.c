// Quantization into ggml's lowest-bit block formats, as ggml-quants.c computes them (so a tensor
// has llama-quantize's bytes): Q2_K and Q3_K by their reference quantizers without importance
// (`quantize_row_q2_K_ref`, `quantize_row_q3_K_ref`) and their weighted ones with it
// (`quantize_row_*_impl`); IQ4_NL and IQ4_XS by `quantize_row_iq4_nl_impl`, which llama-quantize
// runs with 7 scale trials either way, the importance weighting each value when given.
// Layouts: dequant.c.
#include "quantize_search.h"

/// Q2_K and Q3_K's 2-bit planes: value j + 32 p of each 128 in bits 2 p of byte j.
static void pack_twos(const uint8_t *L, uint8_t *qs) {
  for (int j = 0; j < 256; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/// ggml's `make_q3_quants` with do_rmse: the signed scale of n values on levels -nmax..nmax-1
/// under weights x^2, moving single levels while that helps; levels stored offset by nmax.
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
  float amax;
  const float max = signed_largest(n, x, &amax);
  if (amax < 1e-15f) return memset(L, 0, (size_t)n), 0.f;
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = QMAX(-nmax, QMIN(nmax - 1, nearest_int(iscale * x[i])));
    L[i] = (int8_t)l;
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        const int new_l = QMAX(-nmax, QMIN(nmax - 1, nearest_int(x[i] * sl2 / slx)));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = (int8_t)new_l, sumlx = slx, suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/// Q2_K's 2-bit levels against the block's 4-bit scales and mins (byte j: scale low, min high).
static void q2_k_levels(const float *x, const uint8_t *b, uint8_t *L) {
  const float dall = get_f16(b + 80), mall = get_f16(b + 82);
  for (int j = 0; j < 16; ++j) {
    const float d = dall * (b[j] & 0xF);
    if (!d) continue;
    const float m = mall * (b[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = (uint8_t)QMAX(0, QMIN(3, nearest_int((x[16 * j + ii] + m) / d)));
  }
}

/// Q2_K: per 16 values a scale and min (absolute error, |x| weights), each 4-bit relative to
/// the largest; with importance `qw`, both searched under it (`make_qkx3_quants`,
/// `make_qp_quants`).
static void q2_k(const float *x, uint8_t *b, const float *qw) {
  uint8_t L[256], Laux[16];
  float weights[16], mins[16], scales[16];
  memset(b, 0, 84);
  if (!qw) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16 * j + l]);
      scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = 15.f / max_scale;
      for (int j = 0; j < 16; ++j) b[j] = (uint8_t)nearest_int(iscale * scales[j]);
      put_f16(b + 80, max_scale / 15.f);
    }
    if (max_min > 0) {
      const float iscale = 15.f / max_min;
      for (int j = 0; j < 16; ++j) b[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
      put_f16(b + 82, max_min / 15.f);
    }
  } else {
    float sw[16] = {0}, sumx2 = 0;
    uint8_t Ls[16], Lm[16];
    for (int j = 0; j < 256; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / 256;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
      for (int l = 0; l < 16; ++l) sw[j] += weights[l];
      // ggml's `make_qkx3_quants` here; with weights given, the same operations as this.
      scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
    }
    put_f16(b + 80, make_qp_quants(16, 15, scales, Ls, sw));
    put_f16(b + 82, make_qp_quants(16, 15, mins, Lm, sw));
    for (int j = 0; j < 16; ++j) b[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
  }
  q2_k_levels(x, b, L);
  pack_twos(L, b + 16);
}

/// Q3_K: per 16 values a signed scale, 6-bit relative to the largest (with importance `qw`:
/// both searched under it, `make_qx_quants`), then every value re-rounded to -4..3; the third
/// bit goes to hmask (bit p of byte j: value j + 32 p).
static void q3_k(const float *x, uint8_t *b, const float *qw) {
  int8_t L[256], Ls[16];
  float scales[16];
  memset(b, 0, 110);
  uint8_t *sc = b + 96;
  if (!qw) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      if (fabsf(scales[j]) > amax) amax = fabsf(scales[j]), max_scale = scales[j];
    }
    memset(Ls, 0, sizeof Ls);  // all zero: scale bytes and d stay 0
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) Ls[j] = (int8_t)(QMAX(-32, QMIN(31, (int8_t)nearest_int(iscale * scales[j]))) + 32);
      put_f16(b + 108, 1 / iscale);
    }
  } else {
    float weight[16], sw[16], sumx2 = 0;
    for (int j = 0; j < 256; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = 2 * sumx2 / 256;
    for (int j = 0; j < 16; ++j) {
      float sumw = 0;
      for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    put_f16(b + 108, make_qx_quants(16, 32, scales, Ls, sw));
  }
  for (int j = 0; j < 16; ++j) {
    const int l = Ls[j];
    if (j < 8) sc[j] = (uint8_t)(l & 0xF);
    else sc[j - 8] |= (uint8_t)((l & 0xF) << 4);
    sc[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
  }
  const float dall = get_f16(b + 108);
  for (int j = 0; j < 16; ++j) {
    int8_t s = (int8_t)(j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4);
    s = (int8_t)((s | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    const float d = dall * s;
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = (int8_t)(QMAX(-4, QMIN(3, nearest_int(x[16 * j + ii] / d))) + 4);
  }
  uint8_t *hmask = b, U[256];
  for (int j = 0; j < 256; ++j) {
    if (L[j] > 3) {
      hmask[j % 32] |= (uint8_t)(1 << (j / 32));
      L[j] -= 4;
    }
    U[j] = (uint8_t)L[j];
  }
  pack_twos(U, b + 32);
}

/// ggml's `best_index_int8`: the index of the nearest of n sorted values (the lower on a tie).
static int best_index_int8(int n, const int8_t *val, float x) {
  if (x <= val[0]) return 0;
  if (x >= val[n - 1]) return n - 1;
  int ml = 0, mu = n - 1;
  while (mu - ml > 1) {
    const int mav = (ml + mu) / 2;
    if (x < val[mav]) mu = mav;
    else ml = mav;
  }
  return x - val[mu - 1] < val[mu] - x ? mu - 1 : mu;
}

/// ggml's `quantize_row_iq4_nl_impl` with 7 trials: `super` values (32 for IQ4_NL, 256 for
/// IQ4_XS) in blocks of 32 on the non-linear grid, each block's scale searched under weights
/// x^2 (or qw sqrt(sigma2 + x^2)); IQ4_XS then codes the scales in 6 bits against the largest.
/// Writes d (f16) at `dh`, the nibbles at q4 and, for IQ4_XS, the scale bits.
static void iq4(int super, const float *x, uint8_t *dh, uint8_t *q4, uint8_t *scales_h, uint8_t *scales_l, const float *qw) {
  const int8_t *values = moek_kvalues_iq4nl;
  const int ntry = 7, blocks = super / 32;
  uint8_t L[256];
  float weight[32], scales[8], sigma2 = 0;
  for (int j = 0; j < super; ++j) sigma2 += x[j] * x[j];
  sigma2 *= 2.f / super;
  memset(q4, 0, (size_t)super / 2);
  put_f16(dh, 0.f);
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < blocks; ++ib) {
    const float *xb = x + 32 * ib;
    uint8_t *Lb = L + 32 * ib;
    for (int j = 0; j < 32; ++j) weight[j] = qw ? qw[32 * ib + j] * sqrtf(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
    float amax;
    const float max = signed_largest(32, xb, &amax);
    if (amax < 1e-15f) {
      scales[ib] = 0;
      continue;
    }
    float d = -max / values[0], id = 1 / d, sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const int l = best_index_int8(16, values, id * xb[j]);
      Lb[j] = (uint8_t)l;
      const float q = values[l], w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; ++itry) {
      id = (itry + values[0]) / max;
      sumqx = sumq2 = 0;
      for (int j = 0; j < 32; ++j) {
        const float q = values[best_index_int8(16, values, id * xb[j])], w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) d = sumqx / sumq2, best = d * sumqx;
    }
    scales[ib] = d;
    if (fabsf(d) > amax_scale) amax_scale = fabsf(d), max_scale = d;
  }
  if (blocks > 1) {
    uint16_t h = 0;
    const float d = -max_scale / 32, id = d ? 1 / d : 0.f;
    put_f16(dh, d);
    for (int ib = 0; ib < blocks; ++ib) {
      int l = QMAX(-32, QMIN(31, nearest_int(id * scales[ib])));
      const float dl = d * l, idl = dl ? 1 / dl : 0.f;
      for (int j = 0; j < 32; ++j) L[32 * ib + j] = (uint8_t)best_index_int8(16, values, idl * x[32 * ib + j]);
      l += 32;
      if (ib % 2 == 0) scales_l[ib / 2] = (uint8_t)(l & 0xF);
      else scales_l[ib / 2] |= (uint8_t)((l & 0xF) << 4);
      h |= (uint16_t)((l >> 4) << (2 * ib));
    }
    memcpy(scales_h, &h, 2);
  } else {
    put_f16(dh, scales[0]);
    const float id = scales[0] ? 1 / scales[0] : 0;
    for (int j = 0; j < super; ++j) L[j] = (uint8_t)best_index_int8(16, values, id * x[j]);
  }
  for (int i = 0; i < super / 32; ++i)
    for (int j = 0; j < 16; ++j) q4[16 * i + j] = (uint8_t)(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

int moek_quantize_low_bits(const float *x, int dt, uint8_t *b, const float *qw) {
  switch (dt) {
    case MOEK_Q2_K: q2_k(x, b, qw); return 1;
    case MOEK_Q3_K: q3_k(x, b, qw); return 1;
    case MOEK_IQ4_NL: iq4(32, x, b, b + 2, NULL, NULL, qw); return 1;
    case MOEK_IQ4_XS: iq4(256, x, b, b + 8, b + 2, b + 4, qw); return 1;
    default: return 0;
  }
}
