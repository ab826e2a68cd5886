#!/usr/bin/env bash
# Fault-injection soak of the library path: split TCP proxies (SO_REUSEPORT) and a
# verifying driver on 127.0.0.1; proxies are SIGKILLed and restarted, client and
# sink peers reset mid-stream; every stream must verify or end in a named category,
# the long-lived proxy's RSS must stay flat and no process may be left behind.
# Defaults: 60 s, 128 connections per wave. Flags: --help. Prints one line per
# category and a key=value summary (also in <out-dir>/summary.txt; by default --out-dir is a
# new bench/results/soak_<timestamp> of the clone run from, else of the current folder).
# Exit 0 pass, 1 fail, 2 bad usage. The logic lives in src/bytes_handoff_bench/soak/.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.soak --prog "$(basename "$0")" "$@"
