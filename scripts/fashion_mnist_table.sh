#!/usr/bin/env bash
# Runs examples/fashion_mnist.rs (its default recipe) for each SPARSITY:SEED, one after the other
# (about 5.5 minutes each on 2 cores), and prints the README's table of test accuracies. Runs
# whose output is complete already are not run again.
#
#   scripts/fashion_mnist_table.sh [OUT_DIR [SPARSITY:SEED...]]
#   (default: target/fashion-mnist-final, 95%, 98% and 99% with seeds 0 and 1)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-target/fashion-mnist-final}"
shift || true
RUNS=("$@")
[ "${#RUNS[@]}" -gt 0 ] || RUNS=(0.95:0 0.95:1 0.98:0 0.98:1 0.99:0 0.99:1)
bash scripts/bootstrap.sh
cargo build --release --example fashion_mnist
mkdir -p "$OUT"
for run in "${RUNS[@]}"; do
  sparsity="${run%%:*}" seed="${run##*:}"
  dir="$OUT/s$sparsity-seed$seed"
  grep -q '^wrote ' "$dir.log" 2>/dev/null && continue
  echo "running --sparsity $sparsity --seed $seed" >&2
  ./target/release/examples/fashion_mnist --out "$dir" --sparsity "$sparsity" --seed "$seed" \
    >"$dir.log" 2>&1
done
# The last measurement of a run in a CSV of run,step,sparsity,loss,test_accuracy
last() { grep "^$2," "$1/training.csv" | tail -n 1 | cut -d, -f5; }
echo "| sparsity | seed | dense | gradual | lost (points) | lottery ticket |"
echo "|---|---|---|---|---|---|"
for run in "${RUNS[@]}"; do
  sparsity="${run%%:*}" seed="${run##*:}"
  dir="$OUT/s$sparsity-seed$seed"
  awk -v s="$sparsity" -v seed="$seed" -v d="$(last "$dir" dense)" \
    -v g="$(last "$dir" gradual)" -v l="$(last "$dir" lottery_ticket)" 'BEGIN {
    printf "| %g%% | %s | %.2f%% | %.2f%% | %.2f | %.2f%% |\n", 100*s, seed, 100*d, 100*g, 100*(d-g), 100*l }'
done
