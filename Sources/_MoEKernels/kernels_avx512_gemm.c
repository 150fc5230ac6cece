// AVX-512 matrix multiply on packed A: the row-vector (BLIS-style) orientation.
//
// The micro-tile is MR rows of C by NR = 32 columns (two zmm registers per row). Each step of
// the reduction loads 32 packed weights (two vectors) and broadcasts MR values of A, so each
// row's accumulators map straight onto a row of C: the tile is stored with two (masked) vector
// stores per row, with no transposition. The weight block is packed once per NR columns into an
// L1-sized buffer [kc][NR], then reused by every MR panel of A:
//   - W stored [N, K] (the Linear layout): 16x16 blocks are transposed in registers, widening
//     f16/bf16 on the way;
//   - W stored transposed, [K, N] (the backward passes): each k is one contiguous row, so the
//     block is a straight copy.
// While a tile computes, the source lines of the next weight block are prefetched, a slice
// before each MR panel, so a cold block streams from memory instead of stalling the packer.
// Row indices: A's rows, or the K rows of W stored transposed, may be picked from a bigger
// matrix through an index (an MoE's tokens, grouped by expert), read in place with no gather.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "internal.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx2,prfchw"))), apply_to = function)

#define INLINE static inline __attribute__((always_inline))

enum { V_MR = MOEK_AVX512_MR, V_NR = MOEK_AVX512_NR, V_KC = MOEK_AVX512_KC, V_MC = 24 };

#include "avx512_loads.h"

INLINE __mmask16 lanes(size_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

/// Transposes 16 vectors in place: r[i] lane j becomes r[j] lane i.
INLINE void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  // Now r[4q + s] holds, in each 128-bit lane L, rows 4q..4q+3 of column 4L + s.
  for (int i = 0; i < 4; i++) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
    t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xdd);
    t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
    t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xdd);
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
    r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
    r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xdd);
  }
}

/// Block-format weight rows widened before packing: NR rows of the whole blocks that cover a K
/// block (a K-quant's 256 values hold two of V_KC).
static __thread float widened[V_NR * (V_KC + 256)];

/// Packs weight rows [n, n + nr) x columns [k0, k0 + kc) of W [N, K] into Wp[k][V_NR]; block
/// formats (ldw in elements, a whole number of blocks per row) are dequantized row by row first.
static void pack_w_rows(const void *W, int dt, size_t ldw, size_t n, size_t nr, size_t k0, size_t kc,
                        float *Wp) {
  if (dt >= MOEK_Q8_0) {
    const size_t unit = (size_t)moek_block_elements(dt), bsz = (size_t)moek_block_bytes(dt);
    const size_t b0 = k0 / unit, b1 = (k0 + kc + unit - 1) / unit, span = (b1 - b0) * unit;
    for (size_t j = 0; j < nr; j++)
      moek_dequantize((const char *)W + (n + j) * (ldw / unit) * bsz + b0 * bsz, dt, widened + j * span, span);
    W = widened + (k0 - b0 * unit);
    dt = MOEK_F32, ldw = span, n = 0, k0 = 0;
  }
  const size_t esz = moek_dtype_size(dt);
  for (size_t g = 0; g < V_NR; g += 16) {
    for (size_t kk = 0; kk < kc; kk += 16) {
      const size_t kn = (kc - kk) < 16 ? (kc - kk) : 16;
      const __mmask16 km = lanes(kn);
      __m512 r[16];
#pragma clang loop unroll(full)
      for (int j = 0; j < 16; j++) {
        const size_t row = g + (size_t)j;
        r[j] = row < nr ? ld16_mask((const char *)W + (n + row) * ldw * esz, k0 + kk, dt, km) : _mm512_setzero_ps();
      }
      transpose16(r);
      for (size_t i = 0; i < kn; i++) _mm512_store_ps(Wp + (kk + i) * V_NR + g, r[i]);
    }
  }
}

/// Packs columns [n, n + nr) of rows [k0, k0 + kc) of W^T stored [K, N] (f32) into Wp[k][V_NR];
/// with `wix`, row k is row wix[k] of Wt.
static void pack_w_cols(const float *Wt, size_t ldw, const intptr_t *wix, size_t n, size_t nr, size_t k0, size_t kc,
                        float *Wp) {
  const __mmask16 m0 = lanes(nr), m1 = lanes(nr > 16 ? nr - 16 : 0);
  for (size_t k = 0; k < kc; k++) {
    const float *src = Wt + (wix ? (size_t)wix[k0 + k] : k0 + k) * ldw + n;
    _mm512_store_ps(Wp + k * V_NR, _mm512_maskz_loadu_ps(m0, src));
    _mm512_store_ps(Wp + k * V_NR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
  }
}

/// Packs panels [t0, t1) of A as `moek_pack_a_generic` does, for MR = V_MR and KC = V_KC.
/// A is [M, K] with row stride lda, or with `transposed` stored [K, M] (A[m, k] at
/// A[k * lda + m]). Row-major A goes 16 columns of up to 12 rows at a time, transposed in
/// registers; transposed A is 12 contiguous floats per k, one masked load and store.
static void pack_a(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap, int transposed) {
  const size_t mtiles = (M + V_MR - 1) / V_MR;
  const __mmask16 panel = (__mmask16)((1u << V_MR) - 1u);
  for (size_t k0 = 0; k0 < K; k0 += V_KC) {
    const size_t kc = (K - k0) < V_KC ? (K - k0) : V_KC;
    float *block = Ap + k0 * mtiles * V_MR;
    for (size_t t = t0; t < t1 && t < mtiles; t++) {
      const size_t m0 = t * V_MR, rows = (M - m0) < V_MR ? (M - m0) : V_MR;
      float *dst = block + t * V_MR * kc;
      if (transposed) {
        const __mmask16 rm = lanes(rows);
        for (size_t k = 0; k < kc; k++)
          _mm512_mask_storeu_ps(dst + k * V_MR, panel, _mm512_maskz_loadu_ps(rm, A + (k0 + k) * lda + m0));
        continue;
      }
      for (size_t kk = 0; kk < kc; kk += 16) {
        const size_t kn = (kc - kk) < 16 ? (kc - kk) : 16;
        const __mmask16 km = lanes(kn);
        __m512 r[16];
#pragma clang loop unroll(full)
        for (int i = 0; i < 16; i++)
          r[i] = (size_t)i < rows ? _mm512_maskz_loadu_ps(km, A + (m0 + (size_t)i) * lda + k0 + kk) : _mm512_setzero_ps();
        transpose16(r);
        for (size_t j = 0; j < kn; j++) _mm512_mask_storeu_ps(dst + (kk + j) * V_MR, panel, r[j]);
      }
    }
  }
}

void moek_gemm_pack_a_avx512(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap) {
  pack_a(A, lda, M, K, t0, t1, Ap, 0);
}

void moek_gemm_pack_a_t_avx512(const float *At, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap) {
  pack_a(At, lda, M, K, t0, t1, Ap, 1);
}

/// How the micro-kernel reads A: packed panels [kc][V_MR], A itself row-major, A stored
/// transposed, or either with its rows (row-major) or K rows (transposed) picked through an
/// index. Only the packed form needs a packing pass; the others broadcast straight from the
/// caller's matrix.
enum { A_PACKED = 0, A_ROWS = 1, A_COLS = 2, A_INDEXED = 3, A_INDEXED_COLS = 4 };

/// C[0..<R, 0..<nr] (+)= A (R rows, kc columns) times Wp[kc][V_NR]; R and `form` are constants.
/// Element (i, k) of A is a[k * V_MR + i] (packed), a[i * lda + k] (rows), a[k * lda + i]
/// (cols), a[ix[i] * lda + k] (indexed) or a[ix[k] * lda + i] (indexed cols).
INLINE void ukernel_rows(const int R, const int form, const float *a, size_t lda, const intptr_t *ix,
                         const float *Wp, size_t kc, float *C, size_t ldc, size_t nr, int first) {
  __m512 c0[V_MR], c1[V_MR];
  const float *row[V_MR];
#pragma clang loop unroll(full)
  for (int i = 0; i < R; i++) row[i] = form == A_INDEXED ? a + (size_t)ix[i] * lda : a + (size_t)i * lda;
  // Fetch the tile of C for writing while the products run: it is added to at the end, or
  // overwritten, and a new output (cold, the MoE's per-expert results) otherwise stalls every
  // store on its line's read-for-ownership (interleaved in-step A/B: expert products 4-13% faster).
#pragma clang loop unroll(full)
  for (int i = 0; i < R; i++) {
    _mm_prefetch((const char *)(C + (size_t)i * ldc), _MM_HINT_ET0);
    _mm_prefetch((const char *)(C + (size_t)i * ldc + nr - 1), _MM_HINT_ET0);
  }
#pragma clang loop unroll(full)
  for (int i = 0; i < R; i++) { c0[i] = _mm512_setzero_ps(); c1[i] = _mm512_setzero_ps(); }
  for (size_t k = 0; k < kc; k++) {
    const __m512 w0 = _mm512_load_ps(Wp + k * V_NR), w1 = _mm512_load_ps(Wp + k * V_NR + 16);
#pragma clang loop unroll(full)
    for (int i = 0; i < R; i++) {
      const float ak = form == A_PACKED ? a[k * V_MR + i]
                       : form == A_COLS ? a[k * lda + i]
                       : form == A_INDEXED_COLS ? a[(size_t)ix[k] * lda + i] : row[i][k];
      const __m512 ai = _mm512_set1_ps(ak);
      c0[i] = _mm512_fmadd_ps(ai, w0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, w1, c1[i]);
    }
  }
  const __mmask16 m0 = lanes(nr), m1 = lanes(nr > 16 ? nr - 16 : 0);
#pragma clang loop unroll(full)
  for (int i = 0; i < R; i++) {
    float *row = C + (size_t)i * ldc;
    if (!first) {
      c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, row));
      c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, row + 16));
    }
    _mm512_mask_storeu_ps(row, m0, c0[i]);
    _mm512_mask_storeu_ps(row + 16, m1, c1[i]);
  }
}

#define UKERNEL(name, form)                                                                               \
  static void name(const float *a, size_t lda, const intptr_t *ix, const float *Wp, size_t kc, float *C,    \
                   size_t ldc, size_t mr, size_t nr, int first) {                                           \
    switch (mr) {                                                                                           \
      case 1: ukernel_rows(1, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 2: ukernel_rows(2, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 3: ukernel_rows(3, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 4: ukernel_rows(4, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 5: ukernel_rows(5, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 6: ukernel_rows(6, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 7: ukernel_rows(7, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 8: ukernel_rows(8, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 9: ukernel_rows(9, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                             \
      case 10: ukernel_rows(10, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                           \
      case 11: ukernel_rows(11, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                           \
      default: ukernel_rows(V_MR, form, a, lda, ix, Wp, kc, C, ldc, nr, first); break;                        \
    }                                                                                                       \
  }
UKERNEL(ukernel_packed, A_PACKED)
UKERNEL(ukernel_a_rows, A_ROWS)
UKERNEL(ukernel_a_cols, A_COLS)
UKERNEL(ukernel_a_indexed, A_INDEXED)
UKERNEL(ukernel_a_indexed_cols, A_INDEXED_COLS)
#undef UKERNEL

/// C[0..<2 MR, 0..<nr] (+)= A times Wp[kc][V_NR] for nr <= 16: two panels of A at once, one
/// register per row, so a narrow product (a LoRA rank, an MoE router's experts) fills every
/// accumulator instead of half of them. Packed A's second panel starts V_MR * kc after the first.
INLINE void ukernel_narrow(const int form, const float *a, size_t lda, const intptr_t *ix, const float *Wp, size_t kc,
                           float *C, size_t ldc, size_t nr, int first) {
  enum { R = 2 * V_MR };
  __m512 c[R];
  const float *row[R];
#pragma clang loop unroll(full)
  for (int i = 0; i < R; i++) {
    row[i] = form == A_INDEXED ? a + (size_t)ix[i] * lda : a + (size_t)i * lda;
    _mm_prefetch((const char *)(C + (size_t)i * ldc), _MM_HINT_ET0);
    c[i] = _mm512_setzero_ps();
  }
  for (size_t k = 0; k < kc; k++) {
    const __m512 w = _mm512_load_ps(Wp + k * V_NR);
#pragma clang loop unroll(full)
    for (int i = 0; i < R; i++) {
      const float ak = form == A_PACKED ? a[(i < V_MR ? 0 : V_MR * kc) + k * V_MR + (i % V_MR)]
                       : form == A_COLS ? a[k * lda + i]
                       : form == A_INDEXED_COLS ? a[(size_t)ix[k] * lda + i] : row[i][k];
      c[i] = _mm512_fmadd_ps(_mm512_set1_ps(ak), w, c[i]);
    }
  }
  const __mmask16 m = lanes(nr);
#pragma clang loop unroll(full)
  for (int i = 0; i < R; i++) {
    float *out = C + (size_t)i * ldc;
    if (!first) c[i] = _mm512_add_ps(c[i], _mm512_maskz_loadu_ps(m, out));
    _mm512_mask_storeu_ps(out, m, c[i]);
  }
}

/// The source bytes of the weight block for columns [n, n + nr) and reduction rows [k0, k0 + kc):
/// `count` runs of `bytes` bytes, the first at `base`, each `stride` bytes after the last.
typedef struct {
  const char *base;
  size_t count, bytes, stride, lines_per_run;
  const intptr_t *ix;  // when set, run r starts at base + ix[r] * stride
} wspan;

static wspan block_span(const void *W, int dt, size_t ldw, int wt, const intptr_t *wix, size_t n, size_t nr,
                        size_t k0, size_t kc) {
  const size_t esz = moek_dtype_size(dt);
  wspan s;
  s.ix = NULL;
  if (dt >= MOEK_Q8_0) {  // block formats: whole blocks of each row
    const size_t unit = (size_t)moek_block_elements(dt), bsz = (size_t)moek_block_bytes(dt), row = ldw / unit * bsz;
    s.base = (const char *)W + n * row + k0 / unit * bsz;
    s.count = nr; s.bytes = ((k0 + kc + unit - 1) / unit - k0 / unit) * bsz; s.stride = row;
    s.lines_per_run = (s.bytes + 63) / 64 + 1;
    return s;
  }
  if (wt) {
    s.base = (const char *)W + ((wix ? 0 : k0 * ldw) + n) * esz;
    s.count = kc; s.bytes = nr * esz;
    if (wix) s.ix = wix + k0;
  } else {
    s.base = (const char *)W + (n * ldw + k0) * esz;
    s.count = nr; s.bytes = kc * esz;
  }
  s.stride = ldw * esz;
  s.lines_per_run = (s.bytes + 63) / 64 + 1;  // an unaligned run may touch one line more
  return s;
}

/// Prefetches lines [l0, l1) of a span (into L2), numbered run by run.
static void prefetch_span(const wspan *s, size_t l0, size_t l1) {
  for (size_t l = l0; l < l1; l++) {
    const size_t run = l / s->lines_per_run, off = (l % s->lines_per_run) * 64;
    const char *p = s->base + (s->ix ? (size_t)s->ix[run] : run) * s->stride + (off < s->bytes ? off : s->bytes - 1);
    _mm_prefetch(p, _MM_HINT_T1);
  }
}

/// Prefetches panel t of A for the K block [k0, k0 + kc) into L2.
static void prefetch_a(int form, const float *A, size_t lda, const intptr_t *aix, size_t M, size_t t, size_t k0,
                       size_t kc, size_t mtiles) {
  const size_t m0 = t * V_MR, rows = (M - m0) < V_MR ? (M - m0) : V_MR;
  if (form == A_PACKED) {
    const char *p = (const char *)(A + k0 * mtiles * V_MR + t * V_MR * kc);
    for (size_t b = 0; b < kc * V_MR * sizeof(float); b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
  } else if (form == A_ROWS || form == A_INDEXED) {
    for (size_t i = 0; i < rows; i++) {
      const char *p = (const char *)(A + (form == A_INDEXED ? (size_t)aix[m0 + i] : m0 + i) * lda + k0);
      for (size_t b = 0; b < kc * sizeof(float); b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
      _mm_prefetch(p + kc * sizeof(float) - 1, _MM_HINT_T1);
    }
  } else {
    for (size_t k = 0; k < kc; k++) {
      const char *p = (const char *)(A + (form == A_INDEXED_COLS ? (size_t)aix[k0 + k] : k0 + k) * lda + m0);
      _mm_prefetch(p, _MM_HINT_T1);
      _mm_prefetch(p + rows * sizeof(float) - 1, _MM_HINT_T1);
    }
  }
}

/// The block driver for every form of A (`A_PACKED`: A is the packed panels, lda unused;
/// `A_INDEXED`: row m of A is row aix[m] of A; `A_INDEXED_COLS`: A stored transposed, its
/// reduction row k is row aix[k]). With wt, `wix` (or NULL) indexes W's K rows.
static void gemm_avx512(int form, const float *A, size_t lda, const intptr_t *aix, size_t M, const void *W, int dt,
                        size_t ldw, int wt, const intptr_t *wix, int acc, float *C, size_t ldc, size_t n0, size_t n1,
                        size_t K) {
  if (M == 0 || n1 <= n0 || (K == 0 && acc)) return;
  if (K == 0) {  // empty reduction: C = 0
    for (size_t m = 0; m < M; m++) memset(C + m * ldc + n0, 0, (n1 - n0) * sizeof(float));
    return;
  }
  const size_t mtiles = (M + V_MR - 1) / V_MR;
  float *Wp = moek_thread_scratch(V_NR * V_KC);
  for (size_t k0 = 0; k0 < K; k0 += V_KC) {
    const size_t kc = (K - k0) < V_KC ? (K - k0) : V_KC;
    const float *Ablock = form == A_PACKED ? A + k0 * mtiles * V_MR : NULL;
    // Panels in chunks of V_MC, so the chunk of packed A that every weight block meets stays
    // in L2 when M is large (the weight block is then packed once per chunk).
    for (size_t t0 = 0; t0 < mtiles; t0 += V_MC) {
      const size_t t1 = (mtiles - t0) < V_MC ? mtiles : t0 + V_MC, tn = t1 - t0;
      for (size_t n = n0; n < n1; n += V_NR) {
        const size_t nr = (n1 - n) < V_NR ? (n1 - n) : V_NR;
        if (wt) pack_w_cols((const float *)W, ldw, wix, n, nr, k0, kc, Wp);
        else pack_w_rows(W, dt, ldw, n, nr, k0, kc, Wp);
        // The next block: the next NR columns, or the first of the next chunk or K block.
        size_t nn = n + V_NR, nk0 = k0;
        if (nn >= n1) { nn = n0; if (t1 == mtiles) nk0 = k0 + V_KC; }
        wspan next = {0};
        size_t lines = 0;
        if (nk0 < K) {
          const size_t nnr = (n1 - nn) < V_NR ? (n1 - nn) : V_NR, nkc = (K - nk0) < V_KC ? (K - nk0) : V_KC;
          next = block_span(W, dt, ldw, wt, wix, nn, nnr, nk0, nkc);
          lines = next.count * next.lines_per_run;
        }
        for (size_t t = t0; t < t1; t++) {
          if (lines) prefetch_span(&next, lines * (t - t0) / tn, lines * (t - t0 + 1) / tn);
          // The first weight block of a K block meets each panel of A first: fetch the next panel
          // while this one computes (later blocks find A in L2).
          if (n == n0 && t + 1 < t1) prefetch_a(form, A, lda, aix, M, t + 1, k0, kc, mtiles);
          const size_t mr = (M - t * V_MR) < V_MR ? (M - t * V_MR) : V_MR;
          float *Ct = C + t * V_MR * ldc + n;
          const int first = k0 == 0 && !acc;
          if (nr <= 16 && t + 1 < t1 && M - t * V_MR >= 2 * V_MR) {  // two full panels, one narrow tile
            if (lines) prefetch_span(&next, lines * (t + 1 - t0) / tn, lines * (t + 2 - t0) / tn);
            if (n == n0 && t + 2 < t1) prefetch_a(form, A, lda, aix, M, t + 2, k0, kc, mtiles);
            if (form == A_PACKED) ukernel_narrow(A_PACKED, Ablock + t * V_MR * kc, 0, NULL, Wp, kc, Ct, ldc, nr, first);
            else if (form == A_ROWS) ukernel_narrow(A_ROWS, A + t * V_MR * lda + k0, lda, NULL, Wp, kc, Ct, ldc, nr, first);
            else if (form == A_INDEXED) ukernel_narrow(A_INDEXED, A + k0, lda, aix + t * V_MR, Wp, kc, Ct, ldc, nr, first);
            else if (form == A_INDEXED_COLS)
              ukernel_narrow(A_INDEXED_COLS, A + t * V_MR, lda, aix + k0, Wp, kc, Ct, ldc, nr, first);
            else ukernel_narrow(A_COLS, A + k0 * lda + t * V_MR, lda, NULL, Wp, kc, Ct, ldc, nr, first);
            t++;
            continue;
          }
          if (form == A_PACKED) ukernel_packed(Ablock + t * V_MR * kc, 0, NULL, Wp, kc, Ct, ldc, mr, nr, first);
          else if (form == A_ROWS) ukernel_a_rows(A + t * V_MR * lda + k0, lda, NULL, Wp, kc, Ct, ldc, mr, nr, first);
          else if (form == A_INDEXED) ukernel_a_indexed(A + k0, lda, aix + t * V_MR, Wp, kc, Ct, ldc, mr, nr, first);
          else if (form == A_INDEXED_COLS)
            ukernel_a_indexed_cols(A + t * V_MR, lda, aix + k0, Wp, kc, Ct, ldc, mr, nr, first);
          else ukernel_a_cols(A + k0 * lda + t * V_MR, lda, NULL, Wp, kc, Ct, ldc, mr, nr, first);
        }
      }
    }
  }
}

void moek_gemm_packed_avx512(const float *Ap, size_t M, const void *W, int dt, size_t ldw, int wt, int acc,
                             float *C, size_t ldc, size_t n0, size_t n1, size_t K) {
  gemm_avx512(A_PACKED, Ap, 0, NULL, M, W, dt, ldw, wt, NULL, acc, C, ldc, n0, n1, K);
}

void moek_gemm_direct_avx512(const float *A, size_t lda, const intptr_t *aix, int ta, size_t M, const void *W, int dt,
                             size_t ldw, int wt, const intptr_t *wix, int acc, float *C, size_t ldc, size_t n0,
                             size_t n1, size_t K) {
  const int form = ta ? (aix ? A_INDEXED_COLS : A_COLS) : aix ? A_INDEXED : A_ROWS;
  gemm_avx512(form, A, lda, aix, M, W, dt, ldw, wt, wt ? wix : NULL, acc, C, ldc, n0, n1, K);
}

#pragma clang attribute pop
#endif
