#!/usr/bin/env bash
# LoRA fine-tuning speed: `moe train` with a `lora` section against its PEFT twin
# (scripts/bench_lora_torch.py) on the same checkpoint, config and threads, in interleaved
# rounds (this VM drifts: compare figures from the same round only). Ends with a line per config:
# the medians of both sides over the rounds, their ratio, and the median and range of the rounds'
# ratios.
#
#   scripts/bench-lora.sh [ROUNDS]      (default 3)
#
# Makes the two bases under /tmp/moekit-lora-bench with `moe init-random` (f32) if absent: an
# OLMoE-shaped MoE (d 256, 4 layers, 64 experts of 128, top-8; LoRA on attention) and a dense
# Llama (d 256, 4 layers, FFN 688; LoRA on every linear projection). Needs torch, transformers
# and peft from PyPI.
#
# Each round then trains the same dense Llama config on GGUF files of the base made by
# `moe quantize` (Q8_0 and Q4_K_M: QLoRA, the frozen base read in its block format) and prints
# MoEKit's rate beside the round's f32 one; PEFT has no CPU twin of that (bitsandbytes' 4-bit
# kernels are for GPUs), so those lines carry no PEFT figure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
swift build -c release --product moe >/dev/null
MOE=.build/release/moe
BASES=/tmp/moekit-lora-bench
mkdir -p "$BASES"
[ -d "$BASES/olmoe256" ] || $MOE init-random --arch olmoe --out "$BASES/olmoe256" --vocab 300 --hidden 256 --layers 4 \
    --heads 4 --kv-heads 4 --experts 64 --expert-size 128 --top-k 8 --dtype f32 --seed 1 >/dev/null
[ -d "$BASES/llama256" ] || $MOE init-random --arch llama --out "$BASES/llama256" --vocab 300 --hidden 256 --layers 4 \
    --heads 4 --kv-heads 2 --dense-size 688 --dtype f32 --seed 1 >/dev/null
for q in q8_0 q4_k_m; do
    [ -f "$BASES/llama256.$q.gguf" ] || $MOE quantize --model "$BASES/llama256" --type "$q" --out "$BASES/llama256.$q.gguf" >/dev/null
done
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq 1 "$ROUNDS"); do
    for cfg in scripts/train-bench/lora-olmoe256-attn.json scripts/train-bench/lora-llama256-all.json; do
        ours=$($MOE train --config "$cfg" --quiet | tail -1)
        theirs=$(python3 scripts/bench_lora_torch.py "$cfg" 2>/dev/null | tail -1)
        python3 - "$round" "$cfg" "$ours" "$theirs" <<'PY' | tee -a "$results"
import json, sys
r, cfg, ours, theirs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
a, b = ours["tokens_per_s_after_warmup"], theirs["tokens_per_s"]
print(json.dumps({"round": int(r), "config": cfg, "moekit_tokens_per_s": round(a), "peft_tokens_per_s": round(b),
                  "ratio": round(a / b, 2), "moekit_whole_run": round(ours["tokens_per_s"]),
                  "peft_whole_run": round(theirs["tokens_per_s_with_warmup"])}))
PY
    done
    for q in q8_0 q4_k_m; do
        cfg=scripts/train-bench/lora-llama256-all.json
        python3 - "$cfg" "$BASES/llama256.$q.gguf" > "$BASES/qlora.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["from"] = sys.argv[2]
c["checkpoint_dir"] += "-qlora"
print(json.dumps(c))
PY
        ours=$($MOE train --config "$BASES/qlora.json" --quiet | tail -1)
        python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({'round': $round, 'config': '$cfg', 'base': '$q GGUF (QLoRA)', 'moekit_tokens_per_s': round(d['tokens_per_s_after_warmup'])}))" "$ours"
    done
done
# Each config's medians over the rounds: the ratio of the medians, and the median and range of
# the rounds' ratios (single runs here move 10-25% from minute to minute, on both sides).
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for cfg in dict.fromkeys(r["config"] for r in rows):
    rs = [r for r in rows if r["config"] == cfg]
    ours = statistics.median(r["moekit_tokens_per_s"] for r in rs)
    theirs = statistics.median(r["peft_tokens_per_s"] for r in rs)
    ratios = [r["ratio"] for r in rs]
    print(json.dumps({"config": cfg, "rounds": len(rs), "moekit_median": round(ours), "peft_median": round(theirs),
                      "ratio_of_medians": round(ours / theirs, 2), "median_ratio": round(statistics.median(ratios), 2),
                      "ratio_range": [min(ratios), max(ratios)]}))
PY
