// Integer block leaves for AVX-512 machines with VNNI (vpdpbusd), on interleaved
// activations. The row-at-a-time leaves (q8_leaves.inc) spend, per 32 weights and activation
// row, a multiply-add to int16, a widening multiply-add that applies the block's scale, and an
// add; here the scales are applied once per 256 values instead:
//
// - The quantizer (act_quant.c) also stores each activation row interleaved, so that every
//   int32 lane of a register holds 4 values of one block (or K-quant sub-block):
//   - 32-value blocks ("by block"): in every run of 256 values, register r (32 bytes) holds in
//     its dword l the values 32 l + 4 r .. + 3, so lane l is block l.
//   - 256-value K-quant blocks ("paired"): registers L_p (p = 0..3) then H_p; dword j < 4 of
//     L_p holds values 64 j + 4 p .. + 3, dword 4 + j values 64 j + 16 + 4 p .. + 3, and H_p
//     the same plus 32. Lanes j and 4 + j of L_p are 32-value sub-block 2 j, of H_p 2 j + 1:
//     Q4_K's 128 bytes of nibbles take this order with one 4 x 4 dword transpose per half of
//     each 32-byte group, before the nibbles are split.
// - Each weight row's 256 values are unpacked and transposed the same way once, then
//   multiplied against up to 8 activation rows.
// - 8 `vpdpbusd` (unsigned weight bytes times signed activation bytes, 4 products summed into
//   each int32 lane) give the blocks' integer dot products lane by lane; the per-block scales
//   are then one or two vector operations: a float multiply for the 32-value formats, integer
//   multiplies by the 6- or 8-bit sub-block scales for the K-quants.
// - Signed weights (Q8_0, Q4_0, Q5_0, IQ4_NL, MXFP4) enter as w + 128 (unsigned); the extra
//   128 times the block's activation sum is taken off first, from the quantizer's 16-value sums.
//
// The integer sums are the row leaves' exactly; only the order of the f32 sums differs.
// Q8_0, Q4_0, Q5_0, IQ4_NL, MXFP4 (K a multiple of 256), Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS; other formats
// return 0 and run through the row leaves.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)

#include "avx2_blocks.h"
#include "vnni_shuffles.h"

enum { GROUP = 8 };  // activation rows per unpacked weight run


void moek_q8_interleave_avx512(const int8_t *q, int8_t *qi, size_t K, int block) {
  for (size_t g = 0; g + 256 <= K; g += 256) {
    __m256i v[8], r[8];
    for (int l = 0; l < 8; l++) v[l] = _mm256_loadu_si256((const __m256i *)(q + g + 32 * l));
    if (block == 256) pair8(v, r);
    else transpose8(v, r);
    for (int l = 0; l < 8; l++) _mm256_storeu_si256((__m256i *)(qi + g + 32 * l), r[l]);
  }
}

/// The 8 dot products of lane-interleaved weights w (unsigned) with activation run x, by block:
/// lane l is block l's integer sum, added to `init`. Two chains, so each waits on 4
/// multiply-adds.
INLINE __m256i dot8(const __m256i w[8], const int8_t *x, __m256i init) {
  __m256i s = init, t = _mm256_setzero_si256();
#pragma clang loop unroll(full)
  for (int r = 0; r < 8; r += 2) {
    s = _mm256_dpbusd_epi32(s, w[r], _mm256_loadu_si256((const __m256i *)(x + 32 * r)));
    t = _mm256_dpbusd_epi32(t, w[r + 1], _mm256_loadu_si256((const __m256i *)(x + 32 * (r + 1))));
  }
  return _mm256_add_epi32(s, t);
}

/// Paired weights w against a paired activation run x: the integer sums of the L registers
/// (sub-blocks 2 j in lanes j and 4 + j) in *lo, of the H registers (2 j + 1) in *hi.
INLINE void dot_pairs(const __m256i w[8], const int8_t *x, __m256i *lo, __m256i *hi) {
  __m256i l = _mm256_setzero_si256(), h = _mm256_setzero_si256();
#pragma clang loop unroll(full)
  for (int p = 0; p < 4; p++) {
    l = _mm256_dpbusd_epi32(l, w[p], _mm256_loadu_si256((const __m256i *)(x + 32 * p)));
    h = _mm256_dpbusd_epi32(h, w[p + 4], _mm256_loadu_si256((const __m256i *)(x + 32 * (p + 4))));
  }
  *lo = l;
  *hi = h;
}

/// Block i of paired weights w against nx activation rows, for the formats with a minimum
/// (Q5_K, Q2_K): acc[m] += d dx (L sums x sc_lo + H sums x sc_hi) - dmin dx (the activation's
/// 16-value sums . mins), the sums in 32 bits.
INLINE void scales_and_mins(const __m256i w[8], const moek_act_row *x, const int nx, size_t i, __m256i sc_lo,
                            __m256i sc_hi, __m256i mins, float d, float dmin, __m256 acc[]) {
#pragma clang loop unroll(full)
  for (int m = 0; m < nx; m++) {
    __m256i lo, hi;
    dot_pairs(w, x[m].qi + 256 * i, &lo, &hi);
    const __m256i s = _mm256_add_epi32(_mm256_mullo_epi32(lo, sc_lo), _mm256_mullo_epi32(hi, sc_hi));
    const __m256i ms = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x[m].bs + 16 * i)), mins);
    const float dx = x[m].d[i];
    acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * dx), acc[m]);
    acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_set1_ps(-dmin * dx), acc[m]);
  }
}

/// 32-value formats: each run of 8 blocks unpacked (signed, then + 128), transposed, and its 8
/// scales gathered (`run_scales`; in cache against 2 rows Q8_0 62 -> 72 GMAC/s, Q4_0 49 -> 53,
/// against 8 rows 2-3% faster, than through 8 scalar stores); per activation row, lane
/// l = d_l dx_l (sum w x) accumulates in f32.
INLINE void rows_32i(int dt, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                     size_t ldy, size_t r0, size_t r1, size_t K) {
  // AHEAD is for 18-byte blocks (32 values at 4.5 bits); a bigger block looks as far ahead in time.
  const size_t runs = K / 256, bytes = (size_t)moek_block_bytes(dt), ahead = AHEAD * bytes / 18;
  const int8_t *table = dt == MOEK_MXFP4 ? moek_kvalues_mxfp4 : moek_kvalues_iq4nl;
  const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)table));
  const __m256i bias = _mm256_set1_epi8((char)0x80), minus128 = _mm256_set1_epi16(-128);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[GROUP];
    for (int m = 0; m < GROUP; m++) acc[m] = _mm256_setzero_ps();
    for (size_t g = 0; g < runs; g++) {
      const uint8_t *b = row + g * 8 * bytes;
      for (size_t o = 0; o < 8 * bytes; o += 64) _mm_prefetch((const char *)(b + ahead + o), _MM_HINT_T0);
      __m256i v[8], w[8];
#pragma clang loop unroll(full)
      for (int l = 0; l < 8; l++) v[l] = _mm256_xor_si256(unpack32_values(dt, b + l * bytes, lut), bias);
      transpose8(v, w);
      const __m256 dv = run_scales(dt, b, bytes);
#pragma clang loop unroll(full)
      for (int m = 0; m < nx; m++) {
        const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x[m].bs + 16 * g)), minus128);
        const __m256i s = dot8(w, x[m].qi + 256 * g, corr);
        const __m256 scale = _mm256_mul_ps(dv, _mm256_loadu_ps(x[m].d + 8 * g));
        acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[m]);
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]);
  }
}

/// Q4_K (`five` 0) and Q5_K, paired: lanes j and 4 + j of the L sums are sub-block 2 j, of the
/// H sums 2 j + 1, each multiplied by its 6-bit scale; the mins times the activation's 16-value
/// (Q5_K) or 32-value (Q4_K) sums.
INLINE void rows_k45i(int five, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                      size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256, bytes = five ? 176 : 144;
  const __m256i m4 = _mm256_set1_epi8(0xF);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[GROUP];
    for (int m = 0; m < GROUP; m++) acc[m] = _mm256_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * bytes;
      for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(b + AHEAD + o), _MM_HINT_T0);
      const uint8_t *qs = b + (five ? 48 : 16);
      __m256i w[8];
      if (five) {  // Q5_K: the sums need 32 bits; each half times its scales
        const float d = half(b), dmin = half(b + 2);
        const __m128i sm = k4_scales_mins_vec(b + 4);
        // int16 lanes 2l and 2l + 1 both hold min l, against the two 16-value sums of sub-block l.
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
        const __m256i hbits = _mm256_loadu_si256((const __m256i *)(b + 16));
        __m256i v[8];
#pragma clang loop unroll(full)
        for (int j = 0; j < 4; j++) k45_quants(1, qs, hbits, j, &v[2 * j], &v[2 * j + 1]);
        pair8(v, w);
        const __m256i sc_lo = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(sm, _mm_setr_epi8(0, 2, 4, 6, 0, 2, 4, 6, -1, -1, -1, -1, -1, -1, -1, -1)));
        const __m256i sc_hi = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(sm, _mm_setr_epi8(1, 3, 5, 7, 1, 3, 5, 7, -1, -1, -1, -1, -1, -1, -1, -1)));
        scales_and_mins(w, x, nx, i, sc_lo, sc_hi, mins, d, dmin, acc);
        continue;
      }
      // Q4_K against two or more activation rows (one: kernels_avx512_vnni_one.c). Group j's bytes hold
      // sub-block 2 j (low nibbles) and 2 j + 1 (high); d and dmin convert in one, and the
      // scales unpack in general-purpose registers.
      const __m128i sm = k4_scales_mins_gpr(b + 4);
      const __m128 dd = _mm_cvtph_ps(_mm_loadu_si32(b));  // d, dmin
      const __m256 dv = _mm256_broadcastss_ps(dd);
      const __m256 dminv = _mm256_permutexvar_ps(_mm256_set1_epi32(1), _mm256_castps128_ps256(dd));
      __m256i u[4];
      transpose4(_mm256_loadu_si256((const __m256i *)qs), _mm256_loadu_si256((const __m256i *)(qs + 32)),
                 _mm256_loadu_si256((const __m256i *)(qs + 64)), _mm256_loadu_si256((const __m256i *)(qs + 96)), u);
#pragma clang loop unroll(full)
      for (int p = 0; p < 4; p++) {
        w[p] = _mm256_and_si256(u[p], m4);
        w[p + 4] = _mm256_and_si256(_mm256_srli_epi16(u[p], 4), m4);
      }
      // A lane's sum has 16 products of at most 15 x 127, so it fits an int16; lo and hi pack
      // into one register and one multiply-add applies the scales (in the packed order:
      // sub-blocks 0 2 4 6 1 3 5 7 in each 128-bit half), fewer operations per activation row
      // than two 32-bit multiplies and an add. The mins take the activation's 32-value sums.
      const __m256i sc16 = _mm256_broadcastsi128_si256(
          _mm_cvtepu8_epi16(_mm_shuffle_epi8(sm, _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, -1, -1, -1, -1, -1, -1, -1, -1))));
      const __m128i mins = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm));
#pragma clang loop unroll(full)
      for (int m = 0; m < nx; m++) {
        __m256i lo, hi;
        dot_pairs(w, x[m].qi + 256 * i, &lo, &hi);
        const __m256i s = _mm256_madd_epi16(_mm256_packs_epi32(lo, hi), sc16);
        const __m128i ms = _mm_madd_epi16(_mm_loadu_si128((const __m128i *)(x[m].bs32 + 8 * i)), mins);
        const __m256 msf = _mm256_zextps128_ps256(_mm_cvtepi32_ps(ms));
        const __m256 f = _mm256_fmsub_ps(_mm256_cvtepi32_ps(s), dv, _mm256_mul_ps(msf, dminv));
        acc[m] = _mm256_fmadd_ps(f, _mm256_set1_ps(x[m].d[i]), acc[m]);
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]);
  }
}

/// The formats with a signed int8 scale per 16 values and one f16 d per block, whose values
/// the leaves hold unsigned with an offset: Q6_K (q + 32), Q3_K (q + 4), IQ4_XS (code + 128; its
/// 32-value scales given twice).
enum { KIND_Q6_K, KIND_Q3_K, KIND_IQ4_XS };

/// A block's 8 runs of 32 unsigned values, its 16 scales, and its d (`kind` as above).
INLINE float kind_block(const int kind, const uint8_t *b, __m256i v[8], __m128i *sc) {
  switch (kind) {
    case KIND_Q3_K:
      *sc = q3_k_scales_vec(b);
      q3_k_quants(b + 32, b, 0, v);
      q3_k_quants(b + 64, b, 1, v + 4);
      return half(b + 108);
    case KIND_IQ4_XS:
      *sc = iq4_xs_scales_vec(b);
      iq4_xs_quants(b, v);
      return half(b);
    default:
      q6_k_quants(b, b + 128, v);
      q6_k_quants(b + 64, b + 160, v + 4);
      *sc = _mm_loadu_si128((const __m128i *)(b + 192));
      return half(b + 208);
  }
}

/// Q6_K, Q3_K and IQ4_XS (`kind`), paired: lanes j and 4 + j of the L sums are 16-value groups
/// 4 j and 4 j + 1, of the H sums 4 j + 2 and 4 j + 3, each with its int8 scale; the offset is
/// 32, 4 or 128 times the scaled 16-value activation sums.
INLINE void rows_q36_ki(const int kind, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                        size_t ldy, size_t r0, size_t r1, size_t K) {
  const size_t blocks = K / 256, bytes = kind == KIND_Q3_K ? 110 : kind == KIND_IQ4_XS ? 136 : 210;
  const short offset_of = kind == KIND_Q3_K ? 4 : kind == KIND_IQ4_XS ? 128 : 32;
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[GROUP];
    for (int m = 0; m < GROUP; m++) acc[m] = _mm256_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * bytes;
      for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(b + AHEAD + o), _MM_HINT_T0);
      __m128i sc;
      __m256i v[8], w[8];
      const float d = kind_block(kind, b, v, &sc);
      const __m256i sc_lo = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(sc, _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, -1, -1, -1, -1, -1, -1, -1, -1)));
      const __m256i sc_hi = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(sc, _mm_setr_epi8(2, 6, 10, 14, 3, 7, 11, 15, -1, -1, -1, -1, -1, -1, -1, -1)));
      const __m256i sc_off = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(sc), _mm256_set1_epi16(offset_of));
      pair8(v, w);
#pragma clang loop unroll(full)
      for (int m = 0; m < nx; m++) {
        __m256i lo, hi;
        dot_pairs(w, x[m].qi + 256 * i, &lo, &hi);
        const __m256i offset = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x[m].bs + 16 * i)), sc_off);
        const __m256i s = _mm256_sub_epi32(_mm256_add_epi32(_mm256_mullo_epi32(lo, sc_lo), _mm256_mullo_epi32(hi, sc_hi)),
                                           offset);
        acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * x[m].d[i]), acc[m]);
      }
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]);
  }
}

/// Q2_K, paired as Q3_K (its values are Q3_K's two low bits: run c of half h is bits 2 c of the
/// half's 32 bytes): d sum_g sc_g (q . x_g) - dmin sum_g m_g sum(x_g), the 4-bit scales sc_g
/// and minimums m_g per 16 values, the minimums against the activation's 16-value sums as in
/// the row leaf.
INLINE void rows_q2_ki(const int unused, const uint8_t *W, size_t row_bytes, const moek_act_row *x, const int nx, float *Y,
                       size_t ldy, size_t r0, size_t r1, size_t K) {
  (void)unused;
  const size_t blocks = K / 256;
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0xF);
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *row = W + r * row_bytes;
    __m256 acc[GROUP];
    for (int m = 0; m < GROUP; m++) acc[m] = _mm256_setzero_ps();
    for (size_t i = 0; i < blocks; i++) {
      const uint8_t *b = row + i * 84;
      for (size_t o = 0; o < 84; o += 64) _mm_prefetch((const char *)(b + AHEAD + o), _MM_HINT_T0);
      const float d = half(b + 80), dmin = half(b + 82);
      const __m128i packed = _mm_loadu_si128((const __m128i *)b);
      const __m128i sc = _mm_and_si128(packed, m4);
      const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
      const __m256i sc_lo = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(sc, _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, -1, -1, -1, -1, -1, -1, -1, -1)));
      const __m256i sc_hi = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(sc, _mm_setr_epi8(2, 6, 10, 14, 3, 7, 11, 15, -1, -1, -1, -1, -1, -1, -1, -1)));
      __m256i v[8], w[8];
#pragma clang loop unroll(full)
      for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * h));
#pragma clang loop unroll(full)
        for (int c = 0; c < 4; c++) v[4 * h + c] = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * c), m3);
      }
      pair8(v, w);
      scales_and_mins(w, x, nx, i, sc_lo, sc_hi, mins, d, dmin, acc);
    }
    for (int m = 0; m < nx; m++) Y[(size_t)m * ldy + r] = hsum(acc[m]);
  }
}

// One entry per format, each with its leaf inlined for every count of activation rows (the
// count a compile-time constant, so the row loops unroll): separate functions keep each
// format's unoptimised (debug) stack frame apart from the others'.
#define BY_ROWS(call)                                  \
  switch (mn) {                                        \
    case 1: { const int n_ = 1; call; } break;         \
    case 2: { const int n_ = 2; call; } break;         \
    case 3: { const int n_ = 3; call; } break;         \
    case 4: { const int n_ = 4; call; } break;         \
    case 5: { const int n_ = 5; call; } break;         \
    case 6: { const int n_ = 6; call; } break;         \
    case 7: { const int n_ = 7; call; } break;         \
    default: { const int n_ = GROUP; call; } break;    \
  }
#define ROWS_ENTRY(name, leaf, first)                                                                                  \
  static void name(const uint8_t *w, size_t row_bytes, const moek_act_row *x, int mn, float *y, size_t ldy, size_t r0, \
                   size_t r1, size_t K) {                                                                              \
    BY_ROWS(leaf(first, w, row_bytes, x, n_, y, ldy, r0, r1, K));                                                      \
  }
ROWS_ENTRY(rows_q4_k, rows_k45i, 0)
ROWS_ENTRY(rows_q5_k, rows_k45i, 1)
ROWS_ENTRY(rows_q6_k, rows_q36_ki, KIND_Q6_K)
ROWS_ENTRY(rows_q3_k, rows_q36_ki, KIND_Q3_K)
ROWS_ENTRY(rows_iq4_xs, rows_q36_ki, KIND_IQ4_XS)
ROWS_ENTRY(rows_q2_k, rows_q2_ki, 0)
ROWS_ENTRY(rows_q8_0, rows_32i, MOEK_Q8_0)
ROWS_ENTRY(rows_q4_0, rows_32i, MOEK_Q4_0)
ROWS_ENTRY(rows_q5_0, rows_32i, MOEK_Q5_0)
ROWS_ENTRY(rows_iq4_nl, rows_32i, MOEK_IQ4_NL)
ROWS_ENTRY(rows_mxfp4, rows_32i, MOEK_MXFP4)
#undef ROWS_ENTRY
#undef BY_ROWS

int moek_gemv_rows_q8_vnni(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K) {
  if (!moek_q8_interleaved(dt, K)) return 0;
  const int block = moek_q8_block(dt);
  const size_t row_bytes = ldw / (size_t)moek_block_elements(dt) * (size_t)moek_block_bytes(dt);
  const uint8_t *w = (const uint8_t *)W;
  // Many activation rows on Q3_K, Q4_K, Q5_K, Q6_K or IQ4_XS: weight rows in lanes, 16 at a time
  // (kernels_avx512_vnni_lanes.c); a remainder of fewer rows continues below.
  if (moek_lanes_min_rows(dt, K) > 0 && nx >= moek_lanes_min_rows(dt, K)) {
    r0 = moek_lanes_vnni(dt, W, row_bytes, XQ, ldxq, nx, Y, ldy, r0, r1, K);
    if (r0 == r1) return 1;
  }
  if (nx == 1) {  // one activation row: the one-row leaves, in their VBMI builds where the CPU has them
    const int vbmi = moek_q8_vbmi();
    if (block == 256 && (vbmi ? moek_gemv_one_vbmi : moek_gemv_one_vnni)(dt, W, row_bytes, XQ, Y, r0, r1, K)) return 1;
    if (block == 32 && (vbmi ? moek_gemv_one32_vbmi : moek_gemv_one32_vnni)(dt, W, row_bytes, XQ, Y, r0, r1, K)) return 1;
  }
  for (int m0 = 0; m0 < nx; m0 += GROUP) {
    const int mn = nx - m0 < GROUP ? nx - m0 : GROUP;
    moek_act_row x[GROUP];
    for (int m = 0; m < mn; m++) x[m] = moek_act_row_at(XQ, ldxq, m0 + m, K, block);
    float *y = Y + (size_t)m0 * ldy;
    switch (dt) {
      case MOEK_Q4_K: rows_q4_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q5_K: rows_q5_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q6_K: rows_q6_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q3_K: rows_q3_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_IQ4_XS: rows_iq4_xs(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q2_K: rows_q2_k(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q8_0: rows_q8_0(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q4_0: rows_q4_0(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_Q5_0: rows_q5_0(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      case MOEK_IQ4_NL: rows_iq4_nl(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
      default: rows_mxfp4(w, row_bytes, x, mn, y, ldy, r0, r1, K); break;
    }
  }
  return 1;
}

#pragma clang attribute pop

#else
#include "internal.h"
void moek_q8_interleave_avx512(const int8_t *q, int8_t *qi, size_t K, int block) {
  (void)q; (void)qi; (void)K; (void)block;
}
int moek_gemv_rows_q8_vnni(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K) {
  (void)W; (void)dt; (void)ldw; (void)XQ; (void)ldxq; (void)nx; (void)Y; (void)ldy; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
