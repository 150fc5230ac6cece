// Helpers the AVX2 block-format leaves share (kernels_avx2_blocks.c, kernels_avx2_q8.c,
// kernels_avx2_dequant.c).
// Include after `#pragma clang attribute push(... target("avx2,fma,f16c") ...)`, so these
// functions are compiled for AVX2 like the leaves that inline them.
#ifndef MOE_KERNELS_AVX2_BLOCKS_H
#define MOE_KERNELS_AVX2_BLOCKS_H

#define INLINE static inline __attribute__((always_inline))

/// `bits` zero-extended into lane 0 of a register of its own. Left to itself clang inserts small
/// scalars into whatever register is free (`vpinsrw`), often a leaf's accumulator, so each
/// block's scale waited on the previous block's sum; the empty asm makes it a fresh register.
INLINE __m128i fresh_xmm(uint32_t bits) {
  __m128i v = _mm_cvtsi32_si128((int)bits);
  __asm__("" : "+x"(v));
  return v;
}

/// The f16 at p (unaligned) as f32, through `fresh_xmm` (in-cache harness, one activation row:
/// Q6_K, Q5_K and Q2_K rows up to 4% faster than through `_cvtsh_ss`; the rest within noise).
INLINE float half(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return _mm_cvtss_f32(_mm_cvtph_ps(fresh_xmm(h)));
}

/// The sum of the 8 lanes of v.
INLINE float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

/// 16 bytes of nibbles as 32 lanes: low nibbles first (elements 0..15), then high (16..31).
INLINE __m256i nibbles(const uint8_t *p) {
  const __m128i raw = _mm_loadu_si128((const __m128i *)p);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0xF));
}

/// 0xFF in byte e of the result where bit e of the 32 bits at p is set (llama.cpp's
/// `bytes_from_bits_32`): each byte picks its source byte, ORs in every other bit, compares.
INLINE __m256i bytes_from_bits(const uint8_t *p) {
  uint32_t bits;
  memcpy(&bits, p, 4);
  const __m256i pick = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
  const __m256i bytes = _mm256_or_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), pick), others);
  return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/// A 32-element block's int8 weights, by format.
INLINE __m256i unpack32_values(int dt, const uint8_t *b, __m256i lut) {
  switch (dt) {
    case MOEK_Q8_0: return _mm256_loadu_si256((const __m256i *)(b + 2));
    case MOEK_Q4_0: return _mm256_sub_epi8(nibbles(b + 2), _mm256_set1_epi8(8));
    case MOEK_Q5_0:  // q - 16 = the nibble, with 0xF0 (-16) where the fifth bit is clear
      return _mm256_or_si256(nibbles(b + 6), _mm256_andnot_si256(bytes_from_bits(b + 2), _mm256_set1_epi8((char)0xF0)));
    case MOEK_IQ4_NL: return _mm256_shuffle_epi8(lut, nibbles(b + 2));
    default: return _mm256_shuffle_epi8(lut, nibbles(b + 1));  // MXFP4
  }
}

/// A 32-element block's int8 weights and scale, by format.
INLINE __m256i unpack32(int dt, const uint8_t *b, __m256i lut, float *d) {
  *d = dt == MOEK_MXFP4 ? moek_e8m0_half(b[0]) : half(b);
  return unpack32_values(dt, b, lut);
}

/// Q4_K (`five` 0) and Q5_K: the quants of sub-blocks 2j (lo) and 2j + 1 (hi) as 32 lanes each,
/// from the 32 nibble bytes at qs and (Q5_K) the fifth bits in hbits (the 32 bytes of qh).
INLINE void k45_quants(int five, const uint8_t *qs, __m256i hbits, int j, __m256i *lo, __m256i *hi) {
  const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
  const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
  *lo = _mm256_and_si256(bits, m4);
  *hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
  if (five) {
    *lo = _mm256_or_si256(*lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one), 4));
    *hi = _mm256_or_si256(*hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one), 4));
  }
}

/// Q3_K: the unsigned 3-bit quants (0..7, the value plus 4) of half h (values 128 h ..) as 4 runs
/// of 32, from the half's 32 two-bit-plane bytes qs (run c in bits 2 c) and the 32 hmask bytes
/// (run c's third bit in bit 4 h + c).
INLINE void q3_k_quants(const uint8_t *qs, const uint8_t *hmask, int h, __m256i q[4]) {
  const __m256i m2 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
  const __m256i a = _mm256_loadu_si256((const __m256i *)qs), hm = _mm256_loadu_si256((const __m256i *)hmask);
  for (int c = 0; c < 4; c++)
    q[c] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 2 * c), m2),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + c), one), 2));
}

/// IQ4_XS: the 8 runs of 32 code-book values of a block (qs at b + 8; run c from bytes 16 c ..:
/// low nibbles values 0..15, high 16..31) as unsigned bytes, the value plus 128.
INLINE void iq4_xs_quants(const uint8_t *b, __m256i q[8]) {
  const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)moek_kvalues_iq4nl));
  const __m128i m4 = _mm_set1_epi8(0xF);
  for (int c = 0; c < 8; c++) {
    const __m128i v = _mm_loadu_si128((const __m128i *)(b + 8 + 16 * c));
    const __m256i i = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
    q[c] = _mm256_xor_si256(_mm256_shuffle_epi8(lut, i), _mm256_set1_epi8((char)0x80));
  }
}

/// Q6_K: the unsigned 6-bit quants (0..63) of one half block (128 values) as 4 runs of 32,
/// from its 64 low-bit bytes ql and 32 high-bit bytes qh.
INLINE void q6_k_quants(const uint8_t *ql, const uint8_t *qh, __m256i q[4]) {
  const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3);
  const __m256i a = _mm256_loadu_si256((const __m256i *)ql), c = _mm256_loadu_si256((const __m256i *)(ql + 32));
  const __m256i h = _mm256_loadu_si256((const __m256i *)qh);
  q[0] = _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_slli_epi16(_mm256_and_si256(h, m2), 4));
  q[1] = _mm256_or_si256(_mm256_and_si256(c, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4));
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4));
}

/// Weight bytes fetched ahead of the block being unpacked: a row's blocks are contiguous and a
/// run of rows too, so this is one stream per thread; from memory (decode), a block's distance
/// is too short to hide the latency. For 4.5 bits a value (Q4_K); the 32-value formats scale it
/// by their block's bytes (`rows_32i`, `rows_q32`), so the distance stays about the same time ahead: Q8_0
/// at 4 KB read 14.8-16.8 GMAC/s from memory on one thread, at 8 KB 18.9-20.6.
enum { AHEAD = 4096 };

/// The `width`-byte fields at `run`, `run + bytes`, ... (4 of 2 bytes, or 8 of 1), packed into one
/// 64-bit integer by scalar loads and shifts, which leave the vector shuffle ports free.
INLINE uint64_t packed_fields(const uint8_t *run, size_t bytes, int width) {
  uint64_t v = 0;
  for (int l = 0; l < 8 / width; l++) {
    uint16_t h = 0;
    memcpy(&h, run + (size_t)l * bytes, (size_t)width);
    v |= (uint64_t)h << (8 * width * l);
  }
  return v;
}

/// The 128 bits hi:lo in a register of its own (`fresh_xmm`'s reason).
INLINE __m128i fresh_xmm128(uint64_t hi, uint64_t lo) {
  __m128i v = _mm_set_epi64x((long long)hi, (long long)lo);
  __asm__("" : "+x"(v));
  return v;
}

/// The scales of a run's 8 blocks of a 32-value format (f16, or MXFP4's e8m0 bytes as
/// `moek_e8m0_half` halves them) as one vector. They are packed in 64-bit integers and moved
/// over in one or two steps (`packed_fields`). A gather was slower (the one-row Q4_0 leaf 35
/// against 43 GMAC/s), 8 scalar stores read back as a vector wait for the stores to retire,
/// and inserting the 8 one by one (until the twentieth session) took a third of the one-row Q8_0
/// leaf's shuffles: in cache that leaf read 46.3-47.6 GB/s with inserts and 51.6-53.9 with this.
INLINE __m256 run_scales(const int dt, const uint8_t *run, size_t bytes) {
  if (dt == MOEK_MXFP4) {  // 2^(e - 128); e < 2 is below the normal range
    const __m256i e = _mm256_cvtepu8_epi32(fresh_xmm128(0, packed_fields(run, bytes, 1)));
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    const __m256i tiny = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, tiny, _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e)));
  }
  return _mm256_cvtph_ps(fresh_xmm128(packed_fields(run + 4 * bytes, bytes, 2), packed_fields(run, bytes, 2)));
}

#endif
