# Shared helpers for the bench/ scripts. Source it; do not run it.
# Where a script says bench/results, it means bench/results of the clone it is run
# from (the nearest folder upward from the current one whose pyproject.toml names
# bytes-handoff), else bench/results under the current folder; a given results or
# output folder must exist or have an existing parent (docs/harness.md, "Output paths").
# shellcheck shell=bash

BH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The interpreter that has bytes_handoff installed: $PYTHON, else the repo's
# .venv (what the README's first command creates), else python3 on PATH.
bh_python() {
  if [[ -n "${PYTHON:-}" ]]; then
    printf '%s\n' "$PYTHON"
  elif [[ -x "$BH_ROOT/.venv/bin/python" ]]; then
    printf '%s\n' "$BH_ROOT/.venv/bin/python"
  else
    command -v python3
  fi
}

bh_die() {
  printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
  exit 2
}
