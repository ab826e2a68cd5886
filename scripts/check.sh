#!/usr/bin/env bash
# Set everything up from a clean clone and run every check: lint, format, strict
# typing, the test suite (library, examples, harness, wrappers, profilers,
# micro-benchmark smoke run). About 5 minutes on a 2-core machine.
#
# Needs Python (>= 3.11) and pip, and the system tools the tests drive: strace
# (the strace profiler), curl and openssl (the HTTP proxy example, TLS tests),
# wrk and ab (the proxy's load script), ip from iproute2 (the two-hosts test,
# which also needs root). Missing tools are installed with apt-get when run as
# root; otherwise the script names them and the command to run, and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

# First, before the slow set-up: the system tools (command:package).
missing=()
for tool in strace:strace curl:curl openssl:openssl wrk:wrk ab:apache2-utils ip:iproute2; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  install="apt-get update && apt-get install -y ${missing[*]}"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "check: cannot install ${missing[*]}: no apt-get here; install those packages" \
      "with the system's package manager, then run this script again" >&2
    exit 1
  elif [[ $(id -u) -ne 0 ]]; then
    echo "check: cannot install ${missing[*]} without root; run as root first:" \
      "$install" >&2
    exit 1
  fi
  echo "check: installing ${missing[*]} from the system packages"
  apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON_FOR_VENV:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,profile]'

echo "check: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "check: mypy --strict"
.venv/bin/mypy
echo "check: pytest"
# pytest exits 5 when it collected nothing: that is a failure here too.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
