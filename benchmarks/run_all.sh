#!/usr/bin/env bash
# Runs the benchmarks in the three environments the README's Performance section reports,
# each in a fresh process: as installed, with glibc's allocator told to keep freed memory
# (no page faults on every call), and that plus XLA's YNNPACK fusions off.
# Results land in benchmarks/results/ (JSON and the printed tables).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
GLIBC="glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000"
YNN_OFF="--xla_cpu_experimental_ynn_fusion_type="
run() {  # name, then env assignments
  local name=$1; shift
  env "$@" python benchmarks/bench_conv.py --json "benchmarks/results/conv-$name.json" \
    | tee "benchmarks/results/conv-$name.txt"
  env "$@" python benchmarks/bench_train.py --json "benchmarks/results/train-$name.json" \
    | tee "benchmarks/results/train-$name.txt"
  env "$@" python benchmarks/bench_gemms.py --json "benchmarks/results/gemms-$name.json" \
    | tee "benchmarks/results/gemms-$name.txt"
  env "$@" python benchmarks/bench_networks.py --json "benchmarks/results/networks-$name.json" \
    | tee "benchmarks/results/networks-$name.txt"
  env "$@" python benchmarks/bench_layers.py --json "benchmarks/results/layers-$name.json" | tee "benchmarks/results/layers-$name.txt"
}
run default
run glibc GLIBC_TUNABLES="$GLIBC"
run glibc+ynn-off GLIBC_TUNABLES="$GLIBC" XLA_FLAGS="$YNN_OFF"
