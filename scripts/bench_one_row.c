// The one-row (decode) block leaves (Q8_0, Q4_0, Q5_0, IQ4_NL, MXFP4, the K-quants, IQ4_XS), alone: GB/s of weights through `moek_gemv_rows_q8` against
// one quantized activation row, in cache (one and two threads) and from memory (two threads,
// each pass beside the read probe over the same bytes, as `moe bench` reports decode). Built and
// run by scripts/bench-one-row.sh. Weights are random bytes with sane f16 scales: the leaves'
// speed does not depend on the values.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "moe_kernels.h"

typedef struct { int mode, dt; const uint8_t *w; size_t row_bytes, r0, r1, k; const void *xq; float *y; int reps; } job;
static volatile float sink;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *work(void *arg) {
  const job *j = arg;
  for (int r = 0; r < j->reps; r++) {
    if (j->mode == 0) {
      moek_gemv_rows_q8(j->w, j->dt, j->k, j->xq, 0, 1, j->y, 0, j->r0, j->r1, j->k);
    } else {  // the read probe, in 1 MiB pieces as `moe bench` runs it
      const size_t n = (j->r1 - j->r0) * j->row_bytes / 4, piece = 1 << 18;
      const float *p = (const float *)(j->w + j->r0 * j->row_bytes);
      for (size_t s = 0; s < n; s += piece) sink += moek_read_probe(p + s, n - s < piece ? n - s : piece);
    }
  }
  return NULL;
}

/// GB/s of `mode` (0 the leaf, 1 the probe) over rows [0, rows) split between `threads`.
static double rate(int mode, int dt, int threads, const uint8_t *w, size_t row_bytes, size_t rows, size_t k, const void *xq,
                   float *y, int reps) {
  pthread_t t[2];
  job j[2];
  const double t0 = now();
  for (int i = 0; i < threads; i++) {
    j[i] = (job){mode, dt, w, row_bytes, rows * i / threads, rows * (i + 1) / threads, k, xq, y, reps};
    pthread_create(&t[i], NULL, work, &j[i]);
  }
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  return (double)(rows * row_bytes) * reps / (now() - t0) / 1e9;
}

static int by_value(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  const char *names[] = {"q8_0", "q4_0", "q5_0", "iq4_nl", "mxfp4", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs"};
  const int types[] = {MOEK_Q8_0, MOEK_Q4_0, MOEK_Q5_0, MOEK_IQ4_NL, MOEK_MXFP4, MOEK_Q3_K, MOEK_Q4_K, MOEK_Q5_K, MOEK_Q6_K, MOEK_IQ4_XS};
  // Offsets of each format's f16 scales in its block (the rest stays random; MXFP4's scale byte
  // is set below).
  const int d_at[][2] = {{0, -1}, {0, -1}, {0, -1}, {0, -1}, {-1, -1}, {108, -1}, {0, 2}, {0, 2}, {208, -1}, {0, -1}};
  const char *only = getenv("FORMATS");  // e.g. FORMATS="q8_0 mxfp4": those alone
  const size_t k = argc > 1 ? (size_t)atol(argv[1]) : 1024;
  const int rounds = argc > 2 ? atoi(argv[2]) : 11;
  const size_t memory_bytes = (size_t)256 << 20;
  float *x = malloc(k * sizeof(float));
  srand(1);
  for (size_t i = 0; i < k; i++) x[i] = (float)(rand() / (double)RAND_MAX) - 0.5f;
  printf("K %zu, %d rounds, medians (GB/s of weights); memory: %zu MiB, two threads, leaf / probe beside it\n", k, rounds,
         memory_bytes >> 20);
  for (size_t f = 0; f < sizeof(types) / sizeof(types[0]); f++) {
    const int dt = types[f], block = moek_q8_block(dt);
    if (only && !strstr(only, names[f])) continue;
    const size_t bytes = (size_t)moek_block_bytes(dt), per_block = (size_t)moek_block_elements(dt);
    if (block == 0 || k % 256) continue;
    const size_t row_bytes = k / per_block * bytes, rows = memory_bytes / row_bytes;
    uint8_t *w = aligned_alloc(64, (rows * row_bytes + 16384 + 63) / 64 * 64);
    for (size_t i = 0; i < rows * row_bytes + 16384; i++) w[i] = (uint8_t)rand();
    for (size_t b = 0; b < rows * row_bytes / bytes; b++) {
      // MXFP4's scale byte near 2^0, as in a real file (random exponents make subnormal and
      // infinite scales, whose arithmetic is slow on some machines).
      if (dt == MOEK_MXFP4) w[b * bytes] = (uint8_t)(120 + rand() % 16);
      for (int s = 0; s < 2; s++)
        if (d_at[f][s] >= 0) {
          const uint16_t h = (uint16_t)(0x1c00 + (rand() & 0x3ff));
          memcpy(w + b * bytes + d_at[f][s], &h, 2);
        }
    }
    const char *mapped = getenv("MAPPED");  // a file: the weights from its page cache, as a GGUF is mapped
    if (mapped) {
      FILE *fp = fopen(mapped, "wb");
      if (!fp || fwrite(w, 1, rows * row_bytes + 16384, fp) != rows * row_bytes + 16384 || fclose(fp)) {
        fprintf(stderr, "cannot write %s\n", mapped);
        return 1;
      }
      free(w);
      const int fd = open(mapped, O_RDONLY);
      w = fd < 0 ? MAP_FAILED : mmap(NULL, rows * row_bytes + 16384, PROT_READ, MAP_SHARED, fd, 0);
      if (w == MAP_FAILED) {
        fprintf(stderr, "cannot map %s\n", mapped);
        return 1;
      }
      close(fd);
      for (size_t i = 0; i < rows * row_bytes; i += 4096) sink += w[i];  // into this process's page tables
    }
    void *xq = aligned_alloc(64, (moek_q8_row_bytes(k, block) + 63) / 64 * 64);
    moek_q8_quantize(x, k, block, xq);
    float *y = calloc(rows, sizeof(float));
    const size_t cached = (32 << 10) / row_bytes;  // 32 KB of rows a thread: L1 and L2
    double one[64], two[64], mem[64], share[64];
    for (int r = 0; r < rounds && r < 64; r++) {
      one[r] = rate(0, dt, 1, w, row_bytes, cached, k, xq, y, 20000);
      two[r] = rate(0, dt, 2, w, row_bytes, 2 * cached, k, xq, y, 20000);
      mem[r] = rate(0, dt, 2, w, row_bytes, rows, k, xq, y, 1);
      share[r] = mem[r] / rate(1, dt, 2, w, row_bytes, rows, k, xq, y, 1);
    }
    const int n = rounds < 64 ? rounds : 64;
    qsort(one, n, sizeof(double), by_value);
    qsort(two, n, sizeof(double), by_value);
    qsort(mem, n, sizeof(double), by_value);
    qsort(share, n, sizeof(double), by_value);
    printf("%-7s in cache 1 thread %5.1f, 2 threads %5.1f; from memory %5.1f, %.2f of the probe\n", names[f], one[n / 2],
           two[n / 2], mem[n / 2], share[n / 2]);
    if (mapped) munmap(w, rows * row_bytes + 16384); else free(w);
    free(xq);
    free(y);
  }
  free(x);
  return 0;
}
