#!/usr/bin/env bash
# `moe serve` against llama.cpp's llama-server on the same GGUF file, threads and slots, in one
# sitting: total generated tokens per second at 1, 8 and 32 concurrent streams
# (scripts/serve_throughput.py: 64 tokens each with ignore_eos, greedy), with short prompts
# (2 words; decode-bound) and long ones (32 words, about 180 tokens in this byte-level
# vocabulary; prefill-bound); every prompt starts with a word of its own, so llama-server's
# prompt cache cannot reuse another request's prefix (MoEKit has no prompt cache). Each server
# answers one request before the measurements.
# The model is bench-gguf-vs-llama.sh's Qwen3-MoE shape (hidden 1024, 4 layers, 64 experts of
# 768, top-8) at Q8_0 unless MODEL names another GGUF.
#
#     swift build -c release && scripts/build-llama-cpp.sh && scripts/bench-serve-vs-llama.sh [LLAMA_DIR] [MODEL] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
llama=$(realpath -m "${1:-.llama.cpp}")
model=${2:-}
rounds=${3:-1}
if [ -z "$model" ]; then
  scripts/bench-gguf-vs-llama.sh 0 "$llama" qwen3moe >/dev/null
  model=${TMPDIR:-/tmp}/moekit-gguf-bench/qwen3moe.Q8_0.gguf
fi
python3 -c "import openai" 2>/dev/null || pip install -q openai >/dev/null 2>&1
slots=32 ctx=512
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

serve() {  # which -> starts the server in the background, sets $server
  if [ "$1" = moekit ]; then
    .build/release/moe serve --model "$model" --model-name bench --port "$port" --threads 2 --parallel $slots \
      --context $ctx --queue 64 >/dev/null 2>&1 &
  else
    "$llama/build/bin/llama-server" -m "$model" --alias bench --port "$port" -t 2 -tb 2 -np $slots -c $((slots * ctx)) \
      -b 512 -ub 512 --no-warmup >/dev/null 2>&1 &
  fi
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT  # a failed measurement must not leave a server running
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      # One request first, so neither server's first measurement pays for faulting in the file.
      curl -s "http://127.0.0.1:$port/v1/completions" -d '{"model": "bench", "prompt": "warm up", "max_tokens": 8}' >/dev/null
      return
    fi
    sleep 0.1
  done
  echo "$1 did not start" >&2; exit 1
}

echo "model: $model ($(du -h "$model" | cut -f1)), 2 threads, $slots slots"
for r in $(seq "$rounds"); do
  for which in moekit llama.cpp; do
    serve $which
    for words in 2 32; do
      for c in 1 8 32; do
        python3 scripts/serve_throughput.py "http://127.0.0.1:$port/v1" bench $c 2 64 $words | python3 -c "
import json, sys; d = json.load(sys.stdin)
print(f'round $r $which prompt {d[\"prompt_tokens\"] // d[\"requests\"]:3d} tokens, streams {d[\"concurrency\"]:2d}: {d[\"tokens_per_s\"]:7.1f} tok/s total, TTFT {d[\"mean_ttft_s\"]:.3f} s ({d[\"completion_tokens\"]} tokens in {d[\"seconds\"]} s)')"
      done
    done
    kill $server; wait $server 2>/dev/null || true
  done
done
