"""Run the micro-benchmarks in benches/ (the Python counterpart of the crate's
Criterion benches) with fixed, recorded settings, save the results, and
optionally compare them with a saved run.

  ./bench/run-criterion-baseline.sh                      # all families, defaults
  BENCH=read_owned_lines ./bench/run-criterion-baseline.sh
  ./bench/run-criterion-baseline.sh --save before        # keep this run as "before"
  ./bench/run-criterion-baseline.sh --compare before     # report changes against it
  TASKSET_CORES=1 PERF_STAT=1 ./bench/run-criterion-baseline.sh

Settings (environment), and how each maps onto pytest-benchmark:
  SAMPLE_SIZE=100        --benchmark-min-rounds: at least this many timed rounds per case.
  MEASUREMENT_TIME=5     --benchmark-max-time (seconds): more rounds are run until the timed
                         rounds add up to this; a case gets max(SAMPLE_SIZE, TIME / round).
                         (Criterion instead stretches iterations per sample; a round here is
                         one whole workload of about 1-10 ms, so one round is one sample.)
  WARM_UP_TIME=3         seconds of untimed, back-to-back rounds before timing each case.
                         pytest-benchmark's own warm-up counts iterations (and is capped by
                         the max time), so it is turned off (--benchmark-warmup=off) and
                         benches/conftest.py's --warm-up-time option does it by the clock.
  BENCH=all              one family (or several, comma separated); see the list below, which
                         `pytest --collect-only benches` gives (a family is a test_<family>).
  TASKSET_CORES=         pin the run with `taskset -c CORES` (e.g. 1 or 2-5).
  PERF_STAT=0            1: wrap the run in `perf stat -e cycles,instructions,cache-misses,
                         context-switches,cpu-migrations`. Where the CPU counters are not
                         available (most VMs) that is said on stderr and only the software
                         events (context-switches, cpu-migrations, task-clock) are collected;
                         a missing or refused perf never fails the run.
  SAVE=NAME / --save NAME      save as bench/results/criterion/<machine>/NNNN_NAME.json;
                               without it the run is saved under pytest-benchmark's
                               autosave name (commit + time).
  COMPARE=NAME / --compare NAME  compare with the latest run saved as NAME (or a run number
                               like 0003, or a path to a saved JSON): pytest-benchmark shows
                               both rows and the summary table gives the median change.
                               Saved runs are separate processes: on a shared machine they
                               can differ by 2x. For a change of a few percent use
                               bench/run-library-ab.sh REV (both libraries in one process).
  COMPARE_FAIL=EXPR      with COMPARE, fail on a regression, e.g. COMPARE_FAIL=median:10%.
  BENCH_LOOP=uvloop      event loop for async cases: uvloop or asyncio.
  BENCH_SMOKE=1          tiny inputs, for a quick check that every case runs (CI).
  CRITERION_RESULTS=     results folder: a folder, or a new one in an existing folder
                         (default bench/results/criterion of the clone run from, else
                         of the current folder).
  PYTHON=                interpreter (default: the repo's .venv, else python3).
Extra arguments after `--` go to pytest unchanged.

Output, next to the saved JSON: NNNN_NAME.md (family, case, median, throughput),
NNNN_NAME.log (the full console output) and, with PERF_STAT=1, NNNN_NAME.perf.txt.
Frequency governor and turbo policy still need to be controlled on the host.
Exit status: pytest's; 2 for a bad setting or a missing micro extra; 130 interrupted.
--version prints the version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from bytes_handoff_bench.cli_common import OneLineParser, UsageError, prog_and_args, run_main
from bytes_handoff_bench.extras import MICRO_EXTRA_HINT, missing_packages
from bytes_handoff_bench.output_paths import choose_results_dir, make_output_dir, write_output
from bytes_handoff_bench.processes import RunError, raise_on_termination

ROOT = Path(__file__).resolve().parents[3]
BENCHES = ROOT / "benches"
MAX_SAMPLE_SIZE = 1_000_000
MAX_SECONDS = 3600
DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
NAME = re.compile(r"[A-Za-z0-9._-]+")
PERF_HW = "cycles,instructions,cache-misses"
PERF_SW = "context-switches,cpu-migrations,task-clock"


def shown(text: str) -> str:
    return repr(text if len(text) <= 40 else f"{text[:40]}...")


def sample_size(text: str) -> str:
    if not re.fullmatch(r"[0-9]+", text) or not text.strip("0"):
        raise UsageError(f"SAMPLE_SIZE must be a whole number >= 1, got {shown(text)}")
    if len(text.lstrip("0")) > 7 or int(text) > MAX_SAMPLE_SIZE:
        raise UsageError(f"SAMPLE_SIZE must be at most {MAX_SAMPLE_SIZE}, got {shown(text)}")
    return text


def seconds(name: str, text: str, low: str) -> str:
    """A decimal number of seconds above 0 (``low="> 0"``) or at least 0, as written."""
    value = float(text) if DECIMAL.fullmatch(text) else -1.0
    if value < 0 or (low == "> 0" and value == 0):
        raise UsageError(f"{name} must be a number of seconds {low}, got {shown(text)}")
    if value > MAX_SECONDS:
        raise UsageError(f"{name} must be at most {MAX_SECONDS} seconds, got {shown(text)}")
    return text


def collect_families(python: str, benches: Path) -> dict[str, list[str]]:
    """Family -> test ids to select it, in collection order, from ``pytest --collect-only``.

    A family is a benchmark function ``test_<family>`` (all its parametrized cases).
    """
    proc = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            str(benches),
            f"--rootdir={benches.parent}",
        ],
        cwd=benches.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 5):  # 5: nothing collected
        lines = (proc.stderr + proc.stdout).strip().splitlines() or ["(no output)"]
        raise RunError(
            f"pytest --collect-only {benches} exited with status {proc.returncode}: {lines[-1]}"
        )
    families: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        if not line.strip():
            break  # the node ids end at the first blank line
        path, sep, name = line.split("[", 1)[0].partition("::")
        if sep:
            family = name.rsplit("::", 1)[-1].removeprefix("test_")
            test_id = f"{benches.parent / path}::{name}"
            ids = families.setdefault(family, [])
            if test_id not in ids:
                ids.append(test_id)
    if not families:
        raise RunError(f"no benchmarks found in {benches}")
    return families


def select(bench: str, families: Mapping[str, list[str]]) -> list[str]:
    """The test ids of the families named in ``BENCH`` (commas or spaces between)."""
    wanted = [word for word in re.split(r"[,\s]+", bench) if word]
    if not wanted:
        raise UsageError("BENCH is empty; use a family name or 'all'")
    ids: list[str] = []
    for family in wanted:
        if family not in families:
            raise UsageError(
                f"unknown BENCH family {shown(family)}; one of: all {' '.join(families)}"
            )
        ids += [test_id for test_id in families[family] if test_id not in ids]
    return ids


def find_saved(results: Path, compare: str) -> Path:
    """A saved JSON by path, by run number (``0003``) or the latest saved under a name."""
    if Path(compare).is_file():
        return Path(compare).resolve()
    if not NAME.fullmatch(compare):
        raise UsageError(
            f"COMPARE must be a saved run name, a run number or a file, got {shown(compare)}"
        )
    number = re.fullmatch(r"[0-9]{4}", compare)
    pattern = f"{compare}_*.json" if number else f"[0-9][0-9][0-9][0-9]_{compare}.json"
    found = sorted(results.glob(f"*/{pattern}"))
    if not found:
        saved = " ".join(sorted(p.name for p in results.glob("*/[0-9][0-9][0-9][0-9]_*.json")))
        raise UsageError(
            f"no saved run {shown(compare)} under {results} (saved: {saved or 'none'})"
        )
    return found[-1]


def perf_prefix(prog: str, out: Path) -> list[str]:
    """``perf stat`` with the events this machine allows, or nothing (said on stderr)."""
    if shutil.which("perf") is None:
        print(f"{prog}: perf is not installed; running without perf stat", file=sys.stderr)
        return []

    def probe(events: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["perf", "stat", "-x,", "-e", events, "true"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )

    hw = probe(PERF_HW)
    events = f"{PERF_HW},{PERF_SW}"
    if hw.returncode != 0 or re.search("<not (supported|counted)>", hw.stderr):
        print(
            f"{prog}: hardware counters (cycles, instructions, cache-misses) are not available "
            "on this machine (perf reports them <not supported> or fails; usual in a VM); "
            f"collecting software events only: {PERF_SW}",
            file=sys.stderr,
        )
        events = PERF_SW
    if probe(events).returncode != 0:
        print(
            f"{prog}: perf stat -e {events} is refused here "
            "(see /proc/sys/kernel/perf_event_paranoid); running without perf stat",
            file=sys.stderr,
        )
        return []
    return ["perf", "stat", "-o", str(out), "-e", events, "--"]


def taskset_prefix(cores: str) -> list[str]:
    if shutil.which("taskset") is None:
        raise UsageError("TASKSET_CORES is set but taskset is not installed")
    probe = subprocess.run(["taskset", "-c", cores, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        last = len(os.sched_getaffinity(0)) - 1
        raise UsageError(
            f"TASKSET_CORES={shown(cores)} is not a usable core list here (cores: 0-{last})"
        )
    return ["taskset", "-c", cores]


class LineFilter:
    """Bytes passed through as they come, less every whole line equal to ``line``.

    Only the end of what came so far that could start that line is held back
    (until more bytes or :meth:`flush`), so the output is not delayed.
    """

    def __init__(self, line: str) -> None:
        self.pattern = b"\n" + line.encode() + b"\n"
        self.held = b"\n"  # a newline before the first byte, so that a first line matches too,
        self.fake = True  # which is not passed on

    def feed(self, chunk: bytes) -> bytes:
        data = self.held + chunk
        while self.pattern in data:
            data = data.replace(self.pattern, b"\n")
        top = min(len(self.pattern) - 1, len(data))
        keep = next((n for n in range(top, 0, -1) if self.pattern.startswith(data[-n:])), 0)
        self.held = data[len(data) - keep :]
        return self._passed(data[: len(data) - keep])

    def flush(self) -> bytes:
        data, self.held = self.held, b""
        return self._passed(data)

    def _passed(self, data: bytes) -> bytes:
        if self.fake and data:
            self.fake = False
            return data[1:]
        return data


def tee(cmd: Sequence[str], log: Path, hide_line: str | None = None) -> tuple[int, bool]:
    """Run ``cmd`` in the repo, its output to stdout and ``log``: (status, interrupted).

    ``hide_line``: a line of the output left out of both (a path that will not exist).
    """
    sys.stdout.flush()
    filtered = LineFilter(hide_line) if hide_line is not None else None

    def out(data: bytes) -> None:
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            sink.write(data)

    with (
        log.open("wb") as sink,
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc,
    ):
        assert proc.stdout is not None
        try:
            while chunk := os.read(proc.stdout.fileno(), 65536):
                out(filtered.feed(chunk) if filtered is not None else chunk)
            if filtered is not None:
                out(filtered.flush())
        except KeyboardInterrupt:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            return 130, True
    status = proc.returncode
    return (128 - status if status < 0 else status), False


def run(prog: str, argv: Sequence[str]) -> int:
    head, extra = list(argv), []
    if "--" in head:
        at = head.index("--")
        head, extra = head[:at], head[at + 1 :]
    parser = OneLineParser(prog=prog, add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--save", metavar="NAME")
    parser.add_argument("--compare", metavar="NAME")
    try:
        args, unknown = parser.parse_known_args(head)
    except UsageError as exc:  # "argument --save: expected one argument"
        flag, _, why = str(exc).removeprefix("argument ").partition(": ")
        raise UsageError(f"{flag} needs a NAME" if "expected one" in why else str(exc)) from None
    if unknown:
        raise UsageError(f"unknown argument {shown(unknown[0])} (try --help)")
    env = os.environ
    python = sys.executable
    loop = env.get("BENCH_LOOP") or "uvloop"
    needed = [("bytes_handoff", "bytes-handoff"), ("pytest", "pytest")]
    needed.append(("pytest_benchmark", "pytest-benchmark"))
    if loop == "uvloop":
        needed.append(("uvloop", "uvloop"))
    missing = missing_packages(needed)
    missing_line = f"missing {', '.join(missing)}: {MICRO_EXTRA_HINT} ({python})"
    if args.help:
        families = "unknown (" + missing_line + ")" if missing else ""
        families = families or " ".join(collect_families(python, BENCHES))
        print(f"{__doc__}Families: {families}")
        return 0

    size = sample_size(env.get("SAMPLE_SIZE") or "100")
    measure = seconds("MEASUREMENT_TIME", env.get("MEASUREMENT_TIME") or "5", "> 0")
    warm = seconds("WARM_UP_TIME", env.get("WARM_UP_TIME") or "3", ">= 0")
    bench = env.get("BENCH") or "all"
    cores = env.get("TASKSET_CORES", "")
    perf = env.get("PERF_STAT") or "0"
    save = env.get("SAVE", "") if args.save is None else args.save
    compare = env.get("COMPARE", "") if args.compare is None else args.compare
    compare_fail = env.get("COMPARE_FAIL", "")
    if perf not in ("0", "1"):
        raise UsageError(f"PERF_STAT must be 0 or 1, got {shown(perf)}")
    if save and not NAME.fullmatch(save):
        raise UsageError(
            f"SAVE name may use letters, digits, '.', '_' and '-' only, got {shown(save)}"
        )
    if compare_fail and not compare:
        raise UsageError("COMPARE_FAIL needs COMPARE (a run to compare with)")
    if loop not in ("uvloop", "asyncio"):
        raise UsageError(f"BENCH_LOOP must be uvloop or asyncio, got {shown(loop)}")
    if missing:
        raise UsageError(missing_line)
    targets = [str(BENCHES)] if bench == "all" else select(bench, collect_families(python, BENCHES))

    given = env.get("CRITERION_RESULTS", "")
    results, default = choose_results_dir(
        Path(given) if given else None, "CRITERION_RESULTS", "criterion"
    )
    results = make_output_dir(results, "CRITERION_RESULTS", parents=default).resolve()
    compare_args: list[str] = []
    if compare:
        compare_file = find_saved(results, compare)
        compare_args = [f"--benchmark-compare={compare_file}"]
        compare_args += [f"--benchmark-compare-fail={compare_fail}"] * bool(compare_fail)
    timeout: list[str] = []
    if not missing_packages([("pytest_timeout", "pytest-timeout")]):
        # A per-test timeout the settings cannot outgrow: warm-up + measurement + 1 s a sample.
        timeout = [f"--timeout={int(120 + 2 * (float(measure) + float(warm)) + int(size))}"]

    with tempfile.TemporaryDirectory(prefix="criterion-baseline.") as tmp:
        work = Path(tmp)
        cmd = [python, "-m", "pytest", *targets, "-p", "no:cacheprovider"]
        cmd += ["--benchmark-enable", "--benchmark-only", f"--benchmark-min-rounds={size}"]
        cmd += [f"--benchmark-max-time={measure}", "--benchmark-warmup=off"]
        cmd += [f"--warm-up-time={warm}", f"--benchmark-storage=file://{results}"]
        cmd += [f"--bench-markdown={work / 'table.md'}"]
        cmd += [f"--benchmark-save={save}" if save else "--benchmark-autosave"]
        cmd += [*compare_args, *timeout, *extra]
        if perf == "1":
            cmd = perf_prefix(prog, work / "perf.txt") + cmd
        if cores:
            cmd = taskset_prefix(cores) + cmd

        print(
            f"settings: SAMPLE_SIZE={size} MEASUREMENT_TIME={measure} WARM_UP_TIME={warm} "
            f"BENCH={bench} BENCH_LOOP={loop} TASKSET_CORES={cores or 'none'} PERF_STAT={perf}"
        )
        print(f"results folder: {results}{' (the default)' if default else ''}")
        if compare:
            print(f"comparing with: {compare_file}")
        before = set(results.glob("*/*.json"))
        raise_on_termination()
        # benches/conftest.py names the table it wrote into this temporary folder: it is
        # copied beside the saved results (its path printed below), and the folder removed.
        hide = f"Markdown table: {work / 'table.md'}"
        status, interrupted = tee(cmd, work / "run.log", hide_line=hide)
        outputs = {
            ".md": work / "table.md",
            ".log": work / "run.log",
            ".perf.txt": work / "perf.txt",
        }
        if outputs[".perf.txt"].is_file():
            print(f"\nperf stat:\n{outputs['.perf.txt'].read_text()}", end="")
        new = sorted(set(results.glob("*/*.json")) - before)
        if new:
            print(f"\nresults: {new[-1]}")
            for suffix, label in (
                (".md", "table:   "),
                (".log", "log:     "),
                (".perf.txt", "perf:    "),
            ):
                if outputs[suffix].is_file():
                    copy = new[-1].with_suffix(suffix)
                    write_output(copy, outputs[suffix].read_bytes(), "CRITERION_RESULTS")
                    print(f"{label}{copy}")
        else:
            sys.stdout.flush()
            print(
                "\nno results saved (the run failed before any case finished); "
                "see the output above",
                file=sys.stderr,
            )
    if interrupted:
        raise KeyboardInterrupt
    if status != 0:
        sys.stdout.flush()
        print(f"{prog}: error: pytest exited with status {status}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, "run-criterion-baseline.sh")
    return run_main(prog, lambda: run(prog, args), bench_extra=None)


if __name__ == "__main__":
    sys.exit(main())
