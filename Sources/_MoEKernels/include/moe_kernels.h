// MoEKit compute leaves: the few loops that are bound by FMA throughput or memory bandwidth.
//
// Everything above these leaves (tensors, threading, blocking across threads, the MoE layer) is
// Swift. Each leaf exists in AVX-512, AVX2+FMA, NEON and portable scalar C; the best one the CPU
// supports is chosen at run time (`moek_isa`), and tests may force any supported one.
//
// Dimension legend (Hugging Face Linear layout, y = x W^T):
//   M  rows of activations (tokens)      K  input features (reduction)
//   N  rows of the weight (out features)
// Weights are [N, K] row-major with row stride ldw (in elements), stored as f32, f16 or bf16;
// they are widened to f32 in registers (or in an L1-sized buffer) and accumulated in f32.
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Storage type of a weight matrix. Values match MoECore's `DType` raw codes. The block formats
/// (16 and up) have ggml's byte layouts (`dequant.c`); the GGUF reader maps ggml's type ids to these.
typedef enum {
  MOEK_F32 = 0,
  MOEK_F16 = 1,
  MOEK_BF16 = 2,
  MOEK_Q8_0 = 16,
  MOEK_Q4_0 = 17,
  MOEK_Q4_1 = 18,
  MOEK_Q5_0 = 19,
  MOEK_Q5_1 = 20,
  MOEK_Q2_K = 21,
  MOEK_Q3_K = 22,
  MOEK_Q4_K = 23,
  MOEK_Q5_K = 24,
  MOEK_Q6_K = 25,
  MOEK_IQ4_NL = 26,
  MOEK_IQ4_XS = 27,
  MOEK_MXFP4 = 28,
} moek_dtype;

/// Elements per block of `dt` (1 for f32, f16, bf16; 32 or 256 for the block formats).
int moek_block_elements(int dt);
/// Bytes per block of `dt`, scales included (0 for an unknown code).
int moek_block_bytes(int dt);
/// Dequantizes `n` elements (a whole number of blocks) of block format `dt` at `src` into f32,
/// exactly as ggml (and the `gguf` Python package) define each format; vectorised where the
/// path has it, bitwise equal to the reference below.
void moek_dequantize(const void *src, int dt, float *dst, size_t n);
/// `moek_dequantize` by the portable scalar code whatever the path (the reference the
/// vectorised dequantizers are tested against).
void moek_dequantize_reference(const void *src, int dt, float *dst, size_t n);
/// `moek_gemv_rows` for a block-format W (rows of `ldw` elements, a whole number of blocks):
/// each block is dequantized into registers and a small stack buffer and multiplied in the
/// same pass, against up to any number of activation rows; no dequantized weight is stored.
void moek_gemv_rows_blocks(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx,
                           float *Y, size_t ldy, size_t r0, size_t r1, size_t K);

/// Whether `moek_quantize` writes block format `dt`.
int moek_can_quantize(int dt);
/// Quantizes n f32 values (a whole number of blocks) into block format `dt` at `dst`, exactly as
/// llama-quantize does without an importance matrix (ggml's reference quantizers; IQ4_NL and
/// IQ4_XS by `quantize_iq4_nl`/`_xs` with their 7 scale trials). Values must be
/// finite. Returns 0, writing nothing, for a format `moek_can_quantize` refuses.
int moek_quantize(const float *src, int dt, void *dst, size_t n);
/// Quantizes one row of n f32 values into block format `dt` weighted by the importance `qw`
/// (n values, e.g. an importance matrix's mean squared input per column), exactly as ggml's
/// `quantize_row_*_impl` (llama-quantize with an importance matrix) do. Q8_0 and MXFP4 ignore
/// `qw`, as ggml does; with `qw` NULL this is `moek_quantize`.
int moek_quantize_row_weighted(const float *src, int dt, void *dst, size_t n, const float *qw);

/// The activation block (32 or 256 elements) the integer leaf pairs with block format `dt` on
/// this machine, or 0 where `dt` has no integer leaf here (callers then use `moek_gemv_rows`).
/// Activations are quantized to 8 bits per value with an f32 scale per block, as llama.cpp's
/// Q8_0 and Q8_K activations are.
int moek_q8_block(int dt);
/// The multiple of weight rows `moek_gemv_rows_q8` runs best on for `dt` (rows of K values)
/// against `nx` activation rows: 64 (4 groups of 16) where the Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS
/// rows-in-lanes leaf takes them (AVX-512 VNNI, many rows), else 1.
/// Callers splitting a product over threads give each piece a multiple of it.
int moek_q8_row_group(int dt, int nx, size_t K);
/// 1 where `dt` with rows of K values runs through the AVX-512 VNNI integer leaves (a scale
/// applied per 256 values of 8 blocks at once; at prefill faster than widening blocks for the
/// f32 matmul leaf), else 0.
int moek_q8_interleaved(int dt, size_t K);
/// Bytes of one quantized activation row of K values (K a multiple of `block`).
size_t moek_q8_row_bytes(size_t K, int block);
/// Quantizes K f32 activations (K a multiple of `block`) into `out` (`moek_q8_row_bytes` bytes):
/// int8 values (round to nearest), an f32 scale amax / 127 per block, and the int16 sum of
/// every 16 values. A block holding a non-finite value gets a NaN
/// scale, so its products are NaN. Only where `moek_q8_block` is non-zero.
void moek_q8_quantize(const float *x, size_t K, int block, void *out);
/// `moek_gemv_rows` on quantized activation rows (`ldxq` bytes apart, made by `moek_q8_quantize`
/// with `moek_q8_block(dt)`): Y[m, r] = dot(W[r, :], x[m, :]) for rows r in [r0, r1), any number
/// of activation rows. Integer block products, scales applied per block. Returns 0, computing
/// nothing, where `dt` has no integer leaf on this machine.
int moek_gemv_rows_q8(const void *W, int dt, size_t ldw, const void *XQ, size_t ldxq, int nx,
                      float *Y, size_t ldy, size_t r0, size_t r1, size_t K);
/// Asks for the `bytes` bytes from `p` to be brought into the L2 cache (prefetch hints, one
/// per 64-byte line; no effect on the result). A thread calls it on the start of the weight it
/// reads next, so a run of small matrices streams without a cold start each.
void moek_prefetch_l2(const void *p, size_t bytes);

/// QMoE ternary-coded rows (ternary.c): weight row r is a stream of 16-bit codes
/// codes[offsets[r] ..< offsets[r + 1]] into `dict` (65536 entries, a shorter dictionary
/// padded; entry bits 0-27 mark the run's weights equal to hi, bits 28-55 those equal to lo,
/// bits 56-60 give the run's length, 2...28 weights), and scales[2r], scales[2r + 1] (f16) are
/// the row's lo and hi. For rows r in [r0, r1) and activation rows m < nx: Y[m * ldy + r] =
/// hi * sum of x[m, j] over weights hi + lo * sum over weights lo, decoded in registers. Every row's runs must add up to exactly K
/// (the caller checks the codes once, when it loads them).
void moek_ternary_gemv_rows(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales,
                            const uint64_t *dict, const float *X, size_t ldx, int nx, float *Y, size_t ldy,
                            size_t r0, size_t r1, size_t K);
/// Rows [r0, r1) of ternary codes widened to f32 weights (lo, 0, hi) into W (row stride ldw;
/// row r0 first; rows of K weights): a tile for the prefill product, which multiplies many
/// activation rows by it.
void moek_ternary_dequantize_rows(const uint16_t *codes, const uint32_t *offsets, const uint16_t *scales,
                                  const uint64_t *dict, float *W, size_t ldw, size_t r0, size_t r1, size_t K);
/// Rows [r0, r1) of ternary codes as the values -1, 0, 1 (lo, 0, hi) into T (row stride ldt;
/// row r0 first): the reference the products are checked against.
void moek_ternary_decode_rows(const uint16_t *codes, const uint32_t *offsets, const uint64_t *dict, int8_t *T,
                              size_t ldt, size_t r0, size_t r1);

/// Lossless packed bf16 rows (bf16_packed.c describes the format): bytes of one packed row of K
/// (a multiple of 32) weights, 49 per 32.
size_t moek_bf16p_row_bytes(size_t K);
/// Packs bf16 W [N, K] (row stride K) into `out`, each row packed where its blocks allow and
/// raw (2K bytes) where not, and writes the rows' byte offsets into offsets[0...N]; returns the
/// bytes written. `out` may be W itself or lie below it (the rows are packed in place).
size_t moek_bf16p_pack(const uint16_t *W, size_t N, size_t K, uint8_t *out, uint64_t *offsets);
/// Whether the packed rows' products run faster than the bf16 leaves on the current path
/// (AVX-512, which rebuilds the words in registers; AVX2 unpacks rows into L1 for its bf16 leaf
/// at about half that leaf's speed, NEON and scalar code slower still).
int moek_bf16p_fast(void);
/// Rows [r0, r1) of a packed matrix back to bf16 words, bit for bit, into W (row stride K).
void moek_bf16p_unpack_rows(const uint8_t *P, const uint64_t *offsets, size_t K, size_t r0, size_t r1, uint16_t *W);
/// `moek_gemv_rows_next` (or with `bf16_dot`, `moek_gemv_bf16_dot`) on rows [r0, r1) of a packed
/// bf16 matrix: the same results, bit for bit, as on the bf16 rows it packs. AVX-512 assembles
/// each block's words in registers; the other paths unpack a few rows into L1 for the bf16 leaf.
void moek_gemv_bf16p(const uint8_t *P, const uint64_t *offsets, size_t K, const float *X, size_t ldx, int nx,
                     float *Y, size_t ldy, size_t r0, size_t r1, int bf16_dot, const void *next);

/// Instruction-set paths. Values are stable; `moek_isa_name` gives a printable name.
typedef enum {
  MOEK_ISA_SCALAR = 0,
  MOEK_ISA_AVX2 = 1,
  MOEK_ISA_AVX512 = 2,
  MOEK_ISA_NEON = 3,
} moek_isa_t;

/// The path in use (the best the CPU supports unless forced).
int moek_isa(void);
/// The best path this CPU supports.
int moek_best_isa(void);
/// Whether this CPU can run `isa`.
int moek_isa_supported(int isa);
/// Forces a path (for tests and benchmarks). Returns 0 if the CPU cannot run it (nothing changes).
int moek_force_isa(int isa);
/// Allows (1, the default) or forbids (0) the AVX-512 VNNI integer leaves, so that tests and
/// benchmarks reach the AVX-512 leaves that machines without VNNI run. Returns whether they run.
int moek_allow_vnni(int on);
/// Allows (1, the default) or forbids (0) the VBMI builds of the one-row VNNI leaves (for
/// machines with AVX-512 VBMI and GFNI), so that tests reach the builds that VNNI machines
/// without them run. Returns whether they run.
int moek_allow_vbmi(int on);
/// "scalar", "avx2", "avx512" or "neon".
const char *moek_isa_name(int isa);

/// Widens `n` values of dtype `dt` at `src` to f32 at `dst`.
void moek_to_f32(const void *src, int dt, float *dst, size_t n);
/// Narrows `n` f32 values to dtype `dt` (round to nearest even; NaN stays NaN).
void moek_from_f32(const float *src, int dt, void *dst, size_t n);

/// Matrix-vector rows: for each weight row r in [r0, r1) and each of the `nx` (1...4) activation
/// rows m: Y[m * ldy + r] = dot(W[r, 0..<K], X[m * ldx + 0..<K]).
/// Reads each weight byte once: this is the memory-bound decode path.
void moek_gemv_rows(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx,
                    float *Y, size_t ldy, size_t r0, size_t r1, size_t K);

/// As `moek_gemv_rows`, and when the last full tile of rows runs, prefetches the start of `next`
/// (the next weight this thread will read, with the same row stride; NULL for none), so a run
/// of small matrices (an MoE layer's experts at decode) streams without a cold start each.
void moek_gemv_rows_next(const void *W, int dt, size_t ldw, const float *X, size_t ldx, int nx,
                         float *Y, size_t ldy, size_t r0, size_t r1, size_t K, const void *next);

/// Weighted sum of rows: out[m, d] = sum_j P[m * ldp + j] * V[j * ldv + d] for m < nx (1...4),
/// j < L, d < D; V is f32, or f16 with `vdt` MOEK_F16 (an f16 KV cache; widened exactly);
/// ldv counts elements; out has row stride ldo and is overwritten. Attention's probabilities
/// times values (portable C that the compiler vectorises).
void moek_weighted_rows(const float *P, size_t ldp, int nx, const void *V, int vdt, size_t ldv, size_t L,
                        size_t D, float *out, size_t ldo);

/// Rows of A per packed panel on the current path.
size_t moek_gemm_mr(void);
/// Floats needed to hold A [M, K] packed (panels of `moek_gemm_mr()` rows, zero-padded).
size_t moek_gemm_packed_size(size_t M, size_t K);
/// Packs panels [t0, t1) of A (f32 [M, K], row stride lda) into `Ap` (sized by
/// `moek_gemm_packed_size`). Panels are independent, so threads may pack disjoint ranges.
void moek_gemm_pack_a(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1,
                      float *Ap);

/// Matrix multiply block on packed A: C[m, n] = sum_k A[m, k] * W[n, k] for all m < M and
/// n in [n0, n1). C is f32 with row stride ldc and is overwritten. The weight block is widened
/// into a per-thread scratch buffer that the library owns.
void moek_gemm_packed(const float *Ap, size_t M, const void *W, int dt, size_t ldw, float *C,
                      size_t ldc, size_t n0, size_t n1, size_t K);

/// `moek_gemm_packed` with two options: `wt` reads W as f32 stored transposed, [K, N] with row
/// stride ldw (W[n, k] at W[k * ldw + n]; `dt` is then ignored); `acc` adds into C instead of
/// overwriting it.
void moek_gemm_packed_ex(const float *Ap, size_t M, const void *W, int dt, size_t ldw, int wt, int acc,
                         float *C, size_t ldc, size_t n0, size_t n1, size_t K);

/// `moek_gemm_pack_a` for A stored transposed: A[m, k] is At[k * lda + m] (At is [K, M]).
void moek_gemm_pack_a_t(const float *At, size_t lda, size_t M, size_t K, size_t t0, size_t t1, float *Ap);

/// Whether the current path has `moek_gemm_direct`.
int moek_gemm_direct_supported(void);
/// `moek_gemm_packed_ex` reading A unpacked: A is f32 [M, K] with row stride lda, or with `ta`
/// stored transposed, [K, M] (A[m, k] at A[k * lda + m]). Only when
/// `moek_gemm_direct_supported()`; otherwise pack A and call `moek_gemm_packed_ex`.
void moek_gemm_direct(const float *A, size_t lda, int ta, size_t M, const void *W, int dt, size_t ldw, int wt, int acc,
                      float *C, size_t ldc, size_t n0, size_t n1, size_t K);
/// `moek_gemm_direct` reading rows through indices, in place (an MoE's token rows, grouped by
/// expert, with no gathered copy): with `aix`, row m of A is row aix[m] of A (ta 0), or A
/// stored transposed has its reduction row k at row aix[k] (ta 1); with `wix` (and wt),
/// reduction row k of W is row wix[k] of W. NULL: rows in order. The same condition as
/// `moek_gemm_direct`.
void moek_gemm_direct_indexed(const float *A, size_t lda, const intptr_t *aix, int ta, size_t M, const void *W, int dt,
                              size_t ldw, int wt, const intptr_t *wix, int acc, float *C, size_t ldc, size_t n0,
                              size_t n1, size_t K);

/// Whether `moek_gemm_packed` takes block-format weights (`dt` a block format, K a multiple
/// of its block) on the current path: each weight tile is dequantized into the leaf's L1
/// buffer once and reused by every panel of A. AVX-512's reduction blocks (128) are smaller
/// than a K-quant block: it widens the whole blocks that cover one and packs its part.
int moek_gemm_blocks_supported(void);
/// The matmul leaf's reduction block on the current path (elements of K per weight tile).
size_t moek_gemm_kc(void);

/// The granularity in N that `moek_gemm_packed` works in on the current path; callers split N
/// across threads in multiples of it.
size_t moek_gemm_n_step(void);

/// Whether `moek_gemm_rows` runs for weights of `dt` on the current path (AVX-512; bf16 or f16).
int moek_rows_supported(int dt);
/// C[m, n] = sum_k X[m, k] * W[n, k] for m < M and n in [n0, n1): W of `dt` (bf16 or f16)
/// [N, K] with row stride ldw elements, X f32 (row stride ldx), for bf16 given de-interleaved by
/// `moek_bf16_rows_permute`; every product and sum in f32; C overwritten (row stride ldc). K
/// must be a multiple of 32. Returns 0, computing nothing, where it does not apply.
int moek_gemm_rows(const void *W, int dt, size_t ldw, const float *X, size_t ldx, size_t M, float *C, size_t ldc,
                   size_t n0, size_t n1, size_t K);
/// Writes rows [0, M) of X (row stride ldx) to Xp (row stride K) with each run of 32 values as
/// its 16 even-indexed then its 16 odd-indexed ones, the order `moek_gemm_rows` reads for bf16.
/// Only where `moek_rows_supported(MOEK_BF16)` (elsewhere it does nothing).
void moek_bf16_rows_permute(const float *X, size_t ldx, size_t M, size_t K, float *Xp);
/// Whether the bf16 dot-product matmul (AVX512-BF16) can run on this CPU.
int moek_bf16_compute_supported(void);
/// Whether `moek_gemm_bf16_dot_rows` runs on the current path (AVX-512 with AVX512-BF16).
int moek_bf16_dot_rows_supported(void);
/// Rows [0, M) of X (row stride ldx) rounded to bf16 into Xb (row stride K; K a multiple of 16),
/// as `moek_gemm_bf16_pack_a` rounds them. Only where `moek_bf16_dot_rows_supported()`.
void moek_bf16_round_rows(const float *X, size_t ldx, size_t M, size_t K, uint16_t *Xb);
/// C[m, n] = sum_k Xb[m, k] * W[n, k] with vdpbf16ps, for m < M and n in [n0, n1): W bf16 [N, K]
/// (row stride ldw), Xb the bf16 rows of `moek_bf16_round_rows` (row stride K); C overwritten.
/// K must be a multiple of 32. Returns 0, computing nothing, where it does not apply.
int moek_gemm_bf16_dot_rows(const uint16_t *W, size_t ldw, const uint16_t *Xb, size_t M, float *C, size_t ldc,
                            size_t n0, size_t n1, size_t K);
/// bf16 elements to hold A [M, K] packed for `moek_gemm_bf16_packed`.
size_t moek_gemm_bf16_packed_size(size_t M, size_t K);
/// Packs panels [t0, t1) of 16 rows of A (f32, rounded to bf16) into bf16 pairs.
void moek_gemm_bf16_pack_a(const float *A, size_t lda, size_t M, size_t K, size_t t0, size_t t1, uint16_t *Ap);
/// C[m, n] = sum_k bf16(A[m, k]) * W[n, k] for n in [n0, n1), W bf16 [N, K] with row stride
/// ldw, accumulated in f32 with vdpbf16ps. Only when `moek_bf16_compute_supported()`.
void moek_gemm_bf16_packed(const uint16_t *Ap, size_t M, const uint16_t *W, size_t ldw, float *C, size_t ldc,
                           size_t n0, size_t n1, size_t K);
/// Decode with bf16 activations: Y[m, r] = sum_k bf16(X[m, k]) * W[r, k] for rows r in
/// [r0, r1) and nx (1...4) activation rows, W bf16 [N, K] with row stride ldw, accumulated in
/// f32 with vdpbf16ps, one weight row at a time; at the last row the first 4 KiB of `next`
/// (or NULL) is prefetched. Only when `moek_bf16_compute_supported()`.
void moek_gemv_bf16_dot(const uint16_t *W, size_t ldw, const float *X, size_t ldx, int nx, float *Y, size_t ldy,
                        size_t r0, size_t r1, size_t K, const void *next);
/// The granularity in N of `moek_gemm_bf16_packed`.
#define MOEK_GEMM_BF16_NR 24

/// gate[i] = silu(gate[i]) * up[i] (up NULL: silu alone), with a vectorised f32 exp.
void moek_silu_mul(float *gate, const float *up, size_t n);
/// out[i] = silu(gate[i]) * up[i], leaving gate as it is (out may be gate).
void moek_silu_mul_out(float *out, const float *gate, const float *up, size_t n);
/// SwiGLU backward: with s = sigmoid(gate), dup = dy gate s and dgate = dy up s (1 + gate (1 - s)).
void moek_silu_mul_backward(const float *dy, const float *gate, const float *up, float *dgate, float *dup, size_t n);
/// out[i] = w silu(gate[i]) up[i] (out distinct from gate and up): an MoE expert's hidden
/// activation with its routing weight w applied.
void moek_silu_mul_scaled(float *out, const float *gate, const float *up, float w, size_t n);
/// The backward of `moek_silu_mul_scaled` from dh, its output's gradient (all arrays distinct):
/// dup = w dh gate s and dgate = w dh up s (1 + gate (1 - s)) with s = sigmoid(gate); returns
/// sum dh[i] silu(gate[i]) up[i], the gradient of w (16 f32 partial sums, added in order).
float moek_silu_mul_backward_scaled(const float *dh, const float *gate, const float *up, float w, float *dgate,
                                    float *dup, size_t n);
/// One AdamW step over n elements in place; hyper = {beta1, beta2, 1 - beta1^t, 1 - beta2^t, eps,
/// lr, weight decay, gradient scale s}: with g = s grad, m = b1 m + (1 - b1) g,
/// v = b2 v + (1 - b2) g^2, w -= lr ((m / c1) / (sqrt(v / c2) + eps) + wd w).
void moek_adamw(float *w, const float *g, float *m, float *v, size_t n, const float *hyper);
/// Sum of x[i]^2: f32 partial sums (16 lanes) of up to 1024 elements, added in f64, then the last
/// n % 16 elements in f64.
double moek_sum_squares(const float *x, size_t n);
/// Index of the largest of x[0..n) (n > 0): the lowest index on ties (-0 equals 0); a NaN counts as
/// larger than any number (the first NaN wins), as in PyTorch.
size_t moek_argmax(const float *x, size_t n);
/// Inverted dropout over elements first ... first + n - 1 of the mask drawn from `seed` with
/// probability p (0 <= p < 1): dst[i] = src[i] * f, or dst[i] += it with `accumulate`, where f is
/// 0 if the element is dropped, else 1 / (1 - p). Element j is dropped when the top 24 bits of
/// fmix32(lo(j) * 0x9E3779B9 + key), key = lo(seed) ^ fmix32(hi(seed) + hi(j) * 0x632BE5AB)
/// (32-bit halves; MurmurHash3's finaliser), fall below p * 2^24: the same mask on every ISA,
/// any element's factor made again without the others. dst may be src.
void moek_dropout(float *dst, const float *src, size_t n, uint64_t seed, uint64_t first, float p, int accumulate);
/// out = a x, and returns sum x y (16 f32 partial sums, added in order). x, y, out distinct.
float moek_scale_dot(const float *x, const float *y, float a, float *out, size_t n);
/// One RMSNorm row: y = x inv w with inv = 1 / sqrt(mean(x^2) + eps) (the sum in 16 f32
/// partial sums); returns inv.
float moek_rms_norm_row(const float *x, const float *w, float eps, float *y, size_t c);
/// Inference RMSNorm of one row: y = (x inv) w, inv = 1 / sqrt(mean(x^2) + eps) with the sum of
/// squares in f64 (8 partial sums, added in order), inv rounded once to f32. y may be x.
void moek_rms_norm_row_f64(const float *x, const float *w, float eps, float *y, size_t c);
/// RMSNorm backward for one row with the forward's inv: dx = dy w inv - x inv^3 mean(dy w x)
/// (overwritten), dw += dy x inv.
void moek_rms_norm_backward_row(const float *dy, const float *x, const float *w, float inv, float *dx, float *dw,
                                size_t c);

/// An MoE combine for one token: out[0..<d] (+)= sum over i < count of w[i] y[rows[i] d ...]
/// (w NULL: weights of 1), added in i order; with `accumulate` 0, out is overwritten (zeros when
/// count is 0). out must not overlap y.
void moek_combine_rows(float *out, const float *y, size_t d, const intptr_t *rows, const float *w, size_t count,
                       int accumulate);
/// The indices of the k largest of x[0..<n] (k <= n), largest first, a tie to the lower index,
/// into out[0..<k]; returns 1. Returns 0, writing nothing, where it does not apply (a path
/// without it, n past 256, or a NaN in the row): the caller then selects by itself.
int moek_topk_row(const float *x, size_t n, size_t k, intptr_t *out);
/// Softmax of each of `rows` rows of n floats (row stride ld), in place: max, then the
/// exponentials (vectorised exp) summed in 16 f32 lanes. A row of all -inf becomes zeros.
void moek_softmax_rows(float *x, size_t ld, size_t n, size_t rows);
/// RoPE for one token's `heads` heads of `hd` values, x into out (the same memory, or not
/// overlapping): in each head the first `rd` values rotate by the angles, cos c[i] and sin
/// sign * s[i] for i < rd / 2, as pairs (i, i + rd / 2) with `rotate_half`, else (2i, 2i + 1),
/// each product rounded on its own (no fused multiply-add); the rest are copied.
void moek_rope_rows(const float *x, float *out, size_t heads, size_t hd, size_t rd, const float *c, const float *s,
                    float sign, int rotate_half);
/// One softmax row for cross-entropy: p = exp(z - max) / sum over n values, the f32
/// exponentials (vectorised exp) summed in f64. Writes the max to *mx and returns the sum.
double moek_softmax_row_f64(const float *z, float *p, size_t n, float *mx);
/// Causal softmax of rows [r0, r1) of a score block (row stride ld, n columns): row r becomes
/// softmax(scale s) over columns 0...r (max and sum in 16 f32 lanes, vectorised exp) and 0 on
/// columns r + 1 ..< n, whatever they held. With a sliding `window` (0: none), only the last
/// `window` columns up to r (r itself included) take part; the earlier ones become 0 too.
void moek_causal_softmax_rows(float *s, size_t ld, size_t n, size_t r0, size_t r1, float scale, size_t window);
/// Backward of `moek_causal_softmax_rows` for rows [r0, r1): d holds dP on columns 0...r and
/// becomes scale P (dP - sum_i P_i dP_i) there, 0 on r + 1 ..< n.
void moek_causal_softmax_backward_rows(const float *p, float *d, size_t ld, size_t n, size_t r0, size_t r1,
                                       float scale, size_t window);

/// Asks the C allocator to keep freed blocks for reuse instead of returning them to the system
/// (glibc: no mmap per large block, no trimming). Returns 1 if it did, 0 where unsupported.
int moek_retain_freed_memory(void);

/// FMA throughput probe: runs `iters` rounds of independent FMA chains in registers and returns
/// the number of floating-point operations performed (2 per lane per FMA).
double moek_fma_probe(size_t iters);

/// A spin-wait hint to the CPU (`pause` on x86, `yield` on ARM).
void moek_cpu_relax(void);

/// Read-bandwidth probe: reads `n` 4-byte words with wide loads and adds them as integers (any
/// bits, such as bf16 weights, cost the same); returns the sum so the reads are not elided.
float moek_read_probe(const float *p, size_t n);

#ifdef __cplusplus
}
#endif

#endif
