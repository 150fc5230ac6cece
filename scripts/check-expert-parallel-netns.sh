#!/usr/bin/env bash
# Expert parallelism across two hosts on a real network stack: two network namespaces joined
# by a veth pair (10.77.0.1 and 10.77.0.2), each with its own hostname, Open MPI over TCP only
# (no shared memory), ranks launched into the second namespace by scripts/mpi-netns-agent.sh
# where two machines would use ssh. Logits and greedy tokens must equal the single process's,
# byte for byte, and `moe bench` reports what crossed the link. Needs root (ip netns).
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
if [ -n "${EP_BENCH_MODEL:-}" ]; then
  mpi "$moe" bench --model "$EP_BENCH_MODEL" --prompt-tokens 128 --gen-tokens 32 --reps 3 --threads 1 --expert-parallel 2
fi
