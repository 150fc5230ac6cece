// Internal to _MoEKernels: scalar dtype conversions and the per-ISA function table.
#ifndef MOE_KERNELS_INTERNAL_H
#define MOE_KERNELS_INTERNAL_H

#include <stdint.h>
#include <string.h>
#include "moe_kernels.h"

/// The AVX2+FMA block-format rows (kernels_avx2_blocks.c), for the AVX2 and AVX-512 paths:
/// 1 when it handled `dt`, else 0.
int moek_gemv_rows_blocks_avx2(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx, float *Y,
                                 size_t ldy, size_t r0, size_t r1, size_t K);

/// AVX2 dequantization (kernels_avx2_dequant.c), bitwise equal to `moek_dequantize`: 1 when
/// it handled `dt`, else 0.
int moek_dequantize_avx2(const void *src, int dt, float *dst, size_t n);

/// The AVX2 integer block rows (kernels_avx2_q8.c): 1 when it handled `dt`, else 0.
int moek_gemv_rows_q8_avx2(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K);
/// `moek_gemv_rows_q8_avx2` built for AVX-512 (8 activation rows per weight block): the same results.
int moek_gemv_rows_q8_avx512(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K);
/// The AVX-512 VNNI integer leaves (kernels_avx512_vnni_q8.c), on interleaved activations: 1
/// when it handled `dt`, else 0.
int moek_gemv_rows_q8_vnni(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K);
/// K-quant rows [r0, r1) (`row_bytes` apart) against one interleaved activation row XQ, in
/// 512-bit registers (kernels_avx512_vnni_one.c): 1 when it handled `dt` (Q2_K-Q6_K, IQ4_XS), else 0.
int moek_gemv_one_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1,
                       size_t K);
/// `moek_gemv_one_vnni` built with VBMI and GFNI (kernels_avx512_vbmi_one.c), the same results
/// bit for bit; call it only where `moek_q8_vbmi()`.
int moek_gemv_one_vbmi(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1,
                       size_t K);
/// The 32-value formats' one-row leaf on AVX-512 VNNI (kernels_avx512_vnni_one32.c): rows
/// [r0, r1) of W (Q8_0, Q4_0, Q5_0, IQ4_NL or MXFP4) against the one quantized activation row
/// at XQ. Returns 0, computing nothing, for other formats, K not a multiple of 256 or above
/// 16384, and off x86.
int moek_gemv_one32_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1,
                         size_t K);
/// `moek_gemv_one32_vnni` built with AVX-512 VBMI and GFNI (kernels_avx512_vbmi_one32.c), the same
/// results bit for bit; call it only where `moek_q8_vbmi()`.
int moek_gemv_one32_vbmi(int dt, const void *W, size_t row_bytes, const void *XQ, float *Y, size_t r0, size_t r1,
                         size_t K);
/// Activation rows from which a `dt` product takes the rows-in-lanes leaf (Q3_K, Q4_K, Q5_K,
/// Q6_K, IQ4_XS; 0 for other formats): its repack of 16 weight rows is shared by them all. Single
/// thread, weights from memory (as an expert's are; since the leaf prefetches them), K 768, 2048
/// and 7168: Q5_K and IQ4_XS from 10 (level at K 2048 and 10 rows, else 1.05-1.4x the row leaf,
/// which takes 8 rows a pass, so 9 and more cost it two); Q4_K from 12 (at K 2048 the row leaf is
/// 1.15-1.17x at 10-11 rows); Q6_K of K up to 4096 from 16 (the row leaf 1.1-1.5x at 10-14 rows
/// for K 768 to 3072, level at 4096), longer rows from 10 (the lanes leaf 1.04-1.12x at K 5120,
/// 1.1-1.19x at 7168: the row leaf's activation rows outgrow L1); Q3_K from 10 (the row leaf
/// 1.07x at 9).
static inline int moek_lanes_min_rows(int dt, size_t K) {
  if (dt == MOEK_Q6_K) return K > 4096 ? 10 : 16;
  return dt == MOEK_Q4_K ? 12 : dt == MOEK_Q5_K || dt == MOEK_IQ4_XS || dt == MOEK_Q3_K ? 10 : 0;
}
/// Q3_K, Q4_K, Q5_K, Q6_K or IQ4_XS rows [r0, r1) against nx activation rows with weight rows in lanes
/// (kernels_avx512_vnni_lanes.c), 16 at a time: returns the first row it left (r1 less a
/// remainder of fewer than 16; r0 for other formats).
size_t moek_lanes_vnni(int dt, const void *W, size_t row_bytes, const void *XQ, size_t ldxq, int nx, float *Y, size_t ldy,
                       size_t r0, size_t r1, size_t K);
/// Writes the interleaved copy of an activation row's int8 values that the VNNI leaves read
/// (kernels_avx512_vnni_q8.c describes the two orders, by `block`); K's remainder past a
/// multiple of 256 is left.
void moek_q8_interleave_avx512(const int8_t *q, int8_t *qi, size_t K, int block);
/// Whether this machine runs the VNNI leaves (AVX-512 with VNNI, and the AVX-512 path chosen).
int moek_q8_vnni(void);
/// Whether the one-row VNNI leaves take their VBMI builds (`moek_q8_vnni()`, the CPU has AVX-512
/// VBMI and GFNI, as every Ice Lake and later and Zen 4 and later has, and `moek_allow_vbmi` has
/// not forbidden them).
int moek_q8_vbmi(void);
/// Byte offsets of a quantized activation row's interleaved values, scales and 16-value sums
/// (act_quant.c's layout: 64-byte aligned pieces).
static inline size_t moek_q8_interleaved_offset(size_t K) { return (K + 63) & ~(size_t)63; }
static inline size_t moek_q8_scales_offset(size_t K) { return 2 * moek_q8_interleaved_offset(K); }
static inline size_t moek_q8_sums_offset(size_t K, int block) {
  return moek_q8_scales_offset(K) + ((K / (size_t)block * 4 + 63) & ~(size_t)63);
}
static inline size_t moek_q8_sums32_offset(size_t K, int block) {
  return moek_q8_sums_offset(K, block) + ((K / 16 * 2 + 63) & ~(size_t)63);
}

/// One quantized activation row (act_quant.c's layout): int8 values, a scale per block, sums
/// per 16 and per 32.
typedef struct {
  const int8_t *q;
  const int8_t *qi;  // q interleaved for the VNNI leaves (written only where they run)
  const float *d;
  const int16_t *bs;
  const int16_t *bs32;  // sums of 32 values (bs in pairs)
} moek_act_row;

/// Row m of the quantized activation rows at XQ (`ldxq` bytes apart) of K values in blocks of `block`.
static inline moek_act_row moek_act_row_at(const void *XQ, size_t ldxq, int m, size_t K, int block) {
  const uint8_t *p = (const uint8_t *)XQ + (size_t)m * ldxq;
  return (moek_act_row){(const int8_t *)p, (const int8_t *)(p + moek_q8_interleaved_offset(K)),
                        (const float *)(p + moek_q8_scales_offset(K)),
                        (const int16_t *)(p + moek_q8_sums_offset(K, block)),
                        (const int16_t *)(p + moek_q8_sums32_offset(K, block))};
}

/// Q3_K's 16 signed scales (6 bits minus 32) from the 12 packed bytes: low 4 bits from bytes
/// 0..7 (low nibble for 0..7, high for 8..15), top 2 bits from bytes 8..11.
/// Four scales at a time as ggml's dot products unpack them: scales 4 q .. 4 q + 3 take their low
/// bits from the nibbles of bytes 0..3 (q = 0, 2) or 4..7 (q = 1, 3) and their top bits from
/// bits 2 q of bytes 8..11.
static inline void q3_k_scales(const uint8_t *packed, int8_t scales[16]) {
  const uint32_t m4 = 0x0F0F0F0Fu, m2 = 0x03030303u;
  uint32_t a[3], s[4];
  memcpy(a, packed, 12);
  s[0] = (a[0] & m4) | ((a[2] & m2) << 4);
  s[1] = (a[1] & m4) | (((a[2] >> 2) & m2) << 4);
  s[2] = ((a[0] >> 4) & m4) | (((a[2] >> 4) & m2) << 4);
  s[3] = ((a[1] >> 4) & m4) | (((a[2] >> 6) & m2) << 4);
  uint8_t u[16];
  memcpy(u, s, 16);
  for (int g = 0; g < 16; g++) scales[g] = (int8_t)(u[g] - 32);
}

/// The NEON integer block rows (kernels_neon_q8.c): 1 when it handled `dt`, else 0.
int moek_gemv_rows_q8_neon(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx, float *Y,
                           size_t ldy, size_t r0, size_t r1, size_t K);
/// `moek_q8_quantize`'s AVX2 body (kernels_avx2_q8.c); `bs` NULL skips the 16-value sums.
void moek_q8_quantize_avx2(const float *x, size_t K, int block, int8_t *q, float *d, int16_t *bs);

/// One instruction-set path: every leaf the dispatcher routes.
typedef struct {
  void (*gemv_rows)(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx,
                    float *Y, size_t ldy, size_t r0, size_t r1, size_t K, const void *next);
  void (*gemm_packed)(const float *Ap, size_t M, const void *W, int dt, size_t ldw, int wt, int acc,
                      float *C, size_t ldc, size_t n0, size_t n1, size_t K);
  size_t gemm_mr, gemm_nr, gemm_kc;
  /// Packs A for `gemm_packed` (see `moek_pack_a_generic`); NULL: the generic packer.
  void (*gemm_pack_a)(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap);
  /// The same for A stored transposed (`moek_gemm_pack_a_t`); NULL: the generic packer.
  void (*gemm_pack_a_t)(const float *At, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap);
  /// `moek_gemm_direct_indexed`: the product reading A unpacked; NULL where the path has none.
  void (*gemm_direct)(const float *A, size_t lda, const intptr_t *aix, int ta, size_t M, const void *W, int dt,
                      size_t ldw, int wt, const intptr_t *wix, int acc, float *C, size_t ldc, size_t n0, size_t n1,
                      size_t K);
  double (*fma_probe)(size_t iters);
  void (*silu_mul)(float *out, const float *gate, const float *up, float w, size_t n);
  void (*silu_mul_backward)(const float *dy, const float *gate, const float *up, float *dgate, float *dup, size_t n);
  float (*silu_mul_backward_scaled)(const float *dh, const float *gate, const float *up, float w, float *dgate,
                                    float *dup, size_t n);
  void (*adamw)(float *w, const float *g, float *m, float *v, size_t n, const float *hyper);
  double (*sum_squares)(const float *x, size_t n);
  float (*read_probe)(const float *p, size_t n);
  float (*scale_dot)(const float *x, const float *y, float a, float *out, size_t n);
  float (*rms_norm_row)(const float *x, const float *w, float eps, float *y, size_t c);
  void (*rms_norm_backward_row)(const float *dy, const float *x, const float *w, float inv, float *dx, float *dw,
                                size_t c);
  void (*causal_softmax_rows)(float *s, size_t ld, size_t n, size_t r0, size_t r1, float scale, size_t window);
  void (*causal_softmax_backward_rows)(const float *p, float *d, size_t ld, size_t n, size_t r0, size_t r1,
                                       float scale, size_t window);
  double (*softmax_row_f64)(const float *z, float *p, size_t n, float *mx);
  void (*combine_rows)(float *out, const float *y, size_t d, const intptr_t *rows, const float *w, size_t count,
                       int accumulate);
  void (*softmax_rows)(float *x, size_t ld, size_t n, size_t rows);
  /// `moek_topk_row`; NULL where the path has none.
  int (*topk_row)(const float *x, size_t n, size_t k, intptr_t *out);
  void (*rope_rows)(const float *x, float *out, size_t heads, size_t hd, size_t rd, const float *c, const float *s,
                    float sign, int rotate_half);
  void (*dropout)(float *dst, const float *src, size_t n, uint64_t seed, uint64_t first, uint64_t threshold,
                  float scale, int accumulate);
  void (*weighted_rows)(const float *P, size_t ldp, int nx, const void *V, int vdt, size_t ldv, size_t L, size_t D,
                        float *out, size_t ldo);
  size_t (*argmax)(const float *x, size_t n);
  void (*rms_norm_row_f64)(const float *x, const float *w, float eps, float *y, size_t c);
} moek_vtable;

extern const moek_vtable moek_vt_scalar;
#if defined(__x86_64__) || defined(__i386__)
extern const moek_vtable moek_vt_avx2;
extern const moek_vtable moek_vt_avx512;
#endif
#if defined(__aarch64__)
extern const moek_vtable moek_vt_neon;
#endif

#if defined(__x86_64__) || defined(__i386__)
/// The AVX-512 matmul tile (kernels_avx512_gemm.c): MR rows of A broadcast against NR = 32
/// packed weight columns, over reduction blocks of KC.
enum { MOEK_AVX512_MR = 12, MOEK_AVX512_NR = 32, MOEK_AVX512_KC = 128 };
void moek_gemm_packed_avx512(const float *Ap, size_t M, const void *W, int dt, size_t ldw, int wt, int acc,
                             float *C, size_t ldc, size_t n0, size_t n1, size_t K);
void moek_gemm_pack_a_avx512(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap);
void moek_gemm_pack_a_t_avx512(const float *At, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap);
void moek_gemm_direct_avx512(const float *A, size_t lda, const intptr_t *aix, int ta, size_t M, const void *W, int dt,
                             size_t ldw, int wt, const intptr_t *wix, int acc, float *C, size_t ldc, size_t n0,
                             size_t n1, size_t K);
#endif

/// Packs panels [t0, t1) of A into the layout `gemm_packed` reads: for each K block of `kc`
/// columns (k0 = 0, KC, 2KC, ...), all panels in turn, each [kc][MR], zero-padded past M.
void moek_pack_a_generic(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1,
                         size_t MR, size_t KC, float *Ap);

/// A 64-byte aligned buffer owned by the calling thread, grown on demand (never shrunk).
float *moek_thread_scratch(size_t floats);
/// As `moek_thread_scratch`, a second buffer per thread (slot 1) for a caller whose callees use
/// the first (slot 0 is `moek_thread_scratch`'s).
float *moek_thread_scratch_slot(int slot, size_t floats);
/// The nx activation rows (row stride ldx, K each) rounded to bf16 as `moek_gemv_bf16_dot`
/// rounds them, in this thread's `moek_thread_scratch`: nx rows of K rounded up to 32, the
/// padding zero. Only where `moek_bf16_compute_supported()`.
const uint16_t *moek_bf16_dot_activations(const float *X, size_t ldx, int nx, size_t K);
/// One activation row with at most this many values takes, under bf16 activations, the f32 row
/// leaf on its bf16-rounded values rather than vdpbf16ps (`moek_gemv_bf16_dot` says why).
enum { MOEK_DOT_ROW1_MAX_K = 1024 };
/// The K values of X rounded to bf16 as `moek_bf16_dot_activations` rounds them, kept as f32 in
/// this thread's `moek_thread_scratch`. Only where `moek_bf16_compute_supported()`.
const float *moek_bf16_rounded_row(const float *X, size_t K);

static inline uint32_t moek_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float moek_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float moek_bf16_to_f32(uint16_t h) { return moek_bits_f32((uint32_t)h << 16); }

/// Round to nearest even; NaN stays a (quiet) NaN.
static inline uint16_t moek_f32_to_bf16(float f) {
  uint32_t x = moek_f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static inline float moek_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise the mantissa
      int e = -1;
      do { e++; man <<= 1; } while (!(man & 0x400u));
      man &= 0x3ffu;
      bits = sign | ((uint32_t)(112 - e) << 23) | (man << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  }
  return moek_bits_f32(bits);
}

/// Round to nearest even (F. Giesen's float_to_half_fast3_rtne).
static inline uint16_t moek_f32_to_f16(float f) {
  uint32_t u = moek_f32_bits(f), sign = u & 0x80000000u, o;
  u ^= sign;
  if (u >= (143u << 23)) {  // >= 2^16: Inf or NaN
    o = (u > 0x7f800000u) ? 0x7e00u : 0x7c00u;
  } else if (u < (113u << 23)) {  // subnormal or zero in f16
    const float magic = moek_bits_f32(126u << 23);
    o = moek_f32_bits(moek_bits_f32(u) + magic) - (126u << 23);
  } else {
    uint32_t mant_odd = (u >> 13) & 1u;
    u += 0xc8000fffu + mant_odd;  // rebias exponent (15 - 127) and round
    o = u >> 13;
  }
  return (uint16_t)(o | (sign >> 16));
}

/// Element `i` of a weight row of dtype `dt`, widened.
static inline float moek_load_f32(const void *base, size_t i, int dt) {
  switch (dt) {
    case MOEK_F16: return moek_f16_to_f32(((const uint16_t *)base)[i]);
    case MOEK_BF16: return moek_bf16_to_f32(((const uint16_t *)base)[i]);
    default: return ((const float *)base)[i];
  }
}

static inline size_t moek_dtype_size(int dt) { return dt == MOEK_F32 ? 4 : 2; }

/// Writes a micro-kernel's transposed tile (tile[j * mrmax + i] is C[i, j]) into C: mr rows and
/// nr columns, overwriting on the first K block and adding on later ones.
static inline void moek_store_tile(const float *tile, size_t mrmax, float *C, size_t ldc, size_t mr,
                                   size_t nr, int first) {
  for (size_t i = 0; i < mr; i++) {
    float *row = C + i * ldc;
    if (first)
      for (size_t j = 0; j < nr; j++) row[j] = tile[j * mrmax + i];
    else
      for (size_t j = 0; j < nr; j++) row[j] += tile[j * mrmax + i];
  }
}

/// The 4-bit code books of IQ4_NL and MXFP4 (the MXFP4 values doubled, as ggml stores them).
static const int8_t moek_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
static const int8_t moek_kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
/// Quantizes one block of `dt` (Q2_K, Q3_K, IQ4_NL, IQ4_XS; quantize_low_bits.c) from x into b,
/// weighted by the block's importance `qw` when not NULL: 1, or 0 for other formats.
int moek_quantize_low_bits(const float *x, int dt, uint8_t *b, const float *qw);

/// ggml's e8m0 scale halved (the MXFP4 values are stored doubled): 2^(e - 128).
static inline float moek_e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? (uint32_t)0x00200000 << e : (uint32_t)(e - 1) << 23;
  return moek_bits_f32(bits);
}

#endif
