#!/usr/bin/env bash
# Sweep the offered load (streams/s, open loop) from low to past saturation for each
# implementation, interleaved, in split-process TCP (service on core 0, driver on core 1
# by default), and plot the service's CPU cores and the p50/p99 latency against it, with
# each implementation's knee (the highest rate whose p99 stays within --p99-bound-ms):
#   <--results-dir, default bench/results>/cost_curve_<loop>_<scenario>_<timestamp>/
#     cost_curve.png, cost_curve.csv, knees.csv, cost_curve.md, runs.csv
# Flags: --help. The logic lives in src/bytes_handoff_bench/tools/cost_curve.py.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.cost_curve --prog "$(basename "$0")" "$@"
