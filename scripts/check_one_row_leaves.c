// The one-row (decode) integer leaves as the release build compiles them (-O2; `swift test`
// builds the C target at -O0, where undefined vector lanes can happen to be zero): every block
// format, rows of 256 to 16384 values, 23 weight rows, one activation row, on each build this
// machine runs (AVX-512 VNNI with and without VBMI, AVX-512 without VNNI, AVX2, scalar), against
// the f32 product of the dequantized weights, within the bound that rounding the activation to
// 8-bit blocks allows. Built and run by scripts/check-one-row-leaves.sh (CI); exits 1 on the
// first miss. (scripts/check_leaves.c checks every leaf on one path, for the NEON build.)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "moe_kernels.h"

/// The f16 1/2^k pattern in [2^-7, 2^-6): sane scales for random blocks.
static uint16_t sane_half(void) { return (uint16_t)(0x2000 + (rand() & 0x3ff)); }

int main(void) {
  const char *names[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "mxfp4", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs"};
  const int types[] = {MOEK_Q8_0, MOEK_Q4_0,  MOEK_Q4_1, MOEK_Q5_0, MOEK_Q5_1, MOEK_IQ4_NL, MOEK_MXFP4,
                       MOEK_Q2_K, MOEK_Q3_K, MOEK_Q4_K, MOEK_Q5_K, MOEK_Q6_K, MOEK_IQ4_XS};
  // Byte offsets of each format's f16 fields (-1: none), set sane below; the rest stays random.
  const int halves[][2] = {{0, -1}, {0, -1}, {0, 2}, {0, -1}, {0, 2}, {0, -1}, {-1, -1},
                           {80, 82}, {108, -1}, {0, 2}, {0, 2}, {208, -1}, {0, -1}};
  const size_t ks[] = {256, 512, 768, 2048, 2560, 16384}, rows = 23;
  // builds: isa, vnni allowed, vbmi allowed
  const int builds[][3] = {{MOEK_ISA_AVX512, 1, 1}, {MOEK_ISA_AVX512, 1, 0}, {MOEK_ISA_AVX512, 0, 0},
                           {MOEK_ISA_AVX2, 1, 1}, {MOEK_ISA_NEON, 1, 1}, {MOEK_ISA_SCALAR, 1, 1}};
  srand(7);
  int checked = 0;
  for (size_t f = 0; f < sizeof(types) / sizeof(types[0]); f++) {
    const int dt = types[f], block = moek_q8_block(dt);
    const size_t bytes = (size_t)moek_block_bytes(dt), per = (size_t)moek_block_elements(dt);
    if (block == 0) continue;
    for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
      const size_t k = ks[ki], rb = k / per * bytes;
      uint8_t *w = malloc(rows * rb);
      for (size_t i = 0; i < rows * rb; i++) w[i] = (uint8_t)rand();
      for (size_t b = 0; b < rows * rb / bytes; b++) {
        if (dt == MOEK_MXFP4) w[b * bytes] = (uint8_t)(118 + rand() % 16);
        for (int s = 0; s < 2; s++)
          if (halves[f][s] >= 0) {
            const uint16_t h = sane_half();
            memcpy(w + b * bytes + halves[f][s], &h, 2);
          }
      }
      float *dense = malloc(rows * k * sizeof(float)), *x = malloc(k * sizeof(float)), y[23];
      moek_dequantize_reference(w, dt, dense, rows * k);
      for (size_t i = 0; i < k; i++) x[i] = (float)(rand() / (double)RAND_MAX - 0.5) * ((i % 97) ? 1.0f : 20.0f);
      void *xq = aligned_alloc(64, (moek_q8_row_bytes(k, block) + 63) / 64 * 64);
      moek_q8_quantize(x, k, block, xq);
      for (size_t c = 0; c < sizeof(builds) / sizeof(builds[0]); c++) {
        if (!moek_isa_supported(builds[c][0])) continue;
        moek_force_isa(builds[c][0]);
        moek_allow_vnni(builds[c][1]);
        moek_allow_vbmi(builds[c][2]);
        memset(y, 0, sizeof(y));
        if (!moek_gemv_rows_q8(w, dt, k, xq, 0, 1, y, 0, 0, rows, k)) continue;  // no integer leaf on this build
        for (size_t r = 0; r < rows; r++) {
          double want = 0, bound = 0;
          for (size_t b = 0; b < k; b += (size_t)block) {
            double amax = 0, wsum = 0;
            for (size_t i = b; i < b + (size_t)block; i++) {
              want += (double)dense[r * k + i] * x[i];
              amax = fmax(amax, fabs(x[i]));
              wsum += fabs(dense[r * k + i]);
            }
            bound += amax / 254 * wsum * 1.001;
          }
          bound += 1e-4 * fabs(want) + 1e-6;
          if (!(fabs(y[r] - want) <= bound)) {
            printf("FAIL %s K %zu row %zu isa %d vnni %d vbmi %d: %.9g, want %.9g within %.3g\n", names[f], k, r,
                   builds[c][0], builds[c][1], builds[c][2], y[r], want, bound);
            return 1;
          }
        }
        checked++;
      }
      moek_force_isa(moek_best_isa());
      moek_allow_vnni(1);
      moek_allow_vbmi(1);
      free(w);
      free(dense);
      free(x);
      free(xq);
    }
  }
  printf("one-row leaves at -O2: %d (format, K, build) cases of %zu rows, all within the activation rounding bound\n",
         checked, rows);
  return 0;
}
