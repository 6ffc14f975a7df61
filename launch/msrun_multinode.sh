#!/usr/bin/env bash
# Multi-node training: run this on every node with that node's rank; node 0 hosts msrun's master.
# The run directory must be on storage every node sees (checkpoints are written by all ranks).
#
#   launch/msrun_multinode.sh --nodes 4 --node-rank 0 --master-addr 10.0.0.1 -- experiment=hunyuan/stage2_t2i_256_512
#
# Options: --nodes N  --node-rank R  --master-addr HOST  [--master-port 8118]
#          [--workers-per-node 8]  [--vgen-train CMD]; everything after -- goes to vgen-train.
set -euo pipefail
nodes="" ; node_rank="" ; master_addr="" ; master_port=8118 ; per_node=8 ; train="vgen-train"
usage() { sed -n '2,10p' "$0"; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --node-rank) node_rank="$2"; shift 2 ;;
    --master-addr) master_addr="$2"; shift 2 ;;
    --master-port) master_port="$2"; shift 2 ;;
    --workers-per-node) per_node="$2"; shift 2 ;;
    --vgen-train) train="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "unknown option $1 (overrides for vgen-train go after --)" >&2; usage ;;
  esac
done
[ -n "$nodes" ] && [ -n "$node_rank" ] && [ -n "$master_addr" ] || usage
read -r -a train_cmd <<< "$train"  # CMD may carry arguments, e.g. "python -m vgen.cli.train"
exec "${train_cmd[@]}" \
  parallel.nodes="$nodes" parallel.node_rank="$node_rank" parallel.workers=$((nodes * per_node)) \
  parallel.master_addr="$master_addr" parallel.master_port="$master_port" "$@"
