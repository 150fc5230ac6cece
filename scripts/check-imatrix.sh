#!/usr/bin/env bash
# Importance matrices against llama.cpp, on an OLMoE-shaped bf16 GGUF (`moe init-random`, then
# `moe quantize --type bf16`):
#  1. `moe imatrix` and llama-imatrix on the same text and chunks: the same entries, the same
#     token counts per expert, and sums within float rounding (printed: the largest relative
#     difference over all entries);
#  2. `moe quantize --imatrix` and llama-quantize --imatrix, given llama-imatrix's file, write
#     the same file byte for byte for Q4_0 (its ffn_down rule), Q4_1, Q5_0, Q2_K, Q3_K_S/M/L,
#     Q4_K_M, Q5_K_M, Q6_K, IQ4_NL and IQ4_XS;
#  3. the same with `moe imatrix`'s own file: the types and sizes agree, and (1) bounds the bytes.
#
#     swift build -c release && scripts/build-llama-cpp.sh && scripts/check-imatrix.sh [LLAMA_DIR]
set -euo pipefail
llama=$(realpath -m "${1:-.llama.cpp}")
moe=$(realpath .build/release/moe)
work=${TMPDIR:-/tmp}/moekit-imatrix-check
rm -rf "$work" && mkdir -p "$work"
cat README.md ../shared/DESIGN.md 2>/dev/null > "$work/calibration.txt" || cat README.md > "$work/calibration.txt"
cd "$work"
"$moe" init-random --out model --arch olmoe --vocab 4096 --hidden 512 --layers 4 --heads 8 --experts 8 --top-k 2 \
  --expert-size 256 --dtype bf16 >/dev/null
python3 - model/tokenizer.json <<'PY'
import json, sys  # llama.cpp needs at least one merge in a gpt2 vocabulary
t = json.load(open(sys.argv[1])); t["added_tokens"] = []; t["model"]["vocab"]["ĠĠ"] = 257; t["model"]["merges"] = ["Ġ Ġ"]
json.dump(t, open(sys.argv[1], "w"))
PY
"$moe" quantize --model model --type bf16 --out model.bf16.gguf 2>/dev/null
"$llama/build/bin/llama-imatrix" -m model.bf16.gguf -f calibration.txt -o llama.imatrix.gguf -c 512 -b 512 --chunks 4 -t 2 \
  --no-ppl >llama-imatrix.log 2>&1
"$moe" imatrix --model model.bf16.gguf --calibration calibration.txt --out moe.imatrix.gguf --chunk-size 512 --chunks 4 2>/dev/null
python3 - llama.imatrix.gguf moe.imatrix.gguf "$llama/src/gguf-py" <<'PY'
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import gguf
def load(path):
    r = gguf.GGUFReader(path)
    return {t.name: np.asarray(t.data, dtype=np.float64) for t in r.tensors}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert set(a) == set(b), f"entries differ: only llama {sorted(set(a) - set(b))}, only moe {sorted(set(b) - set(a))}"
dense, experts, moved, routed, first = 0.0, 0.0, 0, 0, 0.0
for name in sorted(n for n in a if n.endswith(".counts")):
    base = name[:-len(".counts")]
    ca, cb = a[name].ravel(), b[name].ravel()
    assert a[name].shape == b[name].shape and a[base + ".in_sum2"].shape == b[base + ".in_sum2"].shape, name
    assert ca.sum() == cb.sum(), f"{name}: {ca.sum()} vs {cb.sum()} tokens"
    ma = a[base + ".in_sum2"].reshape(len(ca), -1) / np.maximum(ca, 1)[:, None]
    mb = b[base + ".in_sum2"].reshape(len(cb), -1) / np.maximum(cb, 1)[:, None]
    rel = np.abs(ma - mb) / np.maximum(np.abs(ma), 1e-6)
    if base == "blk.0.attn_q.weight":
        first = float(rel.max())  # the embedding's norm: no earlier layer to round differently
    if len(ca) == 1:
        dense = max(dense, float(rel.max()))
    else:
        moved += int(np.abs(ca - cb).sum()) // 2
        routed += int(ca.sum())
        full = ca >= 100  # experts reached by enough tokens for their means to settle
        experts = max(experts, float(rel[full].max()) if full.any() else 0.0)
print(f"imatrix: {len(a) // 2} entries, the same shapes and total tokens; the first layer's input within {first:.1e} "
      f"relative, every dense weight's mean squares within {dense:.1e} (llama.cpp rounds activations to bf16 for "
      f"bf16 weights); {moved} of {routed} expert routings differ (near-ties under the two programs' "
      f"rounding), experts with 100+ tokens within {experts:.1e}")
assert first < 1e-4 and dense < 5e-2 and moved <= routed // 50, (first, dense, moved)
PY
for t in Q4_0 Q4_1 Q5_0 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_M Q5_K_M Q6_K IQ4_NL IQ4_XS; do
  "$llama/build/bin/llama-quantize" --imatrix llama.imatrix.gguf model.bf16.gguf llama.$t.gguf $t >/dev/null 2>&1
  lower=$(echo $t | tr A-Z a-z)
  "$moe" quantize --model model.bf16.gguf --imatrix llama.imatrix.gguf --type $lower --out moe.$t.gguf 2>/dev/null
  cmp llama.$t.gguf moe.$t.gguf && echo "$t with llama-imatrix's file: byte for byte llama-quantize's"
  "$llama/build/bin/llama-quantize" --imatrix moe.imatrix.gguf model.bf16.gguf llama-own.$t.gguf $t >/dev/null 2>&1
  "$moe" quantize --model model.bf16.gguf --imatrix moe.imatrix.gguf --type $lower --out moe-own.$t.gguf 2>/dev/null
  cmp llama-own.$t.gguf moe-own.$t.gguf && echo "$t with moe imatrix's file: byte for byte llama-quantize's"
done
