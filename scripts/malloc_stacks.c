// An LD_PRELOAD library that counts malloc calls by call stack (the 10 frames above malloc) and
// writes "count frame frame ..." lines at exit, each frame as object+offset, to $MT_OUT.
// Built and run by scripts/count-mallocs.sh; not part of the package.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DEPTH = 10, SLOTS = 1 << 16 };
typedef struct { void *frames[DEPTH]; long count; } entry;
static entry table[SLOTS];
static void *(*real_malloc)(size_t);
static __thread int inside;
static int counting;

/// Counts this call's stack (open addressing on a hash of the frames).
static void record(void) {
  if (inside || !counting) return;
  inside = 1;
  void *b[DEPTH + 2];
  const int n = backtrace(b, DEPTH + 2);
  void *f[DEPTH];
  memset(f, 0, sizeof f);
  for (int i = 2; i < n && i - 2 < DEPTH; i++) f[i - 2] = b[i];
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < DEPTH; i++) h = (h ^ (uint64_t)f[i]) * 1099511628211ull;
  for (uint64_t k = h & (SLOTS - 1), probes = 0; probes < SLOTS; k = (k + 1) & (SLOTS - 1), probes++) {
    if (table[k].count == 0) {
      memcpy(table[k].frames, f, sizeof f);
      table[k].count = 1;
      break;
    }
    if (!memcmp(table[k].frames, f, sizeof f)) {
      __atomic_fetch_add(&table[k].count, 1, __ATOMIC_RELAXED);
      break;
    }
  }
  inside = 0;
}

void *malloc(size_t size) {
  if (!real_malloc) real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
  record();
  return real_malloc(size);
}

__attribute__((constructor)) static void start(void) {
  void *b[4];
  backtrace(b, 4);  // loads libgcc's unwinder before counting starts
  counting = 1;
}

__attribute__((destructor)) static void report(void) {
  counting = 0;
  const char *path = getenv("MT_OUT");
  FILE *out = fopen(path ? path : "mallocs.txt", "w");
  if (!out) return;
  for (int k = 0; k < SLOTS; k++) {
    if (!table[k].count) continue;
    fprintf(out, "%ld", table[k].count);
    for (int i = 0; i < DEPTH && table[k].frames[i]; i++) {
      Dl_info info;
      if (dladdr(table[k].frames[i], &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        fprintf(out, " %s+0x%lx", slash ? slash + 1 : info.dli_fname,
                (long)((char *)table[k].frames[i] - (char *)info.dli_fbase));
      } else {
        fprintf(out, " ?");
      }
    }
    fprintf(out, "\n");
  }
  fclose(out);
}
