// 8-bit activation rows for the integer block leaves (kernels_avx2_q8.c), as llama.cpp pairs
// its Q8_0 and Q8_K activations with the block formats: a row of K f32 values becomes K int8
// values with one f32 scale per `block` (32 for the 32-element formats, 256 for the K-quants)
// and the int16 sum of every 16 values (the minimum terms of the K-quants, Q4_1 and Q5_1 use them).
//
// Row layout, `moek_q8_row_bytes(K, block)` bytes, 64-byte aligned pieces:
//   q[K] int8 | qi[K] int8 | d[K / block] f32 | bsum[K / 16] int16 | bsum32[K / 32] int16
// where qi is q reordered for the AVX-512 VNNI leaves (kernels_avx512_vnni_q8.c), written only
// on machines that run them.
#include <math.h>
#include "internal.h"

size_t moek_q8_row_bytes(size_t K, int block) {
  return moek_q8_sums32_offset(K, block) + ((K / 32 * 2 + 63) & ~(size_t)63);
}

/// The sums of 32 values from the sums of 16 (|sum| <= 32 x 127 fits int16): the rows-in-lanes
/// leaf's minimum terms take them in pairs, 4 multiply-adds a block where pairs of 16-value sums
/// took 8.
static void sums32(const int16_t *bs, int16_t *bs32, size_t K) {
  for (size_t j = 0; j < K / 32; j++) bs32[j] = (int16_t)(bs[2 * j] + bs[2 * j + 1]);
}

void moek_q8_quantize(const float *x, size_t K, int block, void *out) {
  int8_t *q = (int8_t *)out;
  float *d = (float *)((uint8_t *)out + moek_q8_scales_offset(K));
  int16_t *bs = (int16_t *)((uint8_t *)out + moek_q8_sums_offset(K, block));
  int16_t *bs32 = (int16_t *)((uint8_t *)out + moek_q8_sums32_offset(K, block));
  const int isa = moek_isa();
  if (isa == MOEK_ISA_AVX2 || isa == MOEK_ISA_AVX512) {
    moek_q8_quantize_avx2(x, K, block, q, d, bs);
    sums32(bs, bs32, K);
    if (moek_q8_vnni()) moek_q8_interleave_avx512(q, (int8_t *)out + moek_q8_interleaved_offset(K), K, block);
    return;
  }
  // Plain C for the other paths (NEON): the same values, round to nearest even as
  // _mm256_cvtps_epi32 does.
  const size_t B = (size_t)block;
  for (size_t b = 0; b < K / B; b++) {
    const float *xb = x + b * B;
    float amax = 0, poison = 0;
    for (size_t j = 0; j < B; j++) {
      amax = fmaxf(amax, fabsf(xb[j]));
      poison += xb[j] * 0.0f;
    }
    const int finite = poison == 0.0f;
    d[b] = finite ? amax / 127.0f : NAN;
    const float inv = finite && amax > 0 ? 127.0f / amax : 0.0f;
    for (size_t j = 0; j < B; j++) q[b * B + j] = (int8_t)(finite ? nearbyintf(xb[j] * inv) : 0.0f);
  }
  for (size_t g = 0; g < K / 16; g++) {
    int sum = 0;
    for (size_t j = 0; j < 16; j++) sum += q[g * 16 + j];
    bs[g] = (int16_t)sum;
  }
  sums32(bs, bs32, K);
}

static volatile int vnni_allowed = 1;

int moek_allow_vnni(int on) {
  vnni_allowed = on != 0;
  return moek_q8_vnni();
}

int moek_q8_vnni(void) {
#if defined(__x86_64__) || defined(__i386__)
  static volatile int has = -1;  // a benign race: every thread computes the same value
  // BMI2 (every AVX-512 processor has it) for `pdep` in the one-row IQ4_XS leaf's scales.
  if (has < 0) has = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("bmi2");
  return has && vnni_allowed && moek_isa() == MOEK_ISA_AVX512;
#else
  return 0;
#endif
}

static volatile int vbmi_allowed = 1;

int moek_allow_vbmi(int on) {
  vbmi_allowed = on != 0;
  return moek_q8_vbmi();
}

int moek_q8_vbmi(void) {
#if defined(__x86_64__) || defined(__i386__)
  static volatile int has = -1;  // a benign race, as in moek_q8_vnni
  if (has < 0) has = __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
  return has && vbmi_allowed && moek_q8_vnni();
#else
  return 0;
#endif
}

int moek_q8_interleaved(int dt, size_t K) {
  if (!moek_q8_vnni() || K % 256 != 0) return 0;
  switch (dt) {
    case MOEK_Q8_0: case MOEK_Q4_0: case MOEK_Q5_0: case MOEK_IQ4_NL: case MOEK_MXFP4:
    case MOEK_Q2_K: case MOEK_Q3_K: case MOEK_Q4_K: case MOEK_Q5_K: case MOEK_Q6_K: case MOEK_IQ4_XS: return 1;
    default: return 0;
  }
}

int moek_q8_block(int dt) {
  // Integer leaves: q8_leaves.inc (AVX2 and AVX-512) and kernels_neon_q8.c cover the same formats.
  const int isa = moek_isa();
  if (isa != MOEK_ISA_AVX2 && isa != MOEK_ISA_AVX512 && isa != MOEK_ISA_NEON) return 0;
  switch (dt) {
    case MOEK_Q8_0: case MOEK_Q4_0: case MOEK_Q4_1: case MOEK_Q5_0: case MOEK_Q5_1: case MOEK_IQ4_NL: case MOEK_MXFP4:
      return 32;
    case MOEK_Q2_K: case MOEK_Q3_K: case MOEK_Q4_K: case MOEK_Q5_K: case MOEK_Q6_K: case MOEK_IQ4_XS: return 256;
    default: return 0;
  }
}

int moek_q8_row_group(int dt, int nx, size_t K) {
  // 4 groups of 16 rows a piece: the rows-in-lanes leaf prefetches each group's weights while
  // the group before computes, which only a piece of several groups allows (single thread,
  // 32 activation rows, weights from memory: Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS 1.18-1.23x the
  // 16-row pieces; from L3, level).
  const int from = moek_lanes_min_rows(dt, K);
  return from > 0 && nx >= from && moek_q8_vnni() ? 64 : 1;
}

int moek_gemv_rows_q8(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx,
                      float *Y, size_t ldy, size_t r0, size_t r1, size_t K) {
  if (moek_q8_block(dt) == 0) return 0;
  if (nx < 1 || r1 <= r0) return 1;
  if (moek_isa() == MOEK_ISA_NEON) return moek_gemv_rows_q8_neon(W, dt, ldw, XQ, ldxq, nx, Y, ldy, r0, r1, K);
  // With VNNI, the interleaved leaves take the formats they cover, at any number of rows
  // (kernels_avx512_vnni_q8.c; one weight row against 1 to 4 activation rows, single thread:
  // Q8_0, Q4_0, Q5_0, Q6_K 1.2-2.7x the AVX2 build, Q4_K and Q5_K 0.95-2.2x).
  if (moek_q8_vnni() && moek_gemv_rows_q8_vnni(W, dt, ldw, XQ, ldxq, nx, Y, ldy, r0, r1, K)) return 1;
  // AVX-512 without VNNI: 8 activation rows per unpacked weight block when there are more than 4
  // (prefill: 1.12-1.13x on Mixtral-shaped Q4_K_M); fewer rows (decode) keep the AVX2 build,
  // which was about 5% faster there.
  if (moek_isa() == MOEK_ISA_AVX512 && nx > 4) return moek_gemv_rows_q8_avx512(W, dt, ldw, XQ, ldxq, nx, Y, ldy, r0, r1, K);
  return moek_gemv_rows_q8_avx2(W, dt, ldw, XQ, ldxq, nx, Y, ldy, r0, r1, K);
}

void moek_prefetch_l2(const void *p, size_t bytes) {
  const char *c = (const char *)p;
  for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 2);
}
