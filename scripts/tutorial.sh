#!/usr/bin/env bash
# The main job: PyTorch's pruning tutorial on the built-in LeNet, step by step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
exec cargo run --release --example tutorial
