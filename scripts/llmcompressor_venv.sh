#!/usr/bin/env bash
# A venv of its own for llm-compressor 0.14 (the benchmark's peer for one-shot pruning): it needs
# transformers 5.15-5.17 and compressed-tensors 0.19, which the test oracles' venv (compressed-
# tensors 0.12.2) cannot hold. torch stays pinned to 2.11.0. Prints the venv's python.
#   scripts/llmcompressor_venv.sh      # ~5 GB, a few minutes the first time; idempotent
set -euo pipefail
CACHE_DIR="${TCHPRUNE_CACHE:-$HOME/.cache/tchprune}"
VENV="$CACHE_DIR/venv-llmcompressor-0.14"
say() { echo "[llmcompressor] $*" >&2; }
if ! "$VENV/bin/python" -c "import llmcompressor, torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '2.11.0' else 1)" >/dev/null 2>&1; then
  PY=""
  for candidate in python3.12 python3.11 python3.10 python3; do
    if "$candidate" -c 'import sys, venv; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' >/dev/null 2>&1; then
      PY="$candidate"; break
    fi
  done
  [ -n "$PY" ] || { say "no python3 (3.10-3.13) found"; exit 1; }
  say "creating $VENV with $PY and installing llmcompressor==0.14.0.1 (torch==2.11.0 pinned)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  CONSTRAINTS="$(mktemp)"
  trap 'rm -f "$CONSTRAINTS"' EXIT
  printf 'torch==2.11.0\n' >"$CONSTRAINTS"
  "$VENV/bin/python" -m pip install --quiet --no-cache-dir -c "$CONSTRAINTS" \
    "torch==2.11.0" "llmcompressor==0.14.0.1" "transformers>=5.15,<5.18" datasets >&2
fi
echo "$VENV/bin/python"
