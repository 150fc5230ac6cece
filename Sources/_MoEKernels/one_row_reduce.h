// The one-row (decode) leaves' reduction of 512-bit partial sums to one f32 a weight row, four
// rows at a time (kernels_avx512_vnni_one.c, kernels_avx512_vnni_one32.c). Include after
// avx2_blocks.h, inside a target("avx512f,...") region.
#ifndef MOEK_ONE_ROW_REDUCE_H
#define MOEK_ONE_ROW_REDUCE_H

/// The 8 sums of lanes j and j + 8 of v: the first step of `hsum16`.
INLINE __m256 fold16(__m512 v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

/// The sum of the 16 lanes of v.
INLINE float hsum16(__m512 v) { return hsum(fold16(v)); }

/// `hsum16` of four registers at once, bit for bit (the same additions in the same order, four
/// rows to a register from the second step on): a row's 16 sums took 9 operations to reduce,
/// about a block's work at these leaves' short rows (3 or 4 blocks), and four take 21.
INLINE __m128 hsum16x4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m256 v0 = fold16(a0), v1 = fold16(a1), v2 = fold16(a2), v3 = fold16(a3);
  // [s0 | s1], [s2 | s3]: s_m = low half of v_m + high half (hsum's first add)
  const __m256 s01 = _mm256_add_ps(_mm256_permute2f128_ps(v0, v1, 0x20), _mm256_permute2f128_ps(v0, v1, 0x31));
  const __m256 s23 = _mm256_add_ps(_mm256_permute2f128_ps(v2, v3, 0x20), _mm256_permute2f128_ps(v2, v3, 0x31));
  // t_m = s_m[0..1] + s_m[2..3] (hsum's movehl add): [t0 t2 | t1 t3]
  const __m256 t = _mm256_add_ps(_mm256_shuffle_ps(s01, s23, 0x44), _mm256_shuffle_ps(s01, s23, 0xEE));
  // t_m[0] + t_m[1] (hsum's last add): [r0 r2 . . | r1 r3 . .]
  const __m256 r = _mm256_add_ps(_mm256_shuffle_ps(t, t, 0x08), _mm256_shuffle_ps(t, t, 0x0D));
  return _mm_unpacklo_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
}

/// Y[r] for rows [r0, r1) of W (`row_bytes` apart) of `row_sums`, an expression of `row` (the
/// row's first byte) giving its 16 partial sums, four rows to one reduction. The rows run
/// through one copy of the row loop (not unrolled): AMD's stride prefetcher follows each load
/// instruction, and four copies of the loop, each seeing every fourth row, read memory at 0.75x
/// the speed of one (harness, two threads, Q4_K rows of 1024 from memory, 41 alternating
/// triples with the read probe: 0.75-0.80 of the probe against 1.00).
#define REDUCE_ROWS(row_sums)                                                                         \
  do {                                                                                                \
    size_t r = r0;                                                                                    \
    for (; r + 4 <= r1; r += 4) {                                                                     \
      __m512 a[4];                                                                                    \
      _Pragma("clang loop unroll(disable)") for (int m = 0; m < 4; m++) {                             \
        const uint8_t *row = W + (r + m) * row_bytes;                                                 \
        a[m] = (row_sums);                                                                            \
      }                                                                                               \
      _mm_storeu_ps(Y + r, hsum16x4(a[0], a[1], a[2], a[3]));                                         \
    }                                                                                                 \
    for (; r < r1; r++) {                                                                             \
      const uint8_t *row = W + r * row_bytes;                                                         \
      Y[r] = hsum16(row_sums);                                                                        \
    }                                                                                                 \
  } while (0)

#endif
