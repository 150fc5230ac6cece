// Helpers the AVX2 block-format leaves share (kernels_avx2_blocks.c, kernels_avx2_q8.c).
// Include after `#pragma clang attribute push(... target("avx2,fma,f16c") ...)`, so these
// functions are compiled for AVX2 like the leaves that inline them.
#ifndef MOE_KERNELS_AVX2_BLOCKS_H
#define MOE_KERNELS_AVX2_BLOCKS_H

#define INLINE static inline __attribute__((always_inline))

/// The f16 at p (unaligned) as f32.
INLINE float half(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

/// The sum of the 8 lanes of v.
INLINE float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

#endif
