#!/usr/bin/env bash
# Where a decoded token's time goes on the calling thread, step by step: a copy of the sources
# (the files git tracks, as they are in this checkout: edits included, a new file once it is
# added) gets a clock stamp at each step of decode (scripts/decode_timeline.py, which names
# them), is built in release, and `moe bench` on FILE writes the stamps; the report gives each
# step's microseconds a token on the calling thread alone (the other threads waiting) and each
# parallel loop's. The copy lives in $TMPDIR/moekit-timeline, so the next run rebuilds only what
# changed. Only the copy is patched.
#
#     scripts/decode-timeline.sh FILE.gguf [TOKENS]      # default: 256 generated tokens
#     PROMPT=4096 scripts/decode-timeline.sh FILE.gguf 64   # decode after a long prompt (default 128)
set -euo pipefail
model=$1
tokens=${2:-256}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
copy=${TMPDIR:-/tmp}/moekit-timeline
mkdir -p "$copy"
rm -rf "$copy/Sources" "$copy/Tests" "$copy/Package.swift"
(cd "$root" && git ls-files -z -- Package.swift Sources Tests | xargs -0 cp --parents -t "$copy")
python3 "$here/decode_timeline.py" patch "$copy"
(cd "$copy" && swift build -c release --product moe > build.log 2>&1) || { tail -n 30 "$copy/build.log"; exit 1; }
stamps="$copy/stamps.txt"
rm -f "$stamps"
MOEKIT_TIMELINE="$stamps" "$copy/.build/release/moe" bench --model "$model" --threads 2 --kv-cache f16 \
  --prompt-tokens "${PROMPT:-128}" --gen-tokens "$tokens" | python3 -c "
import json, sys; d = json.load(sys.stdin)
print('decode %.1f tok/s, serial fraction %.3f, windowed probe %.1f GB/s' % (d['decode_tokens_per_s'], d['decode_serial_fraction'], d.get('read_bandwidth_windowed_gbs') or 0))"
python3 "$here/decode_timeline.py" report "$stamps"
