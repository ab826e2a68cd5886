"""Re-measure the performance targets and print each with its ratio and pass/miss.

The logic behind ``bench/check-targets.sh``. For each event loop it runs
``run-stream-harness.sh --implementation all --scenario all`` in the headline
CPU-cost shape (split-process TCP, service and driver pinned to different
cores, ``fire_and_forget``, 16 connections, 64 route frames of 63 bytes,
1 MiB tunnel, 16 KiB read reserve), implementations interleaved per run, and
compares the service's ``cpu_ns_per_byte`` round by round: each ratio is the
geometric mean of the paired per-round ratios with its 95 % confidence
interval (a t-interval on the log ratios, :mod:`.intervals` says why), and the
saturation target (service CPU cores) the mean with its t-interval. Then two
memory runs of the ``handoff`` service: 128 connections (max RSS) and a
sustained run (RSS growth after warm-up, from the sampled RSS), one run each:
their verdicts are the figure's, with no interval.

A target with an interval is ``pass`` only when the whole interval is within
its limit, ``MISS`` only when the whole of it is outside, and ``inconclusive``
when it straddles the limit: the machine's noise could not tell, and the table
says about how many runs would (:func:`.intervals.runs_needed`, from the
observed centre and spread).

Results go to a new ``targets_<timestamp>`` folder in ``--results-dir`` (a
folder, or a new one in an existing folder; checked before any run) or in the
default results folder (``bench/results`` of the clone, else of the current
folder), which is printed first.

Exit status: 0 when every target passes, 3 when any misses, 4 when none misses
but at least one is inconclusive (rerun with the runs it names), 1 when a run
fails, 2 bad usage. A miss outranks an inconclusive target: 3.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bytes_handoff_bench.cli_common import (
    OneLineParser,
    UsageError,
    cpuset,
    run_main,
    seconds,
    whole_number,
)
from bytes_handoff_bench.extras import default_loop, require_loop
from bytes_handoff_bench.limits import (
    MAX_CONNECTIONS,
    MAX_DURATION_SECONDS,
    MAX_RUNS,
    MIN_RSS_GROWTH_SPAN_SECONDS,
)
from bytes_handoff_bench.names import Completion, Implementation, Loop, Scenario, Transport
from bytes_handoff_bench.output_paths import (
    choose_results_dir,
    make_output_dir,
    output_dir_arg,
    write_output,
)
from bytes_handoff_bench.processes import RunError
from bytes_handoff_bench.tools import equal_load, wrapper
from bytes_handoff_bench.tools.artifacts import as_number, read_runs_csv
from bytes_handoff_bench.tools.intervals import (
    CONFIDENCE,
    Estimate,
    Verdict,
    format_interval,
    mean_interval,
    paired_ratio,
    runs_needed,
    verdict,
)

MIB = 1024 * 1024
#: The sustained memory run must last long enough for the harness to report an RSS
#: growth (``limits.MIN_RSS_GROWTH_SPAN_SECONDS`` of samples after a 20 % warm-up).
MIN_SUSTAINED_SECONDS = 1.5 * MIN_RSS_GROWTH_SPAN_SECONDS

SHAPE = [
    "--transport", Transport.TCP,
    "--completion", Completion.FIRE_AND_FORGET,
    "--route-frames", "64",
    "--frame-len", "63",
    "--tunnel-bytes", "1048576",
    "--read-reserve", "16384",
    "--worker-threads", "1",
]  # fmt: skip
#: The memory targets' cell.
HANDOFF_COALESCED = ["--implementation", Implementation.HANDOFF, "--scenario", Scenario.COALESCED]


#: Exit statuses of check-targets beside the common ones.
EXIT_MISSED = 3
EXIT_INCONCLUSIVE = 4


@dataclass(frozen=True)
class Check:
    target: str
    loop: str
    measured: str
    ratio: float | None
    limit: float
    #: The verdict of a check without ``estimate`` (one figure); else ``verdict == pass``.
    passed: bool
    higher_is_better: bool = False
    #: The ratio's (or level's) estimate with its confidence interval, over the rounds.
    estimate: Estimate | None = None

    @property
    def verdict(self) -> Verdict:
        """From the interval when there is one (pass / MISS / inconclusive), else the figure."""
        if self.estimate is None:
            return Verdict.PASS if self.passed else Verdict.MISS
        return verdict(self.estimate, self.limit, self.higher_is_better)

    def runs_needed(self) -> str:
        """For an inconclusive check: about how many runs would decide it."""
        if self.verdict is not Verdict.INCONCLUSIVE or self.estimate is None:
            return "-"
        if self.estimate.spread is None:
            return ">= 2"
        needed = runs_needed(self.estimate, self.limit)
        return f"~{needed}" if needed is not None else f"> {MAX_RUNS}"

    def row(self) -> list[str]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.3f}"
        op = ">=" if self.higher_is_better else "<="
        interval = "-" if self.estimate is None else format_interval(self.estimate, 3)
        return [
            self.target,
            self.loop,
            self.measured,
            ratio,
            interval,
            f"{op} {self.limit:g}",
            str(self.verdict),
            self.runs_needed(),
        ]


def _run_wrapper(args: list[str], results_dir: Path) -> Path:
    """Run the wrapper into a fresh folder under ``results_dir``; return the folder it made."""
    make_output_dir(results_dir, "--results-dir", parents=True)  # in the checked folder
    before = set(results_dir.iterdir())
    status = wrapper.main(["--prog", "check-targets.sh", *args, "--results-dir", str(results_dir)])
    if status != 0:
        raise RunError(f"a harness run failed (exit {status})")
    made = sorted(set(results_dir.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not made:
        raise RunError(f"no results folder appeared in {results_dir}")
    return made[-1]


def runs(folder: Path) -> Path:
    return folder / "runs.csv"


def _rounds(folder: Path, key: str) -> dict[str, float]:
    """``key`` per round of ``folder``'s ``runs.csv``: ``{run index: value}``."""
    if not (folder / "runs.csv").is_file():
        raise RunError(f"no {folder / 'runs.csv'}: that implementation or scenario did not run")
    out: dict[str, float] = {}
    for index, row in enumerate(read_runs_csv(folder / "runs.csv"), start=1):
        value = as_number(row.get(key, ""))
        if value is not None:
            out[row.get("run") or str(index)] = value
    if not out:
        raise RunError(f"no {key} in {folder / 'runs.csv'}")
    return out


def _median(folder: Path, key: str) -> float:
    if not (folder / "runs.csv").is_file():
        raise RunError(f"no {folder / 'runs.csv'}: that implementation or scenario did not run")
    rows = read_runs_csv(folder / "runs.csv")
    values = [v for row in rows if (v := as_number(row.get(key, ""))) is not None]
    if not values:
        raise RunError(f"no {key} in {folder / 'runs.csv'}")
    return statistics.median(values)


@dataclass(frozen=True)
class RatioTarget:
    """``implementation``'s service ns/B at most ``limit`` times ``baseline``'s in ``scenario``."""

    tag: str
    scenario: Scenario
    implementation: Implementation
    baseline: Implementation
    limit: float
    #: Checked only when both implementations ran (splice: Linux; protocol baselines: TCP).
    optional: bool = False

    @property
    def name(self) -> str:
        times = "" if self.limit == 1 else f"{self.limit:g} x "
        return f"{self.tag} {self.scenario} {self.implementation} <= {times}{self.baseline}"


_I, _S = Implementation, Scenario
RATIO_TARGETS = (
    RatioTarget("1a", _S.COALESCED, _I.HANDOFF, _I.MANUAL_VEC, 0.6),
    RatioTarget("1b", _S.COALESCED, _I.HANDOFF, _I.RAW_COPY, 1.15),
    RatioTarget("2", _S.FRAGMENTED, _I.HANDOFF, _I.MANUAL_VEC, 1.0),
    RatioTarget("5", _S.COALESCED, _I.HANDOFF_SPLICE, _I.RAW_COPY, 0.75, optional=True),
    # Against the loop's fastest hand-written paths (asyncio.BufferedProtocol).
    RatioTarget("6a", _S.COALESCED, _I.HANDOFF, _I.MANUAL_PROTOCOL, 1.05, optional=True),
    RatioTarget("6b", _S.FRAGMENTED, _I.HANDOFF, _I.MANUAL_PROTOCOL, 1.05, optional=True),
    RatioTarget("6c", _S.COALESCED, _I.HANDOFF, _I.RAW_PROTOCOL, 1.2, optional=True),
    RatioTarget("6d", _S.COALESCED, _I.HANDOFF_SPLICE, _I.RAW_PROTOCOL, 0.75, optional=True),
)


def cpu_checks(base: Path, loop: str) -> list[Check]:
    """Targets 1, 2, 3, 5 and 6 from one ``--implementation all --scenario all`` folder."""
    checks = []
    for target in RATIO_TARGETS:
        impl, other = target.implementation, target.baseline
        if target.optional and not all(
            (base / i / target.scenario).is_dir() for i in (impl, other)
        ):
            continue
        key = "service_cpu_ns_per_byte"
        mine = _rounds(base / impl / target.scenario, key)
        theirs = _rounds(base / other / target.scenario, key)
        estimate = paired_ratio(mine, theirs)
        if estimate is None:
            raise RunError(f"no round in which both {impl} and {other} ran ({target.name})")
        measured = (
            f"{impl} {statistics.median(mine.values()):.3f}"
            f" / {other} {statistics.median(theirs.values()):.3f} ns/B"
        )
        checks.append(
            Check(
                target.name,
                loop,
                measured,
                estimate.value,
                target.limit,
                verdict(estimate, target.limit) is Verdict.PASS,
                estimate=estimate,
            )
        )
    for name in sorted(p.name for p in base.iterdir() if (p / Scenario.COALESCED).is_dir()):
        rounds = _rounds(base / name / Scenario.COALESCED, "service_cpu_avg_cores")
        level = mean_interval(list(rounds.values()))
        assert level is not None  # _rounds refuses an empty column
        checks.append(
            Check(
                f"3 coalesced service saturated: {name}",
                loop,
                f"{statistics.median(rounds.values()):.3f} cores",
                None,  # a level, not a ratio: its mean and interval are in the CI column
                0.85,
                verdict(level, 0.85, higher_is_better=True) is Verdict.PASS,
                higher_is_better=True,
                estimate=level,
            )
        )
    return checks


def memory_checks(
    results: Path, loop: str, sustained_seconds: float, cores: list[str]
) -> list[Check]:
    """Target 4: max RSS with 128 connections, and RSS growth in a sustained run."""
    wide = _run_wrapper(
        [*SHAPE, *cores, "--loop", loop, *HANDOFF_COALESCED,
         "--connections", "128", "--runs", "1", "--duration-seconds", "5"],
        results / "memory-128",
    )  # fmt: skip
    rss = _median(wide, "service_max_rss_bytes")
    sustained = _run_wrapper(
        [*SHAPE, *cores, "--loop", loop, *HANDOFF_COALESCED,
         "--connections", "16", "--runs", "1", "--duration-seconds", f"{sustained_seconds:g}"],
        results / "memory-sustained",
    )  # fmt: skip
    key = "service_rss_growth_bytes_per_min"
    rows = read_runs_csv(runs(sustained)) if runs(sustained).is_file() else []
    if rows and all(as_number(row.get(key, "")) is None for row in rows):
        # The harness says why it gave no figure (too short a run): so do we.
        why = {row.get("service_rss_growth_reason", "") for row in rows} - {""}
        raise RunError(
            f"the sustained run reported no RSS growth ({runs(sustained)}):"
            f" {'; '.join(sorted(why)) or 'no reason given'}"
        )
    growth = _median(sustained, key)
    return [
        Check(
            "4a coalesced 128 connections: service max RSS <= 64 MiB",
            loop,
            f"{rss / MIB:.1f} MiB",
            None,
            64,
            rss <= 64 * MIB,
        ),
        Check(
            f"4b sustained {sustained_seconds:g} s: service RSS growth < 1 MiB/min",
            loop,
            f"{growth / MIB:+.3f} MiB/min",
            None,
            1,
            growth < MIB,
        ),
    ]


def render(checks: Sequence[Check], header: str) -> str:
    cols = [
        "target",
        "loop",
        "measured (medians)",
        "ratio (paired)",
        f"{CONFIDENCE:.0%} CI",
        "limit",
        "result",
        "runs needed",
    ]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(c.row()) + " |" for c in checks]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    prog = "check-targets.sh"
    return run_main(prog, lambda: check(prog, argv))


def build_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog="The shape is fixed (the published one); the flags set how long and how often.",
        exit_statuses={
            0: "every target held",
            EXIT_MISSED: "a target missed",
            EXIT_INCONCLUSIVE: "no target missed but one is inconclusive (its interval"
            " straddles the limit: rerun with the runs it names)",
        },
    )
    both = f"{Loop.UVLOOP},{Loop.ASYNCIO}" if default_loop() == Loop.UVLOOP else Loop.ASYNCIO
    parser.add_argument(
        "--loops", default=both, help="comma list of event loops (asyncio only without uvloop)"
    )
    parser.add_argument(
        "--runs",
        type=whole_number(3, MAX_RUNS),
        default=3,
        help="runs per cell, at least 3: each ratio's interval is made of the rounds' spread",
    )
    parser.add_argument(
        "--duration-seconds",
        type=seconds(MAX_DURATION_SECONDS),
        default=5.0,
        help="seconds of each CPU-cost run",
    )
    parser.add_argument(
        "--connections",
        type=whole_number(1, MAX_CONNECTIONS),
        default=16,
        help="connections per wave",
    )
    parser.add_argument(
        "--sustained-seconds",
        type=seconds(MAX_DURATION_SECONDS),
        default=60.0,
        help=f"seconds of the sustained memory run, at least {MIN_SUSTAINED_SECONDS:g}",
    )
    parser.add_argument("--skip-memory", action="store_true", help="only the CPU-cost targets")
    parser.add_argument(
        "--equal-load-fraction",
        type=_load_fraction,
        default=equal_load.DEFAULT_FRACTION,
        help="after the saturated runs of each loop, every implementation at one open-loop"
        " rate: this fraction of the slowest one's saturated streams/s (coalesced), reported"
        " beside the targets (informational)",
    )
    parser.add_argument(
        "--skip-equal-load", action="store_true", help="no comparison at equal offered load"
    )
    parser.add_argument("--service-cores", type=cpuset, default="0", help="the service's CPU list")
    parser.add_argument("--driver-cores", type=cpuset, default="1", help="the driver's CPU list")
    parser.add_argument(
        "--results-dir",
        type=output_dir_arg,
        help="a folder, or a new one in an existing folder (default: bench/results of the"
        " clone, else of the current folder)",
    )
    return parser


def check(prog: str, argv: Sequence[str] | None) -> int:
    """Run the target shapes and print the table; 0 all pass, 3 any miss, 4 any inconclusive
    (and none missed): :func:`exit_status`."""
    args = build_parser(prog).parse_args(argv)
    if not args.skip_memory and args.sustained_seconds < MIN_SUSTAINED_SECONDS:
        raise UsageError(
            f"--sustained-seconds must be at least {MIN_SUSTAINED_SECONDS:g}, got"
            f" {args.sustained_seconds:g}: a shorter run reports no RSS growth"
            f" ({MIN_RSS_GROWTH_SPAN_SECONDS:g} s of samples after the warm-up);"
            " or pass --skip-memory"
        )
    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    if not loops or any(name not in tuple(Loop) for name in loops):
        raise UsageError(f"--loops takes uvloop and/or asyncio, got {args.loops!r}")
    for loop in loops:
        require_loop(loop, "--loops")

    root, default = choose_results_dir(args.results_dir, "--results-dir")
    print(f"{prog}: results in {root}{' (the default)' if default else ''}", flush=True)
    results = wrapper.new_run_dir(root, "targets")
    cores = ["--service-cores", args.service_cores, "--driver-cores", args.driver_cores]
    checks: list[Check] = []
    equal_sections: list[str] = []  # at equal offered load: beside the targets, no verdict
    for loop in loops:
        base = _run_wrapper(
            [*SHAPE, *cores, "--loop", loop, "--implementation", "all", "--scenario", "all",
             "--connections", str(args.connections), "--runs", str(args.runs),
             "--duration-seconds", f"{args.duration_seconds:g}"],
            results / loop,
        )  # fmt: skip
        checks += cpu_checks(base, loop)
        if not args.skip_equal_load:
            equal_sections.append(_equal_load(args, loop, base, cores, results))
    if not args.skip_memory:
        checks += memory_checks(results, loops[0], args.sustained_seconds, cores)

    header = (
        f"Targets (service cpu_ns_per_byte of {args.runs} interleaved runs;"
        f" split TCP, service cores {args.service_cores}, driver cores {args.driver_cores})\n\n"
        + VERDICT_NOTE
    )
    text = render(checks, header) + "".join(f"\n{section}" for section in equal_sections)
    write_output(results / "targets.md", text, "targets.md")  # in a new folder: new
    print(text, end="")
    print(f"targets={results / 'targets.md'}")
    return exit_status(checks)


#: How to read the verdicts: the header of every targets table.
VERDICT_NOTE = (
    "ratio (paired): geometric mean of the per-round ratios (round k of each implementation"
    f" ran back to back); {CONFIDENCE:.0%} CI: a t-interval on the log ratios (the saturation"
    " rows: on the cores themselves). pass: the whole interval is within the limit; MISS:"
    " all of it is outside; inconclusive: it straddles the limit, and runs needed estimates"
    " how many runs would decide it if the observed spread held. The memory rows are one"
    " run each: their verdict is the figure's."
)


def exit_status(checks: Sequence[Check]) -> int:
    """0 every target passed; 3 one missed; 4 none missed but one is inconclusive."""
    verdicts = {c.verdict for c in checks}
    if Verdict.MISS in verdicts:
        return EXIT_MISSED
    if Verdict.INCONCLUSIVE in verdicts:
        return EXIT_INCONCLUSIVE
    return 0


# -- at equal offered load (informational, beside the targets: equal_load) ---------------------


def _load_fraction(text: str) -> float:
    """``--equal-load-fraction``: above 0 and at most 1 (of the slowest saturated rate)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction above 0 and at most 1, got {text!r}")
    return value


def _equal_load(
    args: argparse.Namespace, loop: str, base: Path, cores: list[str], results: Path
) -> str:
    """Every implementation at one open-loop rate sized from the saturated runs in ``base``."""

    def run_all(extra: list[str], dest: Path) -> Path:
        return _run_wrapper(
            [*SHAPE, *cores, "--loop", loop, "--implementation", "all",
             "--connections", str(args.connections), "--runs", str(args.runs),
             "--duration-seconds", f"{args.duration_seconds:g}", *extra],
            dest,
        )  # fmt: skip

    return equal_load.measure(
        base, loop, args.equal_load_fraction, args.runs, run_all, results / f"{loop}-equal-load"
    )


if __name__ == "__main__":
    sys.exit(main())
