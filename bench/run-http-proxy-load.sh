#!/usr/bin/env bash
# Load run for examples/http_proxy.py: wrk (or ab, --tool ab) straight to a
# fixed-response keep-alive upstream, then through the proxy on each event loop.
# The proxy is pinned to CPU 0, the load tool and the upstream to CPU 1 (2-core
# defaults). Prints requests/s, latency percentiles and the proxy's CPU use.
# Installs nothing: needs wrk or ab on PATH. --help lists the flags.
# The logic lives in bench/http_proxy_load.py.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
exec "$PY" "$BH_ROOT/bench/http_proxy_load.py" --prog "$(basename "$0")" "$@"
