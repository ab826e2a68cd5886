#!/usr/bin/env bash
# Merge the reports of several tcp-driver processes that drove one service together
# (each run with --drivers N --driver-index K) into one key=value summary: counts and
# rates added, latency percentiles from the drivers' HDR histograms added up; reports
# of different runs, or a driver missing or given twice, refused in one line (exit 2).
# Flags: --help. The logic lives in src/bytes_handoff_bench/tools/merge_drivers.py.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
exec "$PY" -m bytes_handoff_bench.tools.merge_drivers --prog "$(basename "$0")" "$@"
