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

/// The totals of 16 vectors, bit for bit as `_mm512_reduce_add_ps` gives each (the same
/// additions, lanes j and j + 8 first, then j and j + 4, j and j + 2, 0 and 1), a[4 u + t]'s at
/// lane 4 t + u of the result: four levels of shuffle-and-add, 45 operations where 16 separate
/// reductions take about 128.
static inline __attribute__((always_inline)) __m512 reduce16(const __m512 a[16]) {
  __m512 x[8], y[4], z[2];
#pragma clang loop unroll(full)
  for (int p = 0; p < 8; p++)  // [a's j + (j + 8) | b's], a, b = a[2p], a[2p + 1]
    x[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0xee));
#pragma clang loop unroll(full)
  for (int r = 0; r < 4; r++)  // quarter t: a[4 r + t]'s j + (j + 4)
    y[r] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * r], x[2 * r + 1], 0x88),
                         _mm512_shuffle_f32x4(x[2 * r], x[2 * r + 1], 0xdd));
#pragma clang loop unroll(full)
  for (int s = 0; s < 2; s++) {  // quarter t: a[8 s + t]'s j + (j + 2), then a[8 s + 4 + t]'s
    const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(y[2 * s]), _mm512_castps_pd(y[2 * s + 1]));
    const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(y[2 * s]), _mm512_castps_pd(y[2 * s + 1]));
    z[s] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
  }
  return _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
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
