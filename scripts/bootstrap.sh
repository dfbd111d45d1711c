#!/usr/bin/env bash
# Installs libtorch (the pip wheel torch==2.11.0) and the Python oracles (numpy, safetensors, transformers,
# torchvision, compressed-tensors, torch-pruning; torch pinned as a constraint) into a cache shared by every
# clone, then writes `.cargo/config.toml` so that plain `cargo build/test/run` finds it.
# Idempotent: a second run only
# checks and prints what is there.
#
#   scripts/bootstrap.sh                      # for this repository
#   scripts/bootstrap.sh --configure DIR      # also for your own crate in DIR (see the README,
#                                             # "Use tchprune in your crate")
set -euo pipefail

CONFIGURE=""
case "${1:-}" in
  "") ;;
  --configure)
    CONFIGURE="${2:?--configure needs the directory of your crate}"
    [ -d "$CONFIGURE" ] || { echo "[bootstrap] --configure $CONFIGURE: no such directory" >&2; exit 1; }
    ;;
  *) echo "usage: $0 [--configure CRATE_DIR]" >&2; exit 2 ;;
esac

TORCH_VERSION="2.11.0"
TORCHVISION_VERSION="0.26.0"
COMPRESSED_TENSORS_VERSION="0.12.2"
TORCH_PRUNING_VERSION=1.6.1
# The Llama oracle (LlamaForCausalLM) of the one-shot tests; compressed-tensors pulls it in anyway.
TRANSFORMERS_VERSION=5.25.0
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

# The test oracles beside torch; torch's own pin is a constraint, so none of them can upgrade it.
ORACLES=(numpy safetensors "torchvision==$TORCHVISION_VERSION" "compressed-tensors==$COMPRESSED_TENSORS_VERSION" "torch-pruning==$TORCH_PRUNING_VERSION" "transformers==$TRANSFORMERS_VERSION")
if ! "$VENV/bin/python" -c "import torch, torchvision, numpy, safetensors, compressed_tensors, torch_pruning, importlib.metadata as md, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' and torchvision.__version__.split('+')[0] == '$TORCHVISION_VERSION' and compressed_tensors.__version__ == '$COMPRESSED_TENSORS_VERSION' and md.version('torch-pruning') == '$TORCH_PRUNING_VERSION' and md.version('transformers') == '$TRANSFORMERS_VERSION' else 1)" 2>/dev/null; then
  say "installing torch==$TORCH_VERSION and the test oracles (${ORACLES[*]}) into $VENV (about 4.7 GB, ~90 s)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  CONSTRAINTS="$(mktemp)"
  trap 'rm -f "$CONSTRAINTS"' EXIT
  echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"
  # No wheel cache: it would keep another ~3 GB of wheels next to the installed copy.
  "$VENV/bin/python" -m pip install --quiet --no-cache-dir -c "$CONSTRAINTS" "torch==$TORCH_VERSION" "${ORACLES[@]}"
else
  say "torch $TORCH_VERSION already installed in $VENV"
fi

# Fashion-MNIST for the training examples and their smoke test (Debian's package; best effort:
# without it the smoke test runs on a synthetic task and the example says how to install it).
FASHION_MNIST=/usr/share/datasets/fashion-mnist
if [ -z "$CONFIGURE" ] && [ ! -e "$FASHION_MNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing Debian's dataset-fashion-mnist into $FASHION_MNIST"
    if ! apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; then
      apt-get update -q >/dev/null 2>&1 || true
      apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || say "could not install dataset-fashion-mnist: the examples fall back to synthetic data"
    fi
  else
    say "no $FASHION_MNIST: as root, \`apt-get install dataset-fashion-mnist\` adds it"
  fi
fi

read -r TORCH_DIR CXX11_ABI < <("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__), int(torch._C._GLIBCXX_USE_CXX11_ABI))')
TORCH_LIB="$TORCH_DIR/lib"
say "libtorch: $TORCH_LIB (cxx11 abi $CXX11_ABI)"

MARKER="# Written by tchprune's scripts/bootstrap.sh"

# Writes `$1/.cargo/config.toml` with the [env] block in $2, unless the file is someone else's.
write_config() {
  local dir="$1" block="$2"
  local config="$dir/.cargo/config.toml"
  if [ -e "$config" ] && ! head -n 1 "$config" | grep -qF "$MARKER"; then
    say "$config exists and is not ours: add these lines to it, then build again:"
    printf '%s\n' "$block" >&2
    exit 1
  fi
  mkdir -p "$dir/.cargo"
  local tmp
  tmp="$(mktemp "$dir/.cargo/config.toml.XXXXXX")"
  printf '%s\n%s\n' "$MARKER for this machine (not committed): where libtorch is." "$block" >"$tmp"
  # mktemp makes the file 0600: give it the mode a new file gets (0666 less the umask).
  chmod "$(printf '%04o' $(( 0666 & ~0$(umask) )))" "$tmp"
  mv "$tmp" "$config"
  say "wrote $config"
}

# Cargo's [env] reaches build scripts (torch-sys finds libtorch through LIBTORCH), rustc, tests
# and `cargo run`.
LIBTORCH_ENV="[env]
LIBTORCH = \"$TORCH_DIR\"
LIBTORCH_CXX11_ABI = \"$CXX11_ABI\""

# With --configure only the named crate's file is written: this clone's own stays as it is.
if [ -n "$CONFIGURE" ]; then
  write_config "$(cd "$CONFIGURE" && pwd)" "$LIBTORCH_ENV"
else
  write_config "$REPO_ROOT" "$LIBTORCH_ENV
TCHPRUNE_PYTHON = \"$VENV/bin/python\""
fi
