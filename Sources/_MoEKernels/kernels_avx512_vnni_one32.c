// The 32-value block formats (Q8_0, Q4_0, Q5_0, IQ4_NL, MXFP4) against one activation row
// (decode) on AVX-512 VNNI, in 512-bit registers; longer rows than `QUADS_MAX_K` take
// kernels_avx512_vnni_q8.c's leaves.
//
// The nibble formats: a register holds four blocks in their stored order (each block's values
// 0..15 in one register's 128-bit quarter, 16..31 in a second register's), against the
// activation rearranged to match once per call, so one AND and one shift split 64 bytes of four
// blocks. Q8_0: a register holds two blocks, each block's 32 quant bytes one 256-bit load, against
// the activation as it is. Weights enter the unsigned side of the dot product plus an offset
// (Q4_0's 8, Q5_0's and MXFP4's 16, IQ4_NL's and Q8_0's 128); each block's integer sum is exact,
// and the offset's share (the offset times the block's activation sum, made once per call) is
// taken off in f32 beside the sums, a run of 8 blocks at a time, so the integer sums start from
// zero. Four rows share one horizontal reduction (`REDUCE_ROWS`).
//
// History, `scripts/bench-one-row.sh`, one thread in cache, GB/s of weights: the nineteenth
// session's four-block registers (replacing a 256-bit leaf of two blocks a register) took Q8_0
// 25.7-32.8 -> 30.5-34.9, Q4_0 15.9-20.5 -> 22.7-23.6, Q5_0 12.1-18.0 -> 18.4-19.6, IQ4_NL
// 14.9-20.0 -> 20.4-20.5, MXFP4 12.7-18.2 -> 15.1-15.2. The twentieth session's Q8_0 pairs, the
// offsets in f32 and `run_scales` without inserts, rows of 2048, alternating builds: Q8_0
// 35.7-38.1 -> 48.6-51.0, Q4_0 24.2-26.2 -> 28.3-28.5, MXFP4 20.2-20.5 -> 23.4-23.8, Q5_0 and
// IQ4_NL level. Against the nineteenth session's leaf the f32 results agree to 1.4e-5 relative;
// only MXFP4 rows whose scale bytes reach 250 or more (2^122), with sums near the largest float,
// now overflow to inf or NaN where the old order sometimes stayed finite.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,bmi2"))), apply_to = function)

#include "avx2_blocks.h"     // run_scales, AHEAD
#include "one_row_reduce.h"  // REDUCE_ROWS


/// Longest row the leaf rearranges on the stack (its activation and offset shares take 1.125
/// bytes a value, 18 KB at most, within the pool's 1 MiB worker stacks).
enum { QUADS_MAX_K = 16384 };

/// Four blocks' 16-byte quant fields (at `qs` in each block, `bytes` apart) as one register.
INLINE __m512i four_fields(const uint8_t *b, size_t bytes, size_t qs) {
  const __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(b + qs)));
  const __m512i v1 = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + bytes + qs)), 1);
  const __m512i v2 = _mm512_inserti32x4(v1, _mm_loadu_si128((const __m128i *)(b + 2 * bytes + qs)), 2);
  return _mm512_inserti32x4(v2, _mm_loadu_si128((const __m128i *)(b + 3 * bytes + qs)), 3);
}

/// The 16 fifth bits of values 0..15 (`high` 0) or 16..31 (`high` 1) of 4 Q5_0 blocks from b, a
/// block's in each 16 bits: one mask bit a value.
INLINE __mmask64 q5_0_fifth_bits(const uint8_t *b, size_t bytes, int high) {
  uint64_t m = 0;
  for (int j = 0; j < 4; j++) {
    uint32_t h;
    memcpy(&h, b + (size_t)j * bytes + 2, 4);
    m |= (uint64_t)(high ? h >> 16 : h & 0xFFFF) << (16 * j);
  }
  return (__mmask64)m;
}

/// A block's bytes in format dt, as a constant once dt is (`moek_block_bytes` is a call, which
/// left each run's prefetch a loop of its own).
INLINE size_t q32_bytes(const int dt) {
  return dt == MOEK_Q8_0 ? 34 : dt == MOEK_Q5_0 ? 22 : dt == MOEK_MXFP4 ? 17 : 18;
}

/// A run's 8 block scales times the activation's (the low 8 lanes of the result), for the row
/// loops below; adds the run's offset shares (`cx`, `block_offsets`) times the scales to
/// `offsets`.
INLINE __m512 run_step(const int dt, const uint8_t *run, size_t bytes, const float *cx, const float *xd,
                       __m256 *offsets) {
  const __m256 dw = run_scales(dt, run, bytes);
  *offsets = _mm256_fmadd_ps(dw, _mm256_loadu_ps(cx), *offsets);
  return _mm512_castps256_ps512(_mm256_mul_ps(dw, _mm256_loadu_ps(xd)));
}

/// A nibble format's 16 partial sums of one weight row: quarter j of quad p's lanes is block
/// 4 p + j, times its scale and the activation's. `xp` is the activation rearranged to the
/// register order, `cx` each block's offset share (`block_offsets`).
INLINE __m512 q32_row(const int dt, const uint8_t *row, const int8_t *xp, const float *cx, const float *xd,
                      size_t runs, size_t bytes, size_t ahead, __m512i lut) {
  const __m512i m4 = _mm512_set1_epi8(0xF), sixteen = _mm512_set1_epi8(16);
  const __m512i spread[2] = {_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                             _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7)};
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  __m256 offsets = _mm256_setzero_ps();
  for (size_t g = 0; g < runs; g++) {  // runs of 8 blocks: two quads
    const uint8_t *run = row + g * 8 * bytes;
    for (size_t o = 0; o < 8 * bytes; o += 64) _mm_prefetch((const char *)(run + ahead + o), _MM_HINT_T0);
    const __m512 sv = run_step(dt, run, bytes, cx + 8 * g, xd + 8 * g, &offsets);
#pragma clang loop unroll(full)
    for (int q = 0; q < 2; q++) {
      const uint8_t *b = run + 4 * (size_t)q * bytes;
      const size_t p = 2 * g + (size_t)q;
      const __m512i v = four_fields(b, bytes, dt == MOEK_Q5_0 ? 6 : dt == MOEK_MXFP4 ? 1 : 2);
      __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      if (dt == MOEK_IQ4_NL || dt == MOEK_MXFP4) {
        lo = _mm512_shuffle_epi8(lut, lo);
        hi = _mm512_shuffle_epi8(lut, hi);
      } else if (dt == MOEK_Q5_0) {
        lo = _mm512_mask_add_epi8(lo, q5_0_fifth_bits(b, bytes, 0), lo, sixteen);
        hi = _mm512_mask_add_epi8(hi, q5_0_fifth_bits(b, bytes, 1), hi, sixteen);
      }
      __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_load_si512(xp + 128 * p));
      sum = _mm512_dpbusd_epi32(sum, hi, _mm512_load_si512(xp + 128 * p + 64));
      acc[q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_permutexvar_ps(spread[q], sv), acc[q]);
    }
  }
  return _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_castps256_ps512(offsets));
}

/// Q8_0's 16 partial sums of one weight row: pair p's lanes 0..7 are block 2 p, 8..15 block
/// 2 p + 1, times its scale and the activation's; `cx` each block's offset share. No software
/// prefetch: in `moe bench` decode, alternating every 4 tokens in one process, this loop read a
/// mapped GGUF's weights 2-10% faster without the nibble loop's L1 prefetch (15 runs on the three
/// small Q8_0 shapes, 0.90-1.00; full-size OLMoE 0.96, 0.99) and without an L2 prefetch 8 KB ahead
/// (0.92-1.00), though the harness over anonymous memory had favoured the L1 one.
INLINE __m512 q8_0_row(const uint8_t *row, const int8_t *xq, const float *cx, const float *xd, size_t runs) {
  const __m512i bias = _mm512_set1_epi8((char)0x80);
  const __m512i spread[4] = {_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                             _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
                             _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5),
                             _mm512_setr_epi32(6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7)};
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  __m256 offsets = _mm256_setzero_ps();
  for (size_t g = 0; g < runs; g++) {  // runs of 8 blocks: four pairs
    const uint8_t *run = row + g * 8 * 34;
    const __m512 sv = run_step(MOEK_Q8_0, run, 34, cx + 8 * g, xd + 8 * g, &offsets);
#pragma clang loop unroll(full)
    for (int k = 0; k < 4; k++) {
      const uint8_t *b = run + 2 * (size_t)k * 34;
      const __m256i first = _mm256_loadu_si256((const __m256i *)(b + 2));
      const __m512i w = _mm512_xor_si512(
          _mm512_inserti64x4(_mm512_castsi256_si512(first), _mm256_loadu_si256((const __m256i *)(b + 36)), 1), bias);
      const __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(xq + 64 * (4 * g + k)));
      acc[k & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_permutexvar_ps(spread[k], sv), acc[k & 1]);
    }
  }
  return _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_castps256_ps512(offsets));
}

/// Each block's offset share of the row's sums, -off times the block's activation sum times its
/// scale, into cx[0, K / 32); K a multiple of 256 (16 at a time: the row's sums and scales are
/// padded to 64 bytes, and cx holds 16 past `QUADS_MAX_K / 32`).
INLINE void block_offsets(const moek_act_row *x, size_t K, float off, float *cx) {
  for (size_t b = 0; b < K / 32; b += 16) {
    const __m512 s = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(x->bs32 + b))));
    _mm512_store_ps(cx + b, _mm512_mul_ps(_mm512_mul_ps(s, _mm512_set1_ps(-off)), _mm512_loadu_ps(x->d + b)));
  }
}

/// Rows [r0, r1) of format `dt` against the activation row x: the blocks' offset shares once,
/// for the nibble formats the activation rearranged once (per 4 blocks, their values 0..15, then
/// 16..31), then `q32_row` or `q8_0_row` a row.
INLINE void rows_q32(const int dt, const uint8_t *W, size_t row_bytes, const moek_act_row *x, float *Y, size_t r0,
                     size_t r1, size_t K) {
  // The nibble formats' weights are fetched into L1 as far ahead in time as `rows_32i` looks.
  const size_t bytes = q32_bytes(dt), ahead = AHEAD * bytes / 18, runs = K / 256;
  __attribute__((aligned(64))) float cx[QUADS_MAX_K / 32 + 16];
  // The offset lifts the weights to unsigned bytes: Q4_0's and Q5_0's by their zero point;
  // MXFP4's code book (-12..12) by 16, not 128, so its offset share stays near its sums' size
  // (128 overflowed f32 on rows whose sums were within 20x of the largest float).
  const int off = dt == MOEK_Q4_0 ? 8 : dt == MOEK_Q5_0 || dt == MOEK_MXFP4 ? 16 : 128;
  block_offsets(x, K, (float)off, cx);
  if (dt == MOEK_Q8_0) {
    REDUCE_ROWS(q8_0_row(row, x->q, cx, x->d, runs));
    return;
  }
  __attribute__((aligned(64))) int8_t xp[QUADS_MAX_K];
  const __m512i first = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), second = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
  for (size_t p = 0; p < K / 128; p++) {
    const __m512i a = _mm512_loadu_si512(x->q + 128 * p), b = _mm512_loadu_si512(x->q + 128 * p + 64);
    _mm512_store_si512(xp + 128 * p, _mm512_permutex2var_epi64(a, first, b));
    _mm512_store_si512(xp + 128 * p + 64, _mm512_permutex2var_epi64(a, second, b));
  }
  const int8_t *table = dt == MOEK_MXFP4 ? moek_kvalues_mxfp4 : moek_kvalues_iq4nl;
  const __m512i lut = _mm512_add_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)table)),
                                      _mm512_set1_epi8((char)off));  // the code book plus off
  REDUCE_ROWS(q32_row(dt, row, xp, cx, x->d, runs, bytes, ahead, lut));
}

int moek_gemv_one32_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1,
                         size_t K) {
  if (K % 256 != 0 || K > QUADS_MAX_K) return 0;
  const moek_act_row x = moek_act_row_at(XQ, 0, 0, K, 32);
  const uint8_t *w = (const uint8_t *)W;
  switch (dt) {  // each format its own copy, the format's branches resolved
    case MOEK_Q8_0: rows_q32(MOEK_Q8_0, w, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_Q4_0: rows_q32(MOEK_Q4_0, w, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_Q5_0: rows_q32(MOEK_Q5_0, w, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_IQ4_NL: rows_q32(MOEK_IQ4_NL, w, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_MXFP4: rows_q32(MOEK_MXFP4, w, row_bytes, &x, Y, r0, r1, K); return 1;
    default: return 0;
  }
}

#pragma clang attribute pop

#else
#include "internal.h"
int moek_gemv_one32_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1,
                         size_t K) {
  (void)dt; (void)W; (void)row_bytes; (void)XQ; (void)Y; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
