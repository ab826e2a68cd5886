#!/usr/bin/env bash
# Run the micro-benchmarks in benches/ (the Python counterpart of the crate's
# Criterion benches) with fixed, recorded settings, save the results, and
# optionally compare them with a saved run.
#
#   ./bench/run-criterion-baseline.sh                      # all families, defaults
#   BENCH=read_owned_lines ./bench/run-criterion-baseline.sh
#   ./bench/run-criterion-baseline.sh --save before        # keep this run as "before"
#   ./bench/run-criterion-baseline.sh --compare before     # report changes against it
#   TASKSET_CORES=1 PERF_STAT=1 ./bench/run-criterion-baseline.sh
#
# Settings (environment), and how each maps onto pytest-benchmark:
#   SAMPLE_SIZE=100        --benchmark-min-rounds: at least this many timed rounds per case.
#   MEASUREMENT_TIME=5     --benchmark-max-time (seconds): more rounds are run until the timed
#                          rounds add up to this; a case gets max(SAMPLE_SIZE, TIME / round).
#                          (Criterion instead stretches iterations per sample; a round here is
#                          one whole workload of about 1-10 ms, so one round is one sample.)
#   WARM_UP_TIME=3         seconds of untimed, back-to-back rounds before timing each case.
#                          pytest-benchmark's own warm-up counts iterations (and is capped by
#                          the max time), so it is turned off (--benchmark-warmup=off) and
#                          benches/conftest.py's --warm-up-time option does it by the clock.
#   BENCH=all              one family (or several, comma separated), selected with -k; see
#                          the list below.
#   TASKSET_CORES=         pin the run with `taskset -c CORES` (e.g. 1 or 2-5).
#   PERF_STAT=0            1: wrap the run in `perf stat -e cycles,instructions,cache-misses,
#                          context-switches,cpu-migrations`. Where the CPU counters are not
#                          available (most VMs) that is said on stderr and only the software
#                          events (context-switches, cpu-migrations, task-clock) are collected;
#                          a missing or refused perf never fails the run.
#   SAVE=NAME / --save NAME      save as bench/results/criterion/<machine>/NNNN_NAME.json;
#                                without it the run is saved under pytest-benchmark's
#                                autosave name (commit + time).
#   COMPARE=NAME / --compare NAME  compare with the latest run saved as NAME (or a run number
#                                like 0003, or a path to a saved JSON): pytest-benchmark shows
#                                both rows and the summary table gives the median change.
#   COMPARE_FAIL=EXPR      with COMPARE, fail on a regression, e.g. COMPARE_FAIL=median:10%.
#   BENCH_LOOP=uvloop      event loop for async cases: uvloop or asyncio.
#   BENCH_SMOKE=1          tiny inputs, for a quick check that every case runs (CI).
#   CRITERION_RESULTS=     results folder (default bench/results/criterion).
#   PYTHON=                interpreter (default: the repo's .venv, else python3).
# Extra arguments after `--` go to pytest unchanged.
#
# Output, next to the saved JSON: NNNN_NAME.md (family, case, median, throughput),
# NNNN_NAME.log (the full console output) and, with PERF_STAT=1, NNNN_NAME.perf.txt.
# Frequency governor and turbo policy still need to be controlled on the host.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FAMILIES=(
  read_raw_discard_lower_bound
  read_owned_lines
  read_handoff_fragmentation_sweep
  split_freeze_prefixes
  split_prefix_mut
  take_tail_mode_switch
  search_trickle
  write_large_chunks
  write_many_tasks
  write_byte_budget_backpressure
)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
  printf 'Families: %s\n' "${FAMILIES[*]}"
}

SAVE="${SAVE:-}"
COMPARE="${COMPARE:-}"
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --save) [[ $# -ge 2 ]] || bh_die "--save needs a NAME"; SAVE="$2"; shift 2 ;;
    --save=*) SAVE="${1#--save=}"; shift ;;
    --compare) [[ $# -ge 2 ]] || bh_die "--compare needs a NAME"; COMPARE="$2"; shift 2 ;;
    --compare=*) COMPARE="${1#--compare=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) bh_die "unknown argument '$1' (try --help)" ;;
  esac
done

SAMPLE_SIZE="${SAMPLE_SIZE:-100}"
MEASUREMENT_TIME="${MEASUREMENT_TIME:-5}"
WARM_UP_TIME="${WARM_UP_TIME:-3}"
BENCH="${BENCH:-all}"
TASKSET_CORES="${TASKSET_CORES:-}"
PERF_STAT="${PERF_STAT:-0}"
COMPARE_FAIL="${COMPARE_FAIL:-}"

# -- validate ------------------------------------------------------------------------------------
decimal_re='^([0-9]+([.][0-9]*)?|[.][0-9]+)$'
[[ "$SAMPLE_SIZE" =~ ^[0-9]+$ && "$SAMPLE_SIZE" -ge 1 ]] \
  || bh_die "SAMPLE_SIZE must be a whole number >= 1, got '$SAMPLE_SIZE'"
[[ "$MEASUREMENT_TIME" =~ $decimal_re ]] && awk -v t="$MEASUREMENT_TIME" 'BEGIN { exit !(t > 0) }' \
  || bh_die "MEASUREMENT_TIME must be a number of seconds > 0, got '$MEASUREMENT_TIME'"
[[ "$WARM_UP_TIME" =~ $decimal_re ]] \
  || bh_die "WARM_UP_TIME must be a number of seconds >= 0, got '$WARM_UP_TIME'"
[[ "$PERF_STAT" == 0 || "$PERF_STAT" == 1 ]] || bh_die "PERF_STAT must be 0 or 1, got '$PERF_STAT'"
name_re='^[A-Za-z0-9._-]+$'
[[ -z "$SAVE" || "$SAVE" =~ $name_re ]] \
  || bh_die "SAVE name may use letters, digits, '.', '_' and '-' only, got '$SAVE'"
[[ -z "$COMPARE_FAIL" || -n "$COMPARE" ]] || bh_die "COMPARE_FAIL needs COMPARE (a run to compare with)"

SELECT=()
if [[ "$BENCH" != all ]]; then
  expr=""
  IFS=', ' read -r -a wanted <<<"$BENCH"
  [[ ${#wanted[@]} -gt 0 ]] || bh_die "BENCH is empty; use a family name or 'all'"
  for fam in "${wanted[@]}"; do
    known=0
    for f in "${FAMILIES[@]}"; do [[ "$fam" == "$f" ]] && known=1; done
    [[ $known == 1 ]] || bh_die "unknown BENCH family '$fam'; one of: all ${FAMILIES[*]}"
    expr="${expr:+$expr or }test_$fam"
  done
  SELECT=(-k "$expr")
fi

PY="$(bh_python)"
[[ -n "$PY" ]] || bh_die "no Python interpreter found (set PYTHON)"
needed=(bytes_handoff:bytes-handoff pytest_benchmark:pytest-benchmark)
[[ "${BENCH_LOOP:-uvloop}" != uvloop ]] || needed+=(uvloop:uvloop)
missing=()
for spec in "${needed[@]}"; do
  "$PY" -c "import ${spec%%:*}" 2>/dev/null || missing+=("${spec#*:}")
done
[[ ${#missing[@]} -eq 0 ]] || bh_die "missing $(IFS=,; printf '%s' "${missing[*]}" | sed 's/,/, /g'): install the micro extra: pip install -e '.[micro]' ($PY)"

RESULTS="${CRITERION_RESULTS:-$BH_ROOT/bench/results/criterion}"
mkdir -p "$RESULTS" || bh_die "cannot create the results folder $RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"

COMPARE_ARGS=()
if [[ -n "$COMPARE" ]]; then
  if [[ -f "$COMPARE" ]]; then
    compare_file="$COMPARE"
  else
    [[ "$COMPARE" =~ $name_re ]] || bh_die "COMPARE must be a saved run name, a run number or a file, got '$COMPARE'"
    if [[ "$COMPARE" =~ ^[0-9]{4}$ ]]; then pattern="${COMPARE}_*.json"; else pattern="[0-9][0-9][0-9][0-9]_${COMPARE}.json"; fi
    compare_file="$(find "$RESULTS" -mindepth 2 -maxdepth 2 -name "$pattern" | sort | tail -n 1)"
    if [[ -z "$compare_file" ]]; then
      saved="$(find "$RESULTS" -mindepth 2 -maxdepth 2 -name '[0-9][0-9][0-9][0-9]_*.json' -printf '%f\n' | sort | paste -sd ' ')"
      bh_die "no saved run '$COMPARE' under $RESULTS (saved: ${saved:-none})"
    fi
  fi
  COMPARE_ARGS=(--benchmark-compare="$compare_file")
  [[ -z "$COMPARE_FAIL" ]] || COMPARE_ARGS+=(--benchmark-compare-fail="$COMPARE_FAIL")
fi

if [[ -n "$SAVE" ]]; then SAVE_ARGS=(--benchmark-save="$SAVE"); else SAVE_ARGS=(--benchmark-autosave); fi

# A per-test timeout that the settings cannot outgrow: warm-up + measurement + one second a sample.
TIMEOUT_ARGS=()
if "$PY" -c 'import pytest_timeout' 2>/dev/null; then
  per_test="$(awk -v m="$MEASUREMENT_TIME" -v w="$WARM_UP_TIME" -v s="$SAMPLE_SIZE" \
    'BEGIN { printf "%d", 120 + 2 * (m + w) + s }')"
  TIMEOUT_ARGS=(--timeout="$per_test")
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/criterion-baseline.XXXXXX")"
trap 'rm -rf "$work"' EXIT
touch "$work/started"

CMD=("$PY" -m pytest benches -p no:cacheprovider
  --benchmark-enable --benchmark-only
  --benchmark-min-rounds="$SAMPLE_SIZE" --benchmark-max-time="$MEASUREMENT_TIME"
  --benchmark-warmup=off --warm-up-time="$WARM_UP_TIME"
  --benchmark-storage="file://$RESULTS"
  --bench-markdown="$work/table.md"
  "${SAVE_ARGS[@]}" "${COMPARE_ARGS[@]}" "${SELECT[@]}" "${TIMEOUT_ARGS[@]}" "${EXTRA[@]}")

if [[ "$PERF_STAT" == 1 ]]; then
  if ! command -v perf >/dev/null 2>&1; then
    printf '%s: perf is not installed; running without perf stat\n' "$(basename "$0")" >&2
  else
    hw_ok=1
    probe="$(perf stat -x, -e cycles,instructions,cache-misses true 2>&1 >/dev/null)" || hw_ok=0
    if [[ $hw_ok == 1 ]] && grep -Eq '<not (supported|counted)>' <<<"$probe"; then hw_ok=0; fi
    sw_events="context-switches,cpu-migrations,task-clock"
    if [[ $hw_ok == 1 ]]; then
      events="cycles,instructions,cache-misses,$sw_events"
    else
      printf '%s: hardware counters (cycles, instructions, cache-misses) are not available on this machine (perf reports them <not supported> or fails; usual in a VM); collecting software events only: %s\n' \
        "$(basename "$0")" "$sw_events" >&2
      events="$sw_events"
    fi
    if perf stat -x, -e "$events" true >/dev/null 2>&1; then
      CMD=(perf stat -o "$work/perf.txt" -e "$events" -- "${CMD[@]}")
    else
      printf '%s: perf stat -e %s is refused here (see /proc/sys/kernel/perf_event_paranoid); running without perf stat\n' \
        "$(basename "$0")" "$events" >&2
    fi
  fi
fi

if [[ -n "$TASKSET_CORES" ]]; then
  command -v taskset >/dev/null 2>&1 || bh_die "TASKSET_CORES is set but taskset is not installed"
  taskset -c "$TASKSET_CORES" true 2>/dev/null \
    || bh_die "TASKSET_CORES='$TASKSET_CORES' is not a usable core list here (cores: 0-$(($(nproc) - 1)))"
  CMD=(taskset -c "$TASKSET_CORES" "${CMD[@]}")
fi

printf 'settings: SAMPLE_SIZE=%s MEASUREMENT_TIME=%s WARM_UP_TIME=%s BENCH=%s BENCH_LOOP=%s TASKSET_CORES=%s PERF_STAT=%s\n' \
  "$SAMPLE_SIZE" "$MEASUREMENT_TIME" "$WARM_UP_TIME" "$BENCH" "${BENCH_LOOP:-uvloop}" \
  "${TASKSET_CORES:-none}" "$PERF_STAT"
[[ -z "$COMPARE" ]] || printf 'comparing with: %s\n' "$compare_file"

cd "$BH_ROOT"
status=0
"${CMD[@]}" 2>&1 | tee "$work/run.log" || status=$?

[[ ! -f "$work/perf.txt" ]] || { printf '\nperf stat:\n'; cat "$work/perf.txt"; }

saved_json="$(find "$RESULTS" -mindepth 2 -maxdepth 2 -name '*.json' -newer "$work/started" | sort | tail -n 1)"
if [[ -n "$saved_json" ]]; then
  stem="${saved_json%.json}"
  [[ ! -f "$work/table.md" ]] || cp "$work/table.md" "$stem.md"
  cp "$work/run.log" "$stem.log"
  [[ ! -f "$work/perf.txt" ]] || cp "$work/perf.txt" "$stem.perf.txt"
  printf '\nresults: %s\n' "$saved_json"
  [[ ! -f "$stem.md" ]] || printf 'table:   %s\n' "$stem.md"
  printf 'log:     %s\n' "$stem.log"
  [[ ! -f "$stem.perf.txt" ]] || printf 'perf:    %s\n' "$stem.perf.txt"
else
  printf '\nno results saved (the run failed before any case finished); see the output above\n' >&2
fi
if [[ $status -ne 0 ]]; then
  printf '%s: error: pytest exited with status %d\n' "$(basename "$0")" "$status" >&2
fi
exit "$status"
