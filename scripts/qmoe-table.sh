#!/usr/bin/env bash
# The README's QMoE table: sub-1-bit experts (`moe quantize --type qmoe`) next to Q4_K_M, Q2_K
# and llama.cpp's TQ1_0, on two models trained with `moe train` on text and on random Mixtral-
# and Qwen3-MoE-shaped models (`moe init-random --init normal`). For each: bits per expert
# parameter (in the file, and resident with the row offsets the loader builds), perplexity and
# mean KL-divergence against the unquantized model on held-out text (MoEKit scores every file,
# on the same tokens), decode and prefill speed (`moe bench`, one sitting), peak memory. QMoE
# runs twice: with QMoE's rounding to nearest (`--dead-zone 0.5`) and with the dead zone
# QMOE_DEAD_ZONE (default 0.8).
#
#     scripts/qmoe-table.sh [WORK_DIR]
#
# The models:
# - text: the README's text model (scripts/text-model-table.sh trains it; hidden 128, 8 experts
#   of 256);
# - text512: hidden 512, 4 layers, 8 experts of 1024, top-2, trained here for 1200 steps on the
#   same files (about 25 minutes on 2 cores);
# - mixtral: hidden 512, 4 layers, 8 experts of 1792, top-2 (Mixtral's 3.5x expert ratio);
# - qwen3: hidden 1024, 2 layers, 64 experts of 384, top-8 (Qwen3-30B-A3B's 0.375x ratio).
# Needs llama.cpp's llama-quantize (scripts/build-llama-cpp.sh) for the Q2_K and TQ1_0 files;
# MoEKit reads Q2_K; TQ1_0 is llama.cpp's alone, so its KL comes from llama-perplexity against
# llama.cpp's own f16 run of the same file (a second table, with Q4_K_M there for scale).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/qmoe-table}
zone=${QMOE_DEAD_ZONE:-0.8}
llama=${LLAMA_BIN:-/tmp/llama.cpp/build/bin}
mkdir -p "$work"
cd "$root"
swift build -c release --product moe > /dev/null
moe=$root/.build/release/moe
text=/tmp/textrun
[ -f "$text/run/checkpoint/model.safetensors" ] || scripts/text-model-table.sh "$text" > /dev/null
# Calibration: the text model's training files; evaluation: its held-out files.
awk 'NR%10!=0' "$text/all.txt" | head -40 | xargs cat > "$work/calib.txt"
cp "$text/heldout.swift.txt" "$work/eval.txt"
ln -sfn "$text/run/checkpoint" "$work/text"
if [ ! -f "$work/text512-run/checkpoint/model.safetensors" ]; then
  python3 - "$root" "$text" "$work" <<'PY'
import json, sys
root, text, work = sys.argv[1:4]
files = [f"{root}/{l.strip()}" for i, l in enumerate(open(f"{text}/all.txt"), 1) if i % 10 != 0]
json.dump({"model": {"hidden_size": 512, "layers": 4, "heads": 8, "kv_heads": 2, "experts": 8, "expert_size": 1024},
           "router": {"name": "topk-softmax", "k": 2}, "data": {"text_files": files}, "steps": 1200, "batch": 16,
           "seq_len": 128, "lr": 0.001, "min_lr": 0.0001, "warmup": 50, "eval_interval": 500, "eval_samples": 10,
           "checkpoint_interval": 500, "checkpoint_dir": f"{work}/text512-run", "threads": 2}, open(f"{work}/text512.json", "w"))
PY
  "$moe" train --config "$work/text512.json" --quiet > "$work/text512-train.log"
fi
ln -sfn "$work/text512-run/checkpoint" "$work/text512"
[ -d "$work/mixtral" ] || "$moe" init-random --arch mixtral --out "$work/mixtral" --vocab 4096 --hidden 512 --layers 4 --heads 8 \
  --kv-heads 2 --experts 8 --top-k 2 --expert-size 1792 --init normal > /dev/null
[ -d "$work/qwen3" ] || "$moe" init-random --arch qwen3_moe --out "$work/qwen3" --vocab 4096 --hidden 1024 --layers 2 --heads 16 \
  --kv-heads 4 --experts 64 --top-k 8 --expert-size 384 --init normal > /dev/null

row() {  # model label path [bits]
  local base=$1 label=$2 path=$3
  local ppl bench
  ppl=$("$moe" perplexity --model "$path" --file "$work/eval.txt" --context 128 --max-windows 200 --kl-base "$work/$base.lp")
  bench=$("$moe" bench --model "$path" --prompt-tokens 128 --gen-tokens 64 --threads 2)
  python3 - "$base" "$label" "$ppl" "$bench" "${4:-}" <<'PY'
import json, sys
base, label, ppl, bench, bits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
print(f"| {base} | {label} | {bits} | {ppl['perplexity']:.3f} | {ppl.get('kl_divergence', 0):.4f} | "
      f"{bench['decode_tokens_per_s']:.0f} | {bench['prefill_tokens_per_s']:.0f} | {bench['peak_rss_bytes'] / 2**20:.0f} |")
PY
}

qmoe() {  # model dead-zone: quantizes, prints "file bits / resident bits (zeros)"
  local m=$1 z=$2
  rm -rf "$work/$m-qmoe-$z"
  "$moe" quantize --model "$work/$m" --type qmoe --calibration "$work/calib.txt" --calibration-tokens 32768 --dead-zone "$z" \
    --out "$work/$m-qmoe-$z" 2> /dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.3f / %.3f (%.0f%% zeros, %d entries)" % (d["bits_per_expert_parameter"], d["resident_bits_per_expert_parameter"], 100 * d["zero_fraction"], d["dictionary_entries"]))'
}

echo "| model | weights | bits per expert parameter (file / resident) | perplexity | KL to unquantized | decode tok/s | prefill tok/s | peak MiB |"
echo "|---|---|---|---|---|---|---|---|"
for m in text text512 mixtral qwen3; do
  "$moe" perplexity --model "$work/$m" --file "$work/eval.txt" --context 128 --max-windows 200 --save-logits "$work/$m.lp" > /dev/null
  nearest=$(qmoe "$m" 0.5)
  dead=$(qmoe "$m" "$zone")
  [ -f "$work/$m-f16.gguf" ] || "$moe" quantize --model "$work/$m" --type f16 --out "$work/$m-f16.gguf" 2> /dev/null
  [ -f "$work/$m-q4_k_m.gguf" ] || "$moe" quantize --model "$work/$m" --type q4_k_m --out "$work/$m-q4_k_m.gguf" 2> /dev/null
  row "$m" "as stored (bf16, or f32 as trained)" "$work/$m" "16 or 32"
  row "$m" "QMoE, dead zone 0.5 (QMoE's rounding)" "$work/$m-qmoe-0.5" "$nearest"
  row "$m" "QMoE, dead zone $zone" "$work/$m-qmoe-$zone" "$dead"
  row "$m" "Q4_K_M (MoEKit's)" "$work/$m-q4_k_m.gguf" "4.5-6.5"
  if [ -x "$llama/llama-quantize" ]; then
    [ -f "$work/$m-q2_k.gguf" ] || "$llama/llama-quantize" "$work/$m-f16.gguf" "$work/$m-q2_k.gguf" Q2_K > /dev/null 2>&1
    row "$m" "Q2_K (llama-quantize)" "$work/$m-q2_k.gguf" "2.6-3.4"
  fi
done
# llama.cpp's TQ1_0 against its own f16 run (llama-perplexity --kl-divergence), Q4_K_M beside it.
if [ -x "$llama/llama-perplexity" ]; then
  echo
  echo "| model | llama.cpp file | KL to f16 (llama-perplexity) |"
  echo "|---|---|---|"
  for m in text text512 mixtral qwen3; do
    "$llama/llama-quantize" "$work/$m-f16.gguf" "$work/$m-tq1_0.gguf" TQ1_0 > /dev/null 2>&1 || continue
    "$llama/llama-perplexity" -m "$work/$m-f16.gguf" -f "$work/eval.txt" -c 128 --chunks 100 -t 2 \
      --kl-divergence-base "$work/$m-llama.kld" > /dev/null 2>&1
    for t in q4_k_m tq1_0; do
      kl=$("$llama/llama-perplexity" -m "$work/$m-$t.gguf" -f "$work/eval.txt" -c 128 --chunks 100 -t 2 \
             --kl-divergence-base "$work/$m-llama.kld" --kl-divergence 2>&1 | awk '/Mean    KLD:/ {print $3}')
      echo "| $m | $t | ${kl:-n/a} |"
    done
  done
fi
