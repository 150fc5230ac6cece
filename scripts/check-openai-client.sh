#!/usr/bin/env bash
# Starts `moe serve` (the embedded default model, an API key, a free port) and drives it with
# the official openai Python client: scripts/check_openai_client.py. Installs `openai` from
# PyPI when it is missing. Part of .ci/run.
#
#     scripts/check-openai-client.sh [MOE_BINARY]     # default: .build/release/moe
set -euo pipefail
cd "$(dirname "$0")/.."
moe=${1:-.build/release/moe}
python3 -c "import openai" 2>/dev/null || pip install -q openai >/dev/null 2>&1
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$moe" serve --port "$port" --api-key ci-key --model-name default > "$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
python3 scripts/check_openai_client.py "http://127.0.0.1:$port/v1" default ci-key
