#!/usr/bin/env bash
# A model bigger than this machine's memory: MoEKit with `--memory-budget` against llama.cpp's
# default mmap on the same GGUF file, in one sitting.
#
# The model: Qwen3-MoE-shaped (hidden 2048, 32/4 heads of 128, 128 experts of 768, top-8, as
# Qwen3-30B-A3B) with LAYERS layers (default 24: a 30.2 GB bf16 GGUF), vocabulary 32000, written
# by `moe init-random` (streamed, tensor by tensor) and converted by `moe quantize --type bf16`;
# the checkpoint folder is deleted once the GGUF exists, so the disk holds one copy (about 62 GB
# free is needed while converting).
#
# Each run starts with a cold page cache where the user may drop it (root), takes a 16-token
# random prompt and decodes 64 random tokens (llama-bench's method; MoEKit's `--random-tokens`),
# after one warm-up repetition, REPS timed ones, 2 threads. Peak resident memory comes from
# /usr/bin/time (llama.cpp's counts the file pages it maps; MoEKit's the cache and what stays
# resident). Order: llama.cpp, then MoEKit with LRU through the page cache, LRU with direct I/O,
# LRU with direct I/O and router lookahead, LFU with direct I/O, and the lookahead run again with
# `--precision bf16` (activations rounded to bf16 for the bf16 weights: llama.cpp's arithmetic on
# this file, and since the sixteenth session MoEKit's default for a GGUF file; the others pass
# `--precision exact`, f32 activations, as every run did before).
#
#     swift build -c release && scripts/build-llama-cpp.sh && \
#       scripts/bench-bigger-than-memory.sh [BUDGET] [LLAMA_DIR] [LAYERS] [REPS]
set -euo pipefail
budget=${1:-12GB}
llama=$(realpath -m "${2:-.llama.cpp}")
layers=${3:-24}
reps=${4:-2}
work=${TMPDIR:-/tmp}/moekit-big
moe=.build/release/moe
file=$work/qwen3moe-$layers.bf16.gguf
mkdir -p "$work"

if [ ! -f "$file" ]; then
  rm -rf "${work:?}/checkpoint"
  "$moe" init-random --arch qwen3_moe --out "$work/checkpoint" --vocab 32000 --hidden 2048 --layers "$layers" \
    --heads 32 --kv-heads 4 --head-dim 128 --experts 128 --top-k 8 --expert-size 768 >/dev/null
  # llama.cpp needs at least one merge in a gpt2 vocabulary.
  python3 - "$work/checkpoint/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1])); t["added_tokens"] = []; t["model"]["vocab"]["ĠĠ"] = 257; t["model"]["merges"] = ["Ġ Ġ"]
json.dump(t, open(sys.argv[1], "w"))
PY
  "$moe" quantize --model "$work/checkpoint" --type bf16 --out "$file" 2>/dev/null
  rm -rf "${work:?}/checkpoint"
fi
ram=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 1024 ))
echo "file $(stat -c %s "$file") bytes, memory $ram bytes, budget $budget"

cold() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
peak() { awk -F': ' '/Maximum resident set size/ {printf "%.2f GB", $2 * 1024 / 1e9}' "$1"; }

cold
/usr/bin/time -v "$llama/build/bin/llama-bench" -m "$file" -p 16 -n 64 -r "$reps" -t 2 -o json >"$work/llama.json" 2>"$work/llama.time"
python3 - "$work/llama.json" "$(peak "$work/llama.time")" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
pp = next(r["avg_ts"] for r in runs if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in runs if r["n_gen"] > 0)
print(f"llama.cpp (mmap)        decode {tg:6.2f} tok/s  prefill {pp:5.2f} tok/s  peak RSS {sys.argv[2]}")
PY
for variant in "lru" "lru --direct-io" "lru --direct-io --prefetch" "lfu --direct-io" "lru --direct-io --prefetch --precision bf16"; do
  cold
  # shellcheck disable=SC2086
  /usr/bin/time -v "$moe" bench --model "$file" --memory-budget "$budget" --cache-policy $variant \
    $([[ $variant == *precision* ]] || echo --precision exact) --prompt-tokens 16 \
    --gen-tokens 64 --reps "$reps" --random-tokens >"$work/moe.json" 2>"$work/moe.time"
  python3 - "$work/moe.json" "$(peak "$work/moe.time")" "$variant" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); c = d["expert_cache"]
print(f"MoEKit {sys.argv[3]:44s} decode {d['decode_tokens_per_s']:6.2f} tok/s  prefill {d['prefill_tokens_per_s']:5.2f} tok/s  "
      f"peak RSS {sys.argv[2]}  hit {c['hit_rate']:.3f}  read {c['bytes_read_per_token'] / 1e6:.1f} MB/token  "
      f"stall {c['stall_seconds_per_token'] * 1e3:.0f} ms/token  prefetch accuracy {c['prefetch_accuracy']:.2f}")
PY
done
