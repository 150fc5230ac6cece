// Lossless packed bf16 rows, for the expert cache: a bf16 weight's exponent spans few values
// within 32 neighbours, so each block of 32 stores one base exponent and 4-bit offsets from it.
//
// A packed row of K (a multiple of 32) is K/32 blocks of 49 bytes (64 raw), each holding its 32
// weights in the stored order s[q] = w[ORDER[q]] (0-3, 16-19, 4-7, 20-23, ...: the order in
// which AVX-512's in-lane unpacking of 16-bit words into 32-bit lanes puts weights 0-15 in one
// register and 16-31 in the other, as the bf16 leaves load them):
//   byte 0        the block's least exponent e0
//   bytes 1..16   exponent offsets: byte q = (e(s[q]) - e0) | (e(s[q + 16]) - e0) << 4
//   bytes 17..48  sign << 7 | the 7 mantissa bits of s[q]
// A row with a block whose exponents span more than 16 values stays raw (2K bytes); a matrix
// keeps its rows' byte offsets, so its rows are of the two sizes. Unpacking gives the stored
// bf16 words back bit for bit, and the products run the bf16 leaves on them: the results are
// those of the raw weight, exactly.
#include <stdlib.h>
#include "internal.h"

enum { BLOCK = 32, BLOCK_BYTES = 49 };

/// The weight each stored position of a block holds, and (NATURAL) the position of each weight.
static const uint8_t ORDER[BLOCK] = {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23,
                                     8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};
static const uint8_t NATURAL[BLOCK] = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27,
                                       4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};

size_t moek_bf16p_row_bytes(size_t K) { return K / BLOCK * BLOCK_BYTES; }

/// Whether every block of the row spans at most 16 exponents.
static int row_fits(const uint16_t *w, size_t K) {
  for (size_t b = 0; b < K; b += BLOCK) {
    int lo = 255, hi = 0;
    for (int i = 0; i < BLOCK; i++) {
      const int e = (w[b + i] >> 7) & 0xFF;
      lo = e < lo ? e : lo;
      hi = e > hi ? e : hi;
    }
    if (hi - lo > 15) return 0;
  }
  return 1;
}

/// One fitting row packed. Each block is read whole before its bytes are written, and the
/// output never runs ahead of the input, so `out` may overlap `w` from below (in place).
static void pack_row(const uint16_t *w, size_t K, uint8_t *out) {
  for (size_t b = 0; b < K; b += BLOCK) {
    uint16_t v[BLOCK];
    for (int q = 0; q < BLOCK; q++) v[q] = w[b + ORDER[q]];
    int lo = 255;
    for (int i = 0; i < BLOCK; i++) {
      const int e = (v[i] >> 7) & 0xFF;
      lo = e < lo ? e : lo;
    }
    uint8_t *o = out + b / BLOCK * BLOCK_BYTES;
    o[0] = (uint8_t)lo;
    for (int i = 0; i < 16; i++)
      o[1 + i] = (uint8_t)((((v[i] >> 7) & 0xFF) - lo) | ((((v[i + 16] >> 7) & 0xFF) - lo) << 4));
    for (int i = 0; i < BLOCK; i++) o[17 + i] = (uint8_t)(((v[i] >> 8) & 0x80) | (v[i] & 0x7F));
  }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/// The index vector of `_mm512_permutexvar_epi16` that puts a block's words in `table`'s order.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline __m512i word_order(const uint8_t *table) {
  return _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)table));
}

/// The 32 exponents of block v as bytes, and their least and greatest (AVX-512BW;
/// `phminposuw` finds the least of 8).
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline __m256i
block_exponents(__m512i v, int *lo, int *hi) {
  const __m512i e = _mm512_and_si512(_mm512_srli_epi16(v, 7), _mm512_set1_epi16(0xFF));
  const __m256i m = _mm256_min_epu16(_mm512_castsi512_si256(e), _mm512_extracti64x4_epi64(e, 1));
  const __m256i x = _mm256_max_epu16(_mm512_castsi512_si256(e), _mm512_extracti64x4_epi64(e, 1));
  const __m128i m8 = _mm_min_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
  const __m128i x8 = _mm_max_epu16(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
  *lo = _mm_extract_epi16(_mm_minpos_epu16(m8), 0);
  *hi = 0xFFFF - _mm_extract_epi16(_mm_minpos_epu16(_mm_xor_si128(x8, _mm_set1_epi16(-1))), 0);
  return _mm512_cvtepi16_epi8(e);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static int row_fits_avx512(const uint16_t *w, size_t K) {
  for (size_t b = 0; b < K; b += BLOCK) {
    int lo, hi;
    (void)block_exponents(_mm512_loadu_si512(w + b), &lo, &hi);
    if (hi - lo > 15) return 0;
  }
  return 1;
}

/// `pack_row` with AVX-512BW: each block loaded whole before its 49 bytes are stored.
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void pack_row_avx512(const uint16_t *w, size_t K,
                                                                                 uint8_t *out) {
  const __m512i order = word_order(ORDER);
  for (size_t b = 0; b < K; b += BLOCK, out += BLOCK_BYTES) {
    const __m512i v = _mm512_permutexvar_epi16(order, _mm512_loadu_si512(w + b));
    int lo, hi;
    const __m256i off = _mm256_sub_epi8(block_exponents(v, &lo, &hi), _mm256_set1_epi8((char)lo));
    const __m128i nibbles = _mm_or_si128(_mm256_castsi256_si128(off), _mm_slli_epi16(_mm256_extracti128_si256(off, 1), 4));
    // sign << 7 | mantissa: (v >> 8) & 0x80 | v & 0x7F, narrowed to bytes.
    const __m512i sm = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 8), _mm512_set1_epi16(0x80),
                                                 _mm512_and_si512(v, _mm512_set1_epi16(0x7F)), 0xEA);
    const __m256i smb = _mm512_cvtepi16_epi8(sm);
    out[0] = (uint8_t)lo;
    _mm_storeu_si128((__m128i *)(out + 1), nibbles);
    _mm256_storeu_si256((__m256i *)(out + 17), smb);
  }
}
#endif

size_t moek_bf16p_pack(const uint16_t *W, size_t N, size_t K, uint8_t *out, uint64_t *offsets) {
  const size_t raw = K * 2, packed = moek_bf16p_row_bytes(K);
  size_t at = 0;
  offsets[0] = 0;
#if defined(__x86_64__) || defined(__i386__)
  const int wide = moek_isa() == MOEK_ISA_AVX512;
#else
  const int wide = 0;
#endif
  for (size_t r = 0; r < N; r++) {
    const uint16_t *w = W + r * K;
#if defined(__x86_64__) || defined(__i386__)
    if (wide && K % BLOCK == 0 && row_fits_avx512(w, K)) {
      pack_row_avx512(w, K, out + at);
      at += packed;
      offsets[r + 1] = at;
      continue;
    }
#endif
    if (!wide && K % BLOCK == 0 && row_fits(w, K)) {
      pack_row(w, K, out + at);
      at += packed;
    } else {
      memmove(out + at, w, raw);
      at += raw;
    }
    offsets[r + 1] = at;
  }
  return at;
}

/// One packed row back to bf16 words, 32 at a time in 16-bit lanes (AVX-512BW).
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/// A packed block's 32 bf16 words, in the stored order, in 16-bit lanes.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline __m512i block_words(const uint8_t *p) {
  const __m128i offs = _mm_loadu_si128((const __m128i *)(p + 1));
  const __m256i both = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(offs), _mm_srli_epi16(offs, 4), 1),
                                        _mm256_set1_epi8(15));
  const __m512i e = _mm512_add_epi16(_mm512_cvtepu8_epi16(both), _mm512_set1_epi16(p[0]));
  const __m512i sm = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 17)));
  // (sm << 8) & 0x8000 | e << 7, then | sm & 0x7F
  const __m512i v = _mm512_ternarylogic_epi32(_mm512_slli_epi16(sm, 8), _mm512_set1_epi16((short)0x8000),
                                              _mm512_slli_epi16(e, 7), 0xEA);
  return _mm512_ternarylogic_epi32(sm, _mm512_set1_epi16(0x7F), v, 0xEA);
}

/// One packed row back to bf16 words in their order (AVX-512BW).
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void unpack_row_avx512(const uint8_t *p, size_t K,
                                                                                   uint16_t *w) {
  const __m512i natural = word_order(NATURAL);
  for (size_t b = 0; b < K; b += BLOCK, p += BLOCK_BYTES)
    _mm512_storeu_si512(w + b, _mm512_permutexvar_epi16(natural, block_words(p)));
}
#endif

static void unpack_row_scalar(const uint8_t *p, size_t K, uint16_t *w) {
  for (size_t b = 0; b < K; b += BLOCK, p += BLOCK_BYTES) {
    for (int q = 0; q < BLOCK; q++) {
      const int off = q < 16 ? p[1 + q] & 15 : p[1 + q - 16] >> 4;
      const int sm = p[17 + q];
      w[b + ORDER[q]] = (uint16_t)(((sm & 0x80) << 8) | ((p[0] + off) << 7) | (sm & 0x7F));
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
/// One packed row back to bf16 words in their order with AVX2: each block's words built 16 at a
/// time, then its 4-word runs put back in order (stored 0, 2, 4, 6 are weights 0-15).
__attribute__((target("avx2"))) static void unpack_row_avx2(const uint8_t *p, size_t K, uint16_t *w) {
  const __m256i sign = _mm256_set1_epi16((short)0x8000), mant = _mm256_set1_epi16(0x7F);
  const __m128i nibble = _mm_set1_epi8(15);
  for (size_t b = 0; b < K; b += BLOCK, p += BLOCK_BYTES) {
    const __m128i offs = _mm_loadu_si128((const __m128i *)(p + 1));
    const __m256i base = _mm256_set1_epi16(p[0]);
    const __m256i e0 = _mm256_add_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(offs, nibble)), base);
    const __m256i e1 = _mm256_add_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(offs, 4), nibble)), base);
    const __m256i s0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 17)));
    const __m256i s1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 33)));
    // stored words 0-15 and 16-31: (sm << 8) & 0x8000 | e << 7 | sm & 0x7F
    const __m256i a = _mm256_or_si256(_mm256_or_si256(_mm256_and_si256(_mm256_slli_epi16(s0, 8), sign), _mm256_slli_epi16(e0, 7)),
                                      _mm256_and_si256(s0, mant));
    const __m256i c = _mm256_or_si256(_mm256_or_si256(_mm256_and_si256(_mm256_slli_epi16(s1, 8), sign), _mm256_slli_epi16(e1, 7)),
                                      _mm256_and_si256(s1, mant));
    // 4-word runs: a = [0-3, 16-19 | 4-7, 20-23], c = [8-11, 24-27 | 12-15, 28-31].
    _mm256_storeu_si256((__m256i *)(w + b), _mm256_permute4x64_epi64(_mm256_unpacklo_epi64(a, c), 0xD8));
    _mm256_storeu_si256((__m256i *)(w + b + 16), _mm256_permute4x64_epi64(_mm256_unpackhi_epi64(a, c), 0xD8));
  }
}
#endif

int moek_bf16p_fast(void) { return moek_isa() == MOEK_ISA_AVX512; }

void moek_bf16p_unpack_rows(const uint8_t *P, const uint64_t *offsets, size_t K, size_t r0, size_t r1, uint16_t *W) {
  const size_t raw = K * 2;
#if defined(__x86_64__) || defined(__i386__)
  const int wide = moek_isa() == MOEK_ISA_AVX512, avx2 = moek_isa() == MOEK_ISA_AVX2;
#endif
  for (size_t r = r0; r < r1; r++) {
    const uint8_t *p = P + offsets[r];
    uint16_t *w = W + (r - r0) * K;
    if (offsets[r + 1] - offsets[r] == raw) {
      memcpy(w, p, raw);
      continue;
    }
#if defined(__x86_64__) || defined(__i386__)
    if (wide) {
      unpack_row_avx512(p, K, w);
      continue;
    }
    if (avx2) {
      unpack_row_avx2(p, K, w);
      continue;
    }
#endif
    unpack_row_scalar(p, K, w);
  }
}

/// Rows unpacked per call of the leaf: about 16 KiB of bf16, so they are still in L1 when read.
static size_t chunk_rows(size_t K) { return K >= 8192 ? 1 : 8192 / K; }

/// This thread's buffer of unpacked rows: scratch slot 1, since the leaves use slot 0.
static uint16_t *rows_buffer(size_t K) { return (uint16_t *)moek_thread_scratch_slot(1, (chunk_rows(K) * K + 1) / 2); }

#if defined(__x86_64__) || defined(__i386__)
/// The 32 bf16 words at word k of a row in the stored order (a raw row's put in it with
/// `order`, `word_order(ORDER)`), or with `natural` (`word_order(NATURAL)`) in their own order.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline __m512i
stored_words(const uint8_t *p, int raw, size_t k, __m512i order) {
  return raw ? _mm512_permutexvar_epi16(order, _mm512_loadu_si512(p + 2 * k)) : block_words(p + k / BLOCK * BLOCK_BYTES);
}
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline __m512i
natural_words(const uint8_t *p, int raw, size_t k, __m512i natural) {
  return raw ? _mm512_loadu_si512(p + 2 * k) : _mm512_permutexvar_epi16(natural, block_words(p + k / BLOCK * BLOCK_BYTES));
}

/// Weights 0-15 (half 0) or 16-31 (half 1) of a block in the stored order widened to f32, in
/// their own order, as the bf16 leaves load them: one in-lane unpack with zeros.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline __m512 block_half(__m512i v, int half) {
  const __m512i zero = _mm512_setzero_si512();
  return _mm512_castsi512_ps(half ? _mm512_unpackhi_epi16(zero, v) : _mm512_unpacklo_epi16(zero, v));
}

/// One packed row against NX f32 activation rows, the sums of the AVX-512 bf16 matrix-vector
/// leaves in their order: with one activation row of K <= 4096, two accumulators (k mod 32 below
/// 16, and above) as its one-row leaf; else one per activation row, 16 at a time, as its tiles.
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline void
fused_row(const uint8_t *p, int raw, size_t K, const float *X, size_t ldx, const int NX, float *Y, size_t ldy, size_t r,
          __m512i order) {
  if (NX == 1 && K <= 4096) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (size_t k = 0; k < K; k += BLOCK) {
      const __m512i v = stored_words(p, raw, k, order);
      a0 = _mm512_fmadd_ps(block_half(v, 0), _mm512_loadu_ps(X + k), a0);
      a1 = _mm512_fmadd_ps(block_half(v, 1), _mm512_loadu_ps(X + k + 16), a1);
    }
    Y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    return;
  }
  __m512 acc[4];
  for (int m = 0; m < NX; m++) acc[m] = _mm512_setzero_ps();
  for (size_t k = 0; k < K; k += BLOCK) {
    const __m512i v = stored_words(p, raw, k, order);
    const __m512 lo = block_half(v, 0), hi = block_half(v, 1);
    for (int m = 0; m < NX; m++) acc[m] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(X + (size_t)m * ldx + k), acc[m]);
    for (int m = 0; m < NX; m++) acc[m] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(X + (size_t)m * ldx + k + 16), acc[m]);
  }
  for (int m = 0; m < NX; m++) Y[(size_t)m * ldy + r] = _mm512_reduce_add_ps(acc[m]);
}

/// Rows [r0, r1) in order, each through ROW(p, stored, NX, r) for NX = nx (1 to 4) a constant:
/// p the row's bytes, stored whether it is raw. At the last row the first 4 KiB of `next` is
/// prefetched into L2, as the bf16 leaves do.
#define WALK_ROWS(ROW)                                                                         \
  for (size_t r = r0; r < r1; r++) {                                                           \
    const uint8_t *p = P + offsets[r];                                                         \
    if (r + 1 == r1 && next)                                                                   \
      for (int b = 0; b < 4096; b += 64) _mm_prefetch((const char *)next + b, _MM_HINT_T1);     \
    const int stored = offsets[r + 1] - offsets[r] == K * 2;                                   \
    switch (nx) {                                                                              \
      case 1: ROW(p, stored, 1, r); break;                                                     \
      case 2: ROW(p, stored, 2, r); break;                                                     \
      case 3: ROW(p, stored, 3, r); break;                                                     \
      default: ROW(p, stored, 4, r); break;                                                    \
    }                                                                                          \
  }

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
fused_rows(const uint8_t *P, const uint64_t *offsets, size_t K, const float *X, size_t ldx, int nx, float *Y,
           size_t ldy, size_t r0, size_t r1, const void *next) {
  const __m512i order = word_order(ORDER);
#define F32_ROW(p, stored, NX, r) fused_row(p, stored, K, X, ldx, NX, Y, ldy, r, order)
  WALK_ROWS(F32_ROW)
#undef F32_ROW
}

/// One packed row against NX activation rows rounded to bf16 (`moek_bf16_dot_activations`,
/// kp apart), with vdpbf16ps in the AVX-512 bf16 dot leaf's order: runs of 64 into two
/// accumulators, a last run of 32 into the first. (One short activation row takes the f32 row
/// on its rounded values, as `moek_gemv_bf16_dot` does: `fused_dot_rows`.)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline)) static inline void
fused_dot_row(const uint8_t *p, int raw, size_t K, const uint16_t *xb, size_t kp, const int NX, float *Y, size_t ldy,
              size_t r, __m512i natural) {
  __m512 a0[4], a1[4];
  for (int m = 0; m < NX; m++) a0[m] = a1[m] = _mm512_setzero_ps();
  size_t k = 0;
  for (; k + 64 <= K; k += 64) {
    const __m512bh w0 = (__m512bh)natural_words(p, raw, k, natural), w1 = (__m512bh)natural_words(p, raw, k + 32, natural);
    for (int m = 0; m < NX; m++) {
      a0[m] = _mm512_dpbf16_ps(a0[m], w0, (__m512bh)_mm512_loadu_si512(xb + m * kp + k));
      a1[m] = _mm512_dpbf16_ps(a1[m], w1, (__m512bh)_mm512_loadu_si512(xb + m * kp + k + 32));
    }
  }
  if (k < K) {
    const __m512bh w0 = (__m512bh)natural_words(p, raw, k, natural);
    for (int m = 0; m < NX; m++) a0[m] = _mm512_dpbf16_ps(a0[m], w0, (__m512bh)_mm512_loadu_si512(xb + m * kp + k));
  }
  for (int m = 0; m < NX; m++) Y[(size_t)m * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(a0[m], a1[m]));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
fused_dot_rows(const uint8_t *P, const uint64_t *offsets, size_t K, const float *X, size_t ldx, int nx, float *Y,
               size_t ldy, size_t r0, size_t r1, const void *next) {
  if (nx == 1 && K <= MOEK_DOT_ROW1_MAX_K) {
    fused_rows(P, offsets, K, moek_bf16_rounded_row(X, K), K, 1, Y, ldy, r0, r1, next);
    return;
  }
  const size_t kp = (K + 31) / 32 * 32;
  const uint16_t *xb = moek_bf16_dot_activations(X, ldx, nx, K);
  const __m512i natural = word_order(NATURAL);
#define DOT_ROW(p, stored, NX, r) fused_dot_row(p, stored, K, xb, kp, NX, Y, ldy, r, natural)
  WALK_ROWS(DOT_ROW)
#undef DOT_ROW
}
#undef WALK_ROWS
#endif

void moek_gemv_bf16p(const uint8_t *P, const uint64_t *offsets, size_t K, const float *X, size_t ldx, int nx,
                     float *Y, size_t ldy, size_t r0, size_t r1, int bf16_dot, const void *next) {
  if (nx < 1 || r1 <= r0) return;
  while (nx > 4) {  // callers pass at most 4; stay correct if they do not
    moek_gemv_bf16p(P, offsets, K, X, ldx, 4, Y, ldy, r0, r1, bf16_dot, NULL);
    X += 4 * ldx; Y += 4 * ldy; nx -= 4;
  }
#if defined(__x86_64__) || defined(__i386__)
  if (moek_isa() == MOEK_ISA_AVX512 && K % BLOCK == 0) {
    if (bf16_dot) fused_dot_rows(P, offsets, K, X, ldx, nx, Y, ldy, r0, r1, next);
    else fused_rows(P, offsets, K, X, ldx, nx, Y, ldy, r0, r1, next);
    return;
  }
#endif
  uint16_t *w = rows_buffer(K);
  const size_t step = chunk_rows(K);
  for (size_t r = r0; r < r1; r += step) {
    const size_t end = r + step < r1 ? r + step : r1;
    moek_bf16p_unpack_rows(P, offsets, K, r, end, w);
    if (end == r1 && next)
      for (int b = 0; b < 4096; b += 64) __builtin_prefetch((const char *)next + b, 0, 2);
    if (bf16_dot)
      moek_gemv_bf16_dot(w, K, X, ldx, nx, Y + r, ldy, 0, end - r, K, NULL);
    else
      moek_gemv_rows_next(w, MOEK_BF16, K, X, ldx, nx, Y + r, ldy, 0, end - r, K, NULL);
  }
}
