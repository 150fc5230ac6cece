// Shared AVX-512 pieces of the row leaves (kernels_avx512_rows.c,
// kernels_avx512bf16_rows.c). Include after <immintrin.h>, inside a target("avx512f") region.
#ifndef MOEK_AVX512_REDUCE_H
#define MOEK_AVX512_REDUCE_H

/// The sums of 8 vectors' lanes, a[i]'s total at lane 4 (i % 4) + i / 4 of the result: three
/// levels of shuffle-and-add (23 operations where 8 separate reductions take about 64).
static inline __attribute__((always_inline)) __m512 reduce8(const __m512 a[8]) {
  __m512 s[4];
#pragma clang loop unroll(full)
  for (int i = 0; i < 4; i++)  // [a q0+q2, a q1+q3, b q0+q2, b q1+q3] for a, b = a[2i], a[2i+1]
    s[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xee));
  // 128-bit lane L of t0 holds 4 partial sums of a[L], of t1 those of a[L + 4].
  const __m512 t0 = _mm512_add_ps(_mm512_shuffle_f32x4(s[0], s[1], 0x88), _mm512_shuffle_f32x4(s[0], s[1], 0xdd));
  const __m512 t1 = _mm512_add_ps(_mm512_shuffle_f32x4(s[2], s[3], 0x88), _mm512_shuffle_f32x4(s[2], s[3], 0xdd));
  const __m512 u = _mm512_add_ps(_mm512_unpacklo_ps(t0, t1), _mm512_unpackhi_ps(t0, t1));
  return _mm512_add_ps(u, _mm512_permute_ps(u, 0x4e));
}

/// Writes the totals of one weight row's 8 accumulators a[m] to C[m * ldc] for m < mr.
static inline __attribute__((always_inline)) void store_row_sums(const __m512 a[8], float *C, size_t ldc, const int mr) {
  float sums[16];
  _mm512_storeu_ps(sums, reduce8(a));
#pragma clang loop unroll(full)
  for (int m = 0; m < 8; m++)
    if (m < mr) C[m * ldc] = sums[4 * (m % 4) + m / 4];
}

/// Activation rows of the row leaves' next block: 8, or of the rest, 4, 2 or 1.
static inline __attribute__((always_inline)) int rows_block_height(size_t left) {
  return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

#endif
