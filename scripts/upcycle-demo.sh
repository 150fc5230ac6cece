#!/usr/bin/env bash
# Sparse upcycling, end to end: train a small dense Llama on the synthetic tasks, then continue
# it for the same number of steps two ways, (a) dense, (b) upcycled into an MoE, and print each
# checkpoint's perplexity and exact-match accuracy on 600 held-out synthetic samples
# (`moe perplexity --synthetic`).
#
#   scripts/upcycle-demo.sh [STEPS] [UPCYCLE OPTIONS...]
#       default: 300 steps for each stage; --experts 8 --top-k 1 (whole-FFN experts, one per
#       token: the dense model's active parameters, and its function at the start)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
shift || true
UPCYCLE=("$@")
[ ${#UPCYCLE[@]} -gt 0 ] || UPCYCLE=(--experts 8 --top-k 1 --router-std 0.02 --noise 0.01 --seed 1)
swift build -c release --product moe >/dev/null
MOE=.build/release/moe
W=/tmp/moekit-upcycle-demo
rm -rf "$W" && mkdir -p "$W"
$MOE init-random --arch llama --out "$W/init" --vocab 300 --hidden 128 --layers 4 --heads 4 --kv-heads 2 \
    --dense-size 384 --dtype f32 --seed 1 >/dev/null
config() {  # config NAME LR
    cat > "$W/$1.json" <<JSON
{"data": {"synthetic": {"level": 2}}, "steps": $STEPS, "batch": 16, "seq_len": 64, "lr": $2, "warmup": 20,
 "eval_interval": $STEPS, "eval_samples": 120, "checkpoint_interval": $STEPS, "checkpoint_dir": "$W/$1", "seed": 3}
JSON
}
config dense 0.003
$MOE train --config "$W/dense.json" --from "$W/init" --quiet >/dev/null
config dense-more 0.001
config upcycled 0.001
$MOE upcycle --model "$W/dense/checkpoint" "${UPCYCLE[@]}" --out "$W/moe-start" >/dev/null
$MOE train --config "$W/dense-more.json" --from "$W/dense/checkpoint" --quiet >/dev/null
$MOE train --config "$W/upcycled.json" --from "$W/moe-start" --quiet >/dev/null
python3 - "$W" "$MOE" "${UPCYCLE[@]}" <<'PY'
import json, subprocess, sys
w, moe = sys.argv[1], sys.argv[2]
for run, label in [("dense", "dense start"), ("dense-more", "dense, continued"),
                   ("upcycled", "upcycled (" + " ".join(sys.argv[3:]) + "), continued")]:
    out = subprocess.run([moe, "perplexity", "--model", f"{w}/{run}/checkpoint", "--synthetic", "--samples", "600",
                          "--context", "64"], check=True, capture_output=True, text=True).stdout
    p = json.loads(out)
    print(json.dumps({"run": label, "held_out_perplexity": round(p["perplexity"]["perplexity"], 4),
                      "mean_nll": round(p["perplexity"]["mean_nll"], 4), "mean_accuracy": round(p["mean_accuracy"], 3)}))
PY
