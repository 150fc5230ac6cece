// The scale searches of ggml's quantizers (ggml-quants.c), shared by quantize.c and
// quantize_low_bits.c: each reproduces ggml's float operations in ggml's order, so a block
// quantized here has llama-quantize's bytes.
#ifndef MOE_KERNELS_QUANTIZE_SEARCH_H
#define MOE_KERNELS_QUANTIZE_SEARCH_H
#include <math.h>
#include <string.h>
#include "internal.h"

#define QMIN(a, b) ((a) < (b) ? (a) : (b))
#define QMAX(a, b) ((a) > (b) ? (a) : (b))

/// Round to nearest (ties to even) through the float mantissa, as ggml's `nearest_int`.
static inline int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

static inline void put_f16(uint8_t *p, float f) {
  const uint16_t h = moek_f32_to_f16(f);
  memcpy(p, &h, 2);
}

static inline float get_f16(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return moek_f16_to_f32(h);
}

/// The value of largest magnitude, with its sign (the first of equals); its magnitude in amax.
static inline float signed_largest(int n, const float *x, float *amax) {
  float max = 0;
  *amax = 0;
  for (int i = 0; i < n; ++i)
    if (fabsf(x[i]) > *amax) *amax = fabsf(x[i]), max = x[i];
  return max;
}

/// ggml's `make_qkx2_quants`: the scale and min of n values on levels 0..nmax minimising the
/// weighted squared error (or, with `use_mad`, absolute error), searching nstep scales around
/// the range's; returns the scale and stores -min.
static inline float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                              uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
  float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min), scale = 1 / iscale, best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = (uint8_t)QMAX(0, QMIN(nmax, l));
    const float diff = scale * L[i] + min - x[i];
    best_error += weights[i] * (use_mad ? fabsf(diff) : diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = QMAX(0, QMIN(nmax, l));
      Laux[i] = (uint8_t)l;
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        cur_error += weights[i] * (use_mad ? fabsf(diff) : diff * diff);
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

/// ggml's `make_qx_quants` with rmse_type 1: the signed scale of n values on levels
/// -nmax..nmax-1 minimising the error weighted by `qw` (x^2 when NULL), searching 18 scales
/// near the largest value's; levels stored offset by nmax.
static inline float make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw) {
  float amax;
  const float max = signed_largest(n, x, &amax);
  if (amax < 1e-15f) return memset(L, 0, (size_t)n), 0.f;
  float iscale = -nmax / max, sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = QMAX(-nmax, QMIN(nmax - 1, nearest_int(iscale * x[i])));
    L[i] = (int8_t)(l + nmax);
    const float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = QMAX(-nmax, QMIN(nmax - 1, nearest_int(iscale * x[i])));
      const float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = (int8_t)(nmax + QMAX(-nmax, QMIN(nmax - 1, nearest_int(iscale * x[i]))));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

/// ggml's `make_qp_quants`: the positive scale of n values on levels 0..nmax minimising the
/// error weighted by `qw`, searching 8 scales, then moving single levels while that helps.
static inline float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = QMAX(max, x[i]);
  if (max < 1e-15f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = (uint8_t)nearest_int(iscale * x[i]);
  float scale = 1 / iscale, best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += qw[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max, scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = QMIN(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += qw[i] * diff * diff;
    }
    if (mse < best_mse) best_mse = mse, iscale = iscale_is;
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = QMIN(nmax, nearest_int(iscale * x[i]));
    L[i] = (uint8_t)l;
    sumlx += qw[i] * x[i] * l;
    suml2 += qw[i] * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = qw[i];
      float slx = sumlx - w * x[i] * L[i], sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = QMIN(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = (uint8_t)new_l, sumlx = slx, suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

#endif
