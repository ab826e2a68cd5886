#!/usr/bin/env bash
# Load run for examples/http_proxy.py: wrk (or ab, --tool ab) straight to a
# fixed-response keep-alive upstream, then through the proxy on each event loop.
# The proxy is pinned to CPU 0, the load tool and the upstream to CPU 1 (2-core
# defaults). Prints requests/s, latency percentiles and the proxy's CPU use.
# Installs nothing: needs wrk or ab on PATH, not the bench extra; without uvloop the
# default --loops is asyncio alone, and it says so in one line. --help lists the flags.
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
