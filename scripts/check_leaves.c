// Checks every leaf of the selected ISA path against plain C, for a build of _MoEKernels on
// another architecture (run by scripts/check-neon.sh under qemu). The Swift tests cover the
// paths this machine can run; this covers NEON from an x86 host.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include "moe_kernels.h"

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
      free(A); free(Wf); free(Ww); free(Wh); free(C); free(ref); free(scale); free(Ap);
    }
  }
  printf("%d passed, %d failed\n", cases - failures, failures);
  return failures ? 1 : 0;
}
