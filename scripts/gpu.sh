#!/usr/bin/env bash
# Every CUDA test and GPU benchmark row in one prepared run, for a session lent a GPU machine
# (see ../shared/reference/gpu.md; device time is minutes, so nothing is built there).
#
#   ./scripts/gpu.sh prepare     # here: build, strip, copy into .gpu/ (git-ignored, < 64 MiB)
#   device run, carry [".gpu"]:  bash .gpu/run.sh      # there: tests, the tiny LLM, GPU rows
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
prepare)
  ./scripts/bootstrap.sh
  cargo build --release -p tchprune-bench
  cargo build --release -p tchprune-examples --example tiny_llm
  mapfile -t tests < <(cargo test --release -p tchprune --test dtypes_devices --test sparse_linear \
      --test sparse_two_of_four --test llama_transformers --test oneshot_methods \
      --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])')
  rm -rf .gpu && mkdir -p .gpu
  strip --strip-debug -o .gpu/tchprune-bench target/release/tchprune-bench
  strip --strip-debug -o .gpu/tiny_llm target/release/examples/tiny_llm
  for t in "${tests[@]}"; do
    strip --strip-debug -o ".gpu/$(basename "$t" | sed 's/-[0-9a-f]*$//')" "$t"
  done
  cp bench/pytorch_bench.py host/tests/oracle/oneshot_reference.py .gpu/
  cp scripts/gpu_run.sh .gpu/run.sh
  # The tiny LLM's corpus: this machine's Python standard library, so that the model trained
  # there is evaluated here on the same split.
  STDLIB="$(~/.cache/tchprune/venv-torch-2.11.0/bin/python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")"
  (cd "$STDLIB" && find . -name '*.py' -not -path '*site-packages*' -not -path '*__pycache__*' -print0 \
     | tar --null -T - -cJf "$OLDPWD/.gpu/corpus.tar.xz")
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  ls -la .gpu && du -sh .gpu
  ;;
*)
  echo "usage: scripts/gpu.sh prepare   (then run .gpu/run.sh on the device machine)" >&2
  exit 2
  ;;
esac
