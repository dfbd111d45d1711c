#!/usr/bin/env bash
# Runs on the GPU machine from the repository root (copied there as .gpu/run.sh by
# scripts/gpu.sh prepare): the CUDA tests, then the GPU benchmark rows next to PyTorch on the
# image's own torch 2.11.0; everything it prints goes to $OUT too. The time limits add up to
# 510 s at most (3 x 90 + 240), under the device's 600 s per call.
set -uo pipefail
OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
PY="${TCHPRUNE_GPU_PYTHON:-/opt/torch/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
TL=$("$PY" -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
SP=$(dirname "$(dirname "$TL")")
export LD_LIBRARY_PATH="$TL:$(ls -d "$SP"/nvidia/*/lib "$SP"/nvidia/cu13/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export TCHPRUNE_PYTHON="$PY" TCHPRUNE_BENCH_SCRIPT="$PWD/.gpu/pytorch_bench.py"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv || true
  for t in dtypes_devices sparse_linear sparse_two_of_four; do
    echo "== $t"
    timeout 90 ".gpu/$t" --nocapture 2>&1 | tail -20
  done
  echo "== GPU benchmark rows"
  timeout 240 .gpu/tchprune-bench --root "$OUT" --runs 3 \
    --only l1_unstructured_4096_cuda --only ln_structured_4096_cuda --only global_resnet50_cuda \
    --only semi_structured_4096_b4096 --only semi_structured_8192_b8192 \
    --only semi_structured_16384_b4096
} 2>&1 | tee "$OUT/gpu.log"
