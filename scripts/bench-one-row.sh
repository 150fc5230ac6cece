#!/usr/bin/env bash
# The one-row (decode) block leaves alone, in cache and from memory beside the read probe
# (scripts/bench_one_row.c), built with clang from the package's C sources as SwiftPM's release
# build compiles them. Speed only; `swift test` checks the leaves' results.
#
#     scripts/bench-one-row.sh [K] [ROUNDS]      # default: rows of 1024, 11 rounds
#     FORMATS="q8_0 mxfp4" scripts/bench-one-row.sh    # those formats alone
#     MAPPED=/tmp/w.bin scripts/bench-one-row.sh       # weights written to that file and mapped, as a GGUF
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../Sources/_MoEKernels"
out=${TMPDIR:-/tmp}/moekit-bench-one-row
mkdir -p "$out"
clang -O2 -I"$src" -I"$src/include" "$src"/*.c "$here/bench_one_row.c" -lpthread -lm -o "$out/bench_one_row"
"$out/bench_one_row" "${1:-1024}" "${2:-11}"
