#!/usr/bin/env bash
# Load test: `moe serve` (the embedded default model) under CLIENTS concurrent streaming openai
# clients sending REQUESTS greedy requests (scripts/load_test.py): no error, every answer equal
# to the single-request one, resident memory flat after warm-up.
#
#     scripts/load-test.sh [CLIENTS] [REQUESTS] [MOE_BINARY]     # default 64 1000 .build/release/moe
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-64}
requests=${2:-1000}
moe=${3:-.build/release/moe}
python3 -c "import openai" 2>/dev/null || pip install -q openai >/dev/null 2>&1
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$moe" serve --port "$port" --model-name default --parallel 8 --queue 64 > "$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
python3 scripts/load_test.py "http://127.0.0.1:$port/v1" default "$server" "$clients" "$requests"
