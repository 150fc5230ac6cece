// QMoE's ternary-coded weight rows (Frantar & Alistarh 2023): every weight of a row is lo, 0 or
// hi (the row's own two scales), and the row is stored as a stream of 16-bit codes into a
// dictionary of up to 65536 entries (the caller pads a shorter one to 65536), each entry a run
// of 2 to 56 ternary weights (pairs of them), any past the 28th zero. The products decode the
// stream in registers: y = hi * (sum of x where the weight is hi) + lo * (sum of x where it is
// lo); no dense weight is ever written.
//
// Dictionary entry (uint64): bits 0-27 the positive mask, bits 28-55 the negative mask (bit j:
// weight j of the run, j < 28), bits 56-61 the run length in weights (even, 2...56; the weights
// past the masks are 0). Callers (MoECore's `TernaryMatrix`) check every row's runs add up to
// exactly K before a product reads them.
#include <stdlib.h>
#include "internal.h"

#define MASK28 0x0FFFFFFFu

static inline uint32_t pos_mask(uint64_t e) { return (uint32_t)e & MASK28; }
static inline uint32_t neg_mask(uint64_t e) { return (uint32_t)(e >> 28) & MASK28; }
static inline uint32_t run_length(uint64_t e) { return (uint32_t)(e >> 56) & 63u; }
/// Weight j (< 56) of a run as -1, 0, 1.
static inline int run_value(uint32_t pm, uint32_t nm, uint32_t j) {
  return j < 28 ? (int)((pm >> j) & 1) - (int)((nm >> j) & 1) : 0;
}

/// Sums of x over one code's positive and negative weights, in ascending position, into *p, *n.
static inline void code_sums_scalar(uint64_t e, const float *x, float *p, float *n) {
  uint32_t pm = pos_mask(e), nm = neg_mask(e);
  float sp = *p, sn = *n;
  while (pm) { sp += x[__builtin_ctz(pm)]; pm &= pm - 1; }
  while (nm) { sn += x[__builtin_ctz(nm)]; nm &= nm - 1; }
  *p = sp;
  *n = sn;
}

static inline float row_scale(const uint16_t *scales, size_t r, int which) {
  return moek_f16_to_f32(scales[2 * r + (size_t)which]);
}

/// The portable rows: for each weight row, P and N summed code by code, bit by bit in order.
static void ternary_rows_scalar(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales,
                                const uint64_t *dict, const float *X, size_t ldx, int nx, float *Y, size_t ldy,
                                size_t r0, size_t r1) {
  for (size_t r = r0; r < r1; r++) {
    const float lo = row_scale(scales, r, 0), hi = row_scale(scales, r, 1);
    for (int m = 0; m < nx; m++) {
      const float *x = X + (size_t)m * ldx;
      float p = 0, n = 0;
      size_t pos = 0;
      for (uint32_t c = offsets[r]; c < offsets[r + 1]; c++) {
        const uint64_t e = dict[codes[c]];
        code_sums_scalar(e, x + pos, &p, &n);
        pos += run_length(e);
      }
      Y[(size_t)m * ldy + r] = hi * p + lo * n;
    }
  }
}

/// `moek_ternary_dequantize_rows` code by code (the reference, and the path without vectors).
static void ternary_dequantize_scalar(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales,
                                      const uint64_t *dict, float *W, size_t ldw, size_t r0, size_t r1) {
  for (size_t r = r0; r < r1; r++) {
    float *w = W + (r - r0) * ldw;
    const float lo = row_scale(scales, r, 0), hi = row_scale(scales, r, 1);
    size_t pos = 0;
    for (uint32_t c = offsets[r]; c < offsets[r + 1]; c++) {
      const uint64_t e = dict[codes[c]];
      const uint32_t pm = pos_mask(e), nm = neg_mask(e), len = run_length(e);
      for (uint32_t j = 0; j < len; j++) {
        const int t = run_value(pm, nm, j);
        w[pos + j] = t > 0 ? hi : t < 0 ? lo : 0.0f;
      }
      pos += len;
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/// Lane masks of each byte: entry b has lane j all ones where bit j of b is set.
static uint32_t byte_lanes[256][8] __attribute__((aligned(32)));

__attribute__((constructor)) static void make_byte_lanes(void) {
  for (int b = 0; b < 256; b++)
    for (int j = 0; j < 8; j++) byte_lanes[b][j] = (b >> j) & 1 ? 0xFFFFFFFFu : 0;
}

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)

static inline __m256 lanes(uint32_t mask, int byte) {
  return _mm256_load_ps((const float *)byte_lanes[(mask >> (8 * byte)) & 255]);
}

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// Row r's codes as two bit streams over its K weights (bit j of word j / 32: weight j is hi,
/// respectively lo), into K / 32 + 1 words each. The bits gather in 64-bit registers and a
/// word is stored once complete (a run's zero tail can complete two), so consecutive codes do
/// not wait on each other's stores.
/// Codes below `climit` may be read ahead.
static inline void row_masks(const uint16_t *codes, uint32_t c0, uint32_t c1, uint32_t climit, const uint64_t *dict, size_t K,
                             uint32_t *pw, uint32_t *nw) {
  uint64_t ap = 0, an = 0;
  size_t pos = 0, base = 0, w = 0;
  for (uint32_t c = c0; c < c1; c++) {
    // The dictionary entry 16 codes on (into the next rows', up to `climit`, the codes the caller
    // may read): the entries are up to 512 KiB, so most loads would otherwise wait on L2 or L3.
    __builtin_prefetch(dict + codes[c + 16 < climit ? c + 16 : c]);
    const uint64_t e = dict[codes[c]];
    const size_t b = pos - base;  // < 32, so a 28-bit mask shifted by it fits in 64 bits
    ap |= (uint64_t)pos_mask(e) << b;
    an |= (uint64_t)neg_mask(e) << b;
    pos += run_length(e);
    while (pos - base >= 32) {
      pw[w] = (uint32_t)ap;
      nw[w] = (uint32_t)an;
      ap >>= 32;
      an >>= 32;
      base += 32;
      w++;
    }
  }
  for (; w <= K / 32; w++) {
    pw[w] = (uint32_t)ap;
    nw[w] = (uint32_t)an;
    ap >>= 32;
    an >>= 32;
  }
}

/// hi * (sum of x where pw is set) + lo * (sum where nw is set) over K values: 32 at a time in
/// vectors, masks expanded by a table load per byte; the last K % 32 in scalar sums.
static inline float masked_row_avx2(const uint32_t *pw, const uint32_t *nw, const float *x, size_t K, float lo, float hi) {
  __m256 ap = _mm256_setzero_ps(), an = ap, bp = ap, bn = ap;
  const size_t full = K / 32;
  for (size_t w = 0; w < full; w++) {
    const uint32_t pm = pw[w], nm = nw[w];
    const float *xw = x + 32 * w;
    const __m256 v0 = _mm256_loadu_ps(xw), v1 = _mm256_loadu_ps(xw + 8), v2 = _mm256_loadu_ps(xw + 16), v3 = _mm256_loadu_ps(xw + 24);
    ap = _mm256_add_ps(ap, _mm256_add_ps(_mm256_and_ps(v0, lanes(pm, 0)), _mm256_and_ps(v1, lanes(pm, 1))));
    bp = _mm256_add_ps(bp, _mm256_add_ps(_mm256_and_ps(v2, lanes(pm, 2)), _mm256_and_ps(v3, lanes(pm, 3))));
    an = _mm256_add_ps(an, _mm256_add_ps(_mm256_and_ps(v0, lanes(nm, 0)), _mm256_and_ps(v1, lanes(nm, 1))));
    bn = _mm256_add_ps(bn, _mm256_add_ps(_mm256_and_ps(v2, lanes(nm, 2)), _mm256_and_ps(v3, lanes(nm, 3))));
  }
  float tp = 0, tn = 0;
  for (size_t j = 32 * full; j < K; j++) {
    if ((pw[j >> 5] >> (j & 31)) & 1) tp += x[j];
    if ((nw[j >> 5] >> (j & 31)) & 1) tn += x[j];
  }
  return hi * (hsum(_mm256_add_ps(ap, bp)) + tp) + lo * (hsum(_mm256_add_ps(an, bn)) + tn);
}

/// Hands each weight row of [r0, r1), as its two bit streams (in a buffer on the stack, or the
/// heap past 64K weights), to `row` with its index and scales; 0 if the heap buffer cannot be had.
typedef void (*stream_row_fn)(const uint32_t *pw, const uint32_t *nw, size_t r, float lo, float hi, size_t K, void *ctx);
static int stream_rows(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales, const uint64_t *dict,
                       size_t r0, size_t r1, size_t K, stream_row_fn row, void *ctx) {
  const size_t words = K / 32 + 1;
  uint32_t stack[2 * (65536 / 32 + 1)];
  uint32_t *pw = words <= 65536 / 32 + 1 ? stack : (uint32_t *)malloc(2 * words * sizeof(uint32_t));
  if (!pw) return 0;
  uint32_t *nw = pw + words;
  for (size_t r = r0; r < r1; r++) {
    row_masks(codes, offsets[r], offsets[r + 1], offsets[r1], dict, K, pw, nw);
    row(pw, nw, r, row_scale(scales, r, 0), row_scale(scales, r, 1), K, ctx);
  }
  if (pw != stack) free(pw);
  return 1;
}

/// What the product rows write: activation rows X [nx, ldx] into Y [nx, ldy].
typedef struct { const float *X; size_t ldx; int nx; float *Y; size_t ldy; } gemv_out;
/// Where dequantized rows go: row r at W + (r - r0) * ldw.
typedef struct { float *W; size_t ldw, r0; } dequant_out;

static void gemv_row_avx2(const uint32_t *pw, const uint32_t *nw, size_t r, float lo, float hi, size_t K, void *ctx) {
  const gemv_out *o = (const gemv_out *)ctx;
  for (int m = 0; m < o->nx; m++) o->Y[(size_t)m * o->ldy + r] = masked_row_avx2(pw, nw, o->X + (size_t)m * o->ldx, K, lo, hi);
}

/// 32 weights at a time: hi where the hi stream is set, lo where the lo stream is, else 0.
static void dequant_row_avx2(const uint32_t *pw, const uint32_t *nw, size_t r, float lo, float hi, size_t K, void *ctx) {
  const dequant_out *o = (const dequant_out *)ctx;
  const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  float *w = o->W + (r - o->r0) * o->ldw;
  size_t j = 0;
  for (; j + 32 <= K; j += 32) {
    const uint32_t pm = pw[j >> 5], nm = nw[j >> 5];
    for (int q = 0; q < 4; q++)
      _mm256_storeu_ps(w + j + 8 * q, _mm256_or_ps(_mm256_and_ps(vhi, lanes(pm, q)), _mm256_and_ps(vlo, lanes(nm, q))));
  }
  for (; j < K; j++) w[j] = ((pw[j >> 5] >> (j & 31)) & 1) ? hi : ((nw[j >> 5] >> (j & 31)) & 1) ? lo : 0.0f;
}

#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx2"))), apply_to = function)

/// The first `n` (0...16) lanes.
static inline __mmask16 first_lanes(size_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/// `masked_row_avx2` with the bit streams as AVX-512 lane masks (no table): 32 values a step
/// in two vectors; the last step's loads are masked to K, so they never touch memory past x[K).
static inline float masked_row_avx512(const uint32_t *pw, const uint32_t *nw, const float *x, size_t K, float lo, float hi) {
  __m512 ap = _mm512_setzero_ps(), an = ap, bp = ap, bn = ap;
  for (size_t w = 0; 32 * w < K; w++) {
    const size_t left = K - 32 * w;  // the streams' bits past K are 0
    const __mmask16 l0 = first_lanes(left), l1 = first_lanes(left > 16 ? left - 16 : 0);
    const __m512 v0 = _mm512_maskz_loadu_ps(l0, x + 32 * w), v1 = _mm512_maskz_loadu_ps(l1, x + 32 * w + 16);
    const uint32_t pm = pw[w], nm = nw[w];
    ap = _mm512_mask_add_ps(ap, (__mmask16)pm, ap, v0);
    bp = _mm512_mask_add_ps(bp, (__mmask16)(pm >> 16), bp, v1);
    an = _mm512_mask_add_ps(an, (__mmask16)nm, an, v0);
    bn = _mm512_mask_add_ps(bn, (__mmask16)(nm >> 16), bn, v1);
  }
  return hi * _mm512_reduce_add_ps(_mm512_add_ps(ap, bp)) + lo * _mm512_reduce_add_ps(_mm512_add_ps(an, bn));
}

/// The sums under one code at x (the run's start): masked loads of the run's non-zero lanes
/// (so no load passes the row's end), added under the hi and lo masks.
typedef struct { __m512 p0, p1, n0, n1; } code_sums;
static inline void add_code(code_sums *s, uint64_t e, const float *x) {
  const uint32_t pm = pos_mask(e), nm = neg_mask(e), any = pm | nm;
  const __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)any, x), v1 = _mm512_maskz_loadu_ps((__mmask16)(any >> 16), x + 16);
  s->p0 = _mm512_mask_add_ps(s->p0, (__mmask16)pm, s->p0, v0);
  s->p1 = _mm512_mask_add_ps(s->p1, (__mmask16)(pm >> 16), s->p1, v1);
  s->n0 = _mm512_mask_add_ps(s->n0, (__mmask16)nm, s->n0, v0);
  s->n1 = _mm512_mask_add_ps(s->n1, (__mmask16)(nm >> 16), s->n1, v1);
}

/// One activation row (decode), code by code with no bit streams: two codes a step, each into
/// its own sums, the second's start computed from the first's length, so the two codes' loads
/// and adds overlap (a step of one code ran 1.3x slower; of four, 1.1x).
static void ternary_rows_direct_avx512(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales,
                                       const uint64_t *dict, const float *x, float *y, size_t r0, size_t r1) {
  for (size_t r = r0; r < r1; r++) {
    const __m512 z = _mm512_setzero_ps();
    code_sums a = {z, z, z, z}, b = {z, z, z, z};
    size_t pos = 0;
    const uint32_t c1 = offsets[r + 1], climit = offsets[r1];
    uint32_t c = offsets[r];
    for (; c + 2 <= c1; c += 2) {
      // The entries 16 codes on (into the next rows', up to `climit`): see row_masks.
      __builtin_prefetch(dict + codes[c + 16 < climit ? c + 16 : c]);
      __builtin_prefetch(dict + codes[c + 17 < climit ? c + 17 : c]);
      const uint64_t e0 = dict[codes[c]], e1 = dict[codes[c + 1]];
      const size_t next = pos + run_length(e0);
      add_code(&a, e0, x + pos);
      add_code(&b, e1, x + next);
      pos = next + run_length(e1);
    }
    if (c < c1) add_code(&a, dict[codes[c]], x + pos);
    const __m512 p = _mm512_add_ps(_mm512_add_ps(a.p0, a.p1), _mm512_add_ps(b.p0, b.p1));
    const __m512 n = _mm512_add_ps(_mm512_add_ps(a.n0, a.n1), _mm512_add_ps(b.n0, b.n1));
    y[r] = row_scale(scales, r, 1) * _mm512_reduce_add_ps(p) + row_scale(scales, r, 0) * _mm512_reduce_add_ps(n);
  }
}

static void gemv_row_avx512(const uint32_t *pw, const uint32_t *nw, size_t r, float lo, float hi, size_t K, void *ctx) {
  const gemv_out *o = (const gemv_out *)ctx;
  for (int m = 0; m < o->nx; m++) o->Y[(size_t)m * o->ldy + r] = masked_row_avx512(pw, nw, o->X + (size_t)m * o->ldx, K, lo, hi);
}

/// 16 weights a store, from lane masks; the last K % 16 through a masked store.
static void dequant_row_avx512(const uint32_t *pw, const uint32_t *nw, size_t r, float lo, float hi, size_t K, void *ctx) {
  const dequant_out *o = (const dequant_out *)ctx;
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  float *w = o->W + (r - o->r0) * o->ldw;
  for (size_t j = 0; j < K; j += 16) {
    const __mmask16 pm = (__mmask16)(pw[j >> 5] >> (j & 16)), nm = (__mmask16)(nw[j >> 5] >> (j & 16));
    _mm512_mask_storeu_ps(w + j, first_lanes(K - j), _mm512_mask_mov_ps(_mm512_maskz_mov_ps(pm, vhi), nm, vlo));
  }
}

#pragma clang attribute pop
#endif

#if defined(__aarch64__)
#include <arm_neon.h>

/// Lane masks of each nibble: entry b has lane j all ones where bit j of b is set.
static const uint32_t nibble_lanes[16][4] = {
    {0, 0, 0, 0}, {~0u, 0, 0, 0}, {0, ~0u, 0, 0}, {~0u, ~0u, 0, 0}, {0, 0, ~0u, 0}, {~0u, 0, ~0u, 0},
    {0, ~0u, ~0u, 0}, {~0u, ~0u, ~0u, 0}, {0, 0, 0, ~0u}, {~0u, 0, 0, ~0u}, {0, ~0u, 0, ~0u}, {~0u, ~0u, 0, ~0u},
    {0, 0, ~0u, ~0u}, {~0u, 0, ~0u, ~0u}, {0, ~0u, ~0u, ~0u}, {~0u, ~0u, ~0u, ~0u}};

/// The masked sum of 28 values at x (7 vectors of 4) under a 28-bit mask, added to acc.
static inline float32x4_t masked_sum28(const float *x, uint32_t mask, float32x4_t acc) {
  for (int q = 0; q < 7; q++) {
    const uint32x4_t l = vld1q_u32(nibble_lanes[(mask >> (4 * q)) & 15]);
    acc = vaddq_f32(acc, vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + 4 * q)), l)));
  }
  return acc;
}

/// NEON: each code's 28 values in 7 vectors of 4, masked by a nibble table; the last codes of
/// a row, whose 28 values would pass K, take the scalar sums.
static void ternary_rows_neon(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales,
                              const uint64_t *dict, const float *X, size_t ldx, int nx, float *Y, size_t ldy,
                              size_t r0, size_t r1, size_t K) {
  for (size_t r = r0; r < r1; r++) {
    const float lo = row_scale(scales, r, 0), hi = row_scale(scales, r, 1);
    for (int m = 0; m < nx; m++) {
      const float *x = X + (size_t)m * ldx;
      float32x4_t ap = vdupq_n_f32(0), an = vdupq_n_f32(0);
      float tp = 0, tn = 0;
      size_t pos = 0;
      uint32_t c = offsets[r];
      for (; c < offsets[r + 1] && pos + 28 <= K; c++) {
        const uint64_t e = dict[codes[c]];
        ap = masked_sum28(x + pos, pos_mask(e), ap);
        an = masked_sum28(x + pos, neg_mask(e), an);
        pos += run_length(e);
      }
      for (; c < offsets[r + 1]; c++) {
        const uint64_t e = dict[codes[c]];
        code_sums_scalar(e, x + pos, &tp, &tn);
        pos += run_length(e);
      }
      Y[(size_t)m * ldy + r] = hi * (vaddvq_f32(ap) + tp) + lo * (vaddvq_f32(an) + tn);
    }
  }
}
#endif

void moek_ternary_gemv_rows(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales,
                            const uint64_t *dict, const float *X, size_t ldx, int nx, float *Y, size_t ldy,
                            size_t r0, size_t r1, size_t K) {
  if (nx < 1 || r1 <= r0) return;
  const int isa = moek_isa();
#if defined(__x86_64__) || defined(__i386__)
  if (isa == MOEK_ISA_AVX512 && nx == 1) {
    ternary_rows_direct_avx512(codes, offsets, scales, dict, X, Y, r0, r1);
    return;
  }
  if (isa == MOEK_ISA_AVX512 || isa == MOEK_ISA_AVX2) {
    gemv_out out = {X, ldx, nx, Y, ldy};
    if (stream_rows(codes, offsets, scales, dict, r0, r1, K, isa == MOEK_ISA_AVX512 ? gemv_row_avx512 : gemv_row_avx2, &out)) return;
  }
#endif
#if defined(__aarch64__)
  if (isa == MOEK_ISA_NEON) {
    ternary_rows_neon(codes, offsets, scales, dict, X, ldx, nx, Y, ldy, r0, r1, K);
    return;
  }
#endif
  (void)isa;
  (void)K;
  ternary_rows_scalar(codes, offsets, scales, dict, X, ldx, nx, Y, ldy, r0, r1);
}

void moek_ternary_decode_rows(const uint16_t *codes, const uint32_t *offsets, const uint64_t *dict, int8_t *T,
                              size_t ldt, size_t r0, size_t r1) {
  for (size_t r = r0; r < r1; r++) {
    int8_t *t = T + (r - r0) * ldt;
    size_t pos = 0;
    for (uint32_t c = offsets[r]; c < offsets[r + 1]; c++) {
      const uint64_t e = dict[codes[c]];
      const uint32_t pm = pos_mask(e), nm = neg_mask(e), len = run_length(e);
      for (uint32_t j = 0; j < len; j++) t[pos + j] = (int8_t)run_value(pm, nm, j);
      pos += len;
    }
  }
}


void moek_ternary_dequantize_rows(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales,
                                  const uint64_t *dict, float *W, size_t ldw, size_t r0, size_t r1, size_t K) {
#if defined(__x86_64__) || defined(__i386__)
  const int isa = moek_isa();
  if (isa == MOEK_ISA_AVX512 || isa == MOEK_ISA_AVX2) {
    dequant_out out = {W, ldw, r0};
    if (stream_rows(codes, offsets, scales, dict, r0, r1, K, isa == MOEK_ISA_AVX512 ? dequant_row_avx512 : dequant_row_avx2, &out)) return;
  }
#endif
  (void)K;
  ternary_dequantize_scalar(codes, offsets, scales, dict, W, ldw, r0, r1);
}
