// AVX2 integer dot products of block-format weight rows against 8-bit activation rows
// (act_quant.c), for the AVX2 and AVX-512 paths, as llama.cpp's vec_dot leaves do: each
// weight block is unpacked to int8 (or uint8) lanes once, multiplied with `maddubs` against up
// to 4 activation rows (8 in the AVX-512 build, kernels_avx512_q8.c; the body is q8_leaves.inc),
// and its scales applied to the integer sums; no dequantized weight is
// stored. Every block format: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, MXFP4 against 32-value
// activation blocks; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS against 256-value ones. Layouts:
// dequant.c.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#define Q8_GROUP 4
#define Q8_NAME(x) x##_avx2
#include "q8_leaves.inc"

#else
#include "internal.h"
void moek_q8_quantize_avx2(const float *x, size_t K, int block, int8_t *q, float *d, int16_t *bs) {
  (void)x; (void)K; (void)block; (void)q; (void)d; (void)bs;
}
int moek_gemv_rows_q8_avx2(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K) {
  (void)W; (void)dt; (void)ldw; (void)XQ; (void)ldxq; (void)nx; (void)Y; (void)ldy; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
