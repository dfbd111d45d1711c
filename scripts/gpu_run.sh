#!/usr/bin/env bash
# Runs on the GPU machine from the repository root (copied there as .gpu/run.sh by
# scripts/gpu.sh prepare): the CUDA tests, the GPU benchmark rows next to PyTorch on the image's
# own torch 2.11.0, and the tiny LLM trained on CUDA and pruned (its model comes back in $OUT).
# Every step's limit comes out of one deadline, 560 s after the start, under the device's 600 s.
#   PARTS="tests bench tiny" (the default) picks what runs; ROWS replaces the benchmark rows;
#   a model in .gpu/tiny_llm_start (a tiny_llm --out directory) is where the tiny LLM starts.
set -uo pipefail
OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
DEADLINE=$((SECONDS + 560))
left() { local l=$((DEADLINE - SECONDS - ${2:-0})); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 5 ] && l=5; echo "$l"; }
PY="${TCHPRUNE_GPU_PYTHON:-/opt/torch/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
TL=$("$PY" -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
SP=$(dirname "$(dirname "$TL")")
export LD_LIBRARY_PATH="$TL:$(ls -d "$SP"/nvidia/*/lib "$SP"/nvidia/cu13/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export TCHPRUNE_PYTHON="$PY" TCHPRUNE_BENCH_SCRIPT="$PWD/.gpu/pytorch_bench.py"
export TCHPRUNE_ORACLE_DIR="$PWD/host/tests/oracle" TCHPRUNE_REFERENCE_SCRIPT="$PWD/.gpu/oneshot_reference.py"
PARTS="${PARTS:-tests bench tiny}"
ROWS="${ROWS:-l1_unstructured_4096_cuda ln_structured_4096_cuda global_resnet50_cuda semi_structured_4096_b4096 semi_structured_8192_b8192 semi_structured_16384_b4096 oneshot_wanda_llama_cuda oneshot_sparsegpt_llama_cuda sparsegpt_layer_4096x11008_cuda sparsegpt_layer_4096x11008_24_cuda}"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv || true
  [[ " $PARTS " == *" tests "* ]] && for t in dtypes_devices sparse_linear sparse_two_of_four "llama_transformers cuda" "oneshot_methods cuda"; do
    set -- $t
    echo "== $t"
    timeout "$(left 60 400)" ".gpu/$1" ${2:-} --nocapture 2>&1 | tail -12
  done
  if [[ " $PARTS " == *" bench "* ]]; then
    echo "== GPU benchmark rows ($((DEADLINE - SECONDS)) s left)"
    only=(); for r in $ROWS; do only+=(--only "$r"); done
    timeout "$(left 200 230)" .gpu/tchprune-bench --root "$OUT" --runs 3 "${only[@]}"
  fi
  [[ " $PARTS " == *" tiny "* ]] || { echo "== done after $SECONDS s"; exit 0; }
  echo "== tiny LLM ($((DEADLINE - SECONDS)) s left)"
  mkdir -p /tmp/corpus && tar -xJf .gpu/corpus.tar.xz -C /tmp/corpus
  [ -d .gpu/tiny_llm_start ] && mkdir -p "$OUT/tiny_llm" && cp -r .gpu/tiny_llm_start/model .gpu/tiny_llm_start/training.json "$OUT/tiny_llm/" 
  TRAIN_MINUTES=$(( (DEADLINE - SECONDS - 150) / 60 ))
  [ "$TRAIN_MINUTES" -lt 1 ] && TRAIN_MINUTES=1
  timeout "$(left 400 5)" .gpu/tiny_llm --out "$OUT/tiny_llm" --corpus /tmp/corpus --device cuda \
    --minutes "$TRAIN_MINUTES" --reference 2>&1 | grep -v "Loading weights"
  rm -rf "$OUT/tiny_llm/model.new"
  echo "== done after $SECONDS s"
} 2>&1 | tee "$OUT/gpu.log"
