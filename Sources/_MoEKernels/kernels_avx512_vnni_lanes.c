// Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS products of many activation rows (prefill) on AVX-512 VNNI,
// with weight rows in lanes.
//
// The row leaves (kernels_avx512_vnni_q8.c) give every 32-bit lane a sub-block of one weight
// row, so each weight row, activation row and 256-value block pays about seven vector
// operations of scale and minimum work beside its eight `vpdpbusd`. Here, as in llama.cpp's
// repacked K-quant layouts, lane r of a 512-bit register belongs to weight row r of a group of 16:
//
// - A group's blocks are repacked, a chunk of 8 blocks at a time, into per-thread scratch: for
//   each run of 32 values and dword group j, one register whose lane r holds row r's values
//   4 j .. + 3 of the run as unsigned bytes (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63); the sub-block
//   scales as int32 lanes; the minimum (Q4_K, Q5_K) or offset (Q6_K's -32 times its scale) terms
//   as int16 pairs; the f32 block scales as lanes. The repack is paid once per group and chunk
//   and shared by every activation row, where the row leaves unpack each weight row once per 8.
// - Each activation row's 4 values broadcast to every lane (`vpdpbusd` with a {1to16} operand),
//   so 8 of them give all 16 rows' sums over a run; a multiply by the scale lanes and an add per
//   sub-block, 8 `vpdpwssd` per block for the minimum or offset terms (against the row's 16-value
//   sums) and a few float operations per block then serve 16 rows at once.
//
// The integer sums are the row leaves' exactly; only the order of the f32 sums differs.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)

#include "avx2_blocks.h"
#include "vnni_shuffles.h"

enum {
  LANES = 16,     // weight rows per group, one per 32-bit lane
  CHUNK = 8,      // blocks repacked at a time (at most about 45 KB of scratch)
  ACT_ROWS = 4,   // activation rows per pass over a repacked chunk
  Q_BYTES = 8 * 8 * 64,  // a block's values: 8 runs of 32 x 8 dword groups x 16 lanes
  // Q4_K and Q5_K: 8 scales (int32 lanes), 8 minimum pairs (int16), d and dmin (f32 lanes).
  K4_SC = Q_BYTES, K4_MN = K4_SC + 8 * 64, K4_D = K4_MN + 8 * 64, K4_BYTES = K4_D + 2 * 64,
  // Q6_K: 16 scales (int32 lanes), 8 pairs of 32 x scale (int16), d (f32 lanes).
  K6_SC = Q_BYTES, K6_OFF = K6_SC + 16 * 64, K6_D = K6_OFF + 8 * 64, K6_BYTES = K6_D + 64,
  MAX_BYTES = K6_BYTES,
};

/// The 4 bytes at p as one int32 (unaligned).
INLINE int32_t dword(const void *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/// The 32 bytes at `offset` in each of the 16 rows at `rows` (row_bytes apart), by dword:
/// out[j] lane r = row r's bytes 4 j .. + 3.
INLINE void transpose_rows(const uint8_t *rows, size_t row_bytes, size_t offset, __m512i out[8]) {
  __m256i lo_in[8], hi_in[8], lo[8], hi[8];
  for (int r = 0; r < 8; r++) {
    lo_in[r] = _mm256_loadu_si256((const __m256i *)(rows + (size_t)r * row_bytes + offset));
    hi_in[r] = _mm256_loadu_si256((const __m256i *)(rows + (size_t)(r + 8) * row_bytes + offset));
  }
  transpose8(lo_in, lo);
  transpose8(hi_in, hi);
  for (int j = 0; j < 8; j++) out[j] = _mm512_inserti64x4(_mm512_castsi256_si512(lo[j]), hi[j], 1);
}

/// Repacks Q4_K (`five` 0) or Q5_K blocks [i0, i1) of the 16 rows at `rows` (row_bytes apart),
/// K4_BYTES each: the two share their scales, minimums and compute; Q5_K's values have a fifth
/// bit (0..31).
static void repack_q45_k(const uint8_t *rows, size_t row_bytes, int five, size_t i0, size_t i1, uint8_t *out) {
  const size_t bytes = five ? 176 : 144, qs = five ? 48 : 16;
  for (size_t i = i0; i < i1; i++) {
    uint8_t *o = out + (i - i0) * K4_BYTES;
    int32_t *sc = (int32_t *)(o + K4_SC);
    int16_t *mn = (int16_t *)(o + K4_MN);
    float *d = (float *)(o + K4_D);
    // Each row's 8 scales and 8 minimums as dwords (halves of 8 rows), then transposed: sub-block s
    // of every row in one register.
    __m256i sc_in[2][8], mn_in[2][8], sc_t[2][8], mn_t[2][8];
    for (int r = 0; r < LANES; r++) {
      const uint8_t *b = rows + (size_t)r * row_bytes + i * bytes;
      d[r] = half(b);
      d[LANES + r] = half(b + 2);
      const __m128i v = k4_scales_mins_vec(b + 4);
      sc_in[r / 8][r % 8] = _mm256_cvtepu8_epi32(v);
      mn_in[r / 8][r % 8] = _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8));
    }
    for (int h = 0; h < 2; h++) {
      transpose8(sc_in[h], sc_t[h]);
      transpose8(mn_in[h], mn_t[h]);
    }
    for (int s = 0; s < 8; s++)
      _mm512_store_si512((__m512i *)(sc + s * LANES), _mm512_inserti64x4(_mm512_castsi256_si512(sc_t[0][s]), sc_t[1][s], 1));
    for (int p = 0; p < 4; p++) {  // pair p: (min 2 p, min 2 p + 1), 6 bits each, against the 32-value sums
      const __m512i e = _mm512_inserti64x4(_mm512_castsi256_si512(mn_t[0][2 * p]), mn_t[1][2 * p], 1);
      const __m512i d = _mm512_inserti64x4(_mm512_castsi256_si512(mn_t[0][2 * p + 1]), mn_t[1][2 * p + 1], 1);
      _mm512_store_si512((__m512i *)(mn + p * 2 * LANES), _mm512_or_si512(e, _mm512_slli_epi32(d, 16)));
    }
    // Group g's 32 bytes hold sub-block 2 g in their low nibbles and 2 g + 1 in their high ones
    // (Q5_K: plus bits 2 g and 2 g + 1 of the 32 qh bytes). The raw bytes are transposed once
    // (dword j of every row into one register) and split into nibbles there, 16 rows at a time.
    __m512i qh[8];
    if (five) transpose_rows(rows, row_bytes, i * bytes + 16, qh);
    const __m512i m4 = _mm512_set1_epi8(0xF), one = _mm512_set1_epi8(1);
    for (int g = 0; g < 4; g++) {
      __m512i t[8];
      transpose_rows(rows, row_bytes, i * bytes + qs + 32 * g, t);
      for (int j = 0; j < 8; j++) {
        __m512i lo = _mm512_and_si512(t[j], m4), hi = _mm512_and_si512(_mm512_srli_epi16(t[j], 4), m4);
        if (five) {
          lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh[j], 2 * g), one), 4));
          hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh[j], 2 * g + 1), one), 4));
        }
        _mm512_store_si512((__m512i *)(o + (2 * g * 8 + j) * 64), lo);
        _mm512_store_si512((__m512i *)(o + ((2 * g + 1) * 8 + j) * 64), hi);
      }
    }
  }
}

/// Repacks Q6_K, Q3_K or IQ4_XS blocks [i0, i1) of the 16 rows at `rows` (row_bytes apart),
/// K6_BYTES each: all have a signed scale per 16 values and unsigned values with an offset
/// (Q6_K q + 32, Q3_K q + 4, IQ4_XS code + 128), so they share the layout and compute.
static void repack_q36_k(const uint8_t *rows, size_t row_bytes, int dt, size_t i0, size_t i1, uint8_t *out) {
  const int three = dt == MOEK_Q3_K, iq4 = dt == MOEK_IQ4_XS;
  const size_t bytes = three ? 110 : iq4 ? 136 : 210;
  const int shift = three ? 2 : iq4 ? 7 : 5;  // offset times scale: 4, 128 or 32
  for (size_t i = i0; i < i1; i++) {
    uint8_t *o = out + (i - i0) * K6_BYTES;
    int32_t *sc = (int32_t *)(o + K6_SC);
    int16_t *off = (int16_t *)(o + K6_OFF);
    float *d = (float *)(o + K6_D);
    // Each row's 16 int8 scales sign-extended to dwords (halves of 8 rows, scales 0..7 and
    // 8..15), then transposed: scale s of every row in one register.
    __m256i in[2][2][8], t[2][2][8];
    for (int r = 0; r < LANES; r++) {
      const uint8_t *b = rows + (size_t)r * row_bytes + i * bytes;
      d[r] = half(b + (three ? 108 : iq4 ? 0 : 208));
      const __m128i v = three ? q3_k_scales_vec(b) : iq4 ? iq4_xs_scales_vec(b) : _mm_loadu_si128((const __m128i *)(b + 192));
      in[r / 8][0][r % 8] = _mm256_cvtepi8_epi32(v);
      in[r / 8][1][r % 8] = _mm256_cvtepi8_epi32(_mm_srli_si128(v, 8));
    }
    for (int h = 0; h < 2; h++)
      for (int q = 0; q < 2; q++) transpose8(in[h][q], t[h][q]);
    for (int p = 0; p < 8; p++) {
      const int q = p / 4, s = 2 * (p % 4);
      const __m512i e = _mm512_inserti64x4(_mm512_castsi256_si512(t[0][q][s]), t[1][q][s], 1);
      const __m512i o = _mm512_inserti64x4(_mm512_castsi256_si512(t[0][q][s + 1]), t[1][q][s + 1], 1);
      _mm512_store_si512((__m512i *)(sc + 2 * p * LANES), e);
      _mm512_store_si512((__m512i *)(sc + (2 * p + 1) * LANES), o);
      // int16 pair (offset e, offset o): |32 x scale| and |128 x scale| <= 4096.
      if (!iq4)
        _mm512_store_si512((__m512i *)(off + p * 2 * LANES),
                           _mm512_or_si512(_mm512_and_si512(_mm512_slli_epi32(e, shift), _mm512_set1_epi32(0xFFFF)),
                                           _mm512_slli_epi32(o, 16 + shift)));
    }
    if (iq4)  // IQ4_XS: pair q is (offset of 32-value block 2 q, of 2 q + 1) against the 32-value sums
      for (int q = 0; q < 4; q++) {
        const __m512i e = _mm512_inserti64x4(_mm512_castsi256_si512(t[0][q / 2][4 * (q % 2)]), t[1][q / 2][4 * (q % 2)], 1);
        const __m512i o = _mm512_inserti64x4(_mm512_castsi256_si512(t[0][q / 2][4 * (q % 2) + 2]), t[1][q / 2][4 * (q % 2) + 2], 1);
        _mm512_store_si512((__m512i *)(off + q * 2 * LANES),
                           _mm512_or_si512(_mm512_and_si512(_mm512_slli_epi32(e, shift), _mm512_set1_epi32(0xFFFF)),
                                           _mm512_slli_epi32(o, 16 + shift)));
      }
    // Half h's runs c = 0..3 are values 128 h + 32 c .. + 31 (q6_k_quants' and q3_k_quants' order).
    const __m512i m4 = _mm512_set1_epi8(0xF), m2 = _mm512_set1_epi8(3), one = _mm512_set1_epi8(1);
    if (iq4) {
      // Runs c and c + 1 from their 32 bytes (16 each: low nibbles values 0..15, high 16..31),
      // looked up in the code book and offset by 128.
      const __m512i lut = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)moek_kvalues_iq4nl));
      const __m512i bias = _mm512_set1_epi8((char)0x80);
      for (int c = 0; c < 8; c += 2) {
        __m512i t[8];
        transpose_rows(rows, row_bytes, i * bytes + 8 + 16 * c, t);
        for (int k = 0; k < 2; k++)
          for (int j = 0; j < 8; j++) {
            const __m512i src = t[4 * k + j % 4];
            const __m512i nib = j < 4 ? _mm512_and_si512(src, m4) : _mm512_and_si512(_mm512_srli_epi16(src, 4), m4);
            _mm512_store_si512((__m512i *)(o + ((c + k) * 8 + j) * 64), _mm512_xor_si512(_mm512_shuffle_epi8(lut, nib), bias));
          }
      }
      continue;
    }
    __m512i hm[8];  // Q3_K: the transposed hmask (run c of half h in bit 4 h + c)
    if (three) transpose_rows(rows, row_bytes, i * bytes, hm);
    for (int h = 0; h < 2; h++) {
      __m512i a[8], c[8], hb[8];
      if (three) {
        transpose_rows(rows, row_bytes, i * bytes + 32 + 32 * h, a);
      } else {
        transpose_rows(rows, row_bytes, i * bytes + 64 * h, a);
        transpose_rows(rows, row_bytes, i * bytes + 64 * h + 32, c);
        transpose_rows(rows, row_bytes, i * bytes + 128 + 32 * h, hb);
      }
      for (int j = 0; j < 8; j++) {
        __m512i q[4];
        if (three) {
          for (int k = 0; k < 4; k++)
            q[k] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a[j], 2 * k), m2),
                                   _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hm[j], 4 * h + k), one), 2));
        } else {
          q[0] = _mm512_or_si512(_mm512_and_si512(a[j], m4), _mm512_slli_epi16(_mm512_and_si512(hb[j], m2), 4));
          q[1] = _mm512_or_si512(_mm512_and_si512(c[j], m4), _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb[j], 2), m2), 4));
          q[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a[j], 4), m4),
                                 _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb[j], 4), m2), 4));
          q[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(c[j], 4), m4),
                                 _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb[j], 6), m2), 4));
        }
        for (int k = 0; k < 4; k++) _mm512_store_si512((__m512i *)(o + ((4 * h + k) * 8 + j) * 64), q[k]);
      }
    }
  }
}

/// Adds to acc[m] (lane r: weight row r) activation row x[m] times repacked blocks [i0, i1) of
/// `dt` (MOEK_Q4_K, for Q5_K too; MOEK_Q6_K, for Q3_K too; or MOEK_IQ4_XS).
INLINE void run(const int dt, const uint8_t *pack, size_t i0, size_t i1, const moek_act_row *x, const int G, __m512 *acc) {
  // IQ4_XS takes Q6_K's layout and terms, but its two 16-value scales of a run are one scale
  // given twice, so a run's two sums take one multiply, as Q4_K's do.
  const int six = dt == MOEK_Q6_K || dt == MOEK_IQ4_XS, twice = dt == MOEK_IQ4_XS;
  const size_t stride = six ? K6_BYTES : K4_BYTES;
  for (size_t i = i0; i < i1; i++) {
    const uint8_t *o = pack + (i - i0) * stride;
    __m512i isum[ACT_ROWS], msum[ACT_ROWS];
#pragma clang loop unroll(full)
    for (int m = 0; m < G; m++) isum[m] = msum[m] = _mm512_setzero_si512();
    // Not unrolled: 8 weight registers, 2 chains and a sum per activation row stay in registers.
#pragma clang loop unroll(disable)
    for (int c = 0; c < 8; c++) {
      __m512i w[8];
#pragma clang loop unroll(full)
      for (int j = 0; j < 8; j++) w[j] = _mm512_load_si512((const __m512i *)(o + (c * 8 + j) * 64));
      // Q4_K: one scale for the run; Q6_K: one per 16 values (dword groups 0..3, then 4..7).
      const __m512i sc0 = _mm512_load_si512((const __m512i *)(o + K4_SC + (six ? 2 * c : c) * 64));
      const __m512i sc1 = six && !twice ? _mm512_load_si512((const __m512i *)(o + K6_SC + (2 * c + 1) * 64)) : sc0;
#pragma clang loop unroll(full)
      for (int m = 0; m < G; m++) {
        const int8_t *xq = x[m].q + 256 * i + 32 * c;
        __m512i t0 = _mm512_setzero_si512(), t1 = _mm512_setzero_si512();
#pragma clang loop unroll(full)
        for (int j = 0; j < 4; j++) {
          t0 = _mm512_dpbusd_epi32(t0, w[j], _mm512_set1_epi32(dword(xq + 4 * j)));
          t1 = _mm512_dpbusd_epi32(t1, w[j + 4], _mm512_set1_epi32(dword(xq + 16 + 4 * j)));
        }
        if (six && !twice)
          isum[m] = _mm512_add_epi32(isum[m], _mm512_add_epi32(_mm512_mullo_epi32(t0, sc0), _mm512_mullo_epi32(t1, sc1)));
        else
          isum[m] = _mm512_add_epi32(isum[m], _mm512_mullo_epi32(_mm512_add_epi32(t0, t1), sc0));
      }
    }
    // The minimum (Q4_K: pair p is sub-blocks 2 p and 2 p + 1's minimums) or offset (IQ4_XS:
    // 128 x the scales of 32-value blocks 2 p and 2 p + 1; Q6_K: 32 x the scales of 16-value
    // groups 2 p and 2 p + 1) terms, against the activation's 32-value sums (16-value for Q6_K):
    // 4 multiply-adds a block where the 16-value sums took 8.
    const uint8_t *pairs = o + (six ? K6_OFF : K4_MN);
    const __m512 dv = _mm512_load_ps((const float *)(o + (six ? K6_D : K4_D)));
    const __m512 dminv = six ? dv : _mm512_load_ps((const float *)(o + K4_D + 64));
    const int by32 = !six || twice;
#pragma clang loop unroll(full)
    for (int m = 0; m < G; m++) {
      const int16_t *bs = by32 ? x[m].bs32 + 8 * i : x[m].bs + 16 * i;
#pragma clang loop unroll(full)
      for (int p = 0; p < (by32 ? 4 : 8); p++)
        msum[m] = _mm512_dpwssd_epi32(msum[m], _mm512_load_si512((const __m512i *)(pairs + p * 64)),
                                      _mm512_set1_epi32(dword(bs + 2 * p)));
      const __m512 f = six ? _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(isum[m], msum[m])), dv)
                           : _mm512_fmsub_ps(_mm512_cvtepi32_ps(isum[m]), dv, _mm512_mul_ps(_mm512_cvtepi32_ps(msum[m]), dminv));
      acc[m] = _mm512_fmadd_ps(f, _mm512_set1_ps(x[m].d[i]), acc[m]);
    }
  }
}

/// The raw bytes the next repack reads: `bytes` from `offset` in each of the 16 rows at `rows`
/// (`rows` NULL: none).
typedef struct {
  const uint8_t *rows;
  size_t row_bytes, offset, bytes;
} next_chunk;

/// Prefetches rows [r0, r1) of `next` into L2.
INLINE void prefetch_next(next_chunk next, int r0, int r1) {
  if (!next.rows) return;
  for (int r = r0; r < r1; r++) {
    const char *p = (const char *)next.rows + (size_t)r * next.row_bytes + next.offset;
    for (size_t o = 0; o < next.bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
  }
}

/// All activation rows against one repacked chunk, ACT_ROWS at a time, into sums (nx x 16).
/// Each pass of ACT_ROWS rows also prefetches its share of the 16 rows of `next`: the repack
/// reads the weights straight from memory, and a chunk's compute hides the next one's latency
/// (with pieces of 64 rows, single thread, weights from memory, 32 activation rows: Q3_K, Q4_K,
/// Q5_K, Q6_K and IQ4_XS 1.18-1.23x; from L3, level).
INLINE void run_all(const int dt, const uint8_t *pack, size_t i0, size_t i1, const void *XQ, size_t ldxq, int nx,
                    size_t K, float *sums, next_chunk next) {
  const int passes = (nx + ACT_ROWS - 1) / ACT_ROWS;
  for (int m0 = 0; m0 < nx; m0 += ACT_ROWS) {
    const int g = nx - m0 < ACT_ROWS ? nx - m0 : ACT_ROWS, pass = m0 / ACT_ROWS;
    prefetch_next(next, pass * LANES / passes, (pass + 1) * LANES / passes);
    moek_act_row x[ACT_ROWS];
    __m512 acc[ACT_ROWS];
    for (int m = 0; m < g; m++) {
      x[m] = moek_act_row_at(XQ, ldxq, m0 + m, K, 256);
      acc[m] = _mm512_loadu_ps(sums + (size_t)(m0 + m) * LANES);
    }
    switch (g) {
      case 1: run(dt, pack, i0, i1, x, 1, acc); break;
      case 2: run(dt, pack, i0, i1, x, 2, acc); break;
      case 3: run(dt, pack, i0, i1, x, 3, acc); break;
      default: run(dt, pack, i0, i1, x, ACT_ROWS, acc); break;
    }
    for (int m = 0; m < g; m++) _mm512_storeu_ps(sums + (size_t)(m0 + m) * LANES, acc[m]);
  }
}

size_t moek_lanes_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, size_t ldxq, int nx, float *Y, size_t ldy,
                       size_t r0, size_t r1, size_t K) {
  if (dt != MOEK_Q4_K && dt != MOEK_Q5_K && dt != MOEK_Q6_K && dt != MOEK_Q3_K && dt != MOEK_IQ4_XS) return r0;
  const size_t blocks = K / 256, bytes = (size_t)moek_block_bytes(dt);
  uint8_t *pack = (uint8_t *)moek_thread_scratch((CHUNK * MAX_BYTES + (size_t)nx * LANES * 4) / 4);
  float *sums = (float *)(pack + CHUNK * MAX_BYTES);  // nx x 16 partial sums across chunks
  size_t r = r0;
  // The first chunk all at once: the repack's own loads reach 16 lines at a time, a quarter of
  // the piece's time from memory at 32 activation rows; later chunks come in during the one before.
  if (r + LANES <= r1)
    prefetch_next((next_chunk){(const uint8_t *)W + r * row_bytes, row_bytes, 0, (CHUNK < blocks ? CHUNK : blocks) * bytes}, 0,
                  LANES);
  for (; r + LANES <= r1; r += LANES) {
    memset(sums, 0, (size_t)nx * LANES * sizeof(float));
    const uint8_t *rows = (const uint8_t *)W + r * row_bytes;
    for (size_t i0 = 0; i0 < blocks; i0 += CHUNK) {
      const size_t i1 = i0 + CHUNK < blocks ? i0 + CHUNK : blocks;
      // The next chunk of these rows, or the first of the next group.
      next_chunk next = {rows, row_bytes, i1 * bytes, (i1 + CHUNK < blocks ? CHUNK : blocks - i1) * bytes};
      if (i1 == blocks) next = (next_chunk){r + 2 * LANES <= r1 ? rows + LANES * row_bytes : NULL, row_bytes, 0,
                                            (CHUNK < blocks ? CHUNK : blocks) * bytes};
      if (dt == MOEK_Q4_K || dt == MOEK_Q5_K) {
        repack_q45_k(rows, row_bytes, dt == MOEK_Q5_K, i0, i1, pack);
        run_all(MOEK_Q4_K, pack, i0, i1, XQ, ldxq, nx, K, sums, next);
      } else {
        repack_q36_k(rows, row_bytes, dt, i0, i1, pack);
        if (dt == MOEK_IQ4_XS) run_all(MOEK_IQ4_XS, pack, i0, i1, XQ, ldxq, nx, K, sums, next);
        else run_all(MOEK_Q6_K, pack, i0, i1, XQ, ldxq, nx, K, sums, next);
      }
    }
    for (int m = 0; m < nx; m++) memcpy(Y + (size_t)m * ldy + r, sums + (size_t)m * LANES, LANES * sizeof(float));
  }
  return r;
}

#pragma clang attribute pop

#else
#include "internal.h"
size_t moek_lanes_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, size_t ldxq, int nx, float *Y, size_t ldy,
                       size_t r0, size_t r1, size_t K) {
  (void)dt; (void)W; (void)row_bytes; (void)XQ; (void)ldxq; (void)nx; (void)Y; (void)ldy; (void)r1; (void)K;
  return r0;
}
#endif
