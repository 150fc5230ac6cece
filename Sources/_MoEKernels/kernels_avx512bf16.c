// AVX512-BF16 matmul (Zen 4, Sapphire Rapids): bf16 weights times activations rounded to bf16,
// with vdpbf16ps (two bf16 multiply-adds per f32 lane, accumulated in f32): twice the rate of
// f32 FMA. Opt-in (MoECore's Kernels.bf16Activations), since it rounds the activations; chosen
// at run time, compiled with no global flags.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"
#include "avx512_bf16_round.h"

enum { B_MR = 16, B_NR = 24, B_KC = 512 };  // KC in elements (256 bf16 pairs)

int moek_bf16_compute_supported(void) {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
}

size_t moek_gemm_bf16_packed_size(size_t M, size_t K) {
  const size_t mtiles = (M + B_MR - 1) / B_MR;
  size_t total = 0;
  for (size_t k0 = 0; k0 < K; k0 += B_KC) {
    const size_t kc = (K - k0) < B_KC ? (K - k0) : B_KC;
    total += mtiles * B_MR * ((kc + 1) / 2) * 2;
  }
  return total;  // in bf16 elements
}

// Packed A: for each K block, each panel of 16 rows as [kc/2][16][2] bf16 (pairs k, k+1).
void moek_gemm_bf16_pack_a(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1, uint16_t *Ap) {
  const size_t mtiles = (M + B_MR - 1) / B_MR;
  size_t offset = 0;
  for (size_t k0 = 0; k0 < K; k0 += B_KC) {
    const size_t kc = (K - k0) < B_KC ? (K - k0) : B_KC, pairs = (kc + 1) / 2;
    for (size_t t = t0; t < t1 && t < mtiles; t++) {
      uint16_t *dst = Ap + offset + t * B_MR * pairs * 2;
      for (size_t i = 0; i < B_MR; i++) {
        const size_t m = t * B_MR + i;
        for (size_t p = 0; p < pairs; p++) {
          const size_t k = k0 + 2 * p;
          float lo = 0, hi = 0;
          if (m < M) {
            lo = A[m * lda + k];
            hi = k + 1 < K ? A[m * lda + k + 1] : 0.0f;
          }
          dst[(p * B_MR + i) * 2] = moek_f32_to_bf16(lo);
          dst[(p * B_MR + i) * 2 + 1] = moek_f32_to_bf16(hi);
        }
      }
    }
    offset += mtiles * B_MR * pairs * 2;
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void ukernel_bf16(const uint16_t *Ap, const uint16_t *Wp, size_t pairs, float *C, size_t ldc, size_t mr,
                         size_t nr, int first) {
  __m512 c[B_NR];
#pragma clang loop unroll(full)
  for (int j = 0; j < B_NR; j++) c[j] = _mm512_setzero_ps();
  for (size_t p = 0; p < pairs; p++) {
    const __m512bh a = (__m512bh)_mm512_load_si512((const void *)(Ap + p * B_MR * 2));
#pragma clang loop unroll(full)
    for (int j = 0; j < B_NR; j++) {
      int32_t w;
      memcpy(&w, Wp + j * B_KC + 2 * p, 4);
      c[j] = _mm512_dpbf16_ps(c[j], a, (__m512bh)_mm512_set1_epi32(w));
    }
  }
  float tile[B_NR][B_MR] __attribute__((aligned(64)));
#pragma clang loop unroll(full)
  for (int j = 0; j < B_NR; j++) _mm512_store_ps(tile[j], c[j]);
  moek_store_tile(&tile[0][0], B_MR, C, ldc, mr, nr, first);
}

void moek_gemm_bf16_packed(const uint16_t *Ap, size_t M, const uint16_t *W, size_t ldw, float *C, size_t ldc,
                           size_t n0, size_t n1, size_t K) {
  if (M == 0 || n1 <= n0) return;
  const size_t mtiles = (M + B_MR - 1) / B_MR, kblocks = (K + B_KC - 1) / B_KC;
  // Each run of B_NR weight rows is copied whole, row by row from start to end, into B_KC-wide
  // blocks (B_NR x B_KC each, the ukernel's layout). Copying a B_KC-wide piece of each row per
  // block instead touched every 4 KiB page of the mapped file once per block (a page walk per
  // row and block: ~20% of a Mixtral-shaped bf16 prefill went to that copy).
  uint16_t *Wbuf = (uint16_t *)moek_thread_scratch(kblocks * B_NR * B_KC / 2 + 16);
  for (size_t n = n0; n < n1; n += B_NR) {
    const size_t nr = (n1 - n) < B_NR ? (n1 - n) : B_NR;
    for (size_t j = 0; j < B_NR; j++) {
      for (size_t kb = 0; kb < kblocks; kb++) {
        const size_t k0 = kb * B_KC, kc = (K - k0) < B_KC ? (K - k0) : B_KC;
        uint16_t *dst = Wbuf + (kb * B_NR + j) * B_KC;
        if (j < nr) {
          memcpy(dst, W + (n + j) * ldw + k0, kc * 2);
          if (kc & 1) dst[kc] = 0;
        } else {
          memset(dst, 0, (kc + 1) / 2 * 4);
        }
      }
    }
    size_t offset = 0;
    for (size_t kb = 0; kb < kblocks; kb++) {
      const size_t k0 = kb * B_KC, kc = (K - k0) < B_KC ? (K - k0) : B_KC, pairs = (kc + 1) / 2;
      // The same columns of the next B_NR rows are fetched into L2 while this block computes.
      for (size_t j = 0; j < B_NR && n + B_NR + j < n1; j++)
        for (size_t b = 0; b < kc * 2; b += 64) _mm_prefetch((const char *)(W + (n + B_NR + j) * ldw + k0) + b, _MM_HINT_T1);
      for (size_t t = 0; t < mtiles; t++) {
        const size_t mr = (M - t * B_MR) < B_MR ? (M - t * B_MR) : B_MR;
        ukernel_bf16(Ap + offset + t * B_MR * pairs * 2, Wbuf + kb * B_NR * B_KC, pairs, C + t * B_MR * ldc + n, ldc, mr,
                     nr, k0 == 0);
      }
      offset += mtiles * B_MR * pairs * 2;
    }
  }
}
/// Rows [r0, r1) of `moek_gemv_bf16_dot` against NX (a constant after inlining) bf16 rows xb,
/// kp apart (K rounded up to 32, zero-padded).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline)) static inline void
bf16_dot_rows(const int NX, const uint16_t *W, size_t ldw, const uint16_t *xb, size_t kp, float *Y, size_t ldy,
              size_t r0, size_t r1, size_t K, const void *next) {
  const size_t whole = K / 32 * 32;
  const __mmask32 tail = (__mmask32)(K == whole ? 0 : (0xFFFFFFFFu >> (32 - (K - whole))));
  for (size_t r = r0; r < r1; r++) {
    const uint16_t *w = W + r * ldw;
    if (r + 1 == r1 && next)
      for (int b = 0; b < 4096; b += 64) _mm_prefetch((const char *)next + b, _MM_HINT_T1);
    __m512 a0[4], a1[4];
    for (int m = 0; m < NX; m++) a0[m] = a1[m] = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 64 <= whole; k += 64) {
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + k), w1 = (__m512bh)_mm512_loadu_si512(w + k + 32);
      for (int m = 0; m < NX; m++) {
        a0[m] = _mm512_dpbf16_ps(a0[m], w0, (__m512bh)_mm512_loadu_si512(xb + m * kp + k));
        a1[m] = _mm512_dpbf16_ps(a1[m], w1, (__m512bh)_mm512_loadu_si512(xb + m * kp + k + 32));
      }
    }
    for (; k < kp; k += 32) {  // a last whole run of 32, then the masked tail (the padding is zero)
      const __m512bh wv = (__m512bh)(k < whole ? _mm512_loadu_si512(w + k) : _mm512_maskz_loadu_epi16(tail, w + k));
      for (int m = 0; m < NX; m++) a0[m] = _mm512_dpbf16_ps(a0[m], wv, (__m512bh)_mm512_loadu_si512(xb + m * kp + k));
    }
    for (int m = 0; m < NX; m++) Y[(size_t)m * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(a0[m], a1[m]));
  }
}

/// Decode with bf16 activations: the nx (1...4) activation rows are rounded to bf16 once into
/// this thread's scratch (`moek_bf16_dot_activations`), then each weight row is read once, in
/// order (one sequential stream per thread), each 64-byte run multiplied against every
/// activation row with vdpbf16ps.
///
/// One row of at most `MOEK_DOT_ROW1_MAX_K` values goes to the f32 one-row leaf as bf16-rounded
/// f32 values instead (`moek_bf16_rounded_row`): with weight rows of up to 2 KB read from a
/// memory-mapped file the vdpbf16ps loop ran behind that leaf (`moe bench` decode, two threads,
/// runs alternating: OLMoE-shaped bf16, K 1024 and 512, +13-20%; Qwen3-MoE-shaped, K 1024 and
/// 768, +5-7%), while at K 2048 and 7168 (Mixtral-shaped) vdpbf16ps led by 8-10%. Products of
/// bf16 values are exact in f32, so both compute the same sum, accumulated in another order.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void moek_gemv_bf16_dot(const uint16_t *W, size_t ldw, const float *X, size_t ldx, int nx, float *Y, size_t ldy,
                        size_t r0, size_t r1, size_t K, const void *next) {
  if (r1 <= r0 || nx < 1) return;
  if (nx > 4) nx = 4;
  if (nx == 1 && K <= MOEK_DOT_ROW1_MAX_K) {
    moek_gemv_rows_next(W, MOEK_BF16, ldw, moek_bf16_rounded_row(X, K), K, 1, Y, ldy, r0, r1, K, next);
    return;
  }
  const size_t kp = (K + 31) / 32 * 32;
  const uint16_t *xb = moek_bf16_dot_activations(X, ldx, nx, K);
  switch (nx) {
    case 1: bf16_dot_rows(1, W, ldw, xb, kp, Y, ldy, r0, r1, K, next); break;
    case 2: bf16_dot_rows(2, W, ldw, xb, kp, Y, ldy, r0, r1, K, next); break;
    case 3: bf16_dot_rows(3, W, ldw, xb, kp, Y, ldy, r0, r1, K, next); break;
    default: bf16_dot_rows(4, W, ldw, xb, kp, Y, ldy, r0, r1, K, next); break;
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
const float *moek_bf16_rounded_row(const float *X, size_t K) {
  float *xr = moek_thread_scratch(K + 16);
  for (size_t k = 0; k < K; k += 16) {
    const __mmask16 live = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u);
    const __m512i h = moek_round_bf16_16(_mm512_maskz_loadu_epi32(live, X + k));
    _mm512_mask_storeu_ps(xr + k, live, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
  }
  return xr;
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
const uint16_t *moek_bf16_dot_activations(const float *X, size_t ldx, int nx, size_t K) {
  const size_t kp = (K + 31) / 32 * 32;
  uint16_t *xb = (uint16_t *)moek_thread_scratch((size_t)nx * kp / 2 + 16);
  for (int m = 0; m < nx; m++) {
    const float *x = X + (size_t)m * ldx;
    for (size_t k = 0; k < kp; k += 16) {
      const __mmask16 live = k >= K ? 0 : K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u);
      const __m512i h = moek_round_bf16_16(_mm512_maskz_loadu_epi32(live, x + k));
      _mm256_storeu_si256((__m256i *)(xb + m * kp + k), _mm512_cvtepi32_epi16(h));
    }
  }
  return xb;
}
#else
#include "internal.h"
int moek_bf16_compute_supported(void) { return 0; }
void moek_gemv_bf16_dot(const uint16_t *W, size_t ldw, const float *X, size_t ldx, int nx, float *Y, size_t ldy,
                        size_t r0, size_t r1, size_t K, const void *next) {
  (void)W; (void)ldw; (void)X; (void)ldx; (void)nx; (void)Y; (void)ldy; (void)r0; (void)r1; (void)K; (void)next;
}
size_t moek_gemm_bf16_packed_size(size_t M, size_t K) { (void)M; (void)K; return 0; }
void moek_gemm_bf16_pack_a(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1, uint16_t *Ap) {
  (void)A; (void)lda; (void)M; (void)K; (void)t0; (void)t1; (void)Ap;
}
void moek_gemm_bf16_packed(const uint16_t *Ap, size_t M, const uint16_t *W, size_t ldw, float *C, size_t ldc,
                           size_t n0, size_t n1, size_t K) {
  (void)Ap; (void)M; (void)W; (void)ldw; (void)C; (void)ldc; (void)n0; (void)n1; (void)K;
}
#endif
