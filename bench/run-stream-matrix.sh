#!/usr/bin/env bash
# Decision matrix over implementation x scenario x connections x frame size,
# configured by environment variables (defaults scaled to a
# 2-core machine). --help lists them. Results: bench/results/matrix_<timestamp>/
# (one folder per cell, matrix.csv, matrix.md, per-scenario PNGs: ratio heatmap
# and ns/B against frame size) and a printed table. The logic
# lives in src/bytes_handoff_bench/tools/matrix.py.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.matrix --prog "$(basename "$0")" "$@"
