#!/usr/bin/env bash
# Profile the tcp-service role of a split-process TCP run while the driver runs
# pinned to other cores: strace -c -f syscall counts (strace-summary.txt).
# Defaults suit a 2-core machine (service on CPU 0,
# driver on CPU 1). --help lists the flags; the outputs' paths are printed.
# The logic lives in src/bytes_handoff_bench/tools/profilers.py.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.profilers strace --prog "$(basename "$0")" "$@"
