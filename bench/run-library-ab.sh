#!/usr/bin/env bash
# The library at a git revision against the working tree, side by side in one
# process over the cases of benches/, with an A/A control for the noise floor:
#   ./bench/run-library-ab.sh REV [--bench FAMILIES] [--blocks N] [--cores LIST]
# Results: printed, and bench/results/ab/<rev>_<time>.md and .json. --help says
# more. The logic lives in src/bytes_handoff_bench/tools/library_ab.py.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
exec "$PY" -m bytes_handoff_bench.tools.library_ab --prog "$(basename "$0")" "$@"
