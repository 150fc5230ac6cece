// AVX-512 weight loads shared by the AVX-512 files. Include inside their target("avx512f,...")
// region, after defining INLINE.
#ifndef MOE_KERNELS_AVX512_LOADS_H
#define MOE_KERNELS_AVX512_LOADS_H

/// 16 weights from element i of `base`, widened to f32.
INLINE __m512 ld16(const void *base, size_t i, int dt) {
  if (dt == MOEK_BF16) {
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  if (dt == MOEK_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i)));
  return _mm512_loadu_ps((const float *)base + i);
}

/// As `ld16`, for the lanes in `m` only (the others are zero).
INLINE __m512 ld16_mask(const void *base, size_t i, int dt, __mmask16 m) {
  if (dt == MOEK_BF16) {
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  if (dt == MOEK_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i));
  return _mm512_maskz_loadu_ps(m, (const float *)base + i);
}

#endif
