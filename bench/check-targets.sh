#!/usr/bin/env bash
# Re-measure the README's performance targets on this machine and print each
# with its measured ratio, its 95 % confidence interval and pass / MISS /
# inconclusive (exit 0: all pass, 3: a target missed, 4: none missed but one is
# inconclusive; 1 a run failed, 2 bad usage, 130 interrupted: --help says so too).
#   ./bench/check-targets.sh                      # both loops, 3 runs, memory runs (~15 min)
#   ./bench/check-targets.sh --loops uvloop --skip-memory
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.targets "$@"
