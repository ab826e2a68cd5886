#!/usr/bin/env bash
# Load run for examples/http_proxy.py against proxy.py. --mode requests (default):
# wrk (or ab, --tool ab) straight to a fixed-response keep-alive upstream, through
# the example on each event loop (and each --variant of its flags), and through
# proxy.py 2.4.10 with one worker. --mode tunnel: curl downloads a large body
# through each proxy's CONNECT tunnel. Interleaved by round; every proxy pinned to
# CPU 0, the load tool and the upstream to CPU 1 (2-core defaults). Prints
# requests/s, p50/p99, errors and requests per proxy CPU-second (tunnel: MiB/s and
# proxy CPU ns per byte), each as a ratio to proxy.py, and writes rounds.csv and
# summary.md to a new folder in bench/results (--results-dir).
# Needs wrk or ab (curl for the tunnel), not the bench extra. proxy.py goes into
# its own venv (bench/results/.proxy-py-venv, $BH_PROXY_PY_VENV), made once;
# when pip cannot install it, one line says so and it is marked missing
# (--require-proxy-py: exit 1). Without uvloop the default --loops is asyncio
# alone, and it says so in one line. --help lists the flags.
# The logic lives in bench/http_proxy_load.py.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
if ! "$PY" -c 'import uvloop' 2>/dev/null; then
  said=
  for arg in "$@"; do
    case "$arg" in --loops | --loops=* | -h | --help | --version) said=1 ;; esac
  done
  [[ -n "$said" ]] || printf '%s: note: uvloop is not installed, so the proxy runs on asyncio only (--loops asyncio; pip install uvloop)\n' "$(basename "$0")" >&2
fi
exec "$PY" "$BH_ROOT/bench/http_proxy_load.py" --prog "$(basename "$0")" "$@"
