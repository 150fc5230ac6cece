#!/usr/bin/env bash
# Fuzzes one of MoEKit's readers of untrusted input with libFuzzer (clang's, in the Swift
# toolchain) under AddressSanitizer: builds the C leaves, MoECore and the readers' sources into
# one fuzz binary with the target's entry (scripts/fuzz/<Target>Fuzz.swift), seeds the corpus
# from the committed fixtures, and runs for SECONDS (default 600). Exits non-zero on any crash,
# hang (5 s per input) or allocation past 2 GB.
#
#     scripts/fuzz.sh gguf|safetensors|tokenizer|toml|config [SECONDS]
set -euo pipefail
target=${1:?usage: scripts/fuzz.sh gguf|safetensors|tokenizer|toml|config [SECONDS]}
seconds=${2:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
fixtures="$root/Tests/Fixtures"
work=${TMPDIR:-/tmp}/moekit-fuzz-$target
rm -rf "$work/obj" "$work/src" "$work/corpus" && mkdir -p "$work/obj" "$work/src" "$work/mod" "$work/corpus"
case $target in
  gguf) entry=GGUFFuzz; maxlen=200000
        cp "$fixtures"/gguf/*.gguf "$fixtures"/gguf_models/qwen3_moe.q8_0.gguf "$work/corpus/"
        # A split set as one input (GGUFFuzz.swift): "SPLT", 3, the first two files' lengths, the files.
        python3 - "$fixtures"/gguf_split/qwen3_moe.q8_0-0000{1,2,3}-of-00003.gguf > "$work/corpus/split.bin" <<'PY'
import struct, sys
files = [open(p, "rb").read() for p in sys.argv[1:]]
sys.stdout.buffer.write(b"SPLT" + bytes([len(files)]) + b"".join(struct.pack("<I", len(f)) for f in files[:-1]) + b"".join(files))
PY
        ;;
  safetensors) entry=SafetensorsFuzz; maxlen=200000
        cp "$fixtures"/mixtral/model.safetensors "$work/corpus/mixtral.safetensors"
        cp "$fixtures"/gpt_oss_mxfp4/model.safetensors "$work/corpus/mxfp4.safetensors" ;;
  tokenizer) entry=TokenizerFuzz; maxlen=65536
        for f in "$fixtures"/tokenizers/*/tokenizer.json; do
          [ "$(stat -c %s "$f")" -lt 60000 ] || continue
          { cat "$f"; printf '\0Hello world, 1234 \xf0\x9f\xa6\x99 tokens!'; } > "$work/corpus/$(basename "$(dirname "$f")").bin"
        done ;;
  toml) entry=TOMLFuzz; maxlen=65536
        printf 'name = "top-p"\np = 0.5\n[model]\nhidden_size = 64\nlayers = [1, 2, {a = "x"}]\n' > "$work/corpus/seed.toml" ;;
  config) entry=ConfigFuzz; maxlen=16384
        for f in "$fixtures"/*/config.json; do cp "$f" "$work/corpus/$(basename "$(dirname "$f")").json"; done ;;
  *) echo "unknown target $target (gguf, safetensors, tokenizer, toml, config)" >&2; exit 2 ;;
esac
# The SIMD leaves build plainly (instrumenting the matmul micro-kernels takes many minutes and
# fuzzes nothing); the block-format code the readers reach (dequant.c) and the dispatcher are
# instrumented.
for f in "$root"/Sources/_MoEKernels/*.c; do
  case "$(basename "$f")" in
    dequant.c|dispatch.c) flags="-O1 -g -fsanitize=fuzzer-no-link,address" ;;
    *) flags="-O2" ;;
  esac
  clang $flags -I "$root/Sources/_MoEKernels/include" -I "$root/Sources/_MoEKernels" -c "$f" -o "$work/obj/$(basename "$f" .c).o"
done
printf 'module _MoEKernels {\n  header "%s"\n  export *\n}\n' "$root/Sources/_MoEKernels/include/moe_kernels.h" > "$work/mod/module.modulemap"
# The readers' sources, compiled into the same module as MoECore (so without `import MoECore`).
# The config target takes the whole of MoE and MoEModels (the families and routers it checks),
# but the converter and quantizer, which need MoEQuant.
if [ "$target" = config ]; then
  sources=$(ls "$root"/Sources/MoE/*.swift "$root"/Sources/MoE/Routers/*.swift "$root"/Sources/MoEModels/*.swift \
                "$root"/Sources/MoEModels/Architectures/*.swift | xargs grep -L '^import MoEQuant' | grep -v 'GGUFConverter')
  stubs=""
else
  sources=$(for f in GGUF.swift GGUF+Parsing.swift GGUF+Split.swift GGUF+Tokenizer.swift ModelError.swift Tokenizer.swift Tokenizer+Components.swift \
                     TokenRegex.swift TokenRegex+Search.swift ScalarClass.swift Safetensors.swift; do echo "$root/Sources/MoEModels/$f"; done)
  stubs="$root/scripts/fuzz/Stubs.swift"
fi
for f in $sources; do
  sed -e '/^import MoECore$/d' -e '/^import MoE$/d' "$f" > "$work/src/$(basename "$f")"
done
swiftc -Onone -g -sanitize=fuzzer,address -parse-as-library -module-name MoEFuzz -I "$work/mod" \
  "$root"/Sources/MoECore/*.swift "$work"/src/*.swift $stubs "$root/scripts/fuzz/$entry.swift" \
  "$work"/obj/*.o -o "$work/fuzz"
"$work/fuzz" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len="$maxlen" "$work/corpus"
