// K-quant weights (Q2_K to Q6_K) and IQ4_XS against one activation row (decode) on
// AVX-512 VNNI, in 512-bit registers.
//
// The paired leaves of kernels_avx512_vnni_q8.c hold a block's 256 values in eight 256-bit
// registers and reach their lane order (a lane per sub-block) with 4 x 4 dword transposes, 8
// shuffles per 128 bytes. Against one activation row nothing amortises that work, and the leaf
// is bound by how many instructions it issues, not by a pipe. Here two 512-bit registers hold
// what four 256-bit ones did: one two-source permute (`vpermt2d`) replaces 4 shuffles, and every
// and, multiply-add, pack and convert covers twice the values. Q6_K and Q3_K need no permute:
// their stored order already puts a 16-value sub-block in each 128-bit quarter against the
// activation's natural order; IQ4_XS rearranges the activation once per call instead. Each
// block's integer total is the paired leaf's exactly; only the order of the f32 sums differs.
// Four rows share one horizontal reduction (`REDUCE_ROWS`). The body is one_kquant_leaf.inc,
// built here for VNNI and in kernels_avx512_vbmi_one.c for machines that also have VBMI and GFNI.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,bmi2"))), apply_to = function)
#define ONE_GFNI 0
#define ONE_ENTRY moek_gemv_one_vnni
#include "one_kquant_leaf.inc"
#pragma clang attribute pop

#else
#include "internal.h"
int moek_gemv_one_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1, size_t K) {
  (void)dt; (void)W; (void)row_bytes; (void)XQ; (void)Y; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
