#!/usr/bin/env bash
# Fuzzes the GGUF reader with libFuzzer (clang's, in the Swift toolchain) under AddressSanitizer:
# builds the C leaves, MoECore and the reader's sources into one fuzz binary, seeds the corpus
# with the committed GGUF fixtures, and runs for SECONDS (default 600). Exits non-zero on any
# crash, hang (5 s per input) or allocation past 2 GB.
#
#     scripts/fuzz-gguf.sh [SECONDS]
set -euo pipefail
seconds=${1:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${TMPDIR:-/tmp}/moekit-fuzz-gguf
rm -rf "$work/obj" "$work/src" && mkdir -p "$work/obj" "$work/src" "$work/mod" "$work/corpus"
# The SIMD leaves build plainly (instrumenting the matmul micro-kernels takes many minutes and
# fuzzes nothing); the block-format code the reader reaches (dequant.c) and the dispatcher are
# instrumented.
for f in "$root"/Sources/_MoEKernels/*.c; do
  case "$(basename "$f")" in
    dequant.c|dispatch.c) flags="-O1 -g -fsanitize=fuzzer-no-link,address" ;;
    *) flags="-O2" ;;
  esac
  clang $flags -I "$root/Sources/_MoEKernels/include" -I "$root/Sources/_MoEKernels" -c "$f" -o "$work/obj/$(basename "$f" .c).o"
done
printf 'module _MoEKernels {\n  header "%s"\n  export *\n}\n' "$root/Sources/_MoEKernels/include/moe_kernels.h" > "$work/mod/module.modulemap"
# The reader's sources, compiled into the same module as MoECore (so without `import MoECore`).
for f in GGUF.swift GGUF+Parsing.swift GGUF+Tokenizer.swift ModelError.swift Tokenizer.swift Tokenizer+Components.swift; do
  sed -e '/^import MoECore$/d' -e '/^import MoE$/d' "$root/Sources/MoEModels/$f" > "$work/src/$f"
done
swiftc -Onone -g -sanitize=fuzzer,address -parse-as-library -module-name GGUFFuzz -I "$work/mod" \
  "$root"/Sources/MoECore/*.swift "$work"/src/*.swift "$root/scripts/fuzz/GGUFFuzz.swift" "$work"/obj/*.o \
  -o "$work/fuzz-gguf"
cp "$root"/Tests/Fixtures/gguf/*.gguf "$root"/Tests/Fixtures/gguf_models/qwen3_moe.q8_0.gguf "$work/corpus/"
"$work/fuzz-gguf" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=200000 "$work/corpus"
