#!/usr/bin/env bash
# Open MPI's remote launcher (`--mca plm_rsh_agent`) for scripts/check-expert-parallel-netns.sh:
# instead of ssh to HOST, run the command in the network namespace that holds HOST's address,
# with a hostname of its own (so Open MPI sees two hosts). Called as: agent [ssh options] HOST CMD...
set -euo pipefail
while [[ $# -gt 0 && $1 == -* ]]; do
  case $1 in -x|-T|-q|-n) shift ;; *) shift 2 ;; esac
done
host=$1; shift
case $host in
  10.77.0.1) ns=moekit-a ;;
  10.77.0.2) ns=moekit-b ;;
  *) echo "mpi-netns-agent: no namespace for host $host" >&2; exit 1 ;;
esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"
