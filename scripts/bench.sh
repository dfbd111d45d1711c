#!/usr/bin/env bash
# The benchmark: tchprune and PyTorch 2.11 side by side on the same tensors and machine.
# Prints the table, writes bench/results.json and BENCHMARKS.md (full runs only).
#   ./scripts/bench.sh                 # every workload, 5 timed runs each (a few minutes)
#   ./scripts/bench.sh --huge          # plus global pruning of > 2^31 entries (~1 min, ~9 GiB)
#   ./scripts/bench.sh --only l1_unstructured_4096 --runs 3
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
# llm-compressor, the peer of the one-shot rows, in a venv of its own (a few GB the first time).
TCHPRUNE_LLMC_PYTHON="$(./scripts/llmcompressor_venv.sh)" || TCHPRUNE_LLMC_PYTHON=""
export TCHPRUNE_LLMC_PYTHON
cargo run --release -p tchprune-bench -- "$@"
