#!/usr/bin/env bash
# Set everything up from a clean clone (only Python and pip needed) and run
# every check: lint, format, strict typing, the test suite (library, examples,
# harness, wrappers, profilers, micro-benchmark smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON_FOR_VENV:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,profile]'

# System packages the tests drive: strace (the strace profiler), curl and
# openssl (the HTTP proxy example, TLS tests), wrk and ab (the proxy's load
# script), iproute2 (the two-hosts test).
missing=()
for tool in strace:strace curl:curl openssl:openssl wrk:wrk ab:apache2-utils ip:iproute2; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "check: installing ${missing[*]} from the system packages"
    apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "check: ${missing[*]} missing and cannot be installed here (need root + apt-get)" >&2
    exit 1
  fi
fi

echo "check: ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "check: mypy --strict"
.venv/bin/mypy
echo "check: pytest"
# pytest exits 5 when it collected nothing: that is a failure here too.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
