// AVX-512 products of 16-bit weight rows (bf16 or f16) with f32 activations, in the dot-product
// orientation: the exact path for prompts and an MoE's experts, whose few rows per expert (8-32
// at top-8 of 32-64 experts) leave the packed matmul leaf's transposing weight packer a large
// share of the work (38-85 GFLOP/s a thread here at 8-32 rows of bf16, against 102-110 for this
// leaf).
//
// Both operands are read along K as stored. For bf16 a 64-byte load holds 32 weights, whose even
// elements widen to f32 by a 16-bit left shift of each dword and whose odd ones by masking the
// low half, with no shuffle; the activations are de-interleaved once per input to match (each
// run of 32 as its 16 even then 16 odd elements, `moek_bf16_rows_permute`). f16 widens with
// vcvtph2ps, against the activations in place. (f32 weights gain nothing here: at these rows
// they stream at the memory's rate either way.) A block of 3 weight rows
// by 8 activation rows keeps 24 accumulators of 16 partial sums; the activations are memory
// operands of the multiply-adds; each weight row's 8 accumulators are reduced together by
// shuffles. While the first activation block runs, the next 3 weight rows are prefetched, so
// rows streaming from memory do not stall.
//
// Every product and sum is f32, as the packed leaf's: the results differ from it only in the
// order of the additions.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))), apply_to = function)
#include "avx512_reduce.h"

#define INLINE static inline __attribute__((always_inline))
enum { R_NR = 3, R_MR = 8 };

/// Weights k..k+31 of a row as two f32 vectors: for bf16, its even and odd elements (a shift and
/// a mask of one 64-byte load; the activations are de-interleaved to match); for f16, k..k+15
/// and k+16..k+31.
INLINE void load32(const char *row, size_t k, const int dt, __m512 *a, __m512 *b) {
  if (dt == MOEK_BF16) {
    const __m512i v = _mm512_loadu_si512((const void *)(row + 2 * k));
    *a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    *b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u)));
  } else {
    *a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * k)));
    *b = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * k + 32)));
  }
}

/// C[m, n] for m < mr, n < nr (C row stride ldc) = sum over k of X[m] and W[n] (rows of `rb`
/// bytes; X de-interleaved for bf16).
INLINE void rows_block(const char *W, size_t rb, const float *X, size_t ldx, float *C, size_t ldc, size_t K,
                       const int dt, const int mr, const int nr, const char *next) {
  __m512 acc[R_NR][R_MR];
#pragma clang loop unroll(full)
  for (int n = 0; n < R_NR; n++)
#pragma clang loop unroll(full)
    for (int m = 0; m < R_MR; m++) acc[n][m] = _mm512_setzero_ps();
  for (size_t k = 0; k < K; k += 32) {
    __m512 lo[R_NR], hi[R_NR];
#pragma clang loop unroll(full)
    for (int n = 0; n < R_NR; n++) {
      if (n < nr) {
        if (next) _mm_prefetch(next + n * rb + 2 * k, _MM_HINT_T0);
        load32(W + n * rb, k, dt, &lo[n], &hi[n]);
      }
    }
#pragma clang loop unroll(full)
    for (int m = 0; m < R_MR; m++) {
      if (m < mr) {
        const __m512 xa = _mm512_loadu_ps(X + m * ldx + k), xb = _mm512_loadu_ps(X + m * ldx + k + 16);
#pragma clang loop unroll(full)
        for (int n = 0; n < R_NR; n++) {
          if (n < nr) acc[n][m] = _mm512_fmadd_ps(hi[n], xb, _mm512_fmadd_ps(lo[n], xa, acc[n][m]));
        }
      }
    }
  }
#pragma clang loop unroll(full)
  for (int n = 0; n < R_NR; n++)
    if (n < nr) store_row_sums(acc[n], C + n, ldc, mr);
}

#define ROWS_MR(dt, nr)                                                              \
  switch (mr) {                                                                      \
    case 8: rows_block(W, rb, X, ldx, C, ldc, K, dt, 8, nr, next); break;            \
    case 4: rows_block(W, rb, X, ldx, C, ldc, K, dt, 4, nr, next); break;            \
    case 2: rows_block(W, rb, X, ldx, C, ldc, K, dt, 2, nr, next); break;            \
    default: rows_block(W, rb, X, ldx, C, ldc, K, dt, 1, nr, next); break;           \
  }
#define ROWS_NR(dt)                 \
  if (nr == 3) {                    \
    ROWS_MR(dt, 3)                  \
  } else if (nr == 2) {             \
    ROWS_MR(dt, 2)                  \
  } else {                          \
    ROWS_MR(dt, 1)                  \
  }

static void rows_tile(const char *W, size_t rb, const float *X, size_t ldx, float *C, size_t ldc, size_t K, int dt,
                      int mr, int nr, const char *next) {
  if (dt == MOEK_BF16) {
    ROWS_NR(MOEK_BF16)
  } else {
    ROWS_NR(MOEK_F16)
  }
}

static void rows_avx512(const void *W, int dt, size_t ldw, const float *X, size_t ldx, size_t M, float *C, size_t ldc,
                        size_t n0, size_t n1, size_t K) {
  const size_t rb = ldw * 2;
  const char *w = (const char *)W;
  for (size_t n = n0; n < n1; n += R_NR) {
    const int nr = (n1 - n) < R_NR ? (int)(n1 - n) : R_NR;
    for (size_t m = 0; m < M;) {
      const int mr = rows_block_height(M - m);
      const char *next = m == 0 && n + R_NR < n1 ? w + (n + R_NR) * rb : NULL;
      rows_tile(w + n * rb, rb, X + m * ldx, ldx, C + m * ldc + n, ldc, K, dt, mr, nr, next);
      m += (size_t)mr;
    }
  }
}

/// Each run of 32 values as its 16 even then 16 odd ones: two loads, two two-source permutes.
static void permute_avx512(const float *X, size_t ldx, size_t M, size_t K, float *Xp) {
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (size_t m = 0; m < M; m++) {
    const float *x = X + m * ldx;
    float *out = Xp + m * K;
    for (size_t k = 0; k + 32 <= K; k += 32) {
      const __m512 a = _mm512_loadu_ps(x + k), b = _mm512_loadu_ps(x + k + 16);
      _mm512_storeu_ps(out + k, _mm512_permutex2var_ps(a, evens, b));
      _mm512_storeu_ps(out + k + 16, _mm512_permutex2var_ps(a, odds, b));
    }
  }
}
#pragma clang attribute pop

int moek_rows_supported(int dt) {
  return moek_isa() == MOEK_ISA_AVX512 && (dt == MOEK_BF16 || dt == MOEK_F16);
}

int moek_gemm_rows(const void *W, int dt, size_t ldw, const float *X, size_t ldx, size_t M, float *C, size_t ldc,
                   size_t n0, size_t n1, size_t K) {
  if (!moek_rows_supported(dt) || K % 32 != 0) return 0;
  rows_avx512(W, dt, ldw, X, ldx, M, C, ldc, n0, n1, K);
  return 1;
}

void moek_bf16_rows_permute(const float *X, size_t ldx, size_t M, size_t K, float *Xp) {
  if (moek_rows_supported(MOEK_BF16)) permute_avx512(X, ldx, M, K, Xp);
}
#else
#include "internal.h"
int moek_rows_supported(int dt) {
  (void)dt;
  return 0;
}
int moek_gemm_rows(const void *W, int dt, size_t ldw, const float *X, size_t ldx, size_t M, float *C, size_t ldc,
                   size_t n0, size_t n1, size_t K) {
  (void)W; (void)dt; (void)ldw; (void)X; (void)ldx; (void)M; (void)C; (void)ldc; (void)n0; (void)n1; (void)K;
  return 0;
}
void moek_bf16_rows_permute(const float *X, size_t ldx, size_t M, size_t K, float *Xp) {
  (void)X; (void)ldx; (void)M; (void)K; (void)Xp;
}
#endif
