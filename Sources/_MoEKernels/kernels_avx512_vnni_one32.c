// The 32-value block formats (Q8_0, Q4_0, Q5_0, IQ4_NL, MXFP4) against one activation row
// (decode) on AVX-512 VNNI, in 512-bit registers; longer rows than `QUADS_MAX_K` take
// kernels_avx512_vnni_q8.c's leaves.
//
// A register holds four blocks in their stored order (each block's values 0..15 in one
// register's 128-bit quarter, 16..31 in a second register's), against the activation rearranged
// to match once per call, so the nibble formats split 64 bytes of four blocks with one AND and
// one shift. Each block's integer sum is exact; only the order of the f32 sums differs. Four rows
// share one horizontal reduction (`REDUCE_ROWS`). This replaced a 256-bit leaf of two blocks a
// register (`rows_32p`): `scripts/bench-one-row.sh`, rows of 1024, two runs each, GB/s of
// weights, one thread in cache / from memory as a fraction of the read probe beside it: Q8_0
// 25.7-32.8 -> 30.5-34.9 / 0.82-0.89 -> 0.91-0.97, Q4_0 15.9-20.5 -> 22.7-23.6 / 0.90-0.95 ->
// 0.93-0.98, Q5_0 12.1-18.0 -> 18.4-19.6 / 0.70-0.75 -> 0.86-0.89, IQ4_NL 14.9-20.0 -> 20.4-20.5
// / 0.66-0.77 -> 0.92-0.97, MXFP4 12.7-18.2 -> 15.1-15.2 / 0.69-0.83 -> 0.85-0.89 (the machine's
// in-cache speed swung that hour). Integer sums agree with the old leaf's to 2e-5 (f32 order).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,bmi2"))), apply_to = function)

#include "avx2_blocks.h"     // run_scales, AHEAD
#include "one_row_reduce.h"  // REDUCE_ROWS


/// Longest row the leaf rearranges on the stack (its activation and offsets take 1.5 bytes a
/// value, 24 KB at most, within the pool's 1 MiB worker stacks).
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

/// The 16 partial sums of one weight row: quarter j of quad p's lanes is block 4 p + j, times its
/// scale and the activation's. `xp` is the activation rearranged to the register order, `corr`
/// each lane's -off times its activations' sum (the weights enter unsigned, plus off).
INLINE __m512 q32_row(const int dt, const uint8_t *row, const int8_t *xp, const int32_t *corr, const float *xd,
                      size_t runs, size_t bytes, size_t ahead, __m512i lut) {
  const __m512i m4 = _mm512_set1_epi8(0xF), bias = _mm512_set1_epi8((char)0x80), sixteen = _mm512_set1_epi8(16);
  const __m512i spread[2] = {_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                             _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7)};
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  for (size_t g = 0; g < runs; g++) {  // runs of 8 blocks: two quads
    const uint8_t *run = row + g * 8 * bytes;
    for (size_t o = 0; o < 8 * bytes; o += 64) _mm_prefetch((const char *)(run + ahead + o), _MM_HINT_T0);
    const __m512 sv = _mm512_castps256_ps512(_mm256_mul_ps(run_scales(dt, run, bytes), _mm256_loadu_ps(xd + 8 * g)));
#pragma clang loop unroll(full)
    for (int q = 0; q < 2; q++) {
      const uint8_t *b = run + 4 * (size_t)q * bytes;
      const size_t p = 2 * g + (size_t)q;
      __m512i lo, hi;
      if (dt == MOEK_Q8_0) {  // each block's 32 bytes: the first 16 to lo, the rest to hi
        lo = _mm512_xor_si512(four_fields(b, bytes, 2), bias);
        hi = _mm512_xor_si512(four_fields(b, bytes, 18), bias);
      } else {
        const __m512i v = four_fields(b, bytes, dt == MOEK_Q5_0 ? 6 : dt == MOEK_MXFP4 ? 1 : 2);
        lo = _mm512_and_si512(v, m4);
        hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if (dt == MOEK_IQ4_NL || dt == MOEK_MXFP4) {
          lo = _mm512_shuffle_epi8(lut, lo);
          hi = _mm512_shuffle_epi8(lut, hi);
        } else if (dt == MOEK_Q5_0) {
          lo = _mm512_mask_add_epi8(lo, q5_0_fifth_bits(b, bytes, 0), lo, sixteen);
          hi = _mm512_mask_add_epi8(hi, q5_0_fifth_bits(b, bytes, 1), hi, sixteen);
        }
      }
      __m512i sum = _mm512_dpbusd_epi32(_mm512_load_si512(corr + 16 * p), lo, _mm512_load_si512(xp + 128 * p));
      sum = _mm512_dpbusd_epi32(sum, hi, _mm512_load_si512(xp + 128 * p + 64));
      acc[q] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_permutexvar_ps(spread[q], sv), acc[q]);
    }
  }
  return _mm512_add_ps(acc[0], acc[1]);
}

/// Rows [r0, r1) of format `dt` against the activation row x: the activation rearranged once
/// (per 4 blocks, their values 0..15, then 16..31) with each lane's offset sum, then
/// `q32_row` a row.
INLINE void rows_q32(const int dt, const uint8_t *W, size_t row_bytes, const moek_act_row *x, float *Y, size_t r0,
                     size_t r1, size_t K) {
  // Fetched into L1 as far ahead in time as `rows_32i` looks.
  const size_t quads = K / 128, bytes = (size_t)moek_block_bytes(dt), ahead = AHEAD * bytes / 18;
  __attribute__((aligned(64))) int8_t xp[QUADS_MAX_K];
  __attribute__((aligned(64))) int32_t corr[QUADS_MAX_K / 128 * 16];
  const int shift = dt == MOEK_Q4_0 ? 3 : dt == MOEK_Q5_0 ? 4 : 7;  // log2 of off: 8, 16, or 128
  const __m512i ones = _mm512_set1_epi8(1);
  const __m512i first = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), second = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
  for (size_t p = 0; p < quads; p++) {
    const __m512i a = _mm512_loadu_si512(x->q + 128 * p), b = _mm512_loadu_si512(x->q + 128 * p + 64);
    const __m512i lo = _mm512_permutex2var_epi64(a, first, b), hi = _mm512_permutex2var_epi64(a, second, b);
    _mm512_store_si512(xp + 128 * p, lo);
    _mm512_store_si512(xp + 128 * p + 64, hi);
    const __m512i sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, lo), ones, hi);
    _mm512_store_si512(corr + 16 * p, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, shift)));
  }
  const int8_t *table = dt == MOEK_MXFP4 ? moek_kvalues_mxfp4 : moek_kvalues_iq4nl;
  const __m512i lut = _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)table)),
                                       _mm512_set1_epi8((char)0x80));  // the code book plus 128
  const size_t runs = K / 256;
  REDUCE_ROWS(q32_row(dt, row, xp, corr, x->d, runs, bytes, ahead, lut));
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
