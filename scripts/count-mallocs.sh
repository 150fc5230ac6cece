#!/usr/bin/env bash
# Heap allocations a decoded token makes, by call stack: `moe generate` runs twice on FILE (16
# and 16 + N greedy tokens) under an LD_PRELOAD counter (scripts/malloc_stacks.c), and the
# difference over N is printed, the stacks that allocate most first, as Swift names. Allocation
# on the calling thread is serial time while the pool's workers wait (README, "Speed against
# llama.cpp"). Needs cc, addr2line and a release build.
#
#     scripts/count-mallocs.sh FILE.gguf [N] [TOP]      # default: N 128, the top 25 stacks
set -euo pipefail
model=$1
n=${2:-128}
top=${3:-25}
here=$(cd "$(dirname "$0")" && pwd)
moe=$here/../.build/release/moe
out=${TMPDIR:-/tmp}/moekit-mallocs
mkdir -p "$out"
cc -O2 -shared -fPIC "$here/malloc_stacks.c" -o "$out/malloc_stacks.so" -ldl
for tokens in 16 $((16 + n)); do
  MT_OUT="$out/$tokens.txt" LD_PRELOAD="$out/malloc_stacks.so" \
    "$moe" generate --model "$model" --max-tokens "$tokens" --threads 2 "hello world this is" > /dev/null
done
python3 - "$out/16.txt" "$out/$((16 + n)).txt" "$moe" "$n" "$top" <<'PY'
import subprocess, sys
def load(path):
    counts = {}
    for line in open(path):
        parts = line.split()
        counts[" ".join(parts[1:])] = int(parts[0])
    return counts
short, long_, binary, n, top = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
name = binary.rsplit("/", 1)[-1]
per_token = {k: (long_.get(k, 0) - short.get(k, 0)) / n for k in set(short) | set(long_)}
per_token = {k: v for k, v in per_token.items() if v >= 0.5}
addresses = sorted({f.split("+")[1] for k in per_token for f in k.split() if f.startswith(name + "+")})
symbols = subprocess.run(["addr2line", "-f", "-e", binary] + addresses, capture_output=True, text=True).stdout.split("\n")[0::2]
demangled = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(symbols),
                           capture_output=True, text=True).stdout.split("\n")
names = dict(zip(addresses, demangled))
print(f"mallocs a token: {sum(per_token.values()):.1f} (over {n} tokens)")
for stack, count in sorted(per_token.items(), key=lambda kv: -kv[1])[:top]:
    frames = [names[f.split("+")[1]] for f in stack.split() if f.startswith(name + "+")]
    frames = [f[:80] for f in frames if "swift_" not in f and "Array" not in f and "Buffer" not in f][:3]
    print(f"{count:6.1f}  " + "  <-  ".join(frames))
PY
