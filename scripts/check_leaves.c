// Checks every leaf of the selected ISA path against plain C, for a build of _MoEKernels on
// another architecture (run by scripts/check-neon.sh under qemu). The Swift tests cover the
// paths this machine can run; this covers NEON from an x86 host. MOEK_CHECK_ISA=scalar, avx2
// or avx512 checks that path on an x86 host.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include "moe_kernels.h"
#include "../Sources/_MoEKernels/internal.h"

static uint64_t state = 42;
static float rnd(void) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static int check(const char *what, const float *got, const double *ref, const double *scale, size_t n) {
  for (size_t i = 0; i < n; i++) {
    double tol = 1e-5 * scale[i] + 1e-6;
    if (!(fabs(got[i] - ref[i]) <= tol)) {
      printf("FAIL %s: element %zu got %g want %g (tol %g)\n", what, i, got[i], ref[i], tol);
      return 1;
    }
  }
  return 0;
}

int main(void) {
  const size_t shapes[][3] = {{1, 1, 1}, {2, 3, 17}, {4, 17, 3}, {5, 3, 17}, {17, 25, 3},
                              {21, 7, 513}, {33, 49, 300}, {3, 70, 1}, {17, 1, 97}, {9, 13, 258}};
  int failures = 0, cases = 0;
  const char *want = getenv("MOEK_CHECK_ISA");  // scalar, avx2 or avx512: check that path on this host
  if (want) {
    const int isa = want[0] == 's' ? MOEK_ISA_SCALAR : (want[3] == '2' ? MOEK_ISA_AVX2 : MOEK_ISA_AVX512);
    if (!moek_force_isa(isa)) { printf("isa %s not supported here\n", want); return 1; }
  }
  // MOEK_CHECK_VNNI=0: the AVX-512 leaves of machines without VNNI.
  if (getenv("MOEK_CHECK_VNNI") && getenv("MOEK_CHECK_VNNI")[0] == '0') moek_allow_vnni(0);
  printf("isa: %s\n", moek_isa_name(moek_isa()));
  for (int dt = 0; dt < 3; dt++) {
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
      size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
      float *A = malloc(M * K * 4), *Wf = malloc(N * K * 4), *Ww = malloc(N * K * 4), *C = malloc(M * N * 4);
      uint16_t *Wh = malloc(N * K * 2);
      double *ref = malloc(M * N * 8), *scale = malloc(M * N * 8);
      for (size_t i = 0; i < M * K; i++) A[i] = rnd();
      for (size_t i = 0; i < N * K; i++) Wf[i] = rnd();
      const void *W = Wf;
      if (dt != MOEK_F32) { moek_from_f32(Wf, dt, Wh, N * K); moek_to_f32(Wh, dt, Ww, N * K); W = Wh; }
      else { for (size_t i = 0; i < N * K; i++) Ww[i] = Wf[i]; }
      for (size_t m = 0; m < M; m++)
        for (size_t n = 0; n < N; n++) {
          double acc = 0, a = 0;
          for (size_t k = 0; k < K; k++) { double p = (double)A[m * K + k] * Ww[n * K + k]; acc += p; a += fabs(p); }
          ref[m * N + n] = acc; scale[m * N + n] = a;
        }
      char what[96];
      // gemv leaf, up to 4 rows at a time
      for (size_t m = 0; m < M; m += 4) {
        int nx = (M - m) < 4 ? (int)(M - m) : 4;
        moek_gemv_rows(W, dt, K, A + m * K, K, nx, C + m * N, N, 0, N, K);
      }
      snprintf(what, sizeof what, "gemv dt=%d M=%zu N=%zu K=%zu", dt, M, N, K);
      failures += check(what, C, ref, scale, M * N); cases++;
      // packed matmul leaf, N split in two at a tile boundary
      float *Ap = NULL;
      if (posix_memalign((void **)&Ap, 64, moek_gemm_packed_size(M, K) * 4 + 64)) return 2;
      size_t mr = moek_gemm_mr(), step = moek_gemm_n_step();
      moek_gemm_pack_a(A, K, M, K, 0, (M + mr - 1) / mr, Ap);
      size_t mid = N > step ? step : N;
      moek_gemm_packed(Ap, M, W, dt, K, C, N, 0, mid, K);
      moek_gemm_packed(Ap, M, W, dt, K, C, N, mid, N, K);
      snprintf(what, sizeof what, "gemm dt=%d M=%zu N=%zu K=%zu", dt, M, N, K);
      failures += check(what, C, ref, scale, M * N); cases++;
      if (dt == MOEK_F32) {
        // Both operands stored transposed, accumulating onto the result: C = 2 A W^T.
        float *At = malloc(M * K * 4), *Wt = malloc(N * K * 4);
        double *ref2 = malloc(M * N * 8), *scale2 = malloc(M * N * 8);
        for (size_t m = 0; m < M; m++) for (size_t k = 0; k < K; k++) At[k * M + m] = A[m * K + k];
        for (size_t n = 0; n < N; n++) for (size_t k = 0; k < K; k++) Wt[k * N + n] = Wf[n * K + k];
        for (size_t i = 0; i < M * N; i++) { ref2[i] = 2 * ref[i]; scale2[i] = 2 * scale[i]; }
        moek_gemm_pack_a_t(At, M, M, K, 0, (M + mr - 1) / mr, Ap);
        moek_gemm_packed_ex(Ap, M, Wt, MOEK_F32, N, 1, 1, C, N, 0, mid, K);
        moek_gemm_packed_ex(Ap, M, Wt, MOEK_F32, N, 1, 1, C, N, mid, N, K);
        snprintf(what, sizeof what, "gemm transposed accumulate M=%zu N=%zu K=%zu", M, N, K);
        failures += check(what, C, ref2, scale2, M * N); cases++;
        if (moek_gemm_direct_supported()) {
          // Unpacked A: row-major overwriting, then transposed (with W^T) accumulating.
          moek_gemm_direct(A, K, 0, M, Wf, MOEK_F32, K, 0, 0, C, N, 0, mid, K);
          moek_gemm_direct(A, K, 0, M, Wf, MOEK_F32, K, 0, 0, C, N, mid, N, K);
          snprintf(what, sizeof what, "gemm direct M=%zu N=%zu K=%zu", M, N, K);
          failures += check(what, C, ref, scale, M * N); cases++;
          moek_gemm_direct(At, M, 1, M, Wt, MOEK_F32, N, 1, 1, C, N, 0, mid, K);
          moek_gemm_direct(At, M, 1, M, Wt, MOEK_F32, N, 1, 1, C, N, mid, N, K);
          snprintf(what, sizeof what, "gemm direct transposed accumulate M=%zu N=%zu K=%zu", M, N, K);
          failures += check(what, C, ref2, scale2, M * N); cases++;
          // Rows through indices: A's rows and W^T's K rows scattered in bigger matrices, in reverse.
          float *Abig = malloc((2 * M + 1) * K * 4), *Wbig = malloc((2 * K + 1) * N * 4);
          intptr_t *aix = malloc(M * sizeof(intptr_t)), *wix = malloc(K * sizeof(intptr_t));
          for (size_t i = 0; i < (2 * M + 1) * K; i++) Abig[i] = rnd();
          for (size_t i = 0; i < (2 * K + 1) * N; i++) Wbig[i] = rnd();
          for (size_t m = 0; m < M; m++) { aix[m] = (intptr_t)(2 * (M - m)); memcpy(Abig + aix[m] * K, A + m * K, K * 4); }
          for (size_t k = 0; k < K; k++) { wix[k] = (intptr_t)(2 * (K - k)); memcpy(Wbig + wix[k] * N, Wt + k * N, N * 4); }
          moek_gemm_direct_indexed(Abig, K, aix, 0, M, Wf, MOEK_F32, K, 0, NULL, 0, C, N, 0, mid, K);
          moek_gemm_direct_indexed(Abig, K, aix, 0, M, Wf, MOEK_F32, K, 0, NULL, 0, C, N, mid, N, K);
          snprintf(what, sizeof what, "gemm direct indexed A M=%zu N=%zu K=%zu", M, N, K);
          failures += check(what, C, ref, scale, M * N); cases++;
          moek_gemm_direct_indexed(Abig, K, aix, 0, M, Wbig, MOEK_F32, N, 1, wix, 0, C, N, 0, mid, K);
          moek_gemm_direct_indexed(Abig, K, aix, 0, M, Wbig, MOEK_F32, N, 1, wix, 1, C, N, mid, N, K);
          for (size_t m = 0; m < M; m++)  // the second half accumulated onto the previous result
            for (size_t n = mid; n < N; n++) { ref2[m * N + n] = 2 * ref[m * N + n]; }
          for (size_t m = 0; m < M; m++) for (size_t n = 0; n < mid; n++) ref2[m * N + n] = ref[m * N + n];
          snprintf(what, sizeof what, "gemm direct indexed A and W^T M=%zu N=%zu K=%zu", M, N, K);
          failures += check(what, C, ref2, scale2, M * N); cases++;
          // A stored transposed with its K rows through an index: At's row k at row wix[k] of a bigger matrix.
          float *Atbig = malloc((2 * K + 1) * M * 4);
          for (size_t i = 0; i < (2 * K + 1) * M; i++) Atbig[i] = rnd();
          for (size_t k = 0; k < K; k++) memcpy(Atbig + wix[k] * M, At + k * M, M * 4);
          moek_gemm_direct_indexed(Atbig, M, wix, 1, M, Wf, MOEK_F32, K, 0, NULL, 0, C, N, 0, mid, K);
          moek_gemm_direct_indexed(Atbig, M, wix, 1, M, Wf, MOEK_F32, K, 0, NULL, 0, C, N, mid, N, K);
          snprintf(what, sizeof what, "gemm direct indexed transposed A M=%zu N=%zu K=%zu", M, N, K);
          failures += check(what, C, ref, scale, M * N); cases++;
          free(Atbig); free(Abig); free(Wbig); free(aix); free(wix);
        }
        free(At); free(Wt); free(ref2); free(scale2);
      }
      free(A); free(Wf); free(Ww); free(Wh); free(C); free(ref); free(scale); free(Ap);
    }
  }
  // Elementwise leaves against libm in double.
  {
    enum { n = 1001 };
    static float g[n], u[n], dy[n], y[n], dg[n], du[n], w[n], m[n], v[n], gr[n];
    static double ry[n], rdg[n], rdu[n], rw[n], ones[n];
    for (int i = 0; i < n; i++) { g[i] = 12 * rnd(); u[i] = rnd(); dy[i] = rnd(); w[i] = rnd(); gr[i] = rnd();
                                  m[i] = 0.1f * gr[i]; v[i] = 0.5f * gr[i] * gr[i]; y[i] = g[i]; ones[i] = 1; }
    for (int i = 0; i < n; i++) {
      double gs = 0.5 * gr[i];  // the gradient after clipping's scale 0.5
      double x = g[i], s = 1 / (1 + exp(-x)), mi = 0.9 * m[i] + 0.1 * gs, vi = 0.95 * v[i] + 0.05 * gs * gs;
      ry[i] = x * s * u[i]; rdu[i] = dy[i] * x * s; rdg[i] = dy[i] * u[i] * s * (1 + x * (1 - s));
      rw[i] = w[i] - 0.01 * ((mi / (1 - 0.729)) / (sqrt(vi / (1 - 0.857375)) + 1e-8) + 0.1 * w[i]);
    }
    moek_silu_mul(y, u, n);
    moek_silu_mul_backward(dy, g, u, dg, du, n);
    const float hyper[8] = {0.9f, 0.95f, (float)(1 - 0.729), (float)(1 - 0.857375), 1e-8f, 0.01f, 0.1f, 0.5f};
    moek_adamw(w, gr, m, v, n, hyper);
    failures += check("silu_mul", y, ry, ones, n); cases++;
    failures += check("silu_mul_backward up", du, rdu, ones, n); cases++;
    failures += check("silu_mul_backward gate", dg, rdg, ones, n); cases++;
    failures += check("adamw", w, rw, ones, n); cases++;
    double sq = 0;
    for (int i = 0; i < n; i++) sq += (double)gr[i] * gr[i];
    if (fabs(moek_sum_squares(gr, n) - sq) > 1e-4) { printf("FAIL sum_squares\n"); failures++; }
    cases++;
    // scale_dot and the RMSNorm rows, on lengths around the 16-lane blocks.
    const size_t lens[] = {1, 15, 16, 17, 256, 1001};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
      const size_t c = lens[li];
      static float out[n], dx[n], dw[n];
      static double rout[n], rdx[n], rdw[n], ry2[n];
      double dot = 0, ss = 0, dwx = 0;
      for (size_t i = 0; i < c; i++) { dot += (double)dy[i] * u[i]; ss += (double)u[i] * u[i]; rout[i] = 0.25 * dy[i]; }
      const double inv = 1 / sqrt(ss / c + 1e-6);
      for (size_t i = 0; i < c; i++) { ry2[i] = u[i] * inv * w[i]; dwx += (double)dy[i] * w[i] * u[i]; dw[i] = 1; }
      for (size_t i = 0; i < c; i++) {
        rdx[i] = dy[i] * w[i] * inv - u[i] * inv * inv * inv * dwx / c;
        rdw[i] = 1 + dy[i] * u[i] * inv;
      }
      const float got = moek_scale_dot(dy, u, 0.25f, out, c);
      if (fabs(got - dot) > 1e-4 * (1 + fabs(dot))) { printf("FAIL scale_dot dot (n %zu)\n", c); failures++; }
      failures += check("scale_dot out", out, rout, ones, c); cases += 2;
      const float ginv = moek_rms_norm_row(u, w, 1e-6f, y, c);
      if (fabs(ginv - inv) > 1e-4 * inv) { printf("FAIL rms_norm_row inv (n %zu)\n", c); failures++; }
      failures += check("rms_norm_row", y, ry2, ones, c); cases += 2;
      moek_rms_norm_row_f64(u, w, 1e-6f, y, c);
      failures += check("rms_norm_row_f64", y, ry2, ones, c); cases++;
      moek_rms_norm_backward_row(dy, u, w, (float)inv, dx, dw, c);
      failures += check("rms_norm_backward_row dx", dx, rdx, ones, c);
      failures += check("rms_norm_backward_row dw", dw, rdw, ones, c); cases += 2;
    }
  }
  // The attention, cross-entropy and MoE-combine leaves, and silu_mul_out.
  {
    enum { n = 300 };
    static float g[n], u[n], out[n], keep[n];
    static double ry[n], ones[n];
    for (int i = 0; i < n; i++) { g[i] = 12 * rnd(); u[i] = rnd(); keep[i] = g[i]; ones[i] = 1;
                                  ry[i] = g[i] / (1 + exp(-(double)g[i])) * u[i]; }
    moek_silu_mul_out(out, g, u, n);
    failures += check("silu_mul_out", out, ry, ones, n); cases++;
    for (int i = 0; i < n; i++) if (g[i] != keep[i]) { printf("FAIL silu_mul_out wrote gate\n"); failures++; break; }
    // The routing-weighted SwiGLU and its backward (with the weight's gradient), on lengths
    // around the 16-lane blocks.
    for (size_t c = 1; c <= 50; c += 7) {
      const float wt = 0.37f;
      static float so[n], sdg[n], sdu[n];
      static double rso[n], rdg2[n], rdu2[n];
      double rdot = 0;
      for (size_t i = 0; i < c; i++) {
        const double x = g[i], sg = 1 / (1 + exp(-x)), h = x * sg * u[i], dyw = wt * (double)keep[i];
        rso[i] = wt * h; rdot += keep[i] * h;
        rdu2[i] = dyw * x * sg; rdg2[i] = dyw * u[i] * sg * (1 + x * (1 - sg));
      }
      moek_silu_mul_scaled(so, g, u, wt, c);
      const float dot = moek_silu_mul_backward_scaled(keep, g, u, wt, sdg, sdu, c);
      failures += check("silu_mul_scaled", so, rso, ones, c);
      failures += check("silu_mul_backward_scaled dgate", sdg, rdg2, ones, c);
      failures += check("silu_mul_backward_scaled dup", sdu, rdu2, ones, c); cases += 4;
      if (fabs(dot - rdot) > 1e-4 * (1 + fabs(rdot))) { printf("FAIL silu_mul_backward_scaled dot (n %zu)\n", c); failures++; }
    }
    // Causal softmax rows [r0, r1) of a block with row stride ld > n, then its backward.
    const size_t blocks[][4] = {{1, 1, 0, 1}, {5, 7, 0, 5}, {17, 20, 3, 17}, {40, 48, 9, 33}};
    for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
      const size_t nn = blocks[b][0], ld = blocks[b][1], r0 = blocks[b][2], r1 = blocks[b][3];
      const float sc = 0.37f;
      float *sm = malloc(nn * ld * 4), *p = malloc(nn * ld * 4), *d = malloc(nn * ld * 4), *dp = malloc(nn * ld * 4);
      double *rp = malloc(nn * ld * 8), *rd = malloc(nn * ld * 8), *one = malloc(nn * ld * 8);
      for (size_t i = 0; i < nn * ld; i++) { sm[i] = 4 * rnd(); dp[i] = rnd(); one[i] = 1; }
      for (size_t r = r0; r < r1; r++) {
        double mx = -INFINITY, sum = 0, inner = 0;
        for (size_t c = 0; c <= r; c++) mx = fmax(mx, sc * (double)sm[r * ld + c]);
        for (size_t c = 0; c <= r; c++) sum += exp(sc * (double)sm[r * ld + c] - mx);
        for (size_t c = 0; c < nn; c++) rp[r * ld + c] = c <= r ? exp(sc * (double)sm[r * ld + c] - mx) / sum : 0;
        for (size_t c = 0; c <= r; c++) inner += rp[r * ld + c] * dp[r * ld + c];
        for (size_t c = 0; c < nn; c++) rd[r * ld + c] = c <= r ? sc * rp[r * ld + c] * (dp[r * ld + c] - inner) : 0;
      }
      moek_causal_softmax_rows(sm, ld, nn, r0, r1, sc, 0);
      for (size_t i = 0; i < nn * ld; i++) { p[i] = sm[i]; d[i] = dp[i]; }
      moek_causal_softmax_backward_rows(p, d, ld, nn, r0, r1, sc, 0);
      char what[64];
      for (size_t r = r0; r < r1; r++) {
        snprintf(what, sizeof what, "causal_softmax_rows n=%zu row %zu", nn, r);
        failures += check(what, sm + r * ld, rp + r * ld, one, nn); cases++;
        snprintf(what, sizeof what, "causal_softmax_backward_rows n=%zu row %zu", nn, r);
        failures += check(what, d + r * ld, rd + r * ld, one, nn); cases++;
      }
      free(sm); free(p); free(d); free(dp); free(rp); free(rd); free(one);
    }
    // RoPE rows, both layouts, partial rotary, into a new buffer and in place.
    const size_t ropes[][3] = {{3, 8, 8}, {2, 24, 8}, {2, 160, 160}, {1, 200, 132}};  // heads, head dim, rotary dim
    for (size_t ri = 0; ri < sizeof ropes / sizeof ropes[0]; ri++) {
      const size_t heads = ropes[ri][0], hd = ropes[ri][1], rd = ropes[ri][2], half = rd / 2, len = heads * hd;
      float *x = malloc(len * 4), *o = malloc(len * 4), *cs = malloc(half * 4), *sn = malloc(half * 4);
      double *want = malloc(len * 8), *one = malloc(len * 8);
      for (size_t i = 0; i < half; i++) { cs[i] = rnd(); sn[i] = rnd(); }
      for (int layout = 0; layout < 2; layout++) {
        for (size_t i = 0; i < len; i++) { x[i] = rnd(); want[i] = x[i]; one[i] = 1; }
        for (size_t h = 0; h < heads; h++)
          for (size_t i = 0; i < half; i++) {
            const size_t p0 = h * hd + (layout ? i : 2 * i), p1 = h * hd + (layout ? i + half : 2 * i + 1);
            want[p0] = (double)x[p0] * cs[i] + (double)x[p1] * sn[i];  // sign -1: the inverse rotation
            want[p1] = (double)x[p1] * cs[i] - (double)x[p0] * sn[i];
          }
        char what[80];
        moek_rope_rows(x, o, heads, hd, rd, cs, sn, -1.0f, layout);
        snprintf(what, sizeof what, "rope_rows hd=%zu rd=%zu rotate_half=%d", hd, rd, layout);
        failures += check(what, o, want, one, len); cases++;
        moek_rope_rows(x, x, heads, hd, rd, cs, sn, -1.0f, layout);
        snprintf(what, sizeof what, "rope_rows in place hd=%zu rd=%zu rotate_half=%d", hd, rd, layout);
        failures += check(what, x, want, one, len); cases++;
      }
      free(x); free(o); free(cs); free(sn); free(want); free(one);
    }
    // Softmax rows in place, with masked (-inf) entries, and a row of all -inf (zeros).
    {
      enum { rows = 3, cols = 37, ld = 40 };
      static float sx[rows * ld];
      static double sref[rows * ld], sone[rows * ld];
      for (size_t i = 0; i < rows * ld; i++) { sx[i] = 8 * rnd(); sone[i] = 1; }
      sx[3] = sx[20] = -__builtin_inff();
      for (size_t j = 0; j < cols; j++) sx[2 * ld + j] = -__builtin_inff();
      for (size_t r = 0; r < rows; r++) {
        double mx = -INFINITY, sum = 0;
        for (size_t j = 0; j < cols; j++) mx = fmax(mx, sx[r * ld + j]);
        for (size_t j = 0; j < cols; j++) sum += mx == -INFINITY ? 0 : exp((double)sx[r * ld + j] - mx);
        for (size_t j = 0; j < cols; j++) sref[r * ld + j] = mx == -INFINITY ? 0 : exp((double)sx[r * ld + j] - mx) / sum;
      }
      moek_softmax_rows(sx, ld, cols, rows);
      for (size_t r = 0; r < rows; r++) { failures += check("softmax_rows", sx + r * ld, sref + r * ld, sone, cols); cases++; }
      if (sx[3] != 0 || sx[20] != 0) { printf("FAIL softmax_rows: a -inf entry is not exactly 0\n"); failures++; }
      cases++;
    }
    // Cross-entropy's softmax row: max, f64 sum of exponentials, probabilities.
    const size_t lens[] = {1, 15, 16, 17, 259};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
      const size_t c = lens[li];
      double mx = -INFINITY, sum = 0;
      for (size_t i = 0; i < c; i++) mx = fmax(mx, g[i]);
      for (size_t i = 0; i < c; i++) sum += exp((double)g[i] - mx);
      for (size_t i = 0; i < c; i++) ry[i] = exp((double)g[i] - mx) / sum;
      float gotmx = 0;
      const double got = moek_softmax_row_f64(g, out, c, &gotmx);
      if (gotmx != (float)mx || fabs(got - sum) > 1e-5 * sum) { printf("FAIL softmax_row_f64 max/sum (n %zu)\n", c); failures++; }
      failures += check("softmax_row_f64", out, ry, ones, c); cases += 2;
    }
    // MoE combine: weighted and plain, overwriting and accumulating, and no rows at all.
    const size_t dims[] = {1, 16, 17, 100};
    const intptr_t rows[] = {3, 0, 2, 2};
    const float wts[] = {0.5f, -1.25f, 2.0f, 0.125f};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
      const size_t dd = dims[di];
      for (int weighted = 0; weighted < 2; weighted++)
        for (int acc = 0; acc < 2; acc++)
          for (size_t count = 0; count <= 4; count += 2) {
            double ref[100];
            for (size_t i = 0; i < dd; i++) {
              out[i] = u[i];
              ref[i] = acc ? u[i] : 0;
              for (size_t j = 0; j < count; j++) ref[i] += (weighted ? wts[j] : 1) * (double)g[rows[j] * dd + i];
            }
            moek_combine_rows(out, g, dd, rows, weighted ? wts : NULL, count, acc);
            char what[80];
            snprintf(what, sizeof what, "combine_rows d=%zu weighted=%d acc=%d count=%zu", dd, weighted, acc, count);
            failures += check(what, out, ref, ones, dd); cases++;
          }
    }
  }
  // Integer block leaves: weights quantized by moek_quantize, activations by moek_q8_quantize;
  // the leaf's products equal the f64 products of the dequantized weights and activations.
  const int block_types[] = {MOEK_Q8_0, MOEK_Q4_0, MOEK_Q4_1, MOEK_Q5_0, MOEK_Q5_1, MOEK_IQ4_NL, MOEK_MXFP4, MOEK_Q2_K, MOEK_Q3_K,
                             MOEK_Q4_K, MOEK_Q5_K, MOEK_Q6_K, MOEK_IQ4_XS};
  for (size_t t = 0; t < sizeof(block_types) / sizeof(block_types[0]); t++) {
    const int dt = block_types[t], blk = moek_q8_block(dt);
    if (blk == 0) { printf("%d: no integer leaf on this path\n", dt); continue; }
    const size_t N = 7, K = 512, bytes = K / (size_t)moek_block_elements(dt) * (size_t)moek_block_bytes(dt);
    // 1 to 9 activation rows and 17: AVX-512 multiplies 8 per weight block, so 9 and 17 cover
    // a remainder after one and two whole groups.
    float *Wf = malloc(N * K * 4), *Wd = malloc(N * K * 4), *X = malloc(17 * K * 4), *Y = malloc(17 * N * 4);
    uint8_t *Wq = malloc(N * bytes);
    const size_t rb = moek_q8_row_bytes(K, blk);
    uint8_t *Xq = malloc(17 * rb);
    for (size_t i = 0; i < N * K; i++) Wf[i] = rnd() * (1 + (i % 97 == 0) * 20);
    if (dt == MOEK_IQ4_NL) {  // no quantizer: random code-book indices under a scale of 0.05 (f16 0x2A66)
      for (size_t i = 0; i < N * bytes; i++) Wq[i] = (uint8_t)(rnd() * 127 + 128);
      for (size_t i = 0; i < N * bytes; i += 18) { Wq[i] = 0x66; Wq[i + 1] = 0x2A; }
    } else if (!moek_can_quantize(dt)) {  // Q2_K, Q3_K, IQ4_XS: random bytes under f16 scales of 0.05
      const size_t bb = (size_t)moek_block_bytes(dt);
      const size_t scale_at = dt == MOEK_Q2_K ? 80 : dt == MOEK_Q3_K ? 108 : 0, scales = dt == MOEK_Q2_K ? 2 : 1;
      for (size_t i = 0; i < N * bytes; i++) Wq[i] = (uint8_t)(rnd() * 127 + 128);
      for (size_t i = 0; i < N * bytes; i += bb)
        for (size_t s2 = 0; s2 < scales; s2++) { Wq[i + scale_at + 2 * s2] = 0x66; Wq[i + scale_at + 2 * s2 + 1] = 0x2A; }
    } else {
      moek_quantize(Wf, dt, Wq, N * K);
      // MXFP4: row 0's scales below the normal range (e8m0 0 and 1, which halve to subnormals).
      if (dt == MOEK_MXFP4) for (size_t i = 0; i < K / 32; i++) Wq[i * 17] = (uint8_t)(i & 1);
    }
    moek_dequantize(Wq, dt, Wd, N * K);
    for (int M = 1; M <= 17; M += M < 9 ? 1 : 8) {
      for (size_t i = 0; i < (size_t)M * K; i++) X[i] = rnd() * 3;
      double *ref = malloc(M * N * 8), *scale = malloc(M * N * 8);
      for (int m = 0; m < M; m++) {
        moek_q8_quantize(X + m * K, K, blk, Xq + m * rb);
        const int8_t *q = (const int8_t *)(Xq + m * rb);
        const float *d = (const float *)(Xq + m * rb + moek_q8_scales_offset(K));
        for (size_t k = 0; k < K; k++) {
          const double xd = (double)q[k] * d[k / blk];
          if (fabs(xd - X[m * K + k]) > d[k / blk] * 0.5001 + 1e-7) { printf("FAIL q8 activation %zu\n", k); failures++; break; }
        }
        for (size_t n = 0; n < N; n++) {
          double acc = 0, a = 0;
          for (size_t k = 0; k < K; k++) { const double p = (double)Wd[n * K + k] * q[k] * d[k / blk]; acc += p; a += fabs(p); }
          ref[m * N + n] = acc; scale[m * N + n] = a;
        }
      }
      if (!moek_gemv_rows_q8(Wq, dt, K, Xq, rb, M, Y, N, 0, N, K)) { printf("FAIL %d: leaf refused\n", dt); failures++; }
      char what[80];
      snprintf(what, sizeof what, "gemv_rows_q8 type %d rows %d", dt, M);
      failures += check(what, Y, ref, scale, (size_t)M * N); cases++;
      for (int m = 0; dt == MOEK_MXFP4 && m < M; m++)  // the subnormal row, relative to its own size
        if (!(fabs(Y[(size_t)m * N] - ref[(size_t)m * N]) <= 1e-5 * scale[(size_t)m * N])) {
          printf("FAIL %s: subnormal-scale row, activation row %d: got %g want %g\n", what, m, Y[(size_t)m * N], ref[(size_t)m * N]);
          failures++;
          break;
        }
      free(ref); free(scale);
    }
    free(Wf); free(Wd); free(X); free(Y); free(Wq); free(Xq);
  }
  // QMoE's coded ternary rows: random runs of 2...56 weights (masks over the first 28, zeros
  // past them) as a dictionary, rows of K weights coded with it, against the sums in double.
  {
    uint64_t *dict = malloc(65536 * sizeof(uint64_t));
    for (int i = 0; i < 65536; i++) {
      const int len = 2 + 2 * (i % 28);
      uint64_t pm = 0, nm = 0;
      for (int j = 0; j < len && j < 28; j++) {
        const float u = rnd();
        if (u > 0.6f) pm |= 1ull << j; else if (u < -0.6f) nm |= 1ull << j;
      }
      dict[i] = pm | nm << 28 | (uint64_t)len << 56;
    }
    const size_t Ks[] = {30, 100, 256, 514};
    for (size_t ki = 0; ki < 4; ki++) {
      const size_t K = Ks[ki], N = 7;
      uint16_t *codes = malloc(N * K * sizeof(uint16_t));
      uint32_t offsets[8];
      uint16_t scales[14];
      size_t c = 0;
      for (size_t r = 0; r < N; r++) {
        offsets[r] = (uint32_t)c;
        size_t pos = 0;
        while (pos < K) {  // a run that fits what is left of the row
          const size_t left = K - pos;
          size_t pick = (size_t)((rnd() + 1) * 32767) % 65536;
          if (2 + 2 * (pick % 28) > left) pick = left / 2 - 1;  // entry i < 28 runs 2 + 2i weights
          codes[c++] = (uint16_t)pick;
          pos += (size_t)((dict[pick] >> 56) & 63);
        }
        scales[2 * r] = 0xB800;      // lo -0.5
        scales[2 * r + 1] = 0x3C00;  // hi 1
      }
      offsets[N] = (uint32_t)c;
      for (int M = 1; M <= 3; M++) {
        float *X = malloc(M * K * sizeof(float)), *Y = malloc(M * N * sizeof(float));
        double *ref = malloc(M * N * sizeof(double)), *scale = malloc(M * N * sizeof(double));
        for (size_t i = 0; i < M * K; i++) X[i] = rnd();
        for (int m = 0; m < M; m++) {
          for (size_t r = 0; r < N; r++) {
            double acc = 0, a = 0;
            size_t pos = 0;
            for (uint32_t k = offsets[r]; k < offsets[r + 1]; k++) {
              const uint64_t e = dict[codes[k]];
              const size_t len = (size_t)((e >> 56) & 63);
              for (size_t j = 0; j < len; j++) {
                const double w = j >= 28 ? 0.0 : ((e >> j) & 1) ? 1.0 : ((e >> (28 + j)) & 1) ? -0.5 : 0.0;
                acc += w * X[m * K + pos + j];
                a += fabs(w * X[m * K + pos + j]);
              }
              pos += len;
            }
            ref[m * N + r] = acc;
            scale[m * N + r] = a;
          }
        }
        moek_ternary_gemv_rows(codes, offsets, scales, dict, X, K, M, Y, N, 0, N, K);
        char what[80];
        snprintf(what, sizeof what, "ternary_gemv_rows K %zu rows %d", K, M);
        failures += check(what, Y, ref, scale, (size_t)M * N); cases++;
        free(X); free(Y); free(ref); free(scale);
      }
      free(codes);
    }
    free(dict);
  }
  // Packed bf16 rows (bf16_packed.c): unpacking gives the words back, and the products equal the
  // bf16 leaf's bit for bit (a zero in row 1 keeps that row raw).
  {
    const size_t Ks[] = {32, 96, 768, 2048, 5120}, N = 13;
    for (size_t ki = 0; ki < sizeof(Ks) / sizeof(Ks[0]); ki++) {
      const size_t K = Ks[ki];
      float *Wf = malloc(N * K * 4), *X = malloc(4 * K * 4), Y[4 * 13], Z[4 * 13];
      uint16_t *W = malloc(N * K * 2), *U = malloc(N * K * 2);
      uint8_t *P = malloc(N * K * 2);
      uint64_t offsets[14];
      for (size_t i = 0; i < N * K; i++) Wf[i] = rnd() * 0.05f;
      Wf[K + 3] = 0;
      for (size_t i = 0; i < 4 * K; i++) X[i] = rnd();
      moek_from_f32(Wf, MOEK_BF16, W, N * K);
      moek_bf16p_pack(W, N, K, P, offsets);
      moek_bf16p_unpack_rows(P, offsets, K, 0, N, U);
      char what[80];
      snprintf(what, sizeof what, "bf16p unpack K %zu", K);
      if (memcmp(U, W, N * K * 2) != 0) { printf("FAIL %s\n", what); failures++; }
      cases++;
      for (int nx = 1; nx <= 4; nx++) {
        moek_gemv_rows_next(W, MOEK_BF16, K, X, K, nx, Y, N, 0, N, K, NULL);
        moek_gemv_bf16p(P, offsets, K, X, K, nx, Z, N, 5, N, 0, NULL);
        moek_gemv_bf16p(P, offsets, K, X, K, nx, Z, N, 0, 5, 0, NULL);
        snprintf(what, sizeof what, "bf16p gemv K %zu rows %d", K, nx);
        if (memcmp(Y, Z, (size_t)nx * N * 4) != 0) { printf("FAIL %s\n", what); failures++; }
        cases++;
      }
      free(Wf); free(X); free(W); free(U); free(P);
    }
  }
  printf("%d passed, %d failed\n", cases - failures, failures);
  return failures ? 1 : 0;
}
