#!/usr/bin/env bash
# Run the micro-benchmarks in benches/ on pytest-benchmark with fixed, recorded
# settings from the environment (SAMPLE_SIZE, MEASUREMENT_TIME, WARM_UP_TIME,
# BENCH, TASKSET_CORES, PERF_STAT, ...), save the run under
# bench/results/criterion/<machine>/ and optionally compare it with a saved one
# (--save NAME, --compare NAME). --help lists every setting and the families.
# The logic lives in src/bytes_handoff_bench/tools/micro.py.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.micro --prog "$(basename "$0")" "$@"
