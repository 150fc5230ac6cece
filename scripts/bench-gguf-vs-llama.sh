#!/usr/bin/env bash
# MoEKit against llama.cpp on the same GGUF files, in one sitting: an OLMoE-shaped model
# (hidden 1024, 4 layers, 16 heads, 32 experts of 512, top-8, vocabulary 32000) written by
# `moe init-random`, converted by llama.cpp's convert_hf_to_gguf.py to bf16, quantized by
# llama-quantize to Q8_0 and Q4_K_M; then `moe bench` and `llama-bench` alternate, 2 threads,
# prompt 128 and 32 generated tokens, ROUNDS times.
#
#     swift build -c release && scripts/build-llama-cpp.sh && scripts/bench-gguf-vs-llama.sh [ROUNDS] [LLAMA_DIR]
set -euo pipefail
rounds=${1:-2}
llama=$(realpath -m "${2:-.llama.cpp}")
work=${TMPDIR:-/tmp}/moekit-gguf-bench
moe=.build/release/moe
mkdir -p "$work"
if [ ! -f "$work/olmoe.Q4_K_M.gguf" ]; then
  rm -rf "$work/olmoe"
  "$moe" init-random --arch olmoe --out "$work/olmoe" --vocab 32000 --hidden 1024 --layers 4 --heads 16 --experts 32 \
      --top-k 8 --expert-size 512 --dtype bf16 >/dev/null
  # llama.cpp needs at least one merge and no token id past the vocabulary in a gpt2 vocabulary.
  python3 - "$work/olmoe/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1])); t["added_tokens"] = []; t["model"]["vocab"]["ĠĠ"] = 257; t["model"]["merges"] = ["Ġ Ġ"]
json.dump(t, open(sys.argv[1], "w"))
PY
  python3 - "$llama/src" "$work/olmoe" "$work/olmoe.bf16.gguf" <<'PY'
import sys
src = sys.argv[1]
sys.path[:0] = [src, src + "/gguf-py"]
sys.argv = ["convert_hf_to_gguf.py", sys.argv[2], "--outfile", sys.argv[3], "--outtype", "bf16"]
import convert_hf_to_gguf as c
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"  # the byte-level test vocabulary
c.main()
PY
  for t in Q8_0 Q4_K_M; do "$llama/build/bin/llama-quantize" "$work/olmoe.bf16.gguf" "$work/olmoe.$t.gguf" "$t" >/dev/null 2>&1; done
fi
"$moe" bench-kernels --quick 2>/dev/null | python3 -c '
import json, sys; d = json.load(sys.stdin)
print("machine:", d["isa"], "read %.1f GB/s, FMA %.0f GFLOP/s" % (d["read_bandwidth_gbs"], d["fma_peak_gflops"]))' || true
for r in $(seq "$rounds"); do
  for t in bf16 Q8_0 Q4_K_M; do
    f="$work/olmoe.$t.gguf"
    "$moe" bench --model "$f" --prompt-tokens 128 --gen-tokens 32 --threads 2 | python3 -c "
import json, sys; d = json.load(sys.stdin)
print(f'round $r $t moekit    prefill {d[\"prefill_tokens_per_s\"]:7.1f} decode {d[\"decode_tokens_per_s\"]:6.1f} tok/s ({d[\"decode_fraction_of_bandwidth\"]:.2f} of bandwidth)')"
    "$llama/build/bin/llama-bench" -m "$f" -p 128 -n 32 -t 2 -r 1 -o json 2>/dev/null | python3 -c "
import json, sys; d = json.load(sys.stdin)
pp = [x['avg_ts'] for x in d if x['n_prompt']][0]; tg = [x['avg_ts'] for x in d if x['n_gen']][0]
print(f'round $r $t llama.cpp prefill {pp:7.1f} decode {tg:6.1f} tok/s')"
  done
done
