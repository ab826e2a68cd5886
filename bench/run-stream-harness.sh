#!/usr/bin/env bash
# Run the bytes-handoff stream harness --runs times and write run artifacts:
#   <--results-dir, default bench/results>/stream_<transport>_<implementation>_<scenario>_<completion>_<timestamp>/
#     handoff-run-N.txt, service-run-N.txt (split TCP), runs.csv, summary.csv
# and print a one-line summary per (implementation, scenario). --implementation all
# adds comparison.md and comparison.png. Flags: --help. The logic lives in
# src/bytes_handoff_bench/tools/wrapper.py; this script only finds the interpreter.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.wrapper --prog "$(basename "$0")" "$@"
