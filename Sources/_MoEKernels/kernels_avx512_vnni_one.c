// K-quant weights (Q2_K to Q6_K) and IQ4_XS against one activation row (decode) on
// AVX-512 VNNI, in 512-bit registers.
//
// The paired leaves of kernels_avx512_vnni_q8.c hold a block's 256 values in eight 256-bit
// registers and reach their lane order (a lane per sub-block) with 4 x 4 dword transposes, 8
// shuffles per 128 bytes. Against one activation row nothing amortises that work, and the leaf
// is bound by how many instructions it issues, not by a pipe. Here two 512-bit registers hold
// what four 256-bit ones did: one two-source permute (`vpermt2d`) replaces 4 shuffles, and every
// and, multiply-add, pack and convert covers twice the values. Q6_K and Q3_K need no permute:
// their stored order already puts a 16-value sub-block in each 128-bit quarter against the
// activation's natural order; IQ4_XS rearranges the activation once per call instead. Each
// block's integer total is the paired leaf's exactly; only the order of the f32 sums differs.
// Four rows share one horizontal reduction (`REDUCE_ROWS`).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,bmi2"))), apply_to = function)

#include "avx2_blocks.h"
#include "vnni_shuffles.h"  // k4_scales_ordered_mins
#include "one_row_reduce.h"  // REDUCE_ROWS

/// Weight bytes these leaves fetch ahead of the block being read, into L2 (`_MM_HINT_T1`).
/// Fetched into L1 4 KB ahead, as the leaves for more rows do, the Q4_K leaf read memory slower
/// than the paired one though it runs faster in cache (harness, one thread, Q4_K [2048 x 7168]
/// from memory: 30-32 against 40-42 GMAC/s); into L2 8-16 KB ahead, 45-48, and with two threads
/// each streaming its own weights 46-50 against the paired leaf's 38-41. `moe bench` decode, 256
/// tokens, 8-10 alternating runs against the build before these leaves: Mixtral-shaped Q4_K_M
/// median +9% at 8 KB (+8% at 16 KB), Qwen3-MoE-shaped Q4_K_M +3.4% (-0.5%). (Q8_0's one-row
/// leaf, two threads from memory, read no faster this way: it keeps its L1 distance.)
enum { ONE_ROW_AHEAD = 8192 };

/// Defines `rows_<fmt>_one`, the rows [r0, r1) of `<fmt>_row` against the activation row x.
#define ROWS_ONE(fmt)                                                                                 \
  static void rows_##fmt##_one(const uint8_t *W, size_t row_bytes, const moek_act_row *x, float *Y,   \
                               size_t r0, size_t r1, size_t K) {                                      \
    const size_t blocks = K / 256;                                                                    \
    REDUCE_ROWS(fmt##_row(row, x, blocks));                                                           \
  }

/// Dword indices for `vpermt2d` of [q0 | q1] and [q2 | q3] (qj the 32 bytes of group j) giving
/// [u0 | u1] (`first`) or [u2 | u3]: u_p as `transpose4` makes it, dword j of half h from
/// dword 4 h + p of q_j (source index 8 j + 4 h + p).
INLINE __m512i q4k_order(int first) {
  const int p0 = first ? 0 : 2;
  int idx[16];
  for (int t = 0; t < 16; t++) {
    const int p = p0 + t / 8, h = (t % 8) / 4, j = t % 4;
    idx[t] = 8 * j + 4 * h + p;
  }
  return _mm512_loadu_si512(idx);
}

/// acc plus block i of a Q4_K or Q5_K row: lo and hi the integer sums of the low and high
/// sub-blocks in `q4k_order`'s lanes, sm the scales (packed order) and mins, dd d and dmin.
/// A quarter's 8 sums pack to int16 and one multiply-add applies the 6-bit scales; the mins
/// take the activation's 32-value sums.
INLINE __m512 k4_block_sums(__m512 acc, __m512i lo, __m512i hi, __m128i sm, __m128 dd, const moek_act_row *x, size_t i) {
  const __m512i sc16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sm));
  const __m512i s = _mm512_madd_epi16(_mm512_packs_epi32(lo, hi), sc16);
  const __m128i mins = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm));
  const __m128i ms = _mm_madd_epi16(_mm_loadu_si128((const __m128i *)(x->bs32 + 8 * i)), mins);
  const __m512 msf = _mm512_zextps128_ps512(_mm_mul_ps(_mm_cvtepi32_ps(ms), _mm_permute_ps(dd, 0x55)));
  const __m512 f = _mm512_fmsub_ps(_mm512_cvtepi32_ps(s), _mm512_broadcastss_ps(dd), msf);
  return _mm512_fmadd_ps(f, _mm512_set1_ps(x->d[i]), acc);
}

/// The 16 partial sums of Q4_K row `row` against the paired activation row x. Lanes of the L
/// sums (low nibbles) are sub-blocks 0 2 4 6 in each 128-bit quarter, of the H sums 1 3 5 7 (the
/// high nibbles masked in place, 16 times their value: the sums shift back exactly); a
/// quarter's 8 sums pack to int16 (8 products of at most 15 x 127).
INLINE __m512 q4_k_row(const uint8_t *row, const moek_act_row *x, size_t blocks) {
  const __m512i m4 = _mm512_set1_epi8(0xF), order01 = q4k_order(1), order23 = q4k_order(0);
  __m512 acc = _mm512_setzero_ps();
  for (size_t i = 0; i < blocks; i++) {
    const uint8_t *b = row + i * 144, *xq = (const uint8_t *)(x->qi + 256 * i);
    for (size_t o = 0; o < 144; o += 64) _mm_prefetch((const char *)(b + ONE_ROW_AHEAD + o), _MM_HINT_T1);
    const __m128i sm = k4_scales_ordered_mins(b + 4);
    const __m128 dd = _mm_cvtph_ps(_mm_loadu_si32(b));  // d, dmin
    const __m512i q01 = _mm512_loadu_si512(b + 16), q23 = _mm512_loadu_si512(b + 80);
    const __m512i u01 = _mm512_permutex2var_epi32(q01, order01, q23);
    const __m512i u23 = _mm512_permutex2var_epi32(q01, order23, q23);
    __m512i lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(u01, m4), _mm512_loadu_si512(xq));
    __m512i hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_andnot_si512(m4, u01), _mm512_loadu_si512(xq + 128));
    lo = _mm512_dpbusd_epi32(lo, _mm512_and_si512(u23, m4), _mm512_loadu_si512(xq + 64));
    hi = _mm512_dpbusd_epi32(hi, _mm512_andnot_si512(m4, u23), _mm512_loadu_si512(xq + 192));
    acc = k4_block_sums(acc, lo, _mm512_srai_epi32(hi, 4), sm, dd, x, i);
  }
  return acc;
}

ROWS_ONE(q4_k)

/// Dword indices (0..7) into Q5_K's 32 bytes of high bits giving, for each dword of u01
/// (`first`) or u23 as `q4k_order` makes them, the dword of qh that holds the fifth bits of the
/// same 4 values (value l of a 64-value group takes its fifth bit from qh[l]).
INLINE __m512i q5k_qh_order(int first) {
  const int p0 = first ? 0 : 2;
  int idx[16];
  for (int t = 0; t < 16; t++) idx[t] = 4 * ((t % 8) / 4) + p0 + t / 8;
  return _mm512_loadu_si512(idx);
}

/// The bit of qh each byte of a dword lane tests: the lane holds group j = t % 4 of the block's
/// four 64-value groups, whose low nibbles take bit 2 j and high nibbles bit 2 j + 1 (`high`).
INLINE __m512i q5k_bits(int high) {
  int v[16];
  for (int t = 0; t < 16; t++) v[t] = (int)(((1u << (2 * (t % 4) + high)) & 0xFF) * 0x01010101u);
  return _mm512_loadu_si512(v);
}

/// The 16 partial sums of Q5_K row `row` against the paired activation row x: Q4_K's lanes
/// and scales, each nibble with its fifth bit added (16 where qh's bit is set: a byte test and
/// a masked add a register), the high nibbles shifted down rather than masked in place (with
/// the fifth bit they would not fit a byte). A lane's two products sum at most 8 x 31 x 127,
/// which still packs to int16. Against the paired leaf on one row, in-cache harness, one
/// thread, rows of 1024, 21 alternating pairs: 25.6 -> 43.8 GB/s of weights.
INLINE __m512 q5_k_row(const uint8_t *row, const moek_act_row *x, size_t blocks) {
  const __m512i m4 = _mm512_set1_epi8(0xF), sixteen = _mm512_set1_epi8(16);
  const __m512i order[2] = {q4k_order(1), q4k_order(0)}, qh_order[2] = {q5k_qh_order(1), q5k_qh_order(0)};
  const __m512i bits[2] = {q5k_bits(0), q5k_bits(1)};
  __m512 acc = _mm512_setzero_ps();
  for (size_t i = 0; i < blocks; i++) {
    const uint8_t *b = row + i * 176, *xq = (const uint8_t *)(x->qi + 256 * i);
    for (size_t o = 0; o < 176; o += 64) _mm_prefetch((const char *)(b + ONE_ROW_AHEAD + o), _MM_HINT_T1);
    const __m128i sm = k4_scales_ordered_mins(b + 4);
    const __m128 dd = _mm_cvtph_ps(_mm_loadu_si32(b));  // d, dmin
    const __m512i qh = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b + 16)));
    const __m512i q01 = _mm512_loadu_si512(b + 48), q23 = _mm512_loadu_si512(b + 112);
    __m512i v[4];  // low nibbles of u01, u23, then high nibbles, each with its fifth bit
#pragma clang loop unroll(full)
    for (int h = 0; h < 2; h++) {
      const __m512i u = _mm512_permutex2var_epi32(q01, order[h], q23), hb = _mm512_permutexvar_epi32(qh_order[h], qh);
      const __m512i lo = _mm512_and_si512(u, m4), hi = _mm512_and_si512(_mm512_srli_epi16(u, 4), m4);
      v[h] = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(hb, bits[0]), lo, sixteen);
      v[2 + h] = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(hb, bits[1]), hi, sixteen);
    }
    __m512i lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], _mm512_loadu_si512(xq));
    __m512i hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[2], _mm512_loadu_si512(xq + 128));
    lo = _mm512_dpbusd_epi32(lo, v[1], _mm512_loadu_si512(xq + 64));
    hi = _mm512_dpbusd_epi32(hi, v[3], _mm512_loadu_si512(xq + 192));
    acc = k4_block_sums(acc, lo, hi, sm, dd, x, i);
  }
  return acc;
}

ROWS_ONE(q5_k)

/// Word indices for `vpermw` spreading Q6_K's 16 scales (int16 words 0..15) to the order the
/// packed sums of two 64-value registers take: 128-bit quarter j holds 4 sums of sub-block
/// `base` + j, then 4 of `base` + 4 + j.
INLINE __m512i q6k_scale_order(int base) {
  short idx[32];
  for (int t = 0; t < 32; t++) idx[t] = (short)(base + t / 8 + (t % 8 < 4 ? 0 : 4));
  return _mm512_loadu_si512(idx);
}

/// The scaled integer sums of a Q6_K, Q3_K or Q2_K block: sums[2 h + r] as `k36_block_sums`
/// below takes them, sc the 16 scales as int16, packed in pairs of registers and multiplied in one
/// multiply-add each.
INLINE __m512i k36_scaled(const __m512i sums[4], __m256i sc, __m512i order_a, __m512i order_b) {
  const __m512i scz = _mm512_castsi256_si512(sc);
  return _mm512_add_epi32(_mm512_madd_epi16(_mm512_packs_epi32(sums[0], sums[1]), _mm512_permutexvar_epi16(order_a, scz)),
                          _mm512_madd_epi16(_mm512_packs_epi32(sums[2], sums[3]), _mm512_permutexvar_epi16(order_b, scz)));
}

/// acc plus block i of a Q6_K or Q3_K row: sums[2 h + r] the integer sums of the values 128 h +
/// 64 r .. + 63 (a 16-value sub-block per 128-bit quarter), sc the 16 int8 scales, the values
/// entered plus 2^`offset_log2` (32 or 4), and dx the block's d times the activation's. The sums
/// pack to int16 in pairs of registers (quarter j: sub-block base + j, then base + 4 + j, as
/// `q6k_scale_order` spreads the scales), one multiply-add applies the scales, and the offset
/// times the scaled 16-value activation sums comes off.
INLINE __m512 k36_block_sums(__m512 acc, const __m512i sums[4], __m128i sc8, int offset_log2, float dx, const moek_act_row *x,
                             size_t i, __m512i order_a, __m512i order_b) {
  const __m256i sc = _mm256_cvtepi8_epi16(sc8);
  const __m512i s = k36_scaled(sums, sc, order_a, order_b);
  const __m256i offset = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x->bs + 16 * i)),
                                           _mm256_sll_epi16(sc, _mm_cvtsi32_si128(offset_log2)));
  const __m512i total = _mm512_sub_epi32(s, _mm512_zextsi256_si512(offset));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_set1_ps(dx), acc);
}

/// The 16 partial sums of Q6_K row `row` against the activation row x in its natural order,
/// which a block's bytes already match: the low nibbles of ql's 64 bytes of a half are its
/// values 0..63 in order, the high nibbles 64..127, each with two bits of qh (bits 0-1 and 2-3 of qh's 32 bytes for the
/// low, 4-5 and 6-7 for the high) as bits 4-5. A 128-bit quarter of a 64-value register is one
/// 16-value sub-block, so each of the 4 products needs no shuffle: its sums (4 products of at
/// most 63 x 127) pack to int16 in pairs of registers, and one multiply-add applies the int8
/// scales; the values' offset of 32 comes off as 32 times the scaled 16-value activation sums.
INLINE __m512 q6_k_row(const uint8_t *row, const moek_act_row *x, size_t blocks) {
  const __m512i m4 = _mm512_set1_epi8(0xF), m30 = _mm512_set1_epi8(0x30);
  // Per 16-bit word: bits 0-1 of qh to bits 4-5 (shift left 4) for values 0..31, bits 2-3 (left
  // 2) for 32..63; for the high nibbles bits 4-5 (no shift) and 6-7 (right 2).
  const __m512i shift_lo = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i shift_hi = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
  const __m512i order_a = q6k_scale_order(0), order_b = q6k_scale_order(8);
  __m512 acc = _mm512_setzero_ps();
  for (size_t i = 0; i < blocks; i++) {
    const uint8_t *b = row + i * 210;
    const int8_t *xq = x->q + 256 * i;
    for (size_t o = 0; o < 210; o += 64) _mm_prefetch((const char *)(b + ONE_ROW_AHEAD + o), _MM_HINT_T1);
    const __m512i qh = _mm512_loadu_si512(b + 128);
    __m512i sums[4];
#pragma clang loop unroll(full)
    for (int h = 0; h < 2; h++) {
      const __m512i ql = _mm512_loadu_si512(b + 64 * h);
      // qh's 32 bytes of this half, twice
      const __m512i d = h ? _mm512_shuffle_i64x2(qh, qh, 0xEE) : _mm512_shuffle_i64x2(qh, qh, 0x44);
      const __m512i lo = _mm512_ternarylogic_epi32(ql, _mm512_and_si512(_mm512_sllv_epi16(d, shift_lo), m30), m4, 0xEC);
      const __m512i hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(ql, 4), _mm512_and_si512(_mm512_srlv_epi16(d, shift_hi), m30),
                                                   m4, 0xEC);  // (A & C) | B
      sums[2 * h] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xq + 128 * h));
      sums[2 * h + 1] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, _mm512_loadu_si512(xq + 128 * h + 64));
    }
    const __m128i sc = _mm_loadu_si128((const __m128i *)(b + 192));
    acc = k36_block_sums(acc, sums, sc, 5, half(b + 208) * x->d[i], x, i, order_a, order_b);
  }
  return acc;
}

ROWS_ONE(q6_k)

/// A Q2_K or Q3_K block's integer sums against xq (the block's 256 activation values, natural
/// order): sums[2 h + r] holds values 128 h + 64 r .. + 63, runs 2 r and 2 r + 1 of half h (the
/// half's 32 bytes of two-bit planes qs + 32 h, run c in bits 2 c, shifted in the low and high
/// 256-bit halves of a register), a 16-value sub-block per 128-bit quarter. With `hmask` (Q3_K)
/// each value's third bit (bit 4 h + c of hmask's bytes) adds 4, by a byte test and a masked add.
INLINE void two_bit_sums(const uint8_t *qs, const uint8_t *hmask, const int8_t *xq, __m512i sums[4]) {
  const __m512i three = _mm512_set1_epi8(3), four = _mm512_set1_epi8(4);
  const __m512i hm = hmask ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)hmask)) : _mm512_setzero_si512();
#pragma clang loop unroll(full)
  for (int h = 0; h < 2; h++) {
    const __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * h)));
#pragma clang loop unroll(full)
    for (int r = 0; r < 2; r++) {
      const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16((short)(4 * r)), _mm256_set1_epi16((short)(4 * r + 2)), 1);
      __m512i v = _mm512_and_si512(_mm512_srlv_epi16(q, shift), three);
      if (hmask) {
        const int c = 4 * h + 2 * r;  // the low half's run; the high half's is c + 1
        const __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << c)), _mm256_set1_epi8((char)(1 << (c + 1))), 1);
        v = _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(hm, bit), v, four);
      }
      sums[2 * h + r] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_loadu_si512(xq + 128 * h + 64 * r));
    }
  }
}

/// Block i of a Q2_K or Q3_K row (`bytes` a block, its two-bit planes at `qs`, with `third` the
/// hmask at its start): fetched ahead, and its integer sums against x (`two_bit_sums`).
/// Returns the block's first byte.
INLINE const uint8_t *two_bit_block(const uint8_t *row, size_t i, size_t bytes, size_t qs, int third, const moek_act_row *x,
                                    __m512i sums[4]) {
  const uint8_t *b = row + i * bytes;
  for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(b + ONE_ROW_AHEAD + o), _MM_HINT_T1);
  two_bit_sums(b + qs, third ? b : NULL, x->q + 256 * i, sums);
  return b;
}

/// The 16 partial sums of Q2_K row `row` against the activation row x in its natural order, as
/// the Q3_K row takes it without the third bits (`two_bit_sums`): each 128-bit quarter of a 64-value register is
/// one 16-value sub-block, the sums (4 products of at most 3 x 127) pack to int16 in Q6_K's
/// order and one multiply-add applies the 4-bit scales; the 4-bit mins take the activation's
/// 16-value sums, times dmin.
INLINE __m512 q2_k_row(const uint8_t *row, const moek_act_row *x, size_t blocks) {
  const __m512i order_a = q6k_scale_order(0), order_b = q6k_scale_order(8);
  const __m128i m4 = _mm_set1_epi8(0xF);
  __m512 acc = _mm512_setzero_ps();
  for (size_t i = 0; i < blocks; i++) {
    __m512i sums[4];
    const uint8_t *b = two_bit_block(row, i, 84, 16, 0, x, sums);
    const __m128i packed = _mm_loadu_si128((const __m128i *)b);
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
    const __m512i s = k36_scaled(sums, _mm256_cvtepu8_epi16(_mm_and_si128(packed, m4)), order_a, order_b);
    const __m256i m = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x->bs + 16 * i)), mins);
    const __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm_loadu_si32(b + 80)), _mm_set1_ps(x->d[i]));  // d, dmin times x's d
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_broadcastss_ps(dd), acc);
    acc = _mm512_fnmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(m)), _mm512_set1_ps(_mm_cvtss_f32(_mm_movehdup_ps(dd))), acc);
  }
  return acc;
}

ROWS_ONE(q2_k)

/// The 16 partial sums of Q3_K row `row` against the activation row x in its natural order, as
/// the Q6_K leaf takes it: a 64-value register is two runs of 32 (the two-bit planes of one half
/// block's 32 bytes, a shift each) with their third bits from hmask added by a byte test and a
/// masked add, so a 128-bit quarter is one 16-value sub-block. The values enter plus 4
/// (unsigned), the sums (4 products of at most 7 x 127) pack to int16 in pairs of registers in
/// Q6_K's order, one multiply-add applies the signed 6-bit scales, and 4 times the scaled
/// 16-value activation sums come off.
INLINE __m512 q3_k_row(const uint8_t *row, const moek_act_row *x, size_t blocks) {
  const __m512i order_a = q6k_scale_order(0), order_b = q6k_scale_order(8);
  __m512 acc = _mm512_setzero_ps();
  for (size_t i = 0; i < blocks; i++) {
    __m512i sums[4];
    const uint8_t *b = two_bit_block(row, i, 110, 32, 1, x, sums);
    acc = k36_block_sums(acc, sums, q3_k_scales_vec(b), 2, half(b + 108) * x->d[i], x, i, order_a, order_b);
  }
  return acc;
}

ROWS_ONE(q3_k)

/// IQ4_XS's 8 six-bit scales minus 32 (bytes 0..7) of the block at b: the low nibbles from
/// scales_l (b + 4) and the top two bits from scales_h (b + 2), each spread to its byte by one
/// `pdep`. The vector unpacking (`iq4_xs_scales_vec`) was a quarter of this leaf's time, whose
/// vector pipes bound it (harness, one thread, in cache: 29.6 GB/s, 39 without the unpacking).
INLINE __m128i iq4_xs_scales_pdep(const uint8_t *b) {
  uint16_t h;
  uint32_t l;
  memcpy(&h, b + 2, 2);
  memcpy(&l, b + 4, 4);
  const uint64_t ls = _pdep_u64(l, 0x0F0F0F0F0F0F0F0Full) | _pdep_u64(h, 0x3030303030303030ull);
  return _mm_sub_epi8(_mm_cvtsi64_si128((long long)ls), _mm_set1_epi8(32));
}

/// Longest row the one-row IQ4_XS leaf rearranges its activation for on the stack.
enum { IQ4_XS_MAX_K = 16384 };

/// The 16 partial sums of IQ4_XS row `row` against xr, the activation rearranged to the
/// block's stored order: a 64-byte register of codes is 4 of the block's 32-value sub-blocks, a
/// 128-bit quarter each, low nibbles its values 0..15 and high 16..31, so xr holds per half
/// block those 4 sub-blocks' values 0..15, then their 16..31. The codes enter as their code-book
/// value plus 128 (unsigned), a lane's sums (8 products of at most 241 x 127) take their
/// sub-block's scale in a 32-bit multiply, and 128 times the scaled 32-value activation sums
/// come off once a block.
INLINE __m512 iq4_xs_row(const uint8_t *row, const moek_act_row *x, const int8_t *xr, size_t blocks, __m512i lut,
                         __m128i spread_a, __m128i spread_b) {
  const __m512i m4 = _mm512_set1_epi8(0xF);
  __m512 acc = _mm512_setzero_ps();
  for (size_t i = 0; i < blocks; i++) {
    const uint8_t *b = row + i * 136;
    const int8_t *xb = xr + 256 * i;
    for (size_t o = 0; o < 136; o += 64) _mm_prefetch((const char *)(b + ONE_ROW_AHEAD + o), _MM_HINT_T1);
    const __m128i sc = iq4_xs_scales_pdep(b);  // bytes 0..7: the 8 scales minus 32
    __m512i sums[2];
#pragma clang loop unroll(full)
    for (int h = 0; h < 2; h++) {
      const __m512i q = _mm512_loadu_si512(b + 8 + 64 * h);
      const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(q, m4));
      const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(q, 4), m4));
      sums[h] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(xb + 128 * h)), hi,
                                    _mm512_loadu_si512(xb + 128 * h + 64));
    }
    // Quarter k of the first register's lanes takes scale k, of the second's 4 + k.
    const __m512i s = _mm512_add_epi32(_mm512_mullo_epi32(sums[0], _mm512_cvtepi8_epi32(_mm_shuffle_epi8(sc, spread_a))),
                                       _mm512_mullo_epi32(sums[1], _mm512_cvtepi8_epi32(_mm_shuffle_epi8(sc, spread_b))));
    // 128 sum_k s_k X_k, X_k the 32-value sums of sub-block k
    const __m128i off = _mm_slli_epi32(_mm_madd_epi16(_mm_loadu_si128((const __m128i *)(x->bs32 + 8 * i)), _mm_cvtepi8_epi16(sc)), 7);
    const __m512i total = _mm512_sub_epi32(s, _mm512_zextsi128_si512(off));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_set1_ps(half(b) * x->d[i]), acc);
  }
  return acc;
}

/// IQ4_XS rows [r0, r1) against the activation row x (natural order, rearranged here once for
/// all the rows); 0 when the row is longer than `IQ4_XS_MAX_K`.
static int rows_iq4_xs_one(const uint8_t *W, size_t row_bytes, const moek_act_row *x, float *Y, size_t r0, size_t r1,
                           size_t K) {
  if (K > IQ4_XS_MAX_K) return 0;
  const size_t blocks = K / 256;
  __attribute__((aligned(64))) int8_t xr[IQ4_XS_MAX_K];
  const __m512i first = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), second = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
  for (size_t c = 0; c < K; c += 128) {  // per 4 sub-blocks: their values 0..15, then 16..31
    const __m512i a = _mm512_loadu_si512(x->q + c), b = _mm512_loadu_si512(x->q + c + 64);
    _mm512_store_si512(xr + c, _mm512_permutex2var_epi64(a, first, b));
    _mm512_store_si512(xr + c + 64, _mm512_permutex2var_epi64(a, second, b));
  }
  const __m512i lut = _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)moek_kvalues_iq4nl)),
                                       _mm512_set1_epi8((char)0x80));  // the code book plus 128
  // Scale k (first half block) or 4 + k, four times each: a quarter of lanes per sub-block.
  const __m128i spread_a = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const __m128i spread_b = _mm_add_epi8(spread_a, _mm_set1_epi8(4));
  REDUCE_ROWS(iq4_xs_row(row, x, xr, blocks, lut, spread_a, spread_b));
  return 1;
}

int moek_gemv_one_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1, size_t K) {
  if (K % 256 != 0) return 0;
  const moek_act_row x = moek_act_row_at(XQ, 0, 0, K, 256);
  switch (dt) {
    case MOEK_Q4_K: rows_q4_k_one((const uint8_t *)W, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_Q5_K: rows_q5_k_one((const uint8_t *)W, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_Q6_K: rows_q6_k_one((const uint8_t *)W, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_Q3_K: rows_q3_k_one((const uint8_t *)W, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_Q2_K: rows_q2_k_one((const uint8_t *)W, row_bytes, &x, Y, r0, r1, K); return 1;
    case MOEK_IQ4_XS: return rows_iq4_xs_one((const uint8_t *)W, row_bytes, &x, Y, r0, r1, K);
    default: return 0;
  }
}

#pragma clang attribute pop

#else
#include "internal.h"
int moek_gemv_one_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1, size_t K) {
  (void)dt; (void)W; (void)row_bytes; (void)XQ; (void)Y; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
