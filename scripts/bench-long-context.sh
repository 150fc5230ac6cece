#!/usr/bin/env bash
# Decode at a long context, where each token also reads the whole KV cache: `moe bench` with an
# f32 and an f16 KV cache (`--kv-cache`) against llama.cpp (whose default cache is f16) on the
# same GGUF files, in one sitting. MoEKit prefills CONTEXT tokens then decodes 64; llama-bench
# prefills CONTEXT tokens from empty (pp) and decodes 64 at a depth of CONTEXT (tg), the same
# work. The files are bench-gguf-vs-llama.sh's (run it first), 2 threads. MoEKit's line also
# gives its decode against the read bandwidth over the bytes a token reads (weights and cache
# rows, windowed as bench-gguf-vs-llama.sh's) and its peak RSS against the file and KV cache.
#
#     scripts/bench-long-context.sh [ROUNDS] [LLAMA_DIR] [CONTEXT] [FILES]
set -euo pipefail
rounds=${1:-2}
llama=$(realpath -m "${2:-.llama.cpp}")
context=${3:-2000}
files=${4:-"olmoe.Q4_K_M qwen3moe.Q4_K_M mixtral.Q4_K_M"}
work=${TMPDIR:-/tmp}/moekit-gguf-bench
moe=.build/release/moe
for r in $(seq "$rounds"); do
  for f in $files; do
    [ -f "$work/$f.gguf" ] || { echo "missing $work/$f.gguf: run scripts/bench-gguf-vs-llama.sh first" >&2; exit 2; }
    for kv in f32 f16; do
      "$moe" bench --model "$work/$f.gguf" --prompt-tokens "$context" --gen-tokens 64 --reps 1 --threads 2 --kv-cache "$kv" | python3 -c "
import json, os, sys; d = json.load(sys.stdin)
print(f'round $r $f moekit (kv $kv)  prefill {d[\"prefill_tokens_per_s\"]:7.1f} decode {d[\"decode_tokens_per_s\"]:6.1f} tok/s'
      f' ({d[\"decode_fraction_of_windowed_bandwidth\"]:.2f} of {d[\"read_bandwidth_windowed_gbs\"]:.1f} GB/s windowed over'
      f' {d[\"decode_bytes_per_token\"] / 1e6:.0f} MB of weights and {d[\"decode_cache_bytes_per_token\"] / 1e6:.0f} of cache a token),'
      f' peak RSS {d[\"peak_rss_bytes\"] / 2**20:.0f} MiB,'
      f' {d[\"peak_rss_bytes\"] / (os.path.getsize(\"$work/$f.gguf\") + d[\"kv_cache_bytes\"]):.2f}x file and KV cache')"
    done
    pp=$("$llama/build/bin/llama-bench" -m "$work/$f.gguf" -p "$context" -n 0 -t 2 -r 1 -o json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['avg_ts'])")
    tg=$("$llama/build/bin/llama-bench" -m "$work/$f.gguf" -p 0 -n 64 -d "$context" -t 2 -r 1 -o json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['avg_ts'])")
    printf 'round %s %s llama.cpp (kv f16) prefill %7.1f decode %6.1f tok/s\n' "$r" "$f" "$pp" "$tg"
  done
done
