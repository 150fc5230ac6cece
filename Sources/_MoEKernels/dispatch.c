// Run-time choice of the instruction-set path, dtype conversion, and per-thread scratch.
#include <pthread.h>
#include <stdlib.h>
#include "internal.h"

static int isa_supported(int isa) {
  switch (isa) {
    case MOEK_ISA_SCALAR: return 1;
#if defined(__x86_64__) || defined(__i386__)
    case MOEK_ISA_AVX2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case MOEK_ISA_AVX512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
#if defined(__aarch64__)
    case MOEK_ISA_NEON: return 1;  // Advanced SIMD is mandatory on AArch64.
#endif
    default: return 0;
  }
}

static const moek_vtable *table_for(int isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case MOEK_ISA_AVX2: return &moek_vt_avx2;
    case MOEK_ISA_AVX512: return &moek_vt_avx512;
#endif
#if defined(__aarch64__)
    case MOEK_ISA_NEON: return &moek_vt_neon;
#endif
    default: return &moek_vt_scalar;
  }
}

int moek_best_isa(void) {
  static const int order[] = {MOEK_ISA_AVX512, MOEK_ISA_AVX2, MOEK_ISA_NEON};
  for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
    if (isa_supported(order[i])) return order[i];
  return MOEK_ISA_SCALAR;
}

// -1 until first use; then the chosen path. A benign race: every thread computes the same value.
static volatile int current_isa = -1;

int moek_isa(void) {
  int isa = current_isa;
  if (isa < 0) current_isa = isa = moek_best_isa();
  return isa;
}

int moek_isa_supported(int isa) { return isa_supported(isa); }

int moek_force_isa(int isa) {
  if (!isa_supported(isa)) return 0;
  current_isa = isa;
  return 1;
}

const char *moek_isa_name(int isa) {
  switch (isa) {
    case MOEK_ISA_AVX2: return "avx2";
    case MOEK_ISA_AVX512: return "avx512";
    case MOEK_ISA_NEON: return "neon";
    default: return "scalar";
  }
}

static const moek_vtable *vt(void) { return table_for(moek_isa()); }

void moek_gemv_rows_next(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx,
                         float *Y, size_t ldy, size_t r0, size_t r1, size_t K, const void *next) {
  if (nx < 1 || r1 <= r0) return;
  if (dt >= MOEK_Q8_0) {  // block formats: the fused AVX2 rows where there are some, else the reference (dequant.c)
    const int isa = moek_isa();
    if ((isa == MOEK_ISA_AVX2 || isa == MOEK_ISA_AVX512) && moek_gemv_rows_blocks_avx2(W, dt, ldw, X, ldx, nx, Y, ldy, r0, r1, K))
      return;
    moek_gemv_rows_blocks(W, dt, ldw, X, ldx, nx, Y, ldy, r0, r1, K);
    return;
  }
  while (nx > 4) {  // callers pass at most 4; stay correct if they do not
    vt()->gemv_rows(W, dt, ldw, X, ldx, 4, Y, ldy, r0, r1, K, NULL);
    X += 4 * ldx; Y += 4 * ldy; nx -= 4;
  }
  vt()->gemv_rows(W, dt, ldw, X, ldx, nx, Y, ldy, r0, r1, K, next);
}

void moek_gemv_rows(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx,
                    float *Y, size_t ldy, size_t r0, size_t r1, size_t K) {
  moek_gemv_rows_next(W, dt, ldw, X, ldx, nx, Y, ldy, r0, r1, K, NULL);
}

size_t moek_gemm_mr(void) { return vt()->gemm_mr; }
size_t moek_gemm_n_step(void) { return vt()->gemm_nr; }

size_t moek_gemm_packed_size(size_t M, size_t K) {
  const size_t mr = vt()->gemm_mr;
  return ((M + mr - 1) / mr) * mr * K;
}

void moek_pack_a_generic(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1,
                         size_t MR, size_t KC, float *Ap) {
  const size_t mtiles = (M + MR - 1) / MR;
  for (size_t k0 = 0; k0 < K; k0 += KC) {
    const size_t kc = (K - k0) < KC ? (K - k0) : KC;
    float *block = Ap + k0 * mtiles * MR;
    for (size_t t = t0; t < t1 && t < mtiles; t++) {
      float *dst = block + t * MR * kc;
      for (size_t i = 0; i < MR; i++) {
        const size_t m = t * MR + i;
        if (m < M) {
          const float *src = A + m * lda + k0;
          for (size_t k = 0; k < kc; k++) dst[k * MR + i] = src[k];
        } else {
          for (size_t k = 0; k < kc; k++) dst[k * MR + i] = 0.0f;
        }
      }
    }
  }
}

void moek_gemm_pack_a(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1,
                      float *Ap) {
  const moek_vtable *v = vt();
  if (v->gemm_pack_a) v->gemm_pack_a(A, lda, M, K, t0, t1, Ap);
  else moek_pack_a_generic(A, lda, M, K, t0, t1, v->gemm_mr, v->gemm_kc, Ap);
}

void moek_gemm_packed(const float *Ap, size_t M, const void *W, int dt, size_t ldw, float *C,
                      size_t ldc, size_t n0, size_t n1, size_t K) {
  vt()->gemm_packed(Ap, M, W, dt, ldw, 0, 0, C, ldc, n0, n1, K);
}

void moek_gemm_packed_ex(const float *Ap, size_t M, const void *W, int dt, size_t ldw, int wt, int acc,
                         float *C, size_t ldc, size_t n0, size_t n1, size_t K) {
  vt()->gemm_packed(Ap, M, W, wt ? MOEK_F32 : dt, ldw, wt, acc, C, ldc, n0, n1, K);
}

void moek_gemm_pack_a_t(const float *At, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap) {
  if (vt()->gemm_pack_a_t) {
    vt()->gemm_pack_a_t(At, lda, M, K, t0, t1, Ap);
    return;
  }
  const size_t MR = vt()->gemm_mr, KC = vt()->gemm_kc, mtiles = (M + MR - 1) / MR;
  for (size_t k0 = 0; k0 < K; k0 += KC) {
    const size_t kc = (K - k0) < KC ? (K - k0) : KC;
    float *block = Ap + k0 * mtiles * MR;
    for (size_t t = t0; t < t1 && t < mtiles; t++) {
      const size_t m0 = t * MR, rows = (M - m0) < MR ? (M - m0) : MR;
      float *dst = block + t * MR * kc;
      for (size_t k = 0; k < kc; k++) {
        memcpy(dst + k * MR, At + (k0 + k) * lda + m0, rows * sizeof(float));
        if (rows < MR) memset(dst + k * MR + rows, 0, (MR - rows) * sizeof(float));
      }
    }
  }
}
int moek_gemm_blocks_supported(void) { return vt()->gemm_kc % 256 == 0 || moek_isa() == MOEK_ISA_AVX512; }
size_t moek_gemm_kc(void) { return vt()->gemm_kc; }

int moek_gemm_direct_supported(void) { return vt()->gemm_direct != NULL; }

void moek_gemm_direct(const float *A, size_t lda, int ta, size_t M, const void *W, int dt, size_t ldw, int wt, int acc,
                      float *C, size_t ldc, size_t n0, size_t n1, size_t K) {
  vt()->gemm_direct(A, lda, NULL, ta, M, W, wt ? MOEK_F32 : dt, ldw, wt, NULL, acc, C, ldc, n0, n1, K);
}

void moek_gemm_direct_indexed(const float *A, size_t lda, const intptr_t *aix, int ta, size_t M, const void *W, int dt,
                              size_t ldw, int wt, const intptr_t *wix, int acc, float *C, size_t ldc, size_t n0,
                              size_t n1, size_t K) {
  vt()->gemm_direct(A, lda, aix, ta, M, W, wt ? MOEK_F32 : dt, ldw, wt, wt ? wix : NULL, acc, C, ldc, n0, n1, K);
}

double moek_fma_probe(size_t iters) { return vt()->fma_probe(iters); }

void moek_silu_mul(float *gate, const float *up, size_t n) { vt()->silu_mul(gate, gate, up, 1.0f, n); }
void moek_silu_mul_out(float *out, const float *gate, const float *up, size_t n) { vt()->silu_mul(out, gate, up, 1.0f, n); }
void moek_silu_mul_backward(const float *dy, const float *gate, const float *up, float *dgate, float *dup, size_t n) {
  vt()->silu_mul_backward(dy, gate, up, dgate, dup, n);
}
void moek_silu_mul_scaled(float *out, const float *gate, const float *up, float w, size_t n) {
  vt()->silu_mul(out, gate, up, w, n);
}
float moek_silu_mul_backward_scaled(const float *dh, const float *gate, const float *up, float w, float *dgate,
                                    float *dup, size_t n) {
  return vt()->silu_mul_backward_scaled(dh, gate, up, w, dgate, dup, n);
}
void moek_adamw(float *w, const float *g, float *m, float *v, size_t n, const float *hyper) {
  vt()->adamw(w, g, m, v, n, hyper);
}
double moek_sum_squares(const float *x, size_t n) { return vt()->sum_squares(x, n); }
void moek_dropout(float *dst, const float *src, size_t n, uint64_t seed, uint64_t first, float p, int accumulate) {
  vt()->dropout(dst, src, n, seed, first, (uint64_t)((double)p * 16777216.0), 1.0f / (1.0f - p), accumulate);
}
float moek_scale_dot(const float *x, const float *y, float a, float *out, size_t n) {
  return vt()->scale_dot(x, y, a, out, n);
}
float moek_rms_norm_row(const float *x, const float *w, float eps, float *y, size_t c) {
  return vt()->rms_norm_row(x, w, eps, y, c);
}
void moek_rms_norm_backward_row(const float *dy, const float *x, const float *w, float inv, float *dx, float *dw,
                                size_t c) {
  vt()->rms_norm_backward_row(dy, x, w, inv, dx, dw, c);
}
float moek_read_probe(const float *p, size_t n) { return vt()->read_probe(p, n); }
void moek_causal_softmax_rows(float *s, size_t ld, size_t n, size_t r0, size_t r1, float scale, size_t window) {
  vt()->causal_softmax_rows(s, ld, n, r0, r1, scale, window);
}
double moek_softmax_row_f64(const float *z, float *p, size_t n, float *mx) {
  return vt()->softmax_row_f64(z, p, n, mx);
}
void moek_combine_rows(float *out, const float *y, size_t d, const intptr_t *rows, const float *w, size_t count,
                       int accumulate) {
  vt()->combine_rows(out, y, d, rows, w, count, accumulate);
}
int moek_topk_row(const float *x, size_t n, size_t k, intptr_t *out) {
  return vt()->topk_row ? vt()->topk_row(x, n, k, out) : 0;
}
void moek_softmax_rows(float *x, size_t ld, size_t n, size_t rows) { vt()->softmax_rows(x, ld, n, rows); }
void moek_rope_rows(const float *x, float *out, size_t heads, size_t hd, size_t rd, const float *c, const float *s,
                    float sign, int rotate_half) {
  vt()->rope_rows(x, out, heads, hd, rd, c, s, sign, rotate_half);
}
void moek_causal_softmax_backward_rows(const float *p, float *d, size_t ld, size_t n, size_t r0, size_t r1,
                                       float scale, size_t window) {
  vt()->causal_softmax_backward_rows(p, d, ld, n, r0, r1, scale, window);
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/// f16 to f32 with F16C, 8 at a time (exact, as the scalar conversion).
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  for (; i < n; i++) dst[i] = moek_f16_to_f32(src[i]);
}
#endif

void moek_to_f32(const void *src, int dt, float *dst, size_t n) {
  if (dt >= MOEK_Q8_0) {
    moek_dequantize(src, dt, dst, n);
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  if (dt == MOEK_F16 && (moek_isa() == MOEK_ISA_AVX2 || moek_isa() == MOEK_ISA_AVX512)) {
    f16_to_f32_f16c((const uint16_t *)src, dst, n);
    return;
  }
#endif
  switch (dt) {
    case MOEK_F16: for (size_t i = 0; i < n; i++) dst[i] = moek_f16_to_f32(((const uint16_t *)src)[i]); break;
    case MOEK_BF16: for (size_t i = 0; i < n; i++) dst[i] = moek_bf16_to_f32(((const uint16_t *)src)[i]); break;
    default: memmove(dst, src, n * sizeof(float)); break;
  }
}

#if defined(__x86_64__) || defined(__i386__)
/// f32 to f16 with F16C, 8 at a time, bit for bit the scalar conversion: round to nearest even
/// by the immediate (whatever MXCSR holds); a group of 8 with a NaN goes through the scalar
/// conversion, which writes every NaN as 0x7e00 with its sign where F16C keeps payload bits.
/// Decode narrows each token's keys and values this way into an f16 KV cache: one scalar
/// conversion a value had taken 8.5 us a layer of full-size OLMoE-1B-7B's serial time.
__attribute__((target("avx,f16c"))) static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)) != 0) {
      for (size_t j = i; j < i + 8; j++) dst[j] = moek_f32_to_f16(src[j]);
    } else {
      _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
  for (; i < n; i++) dst[i] = moek_f32_to_f16(src[i]);
}

/// f32 to bf16, 8 at a time: the scalar conversion's integer rounding (to nearest even; a NaN
/// keeps its top bits and is made quiet) on 32-bit lanes.
__attribute__((target("avx2"))) static void f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n) {
  const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff), quiet = _mm256_set1_epi32(0x40);
  const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i x = _mm256_loadu_si256((const __m256i *)(src + i)), top = _mm256_srli_epi32(x, 16);
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, half), _mm256_and_si256(top, one)), 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs), inf);
    const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(top, quiet), nan);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // lanes 0 and 2
    _mm_storeu_si128((__m128i *)(dst + i), _mm256_castsi256_si128(packed));
  }
  for (; i < n; i++) dst[i] = moek_f32_to_bf16(src[i]);
}
#endif

void moek_from_f32(const float *src, int dt, void *dst, size_t n) {
#if defined(__x86_64__) || defined(__i386__)
  if ((dt == MOEK_F16 || dt == MOEK_BF16) && (moek_isa() == MOEK_ISA_AVX2 || moek_isa() == MOEK_ISA_AVX512)) {
    if (dt == MOEK_F16) f32_to_f16_f16c(src, (uint16_t *)dst, n); else f32_to_bf16_avx2(src, (uint16_t *)dst, n);
    return;
  }
#endif
  switch (dt) {
    case MOEK_F16: for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = moek_f32_to_f16(src[i]); break;
    case MOEK_BF16: for (size_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = moek_f32_to_bf16(src[i]); break;
    default: memmove(dst, src, n * sizeof(float)); break;
  }
}

void moek_weighted_rows(const float *P, size_t ldp, int nx, const void *V, int vdt, size_t ldv, size_t L,
                        size_t D, float *out, size_t ldo) {
  vt()->weighted_rows(P, ldp, nx, V, vdt, ldv, L, D, out, ldo);
}

size_t moek_argmax(const float *x, size_t n) { return n == 0 ? 0 : vt()->argmax(x, n); }
void moek_rms_norm_row_f64(const float *x, const float *w, float eps, float *y, size_t c) {
  vt()->rms_norm_row_f64(x, w, eps, y, c);
}

void moek_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Per-thread scratch, kept under a pthread key whose destructor frees it when the thread exits
// (pool workers come and go with their pools; a _Thread_local pointer would leak its buffer).
typedef struct {
  float *ptr;
  size_t cap;
} scratch_t;
enum { SCRATCH_SLOTS = 2 };

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) {
  scratch_t *s = (scratch_t *)p;
  if (s) {
    for (int i = 0; i < SCRATCH_SLOTS; i++) free(s[i].ptr);
    free(s);
  }
}

static void scratch_key_init(void) { pthread_key_create(&scratch_key, scratch_free); }

float *moek_thread_scratch(size_t floats) { return moek_thread_scratch_slot(0, floats); }

float *moek_thread_scratch_slot(int slot, size_t floats) {
  pthread_once(&scratch_once, scratch_key_init);
  scratch_t *slots = (scratch_t *)pthread_getspecific(scratch_key);
  if (!slots) {
    slots = (scratch_t *)calloc(SCRATCH_SLOTS, sizeof(scratch_t));
    if (!slots) abort();  // out of memory
    pthread_setspecific(scratch_key, slots);
  }
  scratch_t *s = &slots[slot];
  if (floats > s->cap) {
    void *p = NULL;
    size_t cap = floats + floats / 4 + 64;
    if (posix_memalign(&p, 64, cap * sizeof(float)) != 0) abort();  // out of memory
    free(s->ptr);
    s->ptr = (float *)p;
    s->cap = cap;
  }
  return s->ptr;
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif

int moek_retain_freed_memory(void) {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_THRESHOLD, 1 << 30) && mallopt(M_TRIM_THRESHOLD, 0x7fffffff);
#else
  return 0;
#endif
}
