#!/usr/bin/env bash
# Decode only, MoEKit against llama.cpp on one GGUF file, in N alternating pairs (this VM's
# memory speed moves from minute to minute, so only a pair's ratio and the median of the pairs
# mean anything): `moe bench` (16-token prompt, 32 generated, 2 repetitions) then `llama-bench
# -p 0 -n 32 -r 2`, 2 threads; each line gives MoEKit's own read probe beside its rate. MoEKit's KV
# cache is f16 as llama-bench's is (environment KV=f32 for the exact cache).
#
#     scripts/bench-decode-pairs.sh FILE.gguf [N] [LLAMA_DIR]
set -euo pipefail
f=$1
n=${2:-5}
llama=$(realpath -m "${3:-.llama.cpp}")
moe=.build/release/moe
cat "$f" > /dev/null  # into the page cache first
for _ in $(seq "$n"); do
  a=$("$moe" bench --model "$f" --prompt-tokens 16 --gen-tokens 32 --threads 2 --reps 2 --kv-cache "${KV:-f16}" | python3 -c "
import json, sys; d = json.load(sys.stdin); print(d['decode_tokens_per_s'], d['read_bandwidth_gbs'])")
  b=$("$llama/build/bin/llama-bench" -m "$f" -p 0 -n 32 -t 2 -r 2 -o json 2>/dev/null | python3 -c "
import json, sys; print(json.load(sys.stdin)[0]['avg_ts'])")
  echo "$a $b"
done | python3 -c "
import sys
ratios = []
for line in sys.stdin:
    a, probe, b = map(float, line.split())
    ratios.append(a / b)
    print(f'moekit {a:6.1f} tok/s (probe {probe:4.1f} GB/s)  llama.cpp {b:6.1f} tok/s  ratio {a / b:.3f}')
ratios.sort()
k = len(ratios) // 2
median = ratios[k] if len(ratios) % 2 else (ratios[k - 1] + ratios[k]) / 2
print(f'median ratio {median:.3f} of {len(ratios)} pairs')"
