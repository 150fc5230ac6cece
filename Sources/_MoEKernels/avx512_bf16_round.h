// f32 to bf16 rounding in AVX-512 registers, shared by the bf16 dot-product files.
#ifndef MOE_KERNELS_AVX512_BF16_ROUND_H
#define MOE_KERNELS_AVX512_BF16_ROUND_H
#include <immintrin.h>

/// 16 f32 values (as bits) rounded to bf16 as moek_f32_to_bf16 does (to nearest even; a NaN
/// stays a quiet NaN), in the low 16 bits of each lane.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline __m512i moek_round_bf16_16(__m512i v) {
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff), abs = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000), quiet = _mm512_set1_epi32(0x40);
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(v, bias),
                                                              _mm512_and_si512(_mm512_srli_epi32(v, 16), one)), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(v, abs), inf);
  return _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(v, 16), quiet);
}

#endif
