// The integer block leaves (q8_leaves.inc, described in kernels_avx2_q8.c) built for AVX-512
// machines: the same AVX2 arithmetic, but 8 activation rows per unpacked weight block instead
// of 4, which AVX-512's 32 vector registers hold (the compiler may use ymm16-31), so a prefill
// unpacks each weight block half as often. Results are bit for bit the AVX2 build's.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#define Q8_GROUP 8
#define Q8_NAME(x) x##_avx512
#include "q8_leaves.inc"
#else
#include "internal.h"
int moek_gemv_rows_q8_avx512(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                             size_t ldy, size_t r0, size_t r1, size_t K) {
  (void)W; (void)dt; (void)ldw; (void)XQ; (void)ldxq; (void)nx; (void)Y; (void)ldy; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
