// The 32-value formats' one-row leaf (one32_leaf.inc; kernels_avx512_vnni_one32.c describes it)
// built for AVX-512 VNNI machines that also have VBMI and GFNI (Ice Lake and later, Zen 4 and
// later; `moek_q8_vbmi`): the code-book formats (MXFP4, IQ4_NL) look their nibbles up with a
// byte permute that needs no mask (`code_book_nibbles`), and Q4_0 moves its high nibbles down by
// one affine bit matrix (`gfni_high_nibbles`). Results are bit for bit the VNNI build's.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,bmi2"))), apply_to = function)
#define ONE32_VBMI 1
#define ONE32_ENTRY moek_gemv_one32_vbmi
#include "one32_leaf.inc"
#pragma clang attribute pop

#else
#include "internal.h"
int moek_gemv_one32_vbmi(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1,
                         size_t K) {
  (void)dt; (void)W; (void)row_bytes; (void)XQ; (void)Y; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
