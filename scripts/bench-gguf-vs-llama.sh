#!/usr/bin/env bash
# MoEKit against llama.cpp on the same GGUF files, in one sitting, for three MoE shapes written
# by `moe init-random` (bf16) and converted by `moe quantize --type bf16` (the tensors
# convert_hf_to_gguf.py writes), then quantized by llama.cpp's own llama-quantize to Q8_0,
# Q5_K_M, Q4_K_M, IQ4_XS and Q3_K_M:
#   olmoe    OLMoE-shaped:     hidden 1024, 4 layers, 16 heads, 32 experts of 512, top-8
#   qwen3moe Qwen3-MoE-shaped: hidden 1024, 4 layers, 16/4 heads of 64, 64 experts of 768, top-8
#   mixtral  Mixtral-shaped:   hidden 2048, 2 layers, 16/4 heads, 8 experts of 7168, top-2
# (vocabulary 32000), and, when named in SHAPES, one at a published model's full size:
#   olmoe7b  OLMoE-1B-7B:      hidden 2048, 16 layers, 16 heads, 64 experts of 1024, top-8,
#            vocabulary 50304 (6.9 B weights: a 13.8 GB bf16 GGUF, Q8_0 7.3 GB, Q4_K_M 4.2 GB).
# TYPES (environment) picks the files, default "bf16 Q8_0 Q5_K_M Q4_K_M IQ4_XS Q3_K_M". `moe bench` and `llama-bench` alternate, 2 threads, a 128-token prompt and
# GEN generated tokens (environment, default 128; until the twelfth session 32, which timed
# the small shapes' decode over 60-100 ms windows), ROUNDS times; each line also gives MoEKit's decode as a fraction of the
# machine's read bandwidth over the bytes a token reads (its weights, and since the thirteenth
# session its KV cache's rows), against the probe over the model's weights after the run and
# (since the twenty-first session) against the median of probes sampled after every repetition,
# and (since the twenty-second) the median over windows of 16 tokens, each against the probes
# on either side of it (`decode_fraction_of_windowed_bandwidth`), the fraction of decode spent
# outside the parallel loops (`decode_serial_fraction`), and its peak RSS against the file, and
# against the file plus the KV cache (the issue's measure).
#
#     swift build -c release && scripts/build-llama-cpp.sh && scripts/bench-gguf-vs-llama.sh [ROUNDS] [LLAMA_DIR] [SHAPES]
set -euo pipefail
rounds=${1:-2}
llama=$(realpath -m "${2:-.llama.cpp}")
shapes=${3:-"olmoe qwen3moe mixtral"}
types=${TYPES:-"bf16 Q8_0 Q5_K_M Q4_K_M IQ4_XS Q3_K_M"}
gen=${GEN:-128}
# MoEKit's KV cache element type (environment KV, default f16 since the twenty-first session, as
# llama-bench's default cache; f32 before, which read twice the cache's bytes a token).
kv=${KV:-f16}
work=${TMPDIR:-/tmp}/moekit-gguf-bench
moe=.build/release/moe
mkdir -p "$work"

make_model() {  # name, vocabulary, init-random arguments...
  local name=$1 vocab=$2; shift 2
  local t quantized=""
  for t in $types; do [ "$t" = bf16 ] || quantized="$quantized $t"; done
  if [ ! -f "$work/$name.bf16.gguf" ]; then
    rm -rf "${work:?}/$name"
    "$moe" init-random --out "$work/$name" --vocab "$vocab" --dtype bf16 "$@" >/dev/null
    # llama.cpp needs at least one merge in a gpt2 vocabulary.
    python3 - "$work/$name/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1])); t["added_tokens"] = []; t["model"]["vocab"]["ĠĠ"] = 257; t["model"]["merges"] = ["Ġ Ġ"]
json.dump(t, open(sys.argv[1], "w"))
PY
    "$moe" quantize --model "$work/$name" --type bf16 --out "$work/$name.bf16.gguf" 2>/dev/null
    rm -rf "${work:?}/$name"  # the GGUF holds the same weights; the folder only takes disk
  fi
  for t in $quantized; do
    [ -f "$work/$name.$t.gguf" ] || "$llama/build/bin/llama-quantize" "$work/$name.bf16.gguf" "$work/$name.$t.gguf" "$t" >/dev/null 2>&1
  done
}
for s in $shapes; do
  case $s in
    olmoe) make_model olmoe 32000 --arch olmoe --hidden 1024 --layers 4 --heads 16 --experts 32 --top-k 8 --expert-size 512 ;;
    qwen3moe) make_model qwen3moe 32000 --arch qwen3_moe --hidden 1024 --layers 4 --heads 16 --kv-heads 4 --head-dim 64 --experts 64 \
                --top-k 8 --expert-size 768 ;;
    mixtral) make_model mixtral 32000 --arch mixtral --hidden 2048 --layers 2 --heads 16 --kv-heads 4 --experts 8 --top-k 2 \
               --expert-size 7168 ;;
    olmoe7b) make_model olmoe7b 50304 --arch olmoe --hidden 2048 --layers 16 --heads 16 --experts 64 --top-k 8 \
               --expert-size 1024 ;;
    *) echo "unknown shape $s" >&2; exit 2 ;;
  esac
done
"$moe" bench-kernels --quick 2>/dev/null | python3 -c '
import json, sys; d = json.load(sys.stdin)
print("machine:", d["isa"], "FMA %.0f GFLOP/s" % d["fma_peak_gflops"])' || true
for r in $(seq "$rounds"); do
  for s in $shapes; do
    for t in $types; do
      f="$work/$s.$t.gguf"
      cat "$f" > /dev/null  # into the page cache first: neither program's timing reads the disk
      # bf16 twice: MoEKit's default for a GGUF file (--precision auto: activations rounded to
      # bf16 for vdpbf16ps, as llama.cpp computes bf16 weights) and --precision exact (f32
      # activations, the default for a checkpoint folder).
      for precision in auto $([ "$t" = bf16 ] && echo exact); do
        "$moe" bench --model "$f" --prompt-tokens 128 --gen-tokens "$gen" --threads 2 --precision "$precision" --kv-cache "$kv" | python3 -c "
import json, os, sys; d = json.load(sys.stdin)
print(f'round $r $s $t moekit ($precision: {d[\"precision\"]}, kv $kv) prefill {d[\"prefill_tokens_per_s\"]:7.1f} decode {d[\"decode_tokens_per_s\"]:6.1f} tok/s'
      f' ({d[\"decode_fraction_of_bandwidth\"]:.2f} of {d[\"read_bandwidth_gbs\"]:.1f} GB/s,'
      f' {d[\"decode_fraction_of_sampled_bandwidth\"]:.2f} of {d[\"read_bandwidth_sampled_gbs\"]:.1f} sampled through the run,'
      f' {d[\"decode_fraction_of_windowed_bandwidth\"]:.2f} of {d[\"read_bandwidth_windowed_gbs\"]:.1f} windowed,'
      f' serial {d[\"decode_serial_fraction\"]:.3f}, RSS {d[\"peak_rss_bytes\"] / os.path.getsize(\"$f\"):.2f}x the file,'
      f' {d[\"peak_rss_bytes\"] / (os.path.getsize(\"$f\") + d[\"kv_cache_bytes\"]):.2f}x file and KV cache)')"
      done
      "$llama/build/bin/llama-bench" -m "$f" -p 128 -n "$gen" -t 2 -r 1 -o json 2>/dev/null | python3 -c "
import json, sys; d = json.load(sys.stdin)
pp = [x['avg_ts'] for x in d if x['n_prompt']][0]; tg = [x['avg_ts'] for x in d if x['n_gen']][0]
print(f'round $r $s $t llama.cpp         prefill {pp:7.1f} decode {tg:6.1f} tok/s')"
    done
  done
done
