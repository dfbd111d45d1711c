#!/usr/bin/env bash
# Installs libtorch (the pip wheel torch==2.11.0) and the Python oracle (numpy, safetensors) into a
# cache shared by every clone, then writes `.cargo/config.toml` so that plain `cargo build/test/run`
# finds it. Idempotent: a second run only checks and prints what is there.
set -euo pipefail

TORCH_VERSION="2.11.0"
CACHE_DIR="${TCHPRUNE_CACHE:-$HOME/.cache/tchprune}"
VENV="$CACHE_DIR/venv-torch-$TORCH_VERSION"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { echo "[bootstrap] $*" >&2; }

pick_python() {
  for candidate in python3.12 python3.11 python3.10 python3; do
    if "$candidate" -c 'import sys, venv; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
  say "no python3 found: install Python 3.10-3.13 first"
  exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(pick_python)"
  say "creating venv $VENV with $PY"
  mkdir -p "$CACHE_DIR"
  "$PY" -m venv "$VENV"
fi

if ! "$VENV/bin/python" -c "import torch, numpy, safetensors, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  say "installing torch==$TORCH_VERSION, numpy, safetensors into $VENV (about 4.7 GB, ~90 s)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" numpy safetensors
else
  say "torch $TORCH_VERSION already installed in $VENV"
fi

read -r TORCH_DIR CXX11_ABI < <("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__), int(torch._C._GLIBCXX_USE_CXX11_ABI))')
TORCH_LIB="$TORCH_DIR/lib"
say "libtorch: $TORCH_LIB (cxx11 abi $CXX11_ABI)"

# Cargo's [env] reaches build scripts (torch-sys, our rpath emitters), rustc, tests and `cargo run`.
mkdir -p "$REPO_ROOT/.cargo"
CONFIG="$REPO_ROOT/.cargo/config.toml"
TMP="$CONFIG.tmp.$$"
cat >"$TMP" <<TOML
# Written by scripts/bootstrap.sh for this machine (not committed): where libtorch and the
# Python oracle live.
[env]
LIBTORCH = "$TORCH_DIR"
LIBTORCH_CXX11_ABI = "$CXX11_ABI"
TCHPRUNE_TORCH_LIB = "$TORCH_LIB"
TCHPRUNE_PYTHON = "$VENV/bin/python"
TOML
mv "$TMP" "$CONFIG"
say "wrote $CONFIG"
