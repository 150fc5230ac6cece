#!/usr/bin/env bash
# Trains the README's text model and prints its routing table: a Mixtral-layout MoE (hidden 128,
# 4 layers, 8 experts of 256, top-2, byte vocabulary) trained with `moe train` for 1500 steps on
# MoEKit's own Swift sources (every tenth file held out), then scored on the held-out files
# under each routing setting (perplexity, experts per token, decode and scoring speed).
#
#     scripts/text-model-table.sh [WORK_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/textrun}
mkdir -p "$work"
cd "$root"
swift build -c release --product moe > /dev/null
moe=$root/.build/release/moe
ls Sources/*/*.swift Sources/*/*/*.swift | sort > "$work/all.txt"
awk 'NR%10==0' "$work/all.txt" | xargs cat > "$work/heldout.swift.txt"
awk 'NR%10!=0' "$work/all.txt" | head -40 | xargs cat > "$work/profile-text.txt"
python3 - "$root" "$work" <<'PY'
import json, sys
root, work = sys.argv[1], sys.argv[2]
files = [f"{root}/{l.strip()}" for i, l in enumerate(open(f"{work}/all.txt"), 1) if i % 10 != 0]
json.dump({"model": {"hidden_size": 128, "layers": 4, "heads": 4, "kv_heads": 2, "experts": 8, "expert_size": 256},
           "router": {"name": "topk-softmax", "k": 2}, "data": {"text_files": files}, "steps": 1500, "batch": 16,
           "seq_len": 128, "lr": 0.003, "min_lr": 0.0003, "warmup": 50, "eval_interval": 500, "eval_samples": 10,
           "checkpoint_interval": 500, "checkpoint_dir": f"{work}/run", "threads": 2}, open(f"{work}/train.json", "w"))
PY
[ -f "$work/run/checkpoint/model.safetensors" ] || "$moe" train --config "$work/train.json" --quiet > "$work/train.log"
model=$work/run/checkpoint
"$moe" analyze --model "$model" --file "$work/profile-text.txt" --context 128 --out "$work/analysis" > /dev/null
profile=$work/analysis/profile.json
echo "| setting | perplexity | experts per token | decode tok/s | scoring tok/s |"
echo "|---|---|---|---|---|"
for s in "" "--experts-per-token 1" "--experts-per-token 3" "--experts-per-token 4" "--expert-top-p 0.5" "--expert-top-p 0.7" \
         "--expert-top-p 0.9" "--expert-threshold 0.3" "--prune-profile $profile --keep 6" \
         "--prune-profile $profile --keep 6 --per-layer" "--prune-profile $profile --keep 4 --per-layer"; do
  # shellcheck disable=SC2086
  p=$("$moe" perplexity --model "$model" --file "$work/heldout.swift.txt" --context 128 --threads 2 $s)
  # shellcheck disable=SC2086
  b=$("$moe" bench --model "$model" --prompt-tokens 64 --gen-tokens 64 --reps 3 --threads 1 $s)
  python3 - "$p" "$b" "${s//$profile/profile.json}" <<'PY'
import json, sys
p, b, s = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print("| %s | %.3f | %.2f | %.0f | %.0f |" % (f"`{s}`" if s else "checkpoint (top-2)", p["perplexity"], p["experts_per_token"],
                                           b["decode_tokens_per_s"], p["tokens_per_s"]))
PY
done
