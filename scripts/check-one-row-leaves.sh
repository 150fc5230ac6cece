#!/usr/bin/env bash
# The one-row integer leaves built as the release build compiles them (scripts/check_one_row_leaves.c
# says why and what it checks), for CI: exits non-zero on the first result off its bound.
#
#     scripts/check-one-row-leaves.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../Sources/_MoEKernels"
out=${TMPDIR:-/tmp}/moekit-check-one-row-leaves
mkdir -p "$out"
clang -O2 -I"$src" -I"$src/include" "$src"/*.c "$here/check_one_row_leaves.c" -lpthread -lm -o "$out/check_one_row_leaves"
"$out/check_one_row_leaves"
