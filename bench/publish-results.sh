#!/usr/bin/env bash
# Regenerate the measured parts of bench/RESULTS.md from one command: run each measurement
# the document publishes through the bench scripts, and replace each block between
# <!-- generated: NAME --> and <!-- end generated --> with what the tool printed (tables,
# charts copied to bench/published/<date>-*.png), stamped with the date and the command;
# the prose outside the markers is never touched. Unreferenced published PNGs are removed.
#   ./bench/publish-results.sh --dry-run                 # list the blocks and their commands
#   ./bench/publish-results.sh --only comparison-uvloop  # one block (comma list for several)
#   ./bench/publish-results.sh --quick                   # smoke check, on a copy of the document
#   ./bench/publish-results.sh                           # everything (about an hour on 2 cores)
# Flags: --help. The logic lives in src/bytes_handoff_bench/tools/publish.py.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.publish --prog "$(basename "$0")" "$@"
