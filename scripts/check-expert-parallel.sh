#!/usr/bin/env bash
# Expert parallelism under mpirun against the single process, on random checkpoints of every
# MoE family (init-random): logits and generated tokens must be identical, byte for byte, on 2,
# 3 and 4 ranks (3: uneven shards); then the exchange figures of `moe bench`, the typed errors,
# and a rank killed mid-run (the job must end with a message on the others, not hang). Then
# data-parallel training on ranks: `mpirun -np 2 moe train` writes the checkpoint one process
# with 2 shards writes, byte for byte, also when stopped and resumed; 4 ranks agree to rounding.
#
#     scripts/check-expert-parallel.sh [MOE_BINARY]     # default: .build/release/moe
#
# The binary must be built with MPI: `swift build -c release --traits MPI` (Open MPI:
# `apt-get install libopenmpi-dev openmpi-bin`). Ranks oversubscribe this machine's cores.
set -euo pipefail
moe=$(realpath "${1:-.build/release/moe}")
work=$(mktemp -d "${TMPDIR:-/tmp}/moekit-ep.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
mpi() { local np=$1; shift; timeout 300 mpirun -np "$np" --oversubscribe --bind-to none "$@"; }
tokens=1,17,42,99,7,300,5,11,64,128,3,250

for arch in ${EP_ARCHS:-mixtral qwen3_moe qwen2_moe olmoe deepseek_v3 gpt_oss glm4_moe}; do
  "$moe" init-random --arch "$arch" --out "$work/$arch" --layers 2 --experts 8 --top-k 2 --hidden 128 --expert-size 64 > /dev/null
  "$moe" logits --model "$work/$arch" --tokens "$tokens" --threads 1 > "$work/$arch.logits"
  "$moe" generate --model "$work/$arch" "The experts" --max-tokens 16 --json --threads 1 | grep -o '"ids":\[[0-9,]*\]' > "$work/$arch.ids"
  for np in 2 3 4; do
    mpi "$np" "$moe" logits --model "$work/$arch" --tokens "$tokens" --threads 1 --expert-parallel "$np" > "$work/$arch.logits.$np"
    cmp -s "$work/$arch.logits" "$work/$arch.logits.$np" || { echo "FAIL $arch: logits on $np ranks differ from one process"; exit 1; }
    mpi "$np" "$moe" generate --model "$work/$arch" "The experts" --max-tokens 16 --json --threads 1 --expert-parallel "$np" \
      | grep -o '"ids":\[[0-9,]*\]' > "$work/$arch.ids.$np"
    cmp -s "$work/$arch.ids" "$work/$arch.ids.$np" || { echo "FAIL $arch: tokens on $np ranks differ from one process"; exit 1; }
  done
  echo "$arch: logits and 16 greedy tokens identical on 1, 2, 3 and 4 ranks"
done

# Perplexity: every figure but the speed identical.
printf 'the quick brown fox jumps over the lazy dog. the experts route tokens to the ranks.\n' > "$work/ppl.txt"
first=$(echo ${EP_ARCHS:-mixtral} | cut -d' ' -f1)
"$moe" perplexity --model "$work/$first" --file "$work/ppl.txt" --context 16 --threads 1 | sed 's/"tokens_per_s":[0-9.e+-]*//' > "$work/ppl.1"
mpi 2 "$moe" perplexity --model "$work/$first" --file "$work/ppl.txt" --context 16 --threads 1 --expert-parallel 2 \
  | sed 's/"tokens_per_s":[0-9.e+-]*//' > "$work/ppl.2"
cmp -s "$work/ppl.1" "$work/ppl.2" || { echo "FAIL: perplexity on 2 ranks differs"; cat "$work/ppl.1" "$work/ppl.2"; exit 1; }
echo "perplexity: identical on 2 ranks ($(grep -o '"perplexity":[0-9.]*' "$work/ppl.1"))"

# Partitioned rows (each row to its expert's rank and back by MPI_Alltoallv), pipelined in 4
# chunks by non-blocking MPI_Ialltoallv: the unpipelined logits byte for byte, on 2 and 4 ranks
# (4 ranks of 8 experts: 2 chunks used), and the single process's to rounding.
here=$(cd "$(dirname "$0")" && pwd)
for np in 2 4; do
  mpi "$np" "$moe" logits --model "$work/$first" --tokens "$tokens" --threads 1 --expert-parallel "$np" --expert-rows partitioned > "$work/part.$np.1"
  mpi "$np" "$moe" logits --model "$work/$first" --tokens "$tokens" --threads 1 --expert-parallel "$np" --expert-rows partitioned \
    --overlap-chunks 4 > "$work/part.$np.4"
  cmp -s "$work/part.$np.1" "$work/part.$np.4" || { echo "FAIL: pipelined partitioned logits on $np ranks differ from unpipelined"; exit 1; }
  python3 "$here/compare-logits.py" "$work/$first.logits" "$work/part.$np.1" 1e-5 > /dev/null
done
echo "partitioned rows, pipelined in 4 chunks: the unpipelined logits byte for byte on 2 and 4 ranks, one process's within 1e-5"

# The exchanges' figures (rank 0's), on a 16-expert model.
"$moe" init-random --arch qwen3_moe --out "$work/bench" --layers 2 --experts 16 --top-k 4 --hidden 256 --expert-size 128 > /dev/null
mpi 2 "$moe" bench --model "$work/bench" --prompt-tokens 32 --gen-tokens 8 --reps 1 --threads 1 --expert-parallel 2 > "$work/bench.json"
python3 - "$work/bench.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["expert_parallel"]
assert r["ranks"] == 2 and r["rank"] == 0, r
assert 0 < r["expert_bytes_held"] < r["expert_bytes_total"], r
for phase in ("prefill", "decode"):
    p = r[phase]
    assert p["bytes_received_per_token_per_layer"] > 0 and p["total_seconds_per_token"] > 0, (phase, p)
print("bench: rank 0 holds %d of %d expert bytes; decode receives %.0f bytes per token per layer, communication %.0f%% of decode"
      % (r["expert_bytes_held"], r["expert_bytes_total"], r["decode"]["bytes_received_per_token_per_layer"], 100 * r["decode"]["communication_fraction"]))
PY
mpi 2 "$moe" bench --model "$work/bench" --prompt-tokens 32 --gen-tokens 2 --reps 1 --threads 1 --expert-parallel 2 \
  --expert-rows partitioned --overlap-chunks 4 > "$work/overlap.json"
python3 - "$work/overlap.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["expert_parallel"]
assert r["rows"] == "partitioned" and r["chunks"] == 4, r
o = r["overlap"]
assert [x["chunks"] for x in o] == [1, 2, 4] and all(x["expert_layer_seconds_per_token"] > 0 for x in o), o
print("bench overlap: exposed all-to-all per token %s ms for 1, 2, 4 chunks" % [round(x["exposed_communication_seconds_per_token"] * 1e3, 3) for x in o])
PY

# Typed errors, non-zero exits.
set +e
out=$(mpi 2 "$moe" logits --model "$work/mixtral" --tokens 1,2 --expert-parallel 3 2>&1); rc=$?
set -e
[ $rc -ne 0 ] && grep -q "this job has 2 rank(s); start it with mpirun -np 3" <<<"$out" || { echo "FAIL: rank count mismatch: rc $rc: $out"; exit 1; }
"$moe" init-random --arch mixtral --out "$work/two" --layers 1 --experts 2 --top-k 1 --hidden 64 --expert-size 32 > /dev/null
set +e
out=$(mpi 3 "$moe" logits --model "$work/two" --tokens 1,2 --expert-parallel 3 2>&1); rc=$?
set -e
[ $rc -ne 0 ] && grep -q "fewer than the 3 ranks" <<<"$out" || { echo "FAIL: too many ranks: rc $rc: $out"; exit 1; }
echo "errors: a rank count that is not -np, and more ranks than experts, exit non-zero with the reason"

# A rank killed mid-run: the job ends, with a message, within seconds.
"$moe" init-random --arch qwen3_moe --out "$work/long" --layers 4 --experts 8 --top-k 2 --hidden 256 --expert-size 256 > /dev/null
set +e
mpi 2 "$moe" bench --model "$work/long" --prompt-tokens 64 --gen-tokens 4000 --reps 50 --threads 1 --expert-parallel 2 \
  > /dev/null 2> "$work/fault.err" &
job=$!
sleep 8
victim=$(pgrep -f "moe bench --model $work/long" | tail -n 1)
kill -9 "$victim"
start=$(date +%s)
wait $job; rc=$?
set -e
took=$(( $(date +%s) - start ))
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: killed rank: job exit $rc (124: hung until the timeout)"; cat "$work/fault.err"; exit 1; }
grep -qi "killed\|signal 9\|exited on signal" "$work/fault.err" || { echo "FAIL: killed rank: no message"; cat "$work/fault.err"; exit 1; }
echo "fault: a rank killed with SIGKILL ended the job in ${took} s with exit $rc and: $(grep -i -m1 'signal\|killed' "$work/fault.err" | sed 's/^ *//')"
# Data-parallel training on ranks against one process running the same shards on threads.
# Prints how far run $2's losses (its log and final loss) are from one process's ($1), relative;
# fails past 1e-4. $3 labels the line.
compare_losses() {
  python3 - "$work/$1.out" "$work/$2.out" "$work/$1/log.jsonl" "$work/$2/log.jsonl" "$3" <<'PY'
import json, sys
one, other = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
a = [json.loads(l)["loss"] for l in open(sys.argv[3])]; b = [json.loads(l)["loss"] for l in open(sys.argv[4])]
worst = max(abs(x - y) / max(1, abs(x)) for x, y in zip(a + [one["loss"]], b + [other["loss"]]))
assert len(a) == len(b) == 2 and worst < 1e-4, (a, b, one["loss"], other["loss"])
print("%s: losses within %.1e (relative) of one process with 2 shards: %s vs %s" % (sys.argv[5], worst, b, a))
PY
}
train_config() {  # $1: checkpoint dir, $2: threads, $3: expert_parallel (default 1)
  cat <<JSON
{"model": {"hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2, "experts": 8, "expert_size": 64},
 "router": {"name": "topk-softmax", "k": 2}, "load_balance": 0.01, "z_loss": 0.001, "data_parallel": true,
 "expert_parallel": ${3:-1},
 "data": {"synthetic": {"level": 1}}, "steps": 12, "batch": 8, "seq_len": 32, "lr": 0.003, "warmup": 2,
 "eval_interval": 6, "eval_samples": 4, "checkpoint_interval": 6, "checkpoint_dir": "$1", "seed": 5, "threads": $2}
JSON
}
train_config "$work/t-one" 2 > "$work/t-one.json"
"$moe" train --config "$work/t-one.json" --quiet > "$work/t-one.out"
train_config "$work/t-two" 2 > "$work/t-two.json"
mpi 2 "$moe" train --config "$work/t-two.json" --quiet > "$work/t-two.out"
cmp -s "$work/t-one/checkpoint/model.safetensors" "$work/t-two/checkpoint/model.safetensors" \
  || { echo "FAIL: 2 ranks trained other weights than one process with 2 shards"; exit 1; }
train_config "$work/t-resumed" 2 > "$work/t-resumed.json"
mpi 2 "$moe" train --config "$work/t-resumed.json" --quiet --stop-after 6 > /dev/null
mpi 2 "$moe" train --config "$work/t-resumed.json" --quiet --resume > /dev/null
cmp -s "$work/t-two/checkpoint/model.safetensors" "$work/t-resumed/checkpoint/model.safetensors" \
  || { echo "FAIL: 2 ranks stopped at step 6 and resumed end elsewhere"; exit 1; }
train_config "$work/t-four" 1 > "$work/t-four.json"
mpi 4 "$moe" train --config "$work/t-four.json" --quiet > "$work/t-four.out"
compare_losses t-one t-four "train: 2 ranks wrote the one-process checkpoint byte for byte (also stopped at step 6 and resumed); 4 ranks"
# Expert-parallel training: each rank runs half of every layer's experts on both ranks' rows.
train_config "$work/t-ep" 2 2 > "$work/t-ep.json"
mpi 2 "$moe" train --config "$work/t-ep.json" --quiet > "$work/t-ep.out"
train_config "$work/t-ep-resumed" 2 2 > "$work/t-ep-resumed.json"
mpi 2 "$moe" train --config "$work/t-ep-resumed.json" --quiet --stop-after 6 > /dev/null
mpi 2 "$moe" train --config "$work/t-ep-resumed.json" --quiet --resume > /dev/null
cmp -s "$work/t-ep/checkpoint/model.safetensors" "$work/t-ep-resumed/checkpoint/model.safetensors" \
  || { echo "FAIL: expert-parallel training stopped at step 6 and resumed ends elsewhere"; exit 1; }
compare_losses t-one t-ep "train, expert_parallel 2 (stopped and resumed: byte for byte)"
# The forward's all-to-all pipelined in 4 chunks (non-blocking MPI_Ialltoallv): the unpipelined
# run's checkpoint byte for byte.
train_config "$work/t-ep-piped" 2 2 | sed 's/"expert_parallel": 2,/"expert_parallel": 2, "overlap_chunks": 4,/' > "$work/t-ep-piped.json"
mpi 2 "$moe" train --config "$work/t-ep-piped.json" --quiet > "$work/t-ep-piped.out"
cmp -s "$work/t-ep/checkpoint/model.safetensors" "$work/t-ep-piped/checkpoint/model.safetensors" \
  || { echo "FAIL: expert-parallel training pipelined in 4 chunks wrote other weights"; exit 1; }
echo "train, expert_parallel 2 with overlap_chunks 4: the unpipelined checkpoint byte for byte"
set +e
train_config "$work/t-ep-bad" 1 2 > "$work/t-ep-bad.json"
out=$("$moe" train --config "$work/t-ep-bad.json" --quiet 2>&1); rc=$?
set -e
[ $rc -ne 0 ] && grep -q "start moe train with mpirun -np 2" <<<"$out" || { echo "FAIL: expert_parallel without mpirun: rc $rc: $out"; exit 1; }
# A rank that fails alone (rank 0 cannot write its log: the checkpoint folder became a file) ends
# the job with its message (MPI_Abort), rather than leaving the other rank in a collective.
train_config "$work/t-fail" 1 2 | sed 's/"steps": 12/"steps": 2000/; s/"eval_interval": 6/"eval_interval": 2000/; s/"checkpoint_interval": 6/"checkpoint_interval": 2000/' \
  > "$work/t-fail.json"
set +e
mpi 2 "$moe" train --config "$work/t-fail.json" --quiet > /dev/null 2> "$work/t-fail.err" &
job=$!
sleep 2
rm -rf "$work/t-fail" && touch "$work/t-fail"
wait $job; rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "t-fail/log.jsonl: cannot append the evaluation line: Not a directory" "$work/t-fail.err" \
  || { echo "FAIL: rank 0 failing alone: exit $rc"; cat "$work/t-fail.err"; exit 1; }
echo "fault: rank 0 failing alone ended the job with exit $rc and: $(grep -m1 'cannot append' "$work/t-fail.err")"
echo "expert parallelism: all checks passed"
