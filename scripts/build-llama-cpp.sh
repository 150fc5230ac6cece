#!/usr/bin/env bash
# Builds llama.cpp, the speed and format anchor, from the llama-cpp-python sdist on PyPI (its
# vendor/llama.cpp): llama-bench, llama-quantize, llama-perplexity, llama-server, llama-cli, llama-imatrix,
# llama-gguf-split, plus its convert_hf_to_gguf.py. Never a dependency of the package; about 15 minutes here.
#
#     scripts/build-llama-cpp.sh [DIR]     # default: .llama.cpp (ignored by git)
#
# Binaries land in DIR/build/bin; the converter is DIR/src/convert_hf_to_gguf.py.
set -euo pipefail
dir=$(realpath -m "${1:-.llama.cpp}")
mkdir -p "$dir"
cd "$dir"
if [ ! -d src ]; then
  pip download --no-deps --no-binary llama-cpp-python llama-cpp-python -d sdist >/dev/null
  tar xzf sdist/llama_cpp_python-*.tar.gz
  mv llama_cpp_python-*/vendor/llama.cpp src
  rm -rf llama_cpp_python-*
fi
command -v cmake >/dev/null || { apt-get update >/dev/null && apt-get install -y cmake >/dev/null; }
cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
cmake --build build -j "$(nproc)" --target llama-bench llama-quantize llama-perplexity llama-server llama-cli llama-imatrix llama-gguf-split
echo "llama.cpp binaries in $dir/build/bin"
