// The row leaf of `--precision bf16` (activations rounded to bf16, as llama.cpp computes bf16
// weights on AVX512-BF16 machines): bf16 weight rows against bf16 activation rows, both read
// along K as stored, with vdpbf16ps (lane i adds the products of elements 2i and 2i + 1 of each
// operand, so neither side needs reordering). As in the exact row leaf (kernels_avx512_rows.c),
// blocks of 3 weight rows by 8 activation rows keep 24 accumulators, each weight row's 8 summed
// together at the end, and the next weight rows are prefetched: the packed bf16 leaf's copy of
// every weight block is gone, which at an expert's few rows cost about as much as the products.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), apply_to = function)
#include "avx512_reduce.h"
#include "avx512_bf16_round.h"

#define INLINE static inline __attribute__((always_inline))
enum { D_NR = 3, D_MR = 8 };

/// C[m, n] for m < mr, n < nr (C row stride ldc) = sum over k of bf16 rows X[m] and W[n].
INLINE void dot_block(const uint16_t *W, size_t ldw, const uint16_t *X, size_t ldx, float *C, size_t ldc, size_t K,
                      const int mr, const int nr, const uint16_t *next) {
  __m512 acc[D_NR][D_MR];
#pragma clang loop unroll(full)
  for (int n = 0; n < D_NR; n++)
#pragma clang loop unroll(full)
    for (int m = 0; m < D_MR; m++) acc[n][m] = _mm512_setzero_ps();
  for (size_t k = 0; k < K; k += 32) {
    __m512bh w[D_NR];
#pragma clang loop unroll(full)
    for (int n = 0; n < D_NR; n++) {
      if (n < nr) {
        if (next) _mm_prefetch((const char *)(next + n * ldw + k), _MM_HINT_T0);
        w[n] = (__m512bh)_mm512_loadu_si512((const void *)(W + n * ldw + k));
      }
    }
#pragma clang loop unroll(full)
    for (int m = 0; m < D_MR; m++) {
      if (m < mr) {
        const __m512bh x = (__m512bh)_mm512_loadu_si512((const void *)(X + m * ldx + k));
#pragma clang loop unroll(full)
        for (int n = 0; n < D_NR; n++)
          if (n < nr) acc[n][m] = _mm512_dpbf16_ps(acc[n][m], w[n], x);
      }
    }
  }
#pragma clang loop unroll(full)
  for (int n = 0; n < D_NR; n++)
    if (n < nr) store_row_sums(acc[n], C + n, ldc, mr);
}

#define DOT_MR(nr)                                                        \
  switch (mr) {                                                           \
    case 8: dot_block(W, ldw, X, ldx, C, ldc, K, 8, nr, next); break;     \
    case 4: dot_block(W, ldw, X, ldx, C, ldc, K, 4, nr, next); break;     \
    case 2: dot_block(W, ldw, X, ldx, C, ldc, K, 2, nr, next); break;     \
    default: dot_block(W, ldw, X, ldx, C, ldc, K, 1, nr, next); break;    \
  }

static void dot_tile(const uint16_t *W, size_t ldw, const uint16_t *X, size_t ldx, float *C, size_t ldc, size_t K,
                     int mr, int nr, const uint16_t *next) {
  if (nr == 3) {
    DOT_MR(3)
  } else if (nr == 2) {
    DOT_MR(2)
  } else {
    DOT_MR(1)
  }
}

static void dot_rows(const uint16_t *W, size_t ldw, const uint16_t *X, size_t ldx, size_t M, float *C, size_t ldc,
                     size_t n0, size_t n1, size_t K) {
  for (size_t n = n0; n < n1; n += D_NR) {
    const int nr = (n1 - n) < D_NR ? (int)(n1 - n) : D_NR;
    for (size_t m = 0; m < M;) {
      const int mr = rows_block_height(M - m);
      const uint16_t *next = m == 0 && n + D_NR < n1 ? W + (n + D_NR) * ldw : NULL;
      dot_tile(W + n * ldw, ldw, X + m * ldx, ldx, C + m * ldc + n, ldc, K, mr, nr, next);
      m += (size_t)mr;
    }
  }
}

/// Rows [0, M) of X rounded to bf16 as moek_f32_to_bf16 does (to nearest even; a NaN stays a
/// quiet NaN), 16 at a time.
static void round_rows(const float *X, size_t ldx, size_t M, size_t K, uint16_t *Xb) {
  for (size_t m = 0; m < M; m++) {
    const float *x = X + m * ldx;
    for (size_t k = 0; k + 16 <= K; k += 16) {
      const __m512i h = moek_round_bf16_16(_mm512_loadu_si512((const void *)(x + k)));
      _mm256_storeu_si256((__m256i *)(Xb + m * K + k), _mm512_cvtepi32_epi16(h));
    }
  }
}
#pragma clang attribute pop

int moek_bf16_dot_rows_supported(void) { return moek_isa() == MOEK_ISA_AVX512 && moek_bf16_compute_supported(); }

void moek_bf16_round_rows(const float *X, size_t ldx, size_t M, size_t K, uint16_t *Xb) {
  if (moek_bf16_dot_rows_supported()) round_rows(X, ldx, M, K, Xb);
}

int moek_gemm_bf16_dot_rows(const uint16_t *W, size_t ldw, const uint16_t *Xb, size_t M, float *C, size_t ldc,
                            size_t n0, size_t n1, size_t K) {
  if (!moek_bf16_dot_rows_supported() || K % 32 != 0) return 0;
  dot_rows(W, ldw, Xb, K, M, C, ldc, n0, n1, K);
  return 1;
}
#else
#include "internal.h"
int moek_bf16_dot_rows_supported(void) { return 0; }
void moek_bf16_round_rows(const float *X, size_t ldx, size_t M, size_t K, uint16_t *Xb) {
  (void)X; (void)ldx; (void)M; (void)K; (void)Xb;
}
int moek_gemm_bf16_dot_rows(const uint16_t *W, size_t ldw, const uint16_t *Xb, size_t M, float *C, size_t ldc,
                            size_t n0, size_t n1, size_t K) {
  (void)W; (void)ldw; (void)Xb; (void)M; (void)C; (void)ldc; (void)n0; (void)n1; (void)K;
  return 0;
}
#endif
