// Dword shuffles and Q4_K scale unpacking the AVX-512 VNNI block leaves share
// (kernels_avx512_vnni_q8.c, kernels_avx512_vnni_lanes.c). Include after avx2_blocks.h, inside
// the leaves' `#pragma clang attribute push(... target(...avx512vnni...))`.
#ifndef MOE_KERNELS_VNNI_SHUFFLES_H
#define MOE_KERNELS_VNNI_SHUFFLES_H

/// Transposes 8 registers as an 8 x 8 matrix of dwords: out[r] dword l = in[l] dword r.
INLINE void transpose8(const __m256i in[8], __m256i out[8]) {
  __m256i t[8], u[8];
  for (int p = 0; p < 4; p++) {
    t[2 * p] = _mm256_unpacklo_epi32(in[2 * p], in[2 * p + 1]);
    t[2 * p + 1] = _mm256_unpackhi_epi32(in[2 * p], in[2 * p + 1]);
  }
  for (int h = 0; h < 2; h++) {
    const __m256i *a = t + 4 * h;
    u[4 * h + 0] = _mm256_unpacklo_epi64(a[0], a[2]);
    u[4 * h + 1] = _mm256_unpackhi_epi64(a[0], a[2]);
    u[4 * h + 2] = _mm256_unpacklo_epi64(a[1], a[3]);
    u[4 * h + 3] = _mm256_unpackhi_epi64(a[1], a[3]);
  }
  for (int r = 0; r < 4; r++) {
    out[r] = _mm256_permute2x128_si256(u[r], u[4 + r], 0x20);
    out[r + 4] = _mm256_permute2x128_si256(u[r], u[4 + r], 0x31);
  }
}

/// Transposes a, b, c, d as two 4 x 4 matrices of dwords, one per 128-bit half: out[p] holds
/// dword p of each in its low half and dword p + 4 of each in its high half.
INLINE void transpose4(__m256i a, __m256i b, __m256i c, __m256i d, __m256i out[4]) {
  const __m256i t0 = _mm256_unpacklo_epi32(a, b), t1 = _mm256_unpackhi_epi32(a, b);
  const __m256i t2 = _mm256_unpacklo_epi32(c, d), t3 = _mm256_unpackhi_epi32(c, d);
  out[0] = _mm256_unpacklo_epi64(t0, t2);
  out[1] = _mm256_unpackhi_epi64(t0, t2);
  out[2] = _mm256_unpacklo_epi64(t1, t3);
  out[3] = _mm256_unpackhi_epi64(t1, t3);
}

/// The paired order of 8 runs of 32 values v[c] (values 32 c .. 32 c + 31): out[0..3] the L
/// registers (from the even runs), out[4..7] the H registers (odd runs).
INLINE void pair8(const __m256i v[8], __m256i out[8]) {
  transpose4(v[0], v[2], v[4], v[6], out);
  transpose4(v[1], v[3], v[5], v[7], out + 4);
}

/// Q4_K and Q5_K's 8 six-bit scales (bytes 0..7) and mins (8..15) from the 12 packed bytes q
/// (16 are read): scale j < 4 is q[j] & 63 and min j is q[j + 4] & 63; for j >= 4 the low four
/// bits come from q[j + 4] (scales the low nibble, mins the high) and the top two from the top
/// of q[j - 4] (scales) or q[j] (mins).
INLINE __m128i k4_scales_mins_vec(const uint8_t *q) {
  const __m128i v = _mm_loadu_si128((const __m128i *)q);
  const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m128i top = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  const __m128i low = _mm_or_si128(_mm_and_si128(a, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0)),
                                   _mm_and_si128(_mm_srli_epi16(a, 4), _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15)));
  return _mm_or_si128(low, _mm_and_si128(_mm_srli_epi16(top, 2), _mm_set1_epi8(0x30)));
}

/// The same 16 bytes as `k4_scales_mins_vec`, unpacked in general-purpose registers as ggml's
/// dot products do, for the paired Q4_K leaf: the integer units are otherwise idle there. (It
/// first served the one-row case: in-cache harness, one thread, 32000 x 2048 Q4_K rows against
/// one row, with the single-load d/dmin and high nibbles, 40-42 -> 45-48 GMAC/s; that leaf now
/// takes `k4_scales_ordered_mins`, faster again.)
INLINE __m128i k4_scales_mins_gpr(const uint8_t *q) {
  uint32_t u[3];
  memcpy(u, q, 12);
  const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
  const uint64_t sc = (u[0] & m6) | (uint64_t)((u[2] & m4) | (((u[0] >> 6) & m2) << 4)) << 32;
  const uint64_t mn = (u[1] & m6) | (uint64_t)(((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4)) << 32;
  return _mm_set_epi64x((long long)mn, (long long)sc);
}

/// `k4_scales_mins_vec`'s 16 bytes with the scales in the order the packed sums of the VNNI
/// leaves take (0 2 4 6 1 3 5 7) and the mins in order, in six vector operations: the 12 bytes
/// are first placed so that each 32-bit lane needs one shift, then masked, and the top two bits
/// of scales and mins 4..7 come in from one more shift. In the one-row Q4_K leaf, where the
/// vector pipes bound the time, this cost less than `k4_scales_mins_gpr` and the order shuffle
/// after it (harness, one thread, Q4_K rows of 1024 in cache, 21 alternating pairs: median
/// 45 -> 49 GB/s of weights).
INLINE __m128i k4_scales_ordered_mins(const uint8_t *q) {
  const __m128i v = _mm_loadu_si128((const __m128i *)q);
  // Bytes 0..7: scales 0 2 | 4 6 (low bits from q[8], q[10]) | 1 3 | 5 7; 8..11: mins 0..3;
  // 12..15: q[8..11], whose high nibbles are the low bits of mins 4..7.
  const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 2, 8, 10, 1, 3, 9, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  // The bytes whose top two bits become bits 4-5 of scales 4 6 5 7 and mins 4..7.
  const __m128i top = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, 0, 2, -1, -1, 1, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  const __m128i low = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                    _mm_setr_epi8(63, 63, 15, 15, 63, 63, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15));
  return _mm_ternarylogic_epi32(low, _mm_srli_epi32(top, 2), _mm_set1_epi8(0x30), 0xF8);  // low | (top & 0x30)
}

/// Q3_K's 16 signed scales (6 bits minus 32) of the block at b, in registers: low nibbles of the
/// 12 packed bytes for scales 0..7, high ones for 8..15, top 2 bits from bytes 8..11 at bits
/// 0, 2, 4, 6 (as `q3_k_scales`, without a store and reload per block). Reads b + 94 ..
/// b + 109, inside the 110-byte block.
INLINE __m128i q3_k_scales_vec(const uint8_t *b) {
  const __m128i v = _mm_srli_si128(_mm_loadu_si128((const __m128i *)(b + 94)), 2);  // bytes 96..109
  const __m128i lo = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(v, 0x44), _mm_setr_epi32(0, 0, 4, 4)), _mm_set1_epi8(0xF));
  const __m128i hi = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(v, 0xAA), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
  return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi32(hi, 4)), _mm_set1_epi8(32));
}

/// IQ4_XS's 8 six-bit scales (minus 32) of the block at b, each given twice (the scales of its
/// 16-value groups), in a register (as `iq4_xs_scales`).
INLINE __m128i iq4_xs_scales_vec(const uint8_t *b) {
  uint16_t h;
  uint32_t l;
  memcpy(&h, b + 2, 2);
  memcpy(&l, b + 4, 4);
  const __m128i lv = _mm_cvtsi32_si128((int)l), m4 = _mm_set1_epi8(0xF);
  const __m128i low = _mm_unpacklo_epi8(_mm_and_si128(lv, m4), _mm_and_si128(_mm_srli_epi16(lv, 4), m4));  // 8 nibbles
  const __m128i top = _mm_and_si128(_mm_srlv_epi16(_mm_set1_epi16((short)h), _mm_setr_epi16(0, 2, 4, 6, 8, 10, 12, 14)),
                                    _mm_set1_epi16(3));
  const __m128i ls = _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(_mm_packus_epi16(top, top), 4)), _mm_set1_epi8(32));
  return _mm_unpacklo_epi8(ls, ls);
}

#endif
