"""Re-measure the performance targets and print each with its ratio and pass/miss.

The logic behind ``bench/check-targets.sh``. For each event loop it runs
``run-stream-harness.sh --implementation all --scenario all`` in the headline
CPU-cost shape (split-process TCP, service and driver pinned to different
cores, ``fire_and_forget``, 16 connections, 64 route frames of 63 bytes,
1 MiB tunnel, 16 KiB read reserve), implementations interleaved per run, and
compares medians of the service's ``cpu_ns_per_byte``. Then two memory runs of
the ``handoff`` service: 128 connections (max RSS) and a sustained run (RSS
growth after warm-up, from the sampled RSS).

Results go to a new ``targets_<timestamp>`` folder in ``--results-dir`` (a
folder, or a new one in an existing folder; checked before any run) or in the
default results folder (``bench/results`` of the clone, else of the current
folder), which is printed first.

Exit status: 0 when every target passes, 3 when any misses, 1 when a run fails,
2 bad usage.
"""

from __future__ import annotations

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
from bytes_handoff_bench.tools import wrapper
from bytes_handoff_bench.tools.artifacts import as_number, read_runs_csv

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


@dataclass(frozen=True)
class Check:
    target: str
    loop: str
    measured: str
    ratio: float | None
    limit: float
    passed: bool
    higher_is_better: bool = False

    def row(self) -> list[str]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.3f}"
        op = ">=" if self.higher_is_better else "<="
        return [
            self.target,
            self.loop,
            self.measured,
            ratio,
            f"{op} {self.limit:g}",
            "pass" if self.passed else "MISS",
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
        mine = _median(base / impl / target.scenario, "service_cpu_ns_per_byte")
        theirs = _median(base / other / target.scenario, "service_cpu_ns_per_byte")
        ratio = mine / theirs
        measured = f"{impl} {mine:.3f} / {other} {theirs:.3f} ns/B"
        checks.append(
            Check(target.name, loop, measured, ratio, target.limit, ratio <= target.limit)
        )
    for name in sorted(p.name for p in base.iterdir() if (p / Scenario.COALESCED).is_dir()):
        cores = _median(base / name / Scenario.COALESCED, "service_cpu_avg_cores")
        checks.append(
            Check(
                f"3 coalesced service saturated: {name}",
                loop,
                f"{cores:.3f} cores",
                None,
                0.85,
                cores >= 0.85,
                higher_is_better=True,
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
    cols = ["target", "loop", "measured (medians)", "ratio", "limit", "result"]
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
        exit_statuses={0: "every target held", 3: "a target missed"},
    )
    both = f"{Loop.UVLOOP},{Loop.ASYNCIO}" if default_loop() == Loop.UVLOOP else Loop.ASYNCIO
    parser.add_argument(
        "--loops", default=both, help="comma list of event loops (asyncio only without uvloop)"
    )
    parser.add_argument(
        "--runs",
        type=whole_number(3, MAX_RUNS),
        default=3,
        help="runs per cell, at least 3: targets are medians",
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
    """Run the target shapes and print the table; 0 all pass, 3 any miss."""
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
    for loop in loops:
        base = _run_wrapper(
            [*SHAPE, *cores, "--loop", loop, "--implementation", "all", "--scenario", "all",
             "--connections", str(args.connections), "--runs", str(args.runs),
             "--duration-seconds", f"{args.duration_seconds:g}"],
            results / loop,
        )  # fmt: skip
        checks += cpu_checks(base, loop)
    if not args.skip_memory:
        checks += memory_checks(results, loops[0], args.sustained_seconds, cores)

    header = (
        f"Targets (service cpu_ns_per_byte medians of {args.runs} interleaved runs;"
        f" split TCP, service cores {args.service_cores}, driver cores {args.driver_cores})"
    )
    text = render(checks, header)
    write_output(results / "targets.md", text, "targets.md")  # in a new folder: new
    print(text, end="")
    print(f"targets={results / 'targets.md'}")
    return 0 if all(c.passed for c in checks) else 3


if __name__ == "__main__":
    sys.exit(main())
