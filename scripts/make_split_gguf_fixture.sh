#!/usr/bin/env bash
# Makes Tests/Fixtures/gguf_split/: the Qwen3-MoE Q8_0 fixture (Tests/Fixtures/gguf_models,
# made by llama.cpp from a transformers checkpoint) split by llama.cpp's own llama-gguf-split,
# the tool split GGUFs are published with: three files of at most 12 tensors
# (`qwen3_moe.q8_0-0000K-of-00003.gguf`, the metadata in the first), and a second set with no
# tensor in the first file (`--no-tensor-first-split`), and the first set merged back into one
# file (`--merge`, which leaves `split.count` 0 in it). `GGUFSplitTests` runs them against the
# unsplit file.
#
#     scripts/build-llama-cpp.sh && scripts/make_split_gguf_fixture.sh [LLAMA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
llama=$(realpath -m "${1:-.llama.cpp}")
split="$llama/build/bin/llama-gguf-split"
[ -x "$split" ] || cmake --build "$llama/build" --target llama-gguf-split >/dev/null
out=Tests/Fixtures/gguf_split
rm -rf "$out" && mkdir -p "$out"
src=Tests/Fixtures/gguf_models/qwen3_moe.q8_0.gguf
"$split" --split --split-max-tensors 12 "$src" "$out/qwen3_moe.q8_0" >/dev/null
"$split" --split --split-max-tensors 20 --no-tensor-first-split "$src" "$out/qwen3_moe.q8_0.empty-first" >/dev/null
# The first set merged back into one file, which carries split.count 0.
"$split" --merge "$out/qwen3_moe.q8_0-00001-of-00003.gguf" "$out/qwen3_moe.q8_0.merged.gguf" >/dev/null
ls -l "$out"
