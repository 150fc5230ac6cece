#!/usr/bin/env bash
# Cross-compiles the C leaf kernels for AArch64 and checks the NEON path against plain C under
# qemu-user. Needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (the
# script installs them with apt-get when missing and it runs as root). Not part of `swift test`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../Sources/_MoEKernels"
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
aarch64-linux-gnu-gcc -O2 -std=c11 -D_POSIX_C_SOURCE=200112L -I"$src/include" -I"$src" \
  "$src"/*.c "$here/check_leaves.c" -lm -o "$out/check_leaves"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/check_leaves"
