// The 32-value block formats (Q8_0, Q4_0, Q5_0, IQ4_NL, MXFP4) against one activation row
// (decode) on AVX-512 VNNI, in 512-bit registers; longer rows than `QUADS_MAX_K` take
// kernels_avx512_vnni_q8.c's leaves. The body is one32_leaf.inc, built here for VNNI and in
// kernels_avx512_vbmi_one32.c for machines that also have VBMI.
//
// The nibble formats: a register holds four blocks in their stored order (each block's values
// 0..15 in one register's 128-bit quarter, 16..31 in a second register's), against the
// activation rearranged to match once per call, so one AND and one shift split 64 bytes of four
// blocks. Q8_0: a register holds two blocks, each block's 32 quant bytes one 256-bit load, against
// the activation as it is. Weights enter the unsigned side of the dot product plus an offset
// (Q4_0's 8, Q5_0's and MXFP4's 16, IQ4_NL's and Q8_0's 128); each block's integer sum is exact,
// and the offset's share (the offset times the block's activation sum, made once per call) is
// taken off in f32 beside the sums, a run of 8 blocks at a time, so the integer sums start from
// zero. Four rows share one horizontal reduction (`REDUCE_ROWS`).
//
// History, `scripts/bench-one-row.sh`, one thread in cache, GB/s of weights: the nineteenth
// session's four-block registers (replacing a 256-bit leaf of two blocks a register) took Q8_0
// 25.7-32.8 -> 30.5-34.9, Q4_0 15.9-20.5 -> 22.7-23.6, Q5_0 12.1-18.0 -> 18.4-19.6, IQ4_NL
// 14.9-20.0 -> 20.4-20.5, MXFP4 12.7-18.2 -> 15.1-15.2. The twentieth session's Q8_0 pairs, the
// offsets in f32 and `run_scales` without inserts, rows of 2048, alternating builds: Q8_0
// 35.7-38.1 -> 48.6-51.0, Q4_0 24.2-26.2 -> 28.3-28.5, MXFP4 20.2-20.5 -> 23.4-23.8, Q5_0 and
// IQ4_NL level. Against the nineteenth session's leaf the f32 results agree to 1.4e-5 relative;
// only MXFP4 rows whose scale bytes reach 250 or more (2^122), with sums near the largest float,
// now overflow to inf or NaN where the old order sometimes stayed finite.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,bmi2"))), apply_to = function)
#define ONE32_VBMI 0
#define ONE32_ENTRY moek_gemv_one32_vnni
#include "one32_leaf.inc"
#pragma clang attribute pop

#else
#include "internal.h"
int moek_gemv_one32_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1,
                         size_t K) {
  (void)dt; (void)W; (void)row_bytes; (void)XQ; (void)Y; (void)r0; (void)r1; (void)K;
  return 0;
}
#endif
