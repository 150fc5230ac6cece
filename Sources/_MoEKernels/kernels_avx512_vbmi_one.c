// The one-row K-quant leaves (one_kquant_leaf.inc; kernels_avx512_vnni_one.c describes them)
// built for AVX-512 VNNI machines that also have VBMI and GFNI (Ice Lake and later, Zen 4 and
// later; `moek_q8_vbmi`): Q6_K's high bits take one affine bit matrix (`q6_k_top_bits`), and
// Q4_K's and Q5_K's high nibbles another (`high_nibbles`).
// Results are bit for bit the VNNI build's.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,bmi2"))), apply_to = function)
#define ONE_GFNI 1
#define ONE_ENTRY moek_gemv_one_vbmi
#include "one_kquant_leaf.inc"
#pragma clang attribute pop

#else
#include "internal.h"
int moek_gemv_one_vbmi(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1, size_t K) {
  (void)dt; (void)W; (void)row_bytes; (void)XQ; (void)Y; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
