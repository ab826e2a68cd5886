#!/usr/bin/env bash
# Run the split TCP roles on two hosts, for real: the tcp-service and the tcp-driver
# in two network namespaces joined by a veth pair, through run-stream-harness.sh
# (--service-prefix/--driver-prefix 'ip netns exec ...'); check that the driver's
# sink verified every byte and the counts match the workload; remove the namespaces
# however the run ends. Needs root and 'ip netns': without them, one line and exit 2.
# Flags: --help. The logic lives in src/bytes_handoff_bench/tools/two_hosts.py.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$(bh_python)" || bh_die "no Python interpreter found (set PYTHON)"
export PYTHON="$PY"
exec "$PY" -m bytes_handoff_bench.tools.two_hosts --prog "$(basename "$0")" "$@"
