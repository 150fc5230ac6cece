#!/usr/bin/env bash
# Starts `moe serve` (the embedded default model, an API key, a free port) and drives it with
# the official openai Python client: scripts/check_openai_client.py. Installs `openai` from
# PyPI when it is missing. Part of .ci/run.
#
#     scripts/check-openai-client.sh [MOE_BINARY]     # default: .build/release/moe
set -euo pipefail
cd "$(dirname "$0")/.."
moe=${1:-.build/release/moe}
. scripts/serve-lib.sh
start_server --api-key ci-key --model-name default
python3 scripts/check_openai_client.py "http://127.0.0.1:$port/v1" default ci-key
