#!/usr/bin/env bash
# Re-measure the README's performance targets on this machine and print each
# with its measured ratio and pass/miss (exit 0: all pass, 3: a target missed;
# 1 a run failed, 2 bad usage, 130 interrupted: --help says so too).
#   ./bench/check-targets.sh                      # both loops, 3 runs, memory runs (~15 min)
#   ./bench/check-targets.sh --loops uvloop --skip-memory
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.targets "$@"
