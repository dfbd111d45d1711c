#!/usr/bin/env bash
# The test suite: unit, integration, doc tests, and the differential tests against PyTorch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
exec cargo test --release --workspace "$@"
