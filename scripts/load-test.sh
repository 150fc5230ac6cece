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
. scripts/serve-lib.sh
start_server --model-name default --parallel 8 --queue 64
python3 scripts/load_test.py "http://127.0.0.1:$port/v1" default "$server" "$clients" "$requests"
