#!/usr/bin/env bash
# What an importance matrix buys, on a model trained on text (Mixtral layout, hidden 256,
# 4 layers, 8 experts of 512, top-2, byte vocabulary; `moe train`, STEPS steps on MoEKit's own
# Swift sources, every tenth file held out): mean KL-divergence to the f32 model and perplexity
# on the held-out files, for Q4_0, Q4_K_S, Q4_K_M and Q5_K_M, each without and with `moe
# imatrix` computed on 40 training files. With LLAMA_DIR, also llama.cpp's pipeline (llama-imatrix
# then llama-quantize --imatrix on the same files), scored by the same `moe perplexity`.
#
#     swift build -c release && scripts/imatrix-quality.sh [WORK_DIR] [STEPS] [LLAMA_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/imatrix-quality}
steps=${2:-800}
llama=${3:-}
mkdir -p "$work"
moe=$root/.build/release/moe
cd "$root"
ls Sources/*/*.swift Sources/*/*/*.swift | sort > "$work/all.txt"
awk 'NR%10==0' "$work/all.txt" | xargs cat > "$work/heldout.all.txt"
head -c 120000 "$work/heldout.all.txt" > "$work/heldout.txt"
awk 'NR%10!=0' "$work/all.txt" | head -40 | xargs cat > "$work/calibration.txt"
python3 - "$root" "$work" "$steps" <<'PY'
import json, sys
root, work, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = [f"{root}/{l.strip()}" for i, l in enumerate(open(f"{work}/all.txt"), 1) if i % 10 != 0]
json.dump({"model": {"hidden_size": 256, "layers": 4, "heads": 4, "kv_heads": 2, "experts": 8, "expert_size": 512},
           "router": {"name": "topk-softmax", "k": 2}, "data": {"text_files": files}, "steps": steps, "batch": 16,
           "seq_len": 128, "lr": 0.002, "min_lr": 0.0002, "warmup": 50, "eval_interval": 400, "eval_samples": 10,
           "checkpoint_interval": 400, "checkpoint_dir": f"{work}/run", "threads": 2}, open(f"{work}/train.json", "w"))
PY
[ -f "$work/run/checkpoint/model.safetensors" ] || "$moe" train --config "$work/train.json" --quiet > "$work/train.log"
cd "$work"
[ -f base.gguf ] || "$moe" quantize --model run/checkpoint --type f32 --out base.gguf 2>/dev/null
score() {  # file -> "ppl kl top1"
  "$moe" perplexity --model "$1" --file heldout.txt --context 128 --threads 2 --kl-base base.lp | python3 -c '
import json, sys; d = json.load(sys.stdin); print("%.4f %.5f %.3f" % (d["perplexity"], d["kl_divergence"], d["top1_agreement"]))'
}
"$moe" perplexity --model base.gguf --file heldout.txt --context 128 --threads 2 --save-logits base.lp > base.json
"$moe" imatrix --model base.gguf --calibration calibration.txt --chunk-size 512 --out moe.imatrix.gguf 2>/dev/null
if [ -n "$llama" ]; then
  "$llama/build/bin/llama-imatrix" -m base.gguf -f calibration.txt -o llama.imatrix.gguf -c 512 -b 512 -t 2 --no-ppl >/dev/null 2>&1
fi
printf "f32 perplexity %s\n" "$(python3 -c 'import json; print("%.4f" % json.load(open("base.json"))["perplexity"])')"
echo "type     | plain: ppl KL top1        | moe imatrix: ppl KL top1  | llama.cpp imatrix: ppl KL top1"
for t in q4_0 q4_k_s q4_k_m q5_k_m; do
  "$moe" quantize --model base.gguf --type $t --out plain.$t.gguf 2>/dev/null
  "$moe" quantize --model base.gguf --type $t --imatrix moe.imatrix.gguf --out moe.$t.gguf 2>/dev/null
  line="$t | $(score plain.$t.gguf) | $(score moe.$t.gguf)"
  if [ -n "$llama" ]; then
    "$llama/build/bin/llama-quantize" --imatrix llama.imatrix.gguf base.gguf llama.$t.gguf "$(echo $t | tr a-z A-Z)" >/dev/null 2>&1
    line="$line | $(score llama.$t.gguf)"
  fi
  echo "$line"
done
