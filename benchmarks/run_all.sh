#!/usr/bin/env bash
# Runs the benchmarks in the four environments the README's Performance section reports,
# each in a fresh process. Results land in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
GLIBC="glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000"
YNN_OFF="--xla_cpu_experimental_ynn_fusion_type="
run() {  # name, then env assignments
  local name=$1; shift
  env "$@" python benchmarks/bench_conv.py --json "benchmarks/results/conv-$name.json" \
    | tee "benchmarks/results/conv-$name.txt"
}
run default
run glibc GLIBC_TUNABLES="$GLIBC"
run ynn-off XLA_FLAGS="$YNN_OFF"
run both GLIBC_TUNABLES="$GLIBC" XLA_FLAGS="$YNN_OFF"
python benchmarks/bench_train.py --json benchmarks/results/train-default.json \
  | tee benchmarks/results/train-default.txt
env GLIBC_TUNABLES="$GLIBC" XLA_FLAGS="$YNN_OFF" python benchmarks/bench_train.py \
  --json benchmarks/results/train-both.json | tee benchmarks/results/train-both.txt
