#!/usr/bin/env bash
# Expert parallelism across two hosts on a real network stack: two network namespaces joined
# by a veth pair (10.77.0.1 and 10.77.0.2), each with its own hostname, Open MPI over TCP only
# (no shared memory), ranks launched into the second namespace by scripts/mpi-netns-agent.sh
# where two machines would use ssh. Logits and greedy tokens must equal the single process's,
# byte for byte; data-parallel training must write the one-process checkpoint byte for byte and
# expert-parallel training reach its losses; a rank killed mid-run must end the job, not hang.
# With EP_BENCH_MODEL, `moe bench` reports what crossed the link (EP_BENCH_ARGS adds options,
# e.g. `--expert-rows partitioned --overlap-chunks 8` for the pipeline); EP_LINK_RATE (e.g.
# `1gbit`) limits the link with a token bucket (`tc qdisc ... tbf`); EP_TRAIN_BENCH times
# pipelined expert-parallel training across it (below). Needs root (ip netns).
#
#     scripts/check-expert-parallel-netns.sh [MOE_BINARY]     # default: .build/release/moe
set -euo pipefail
moe=$(realpath "${1:-.build/release/moe}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/moekit-netns.XXXXXX")
cleanup() { ip netns del moekit-a 2> /dev/null || true; ip netns del moekit-b 2> /dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cleanup; mkdir -p "$work"
ip netns add moekit-a && ip netns add moekit-b
ip link add moekit-va type veth peer name moekit-vb
ip link set moekit-va netns moekit-a && ip link set moekit-vb netns moekit-b
ip -n moekit-a addr add 10.77.0.1/24 dev moekit-va && ip -n moekit-b addr add 10.77.0.2/24 dev moekit-vb
for ns in moekit-a moekit-b; do ip -n $ns link set lo up; done
ip -n moekit-a link set moekit-va up && ip -n moekit-b link set moekit-vb up
if [ -n "${EP_LINK_RATE:-}" ]; then  # a slower link, as between machines (token bucket, both ways)
  for end in "moekit-a moekit-va" "moekit-b moekit-vb"; do
    set -- $end
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$EP_LINK_RATE" burst 256kb latency 50ms
  done
fi
ip -n moekit-a route get 10.77.0.2 > /dev/null

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi() {
  ip netns exec moekit-a unshare --uts sh -c "hostname moekit-a; exec timeout 300 mpirun -np 2 --host 10.77.0.1:1,10.77.0.2:1 \
    --mca plm_rsh_agent $here/mpi-netns-agent.sh --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 \
    --mca oob_tcp_if_include 10.77.0.0/24 --bind-to none $*"
}
tokens=1,17,42,99,7,300,5,11,64,128,3,250
for arch in ${EP_ARCHS:-qwen3_moe deepseek_v3}; do
  "$moe" init-random --arch "$arch" --out "$work/$arch" --layers 2 --experts 8 --top-k 2 --hidden 128 --expert-size 64 > /dev/null
  "$moe" logits --model "$work/$arch" --tokens "$tokens" --threads 1 > "$work/$arch.logits"
  mpi "$moe" logits --model "$work/$arch" --tokens "$tokens" --threads 1 --expert-parallel 2 > "$work/$arch.logits.2"
  cmp -s "$work/$arch.logits" "$work/$arch.logits.2" || { echo "FAIL $arch: logits across the namespaces differ"; exit 1; }
  "$moe" generate --model "$work/$arch" "The experts" --max-tokens 16 --json --threads 1 | grep -o '"ids":\[[0-9,]*\]' > "$work/$arch.ids"
  mpi "$moe" generate --model "$work/$arch" "'The experts'" --max-tokens 16 --json --threads 1 --expert-parallel 2 \
    | grep -o '"ids":\[[0-9,]*\]' > "$work/$arch.ids.2"
  cmp -s "$work/$arch.ids" "$work/$arch.ids.2" || { echo "FAIL $arch: tokens across the namespaces differ"; exit 1; }
  echo "$arch: logits and 16 greedy tokens identical across two namespaces over TCP"
done
# Partitioned rows (all-to-all over TCP), pipelined in 4 chunks by non-blocking all-to-alls:
# the unpipelined logits byte for byte, and the single process's to rounding.
first=$(echo ${EP_ARCHS:-qwen3_moe} | cut -d' ' -f1)
mpi "$moe" logits --model "$work/$first" --tokens "$tokens" --threads 1 --expert-parallel 2 --expert-rows partitioned > "$work/part.1"
mpi "$moe" logits --model "$work/$first" --tokens "$tokens" --threads 1 --expert-parallel 2 --expert-rows partitioned \
  --overlap-chunks 4 > "$work/part.4"
cmp -s "$work/part.1" "$work/part.4" || { echo "FAIL $first: pipelined partitioned logits across the namespaces differ"; exit 1; }
python3 "$here/compare-logits.py" "$work/$first.logits" "$work/part.1" 1e-5
echo "$first: partitioned rows pipelined in 4 chunks across the namespaces: the unpipelined logits byte for byte"
# Training: one process with 2 shards on threads against 2 ranks in the two namespaces.
train_config() {  # $1: checkpoint dir, $2: expert_parallel
  cat <<JSON
{"model": {"hidden_size": 64, "layers": 2, "heads": 4, "kv_heads": 2, "experts": 8, "expert_size": 64},
 "router": {"name": "topk-softmax", "k": 2}, "load_balance": 0.01, "data_parallel": true, "expert_parallel": $2,
 "data": {"synthetic": {"level": 1}}, "steps": 8, "batch": 8, "seq_len": 32, "eval_interval": 8, "eval_samples": 4,
 "checkpoint_interval": 8, "checkpoint_dir": "$1", "seed": 5, "threads": 2}
JSON
}
train_config "$work/one" 1 > "$work/one.json"
train_config "$work/dp" 1 > "$work/dp.json"
train_config "$work/ep" 2 > "$work/ep.json"
"$moe" train --config "$work/one.json" --quiet > "$work/one.out"
mpi "$moe" train --config "$work/dp.json" --quiet > "$work/dp.out"
cmp -s "$work/one/checkpoint/model.safetensors" "$work/dp/checkpoint/model.safetensors" \
  || { echo "FAIL: data-parallel training across the namespaces wrote other weights"; exit 1; }
mpi "$moe" train --config "$work/ep.json" --quiet > "$work/ep.out"
train_config "$work/ep-piped" 2 | sed 's/"expert_parallel": 2,/"expert_parallel": 2, "overlap_chunks": 4,/' > "$work/ep-piped.json"
mpi "$moe" train --config "$work/ep-piped.json" --quiet > /dev/null
cmp -s "$work/ep/checkpoint/model.safetensors" "$work/ep-piped/checkpoint/model.safetensors" \
  || { echo "FAIL: expert-parallel training pipelined in 4 chunks across the namespaces wrote other weights"; exit 1; }
python3 - "$work/one.out" "$work/ep.out" <<'PY'
import json, sys
a, b = (json.load(open(f))["loss"] for f in sys.argv[1:3])
assert abs(a - b) <= 1e-4 * max(1, abs(a)), (a, b)
print("train across two namespaces: data parallel wrote the one-process checkpoint byte for byte; expert parallel loss %s against %s (pipelined in 4 chunks: its checkpoint byte for byte)" % (b, a))
PY

# A rank killed mid-run, in the second namespace: the job ends with a message, not a hang.
set +e
mpi "$moe" bench --model "$work/$first" --prompt-tokens 64 --gen-tokens 4000 --reps 50 --threads 1 --expert-parallel 2 \
  > /dev/null 2> "$work/fault.err" &
job=$!
sleep 6
kill -9 "$(pgrep -f "moe bench --model $work/$first" | tail -n 1)"
wait $job; rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -qi "signal 9\|killed\|lost connection\|exited" "$work/fault.err" \
  || { echo "FAIL: killed rank across the namespaces: exit $rc"; cat "$work/fault.err"; exit 1; }
echo "fault across the namespaces: exit $rc: $(grep -i -m1 'signal\|killed\|lost\|exited' "$work/fault.err" | sed 's/^ *//')"

# With EP_TRAIN_BENCH (a training config with "expert_parallel": 2 and "overlap_chunks": 1), the
# same run pipelined in 1, 2 and 4 chunks across the link, in turn, twice: tokens/s after
# warm-up and rank 0's exposed all-to-all per step.
if [ -n "${EP_TRAIN_BENCH:-}" ]; then
  for round in 1 2; do
    for chunks in 1 2 4; do
      sed "s/\"overlap_chunks\": 1/\"overlap_chunks\": $chunks/; s#\"checkpoint_dir\": \"[^\"]*\"#\"checkpoint_dir\": \"$work/tb-$round-$chunks\"#" \
        "$EP_TRAIN_BENCH" > "$work/tb.json"
      mpi "$moe" train --config "$work/tb.json" --quiet | python3 -c "
import json, sys; d = json.load(sys.stdin)
print('train bench: overlap_chunks $chunks: %.0f tokens/s, %.4f s exposed all-to-all a step' % (d['tokens_per_s_after_warmup'], d['expert_parallel_seconds_per_step']))"
    done
  done
fi
if [ -n "${EP_BENCH_MODEL:-}" ]; then
  mpi "$moe" bench --model "$EP_BENCH_MODEL" --prompt-tokens 128 --gen-tokens 32 --reps 3 --threads 1 --expert-parallel 2 ${EP_BENCH_ARGS:-}
fi
