"""The logic behind ``bench/run-cost-curve.sh``: CPU cost and latency against offered load.

Saturated runs compare implementations at whatever load each one reaches: a
faster one moves more bytes for its CPU. A cost curve compares them at *equal*
load: for each offered rate (streams per second, open loop: the harness's
``--rate``, on a clock, each stream's latency counted from when it was due) it
runs every implementation in split-process TCP (the service pinned to
``--service-cores``, the driver to ``--driver-cores``, as the wrapper does) and
records the service's CPU cores and the driver's p50/p99 latency. The rates
sweep from low to past saturation; the implementations are interleaved at each
rate (and each run index), so a noisy minute hurts all of them alike.

Without ``--rates`` a quick saturation probe comes first: one closed-loop run
per implementation (``--probe-seconds``); the rates are then ``--points``
values spaced evenly from ``--low-fraction`` to ``--high-fraction`` of
the fastest implementation's probed streams/s, the same rates for every
implementation.

The **knee** of an implementation is its highest offered rate whose p99 stays
within ``--p99-bound-ms`` and that did not fall behind (the achieved rate short
of the offered one by more than the harness's ``--rate-tolerance``, or the
schedule slipped past its ``--max-lag-millis``). ``--replot DIR`` judges the
knees of a finished sweep again, at another bound, without running anything.
A point that fell behind is drawn as an ``x`` and marked in every table: its
figures are no result at that load.

Everything goes to a new ``cost_curve_<loop>_<scenario>_<timestamp>/`` folder
in ``--results-dir`` (default: ``bench/results`` of the clone):

* ``<implementation>/rate-<R>/``: each point's run files (``handoff-run-N.txt``,
  the driver; ``service-run-N.txt``, the service), and ``probe/`` the probe's;
* ``runs.csv``: every run, the driver's keys and the service's (``service_*``);
* ``cost_curve.csv``: one row per (implementation, offered rate), medians over
  the runs, with ``fell_behind``, ``within_bound`` and ``knee``;
* ``knees.csv`` and ``cost_curve.md`` (the knee table, then every point);
* ``cost_curve.png``: service CPU cores, p50 and p99 against offered load,
  one line per implementation.

The tool talks to the harness only through its command line (``split``).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import shlex
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bytes_handoff_bench import defaults
from bytes_handoff_bench.cli_common import (
    OneLineParser,
    UsageError,
    cpuset,
    positive_float,
    prog_and_args,
    run_main,
    seconds,
    whole_number,
)
from bytes_handoff_bench.extras import default_loop, require_loop
from bytes_handoff_bench.limits import (
    MAX_CONNECTIONS,
    MAX_DURATION_SECONDS,
    MAX_FRAME_LEN,
    MAX_RATE,
    MAX_ROUTE_FRAMES,
    MAX_RUNS,
    MAX_TUNNEL_BYTES,
    MIN_FRAME_LEN,
)
from bytes_handoff_bench.names import (
    REPORT_ORDER,
    Completion,
    Loop,
    Scenario,
    Transport,
    implementations_for,
)
from bytes_handoff_bench.output_paths import (
    check_output_file,
    choose_results_dir,
    output_dir_arg,
    write_output,
)
from bytes_handoff_bench.processes import RunError, raise_on_termination
from bytes_handoff_bench.tools.artifacts import (
    as_number,
    merge_run,
    parse_kv_file,
    read_runs_csv,
    write_runs_csv,
)
from bytes_handoff_bench.tools.formats import format_tick, format_value
from bytes_handoff_bench.tools.split import SplitConfig, run_split
from bytes_handoff_bench.tools.wrapper import (
    cpu_count,
    display_path,
    new_run_dir,
    open_loop_idle_millis,
)
from bytes_handoff_bench.tools.wrapper import preflight as harness_preflight

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROG = "run-cost-curve.sh"

#: The published CPU-cost shape (``check-targets.sh``): what the defaults below run.
SHAPE_DEFAULTS = {
    "connections": 16,
    "route_frames": 64,
    "frame_len": 63,
    "tunnel_bytes": 1024 * 1024,
    "read_reserve": 16 * 1024,
}

EXAMPLES = """\
Examples:
  PROG                                         # every implementation, rates from a probe
  PROG --loop asyncio --points 8 --duration-seconds 4
  PROG --implementation handoff,manual_protocol --rates 100,200,400,800
  PROG --p99-bound-ms 20 --service-cores 0 --driver-cores 1
"""


def rate_list(text: str) -> list[float]:
    """``100,200.5,400``: offered rates in streams per second, each above 0."""
    rates: list[float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not 0 < value <= MAX_RATE:
            raise argparse.ArgumentTypeError(
                f"expected streams per second above 0 and at most {MAX_RATE}, got {part!r}"
            )
        rates.append(value)
    if len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(f"a rate is given twice in {text!r}")
    return sorted(rates)


def fraction(text: str) -> float:
    """A fraction of the probed saturation rate: above 0, at most 10."""
    value = positive_float(text)
    if value > 10:
        raise argparse.ArgumentTypeError(f"expected a fraction above 0 and at most 10, got {text}")
    return value


def tolerance(text: str) -> str:
    """The harness's ``--rate-tolerance``: a fraction from 0 up to (not including) 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to below 1, got {text!r}")
    return text.strip()


def build_parser(prog: str = PROG) -> OneLineParser:
    tcp = [str(i) for i in implementations_for(Transport.TCP)]
    parser = OneLineParser(
        prog=prog,
        description=(
            "Sweep the offered load (streams/s, open loop) from low to past saturation for\n"
            "each implementation, interleaved, in split-process TCP; plot the service's CPU\n"
            "cores and the p50/p99 latency against it, and find each one's knee: the highest\n"
            "rate whose p99 stays within --p99-bound-ms."
        ),
        epilog=(
            f"{EXAMPLES.replace('PROG', prog)}\n"
            "results: <results-dir>/cost_curve_<loop>_<scenario>_<timestamp>/: cost_curve.png,\n"
            "  cost_curve.csv (one row per implementation and rate, with the knee column),\n"
            "  knees.csv, cost_curve.md, runs.csv, and each run's files.\n"
            "The shape defaults are the published CPU-cost shape (check-targets.sh): 16\n"
            "  connections, 64 frames of 63 B + newline, 1 MiB tunnel, 16 KiB reads."
        ),
    )
    add = parser.add_argument
    add(
        "--implementation",
        default="all",
        help=f"a comma list of implementations, or all: {' '.join(tcp)}",
    )
    add(
        "--loop",
        choices=[m.value for m in Loop],
        help="event loop of both roles (default: uvloop if installed, else asyncio)",
    )
    add(
        "--scenario",
        choices=[m.value for m in Scenario],
        default=Scenario.COALESCED,
        help="client write pattern",
    )
    add(
        "--completion",
        choices=[m.value for m in Completion],
        default=Completion.FIRE_AND_FORGET,
        help="await a completion ticket per frame, or fire and forget",
    )
    add(
        "--connections",
        type=whole_number(1, MAX_CONNECTIONS),
        default=SHAPE_DEFAULTS["connections"],
        help="the driver's connections; the offered streams are spread over them",
    )
    add(
        "--route-frames",
        type=whole_number(1, MAX_ROUTE_FRAMES),
        default=SHAPE_DEFAULTS["route_frames"],
        help="route frames per stream",
    )
    add(
        "--frame-len",
        type=whole_number(MIN_FRAME_LEN, MAX_FRAME_LEN),
        default=SHAPE_DEFAULTS["frame_len"],
        help="route frame length without newline",
    )
    add(
        "--tunnel-bytes",
        type=whole_number(0, MAX_TUNNEL_BYTES),
        default=SHAPE_DEFAULTS["tunnel_bytes"],
        help="tunnel bytes per stream",
    )
    add(
        "--read-reserve",
        type=whole_number(1, 64 * 1024 * 1024),
        default=SHAPE_DEFAULTS["read_reserve"],
        help="proxy read size",
    )
    add(
        "--rates",
        type=rate_list,
        help="offered rates in streams per second, a comma list (default: --points rates"
        " from a saturation probe)",
    )
    add(
        "--points",
        type=whole_number(2, 50),
        default=10,
        help="how many rates without --rates, spaced evenly",
    )
    add(
        "--low-fraction",
        type=fraction,
        default=0.1,
        help="the lowest rate without --rates, as a fraction of the fastest probed saturation",
    )
    add(
        "--high-fraction",
        type=fraction,
        default=1.3,
        help="the highest rate without --rates, as a fraction of the fastest probed"
        " saturation (above 1: past every implementation's saturation)",
    )
    add(
        "--probe-seconds",
        type=seconds(MAX_DURATION_SECONDS),
        default=3.0,
        help="the closed-loop saturation probe, per implementation (without --rates)",
    )
    add(
        "--duration-seconds",
        type=seconds(MAX_DURATION_SECONDS),
        default=3.0,
        help="each point's schedule (the harness's --duration-seconds)",
    )
    add("--runs", type=whole_number(1, MAX_RUNS), default=1, help="runs per point (medians)")
    add(
        "--p99-bound-ms",
        type=positive_float,
        default=50.0,
        help="the knee: the highest rate whose p99 stays within this (and that kept up)",
    )
    add(
        "--rate-tolerance",
        type=tolerance,
        help="the driver's --rate-tolerance: fell behind when the achieved rate is more than"
        f" this fraction below the offered one (default: {defaults.RATE_TOLERANCE:g}, the"
        " harness's)",
    )
    add(
        "--max-lag-millis",
        type=whole_number(1, 3_600_000),
        help="the driver's --max-lag-millis: a stream this late is not started and the point"
        f" fell behind (default: {defaults.MAX_LAG_MILLIS}, the harness's)",
    )
    add("--service-cores", type=cpuset, default="0", help="the service's CPU list (taskset)")
    add("--driver-cores", type=cpuset, default="1", help="the driver's CPU list (taskset)")
    add(
        "--results-dir",
        type=output_dir_arg,
        help="a folder, or a new one in an existing folder (default: bench/results of the"
        " clone, else of the current folder)",
    )
    add(
        "--replot",
        type=Path,
        metavar="DIR",
        help="no run: rewrite the chart, the CSVs and the markdown of the sweep in DIR from"
        " its runs.csv, the knees judged at --p99-bound-ms (default: none)",
    )
    return parser


# -- the plan ------------------------------------------------------------------------------


@dataclass
class Plan:
    implementations: list[str]
    loop: Loop
    scenario: Scenario
    completion: Completion
    shape: dict[str, str]
    rates: list[float] | None
    points: int
    low_fraction: float
    high_fraction: float
    probe_seconds: float
    duration_seconds: float
    runs: int
    p99_bound_ms: float
    load_flags: dict[str, str]
    service_cores: str
    driver_cores: str
    results_dir: Path
    python: str

    def harness_args(self, implementation: str, duration: float) -> list[str]:
        args = [
            "--transport", Transport.TCP,
            "--implementation", implementation,
            "--scenario", self.scenario,
            "--completion", self.completion,
            "--loop", self.loop,
            "--worker-threads", str(min(cpu_count(self.service_cores), 256)),
            "--duration-seconds", f"{duration:g}",
        ]  # fmt: skip
        for flag, value in self.shape.items():
            args += [flag, value]
        return args

    def load_args(self, rate: float) -> list[str]:
        args = ["--rate", format_rate(rate)]
        for flag, value in self.load_flags.items():
            args += [flag, value]
        return args

    @property
    def bytes_per_stream(self) -> int:
        frames = int(self.shape["--route-frames"])
        return frames * (int(self.shape["--frame-len"]) + 1) + 7 + int(self.shape["--tunnel-bytes"])


def format_rate(rate: float) -> str:
    """A rate as a flag value and a folder name: ``120``, ``37.5``."""
    return f"{rate:.6g}"


def make_plan(args: argparse.Namespace, python: str) -> Plan:
    tcp = [str(i) for i in implementations_for(Transport.TCP)]
    if args.implementation.strip() == "all":
        impls = tcp
    else:
        impls = [name.strip() for name in args.implementation.split(",") if name.strip()]
        unknown = [name for name in impls if name not in tcp]
        if unknown or not impls:
            raise UsageError(
                f"--implementation: {unknown[0] if unknown else args.implementation!r} is not"
                f" one of all, {', '.join(tcp)} (split-process TCP)"
            )
        if len(set(impls)) != len(impls):
            raise UsageError(f"--implementation names one twice: {args.implementation!r}")
        impls.sort(key=_rank)
    if args.rates is None and not args.low_fraction < args.high_fraction:
        raise UsageError(
            f"--low-fraction ({args.low_fraction:g}) must be below --high-fraction"
            f" ({args.high_fraction:g})"
        )
    loop = args.loop or default_loop()
    require_loop(loop)
    shape = {
        "--connections": str(args.connections),
        "--route-frames": str(args.route_frames),
        "--frame-len": str(args.frame_len),
        "--tunnel-bytes": str(args.tunnel_bytes),
        "--read-reserve": str(args.read_reserve),
    }
    load_flags = {}
    if args.rate_tolerance is not None:
        load_flags["--rate-tolerance"] = args.rate_tolerance
    if args.max_lag_millis is not None:
        load_flags["--max-lag-millis"] = str(args.max_lag_millis)
    results_dir, _default = choose_results_dir(args.results_dir, "--results-dir")
    return Plan(
        implementations=impls,
        loop=Loop(loop),
        scenario=Scenario(args.scenario),
        completion=Completion(args.completion),
        shape=shape,
        rates=args.rates,
        points=args.points,
        low_fraction=args.low_fraction,
        high_fraction=args.high_fraction,
        probe_seconds=args.probe_seconds,
        duration_seconds=args.duration_seconds,
        runs=args.runs,
        p99_bound_ms=args.p99_bound_ms,
        load_flags=load_flags,
        service_cores=args.service_cores,
        driver_cores=args.driver_cores,
        results_dir=results_dir,
        python=python,
    )


def preflight(plan: Plan) -> None:
    """Ask the harness, before any run, whether it takes every implementation in this shape
    (with an open-loop rate: the highest one given, or a placeholder before the probe)."""
    rate = max(plan.rates) if plan.rates else 1.0
    cells = [
        (f"{impl}: ", [*plan.harness_args(impl, plan.duration_seconds), *plan.load_args(rate)])
        for impl in plan.implementations
    ]
    answer = harness_preflight([args for _label, args in cells])
    for (label, _args), error in zip(cells, answer.errors, strict=True):
        if error is not None:
            raise UsageError(f"{label}{error}")


# -- the runs ------------------------------------------------------------------------------


def split_run(
    plan: Plan,
    implementation: str,
    out_dir: Path,
    n: int,
    duration: float,
    rate: float | None,
    label: str,
) -> dict[str, str]:
    """One split-process run (open loop at ``rate``, or closed loop); its merged row."""
    lowest = min(plan.rates or [rate or 1.0])
    idle = max(
        defaults.IDLE_TIMEOUT_MILLIS,
        open_loop_idle_millis(plan.shape, {"--rate": format_rate(lowest)}) if rate else 0,
    )
    result = run_split(
        SplitConfig(
            harness_args=plan.harness_args(implementation, duration),
            out_dir=out_dir,
            run_index=n,
            python=plan.python,
            service_cores=plan.service_cores,
            driver_cores=plan.driver_cores,
            idle_timeout_millis=idle,
            run_timeout_seconds=max(120.0, 3 * duration + 60.0),
            driver_extra_args=plan.load_args(rate) if rate is not None else [],
            label=label,
        )
    )
    return merge_run(result.driver, result.service)


def probe(plan: Plan, base: Path, log: Callable[[str], None]) -> dict[str, float]:
    """Closed-loop saturation per implementation: the driver's streams/s."""
    found: dict[str, float] = {}
    for impl in plan.implementations:
        row = split_run(
            plan, impl, base / impl / "probe", 1, plan.probe_seconds, None, f"probe ({impl})"
        )
        value = as_number(row.get("streams_per_sec", ""))
        if value is None or value <= 0:
            raise RunError(f"probe ({impl}): the driver reported no streams_per_sec")
        found[impl] = value
        log(f"[probe] {impl}: saturated at {value:.1f} streams/s (closed loop)")
    return found


def sweep_rates(plan: Plan, saturation: Mapping[str, float]) -> list[float]:
    """``plan.points`` rates, evenly spaced from the low to the high fraction of the fastest
    saturation, each to 3 significant digits."""
    top = max(saturation.values())
    low, high = plan.low_fraction * top, plan.high_fraction * top
    step = (high - low) / (plan.points - 1)
    rates = sorted({float(f"{low + step * k:.3g}") for k in range(plan.points)})
    return [rate for rate in rates if rate > 0]


# -- the points ----------------------------------------------------------------------------


@dataclass
class Point:
    """One implementation at one offered rate: medians over its runs."""

    implementation: str
    offered: float
    runs: int
    achieved: float | None
    cores: float | None
    ns_per_byte: float | None
    p50_ms: float | None
    p99_ms: float | None
    lag_ms: float | None
    #: The service's involuntary context switches per second: how often something else
    #: took its core (another process on a shared machine).
    preempted_per_sec: float | None
    fell_behind: int  # runs that fell behind
    reasons: list[str]
    knee: bool = False

    def within(self, bound_ms: float) -> bool:
        return not self.fell_behind and self.p99_ms is not None and self.p99_ms <= bound_ms


def _median(rows: Sequence[Mapping[str, str]], key: str, scale: float = 1.0) -> float | None:
    values = [v for row in rows if (v := as_number(row.get(key, ""))) is not None]
    return statistics.median(values) * scale if values else None


def make_point(implementation: str, offered: float, rows: Sequence[Mapping[str, str]]) -> Point:
    behind = [row for row in rows if row.get("fell_behind") == "true"]
    return Point(
        implementation=implementation,
        offered=offered,
        runs=len(rows),
        achieved=_median(rows, "achieved_streams_per_sec"),
        cores=_median(rows, "service_cpu_avg_cores"),
        ns_per_byte=_median(rows, "service_cpu_ns_per_byte"),
        p50_ms=_median(rows, "latency_p50_micros", 0.001),
        p99_ms=_median(rows, "latency_p99_micros", 0.001),
        lag_ms=_median(rows, "start_lag_max_micros", 0.001),
        preempted_per_sec=_median([_preemptions(row) for row in rows], "per_sec"),
        fell_behind=len(behind),
        reasons=[row.get("fell_behind_reason", "") for row in behind],
    )


def _preemptions(row: Mapping[str, str]) -> dict[str, str]:
    switches = as_number(row.get("service_involuntary_context_switches", ""))
    seconds = as_number(row.get("service_total_seconds", ""))
    if switches is None or not seconds:
        return {}
    return {"per_sec": str(switches / seconds)}


def mark_knees(points: list[Point], bound_ms: float) -> dict[str, Point | None]:
    """Each implementation's knee: its highest offered rate whose p99 is within the bound
    and that kept up (its ``knee`` set); ``None``: no such rate."""
    knees: dict[str, Point | None] = {}
    for impl in dict.fromkeys(p.implementation for p in points):
        within = [p for p in points if p.implementation == impl and p.within(bound_ms)]
        knee = max(within, key=_offered, default=None)
        if knee is not None:
            knee.knee = True
        knees[impl] = knee
    return knees


def _offered(point: Point) -> float:
    return point.offered


# -- output --------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


CURVE_COLUMNS = [
    "implementation", "offered_streams_per_sec", "offered_mib_per_sec", "runs",
    "achieved_streams_per_sec", "service_cpu_avg_cores", "service_cpu_ns_per_byte",
    "latency_p50_ms", "latency_p99_ms", "start_lag_max_ms",
    "service_involuntary_switches_per_sec", "fell_behind", "within_bound", "knee",
]  # fmt: skip
KNEE_COLUMNS = [
    "implementation", "knee_streams_per_sec", "knee_mib_per_sec", "service_cpu_avg_cores",
    "latency_p50_ms", "latency_p99_ms", "max_kept_up_streams_per_sec",
    "probe_streams_per_sec", "p99_bound_ms",
]  # fmt: skip


def curve_rows(points: Sequence[Point], plan: Plan) -> list[list[str]]:
    mib = plan.bytes_per_stream / 2**20
    return [
        [
            p.implementation,
            _num(p.offered),
            _num(p.offered * mib),
            str(p.runs),
            _num(p.achieved),
            _num(p.cores),
            _num(p.ns_per_byte),
            _num(p.p50_ms),
            _num(p.p99_ms),
            _num(p.lag_ms),
            _num(p.preempted_per_sec),
            "true" if p.fell_behind else "false",
            "true" if p.within(plan.p99_bound_ms) else "false",
            "true" if p.knee else "false",
        ]
        for p in points
    ]


def knee_rows(
    points: Sequence[Point],
    knees: Mapping[str, Point | None],
    saturation: Mapping[str, float],
    plan: Plan,
) -> list[list[str]]:
    mib = plan.bytes_per_stream / 2**20
    rows = []
    for impl, knee in knees.items():
        kept = kept_up(points, impl)
        rows.append(
            [
                impl,
                _num(knee.offered) if knee else "",
                _num(knee.offered * mib) if knee else "",
                _num(knee.cores) if knee else "",
                _num(knee.p50_ms) if knee else "",
                _num(knee.p99_ms) if knee else "",
                _num(kept),
                _num(saturation.get(impl)),
                _num(plan.p99_bound_ms),
            ]
        )
    return rows


def kept_up(points: Sequence[Point], impl: str) -> float | None:
    """The highest offered rate ``impl`` kept up with (whatever its latency), if any."""
    rates = [p.offered for p in points if p.implementation == impl and not p.fell_behind]
    return max(rates, default=None)


def _rate(value: float) -> str:
    return format_tick(value)


def _fmt(value: float | None) -> str:
    return format_value(value)


def title_of(row: Mapping[str, str], plan: Plan) -> str:
    from bytes_handoff_bench.tools.report import run_headline, run_shape

    shape = run_shape(row)
    if "s sustained runs" in shape:  # the duration is per point here, said elsewhere
        shape = ", ".join(p for p in shape.split(", ") if not p.endswith("sustained runs"))
    return f"{run_headline(row)}: {plan.scenario}, {shape}"


def markdown(
    plan: Plan,
    points: Sequence[Point],
    knees: Mapping[str, Point | None],
    saturation: Mapping[str, float],
    title: str,
    command: str,
    chart: str | None,
) -> str:
    mib = plan.bytes_per_stream / 2**20
    bound = format_tick(plan.p99_bound_ms)
    runs = f"the median of {plan.runs} runs" if plan.runs > 1 else "one run"
    lines = [
        f"# Cost curve: {title}",
        "",
        f"Command: `{command}`",
        "",
        "Open loop: each offered rate is streams per second started on a clock (wrk2's"
        " method, latency from each stream's scheduled start), the same rates for every"
        f" implementation, interleaved; split-process TCP, the service on core(s)"
        f" {plan.service_cores}, the driver on {plan.driver_cores};"
        f" {format_tick(plan.duration_seconds)} s per point, {runs} per point.",
    ]
    if saturation:
        probed = ", ".join(f"{impl} {_fmt(v)}" for impl, v in saturation.items())
        lines += [
            "",
            f"Saturation probe (closed loop, {format_tick(plan.probe_seconds)} s, driver"
            " streams/s):"
            f" {probed}.",
        ]
    lines += [
        "",
        f"## Knee: the highest offered rate with p99 within {bound} ms",
        "",
        f"The highest offered rate whose p99 stayed within {bound} ms and that did not fall"
        " behind. Higher is better for the knee; lower is better for the CPU cores and the"
        " latency at it.",
        "",
        "| implementation | knee streams/s | knee MiB/s | service CPU cores at the knee"
        " | p50 ms | p99 ms | highest rate kept up with, streams/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for impl, knee in knees.items():
        kept = kept_up(points, impl)
        top = _rate(kept) if kept is not None else "none"
        if knee is None:
            lines.append(f"| {impl} | none within the bound | | | | | {top} |")
            continue
        lines.append(
            f"| {impl} | {_rate(knee.offered)} | {_fmt(knee.offered * mib)} | {_fmt(knee.cores)}"
            f" | {_fmt(knee.p50_ms)} | {_fmt(knee.p99_ms)} | {top} |"
        )
    if chart:
        lines += ["", f"![cost curve]({chart})"]
    lines += [
        "",
        "## Every point",
        "",
        "FELL BEHIND: the achieved rate fell short of the offered one by more than the"
        " tolerance, or streams could not start within the lag bound: no result at that load.",
        "",
        "Service preempted: its involuntary context switches per second (something else"
        " ran on its core: on a shared machine, the noise behind a point).",
        "",
        "| offered streams/s | offered MiB/s | implementation | achieved streams/s"
        " | service CPU cores | service ns/B | p50 ms | p99 ms | service preempted /s | |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in sorted(points, key=lambda p: (p.offered, _rank(p.implementation))):
        notes = []
        if p.fell_behind:
            notes.append(f"FELL BEHIND ({p.fell_behind}/{p.runs})")
        if p.knee:
            notes.append("knee")
        lines.append(
            f"| {_rate(p.offered)} | {_fmt(p.offered * mib)} | {p.implementation}"
            f" | {_fmt(p.achieved)} | {_fmt(p.cores)} | {_fmt(p.ns_per_byte)}"
            f" | {_fmt(p.p50_ms)} | {_fmt(p.p99_ms)} | {_fmt(p.preempted_per_sec)}"
            f" | {', '.join(notes)} |"
        )
    return "\n".join(lines) + "\n"


def _rank(impl: str) -> int:
    order: list[str] = list(REPORT_ORDER)
    return order.index(impl) if impl in order else len(order)


def cost_curve_figure(
    plan: Plan,
    points: Sequence[Point],
    knees: Mapping[str, Point | None],
    title: str,
) -> Figure:
    """Service CPU cores, p50 and p99 against the offered rate, one line per implementation;
    ``x``: fell behind; a star: the knee; the p99 bound dashed."""
    from bytes_handoff_bench.tools import plots

    offered = "offered load (streams/s)"
    panels = [
        ("cores", plots.Panel("service CPU cores", offered, "service CPU (cores)"), False),
        ("p50_ms", plots.Panel("p50 latency", offered, "p50 latency (ms, log scale)"), True),
        ("p99_ms", plots.Panel("p99 latency", offered, "p99 latency (ms, log scale)"), True),
    ]
    impls = list(dict.fromkeys(p.implementation for p in points))
    drawn = []
    for attr, panel, log in panels:
        lines = []
        for impl in impls:
            mine = [
                p
                for p in sorted((p for p in points if p.implementation == impl), key=_offered)
                if getattr(p, attr) is not None
            ]
            knee = knees.get(impl)
            star = None
            if knee is not None and getattr(knee, attr) is not None:
                star = (knee.offered, getattr(knee, attr))
            lines.append(
                plots.Series(
                    impl + (f" (knee {format_tick(knee.offered)}/s)" if knee else " (no knee)"),
                    plots.implementation_color(impl),
                    [p.offered for p in mine],
                    [getattr(p, attr) for p in mine],
                    fell_behind=[bool(p.fell_behind) for p in mine],
                    star=star,
                )
            )
        bound = None
        if attr == "p99_ms":
            bound = (plan.p99_bound_ms, f"p99 bound {format_tick(plan.p99_bound_ms)} ms")
        drawn.append(plots.LinePanel(panel, lines, log_y=log, bound=bound))
    runs = f"median of {plan.runs} runs" if plan.runs > 1 else "one run"
    sub = (
        f"open loop, {format_tick(plan.duration_seconds)} s per point, {runs}; o: kept up,"
        " x: fell behind (no result at that load); star: knee (highest rate with p99 within"
        f" {format_tick(plan.p99_bound_ms)} ms that kept up)"
    )
    return plots.line_chart(
        drawn,
        [f"Cost curve: {title}", sub],
        ncols=len(drawn),
        panel_size=(6.2, 4.8),
        top_axis=(plan.bytes_per_stream / 2**20, "offered load (MiB/s)"),
    )


def write_chart(
    path: Path,
    plan: Plan,
    points: Sequence[Point],
    knees: Mapping[str, Point | None],
    title: str,
) -> Path:
    """``cost_curve_figure`` as a PNG."""
    from bytes_handoff_bench.tools import plots

    return plots.save(cost_curve_figure(plan, points, knees, title), path)


# -- the program ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, PROG)
    return run_main(prog, lambda: run(prog, args), bench_extra=("hdrh", "matplotlib"))


def run(prog: str, argv: Sequence[str]) -> int:
    """Check everything, probe (without --rates), sweep, write the results."""
    args = build_parser(prog).parse_args(argv)
    if args.replot is not None:
        return replot(args)
    plan = make_plan(args, os.environ.get("PYTHON") or sys.executable)
    preflight(plan)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    raise_on_termination()
    base = new_run_dir(plan.results_dir, f"cost_curve_{plan.loop}_{plan.scenario}")
    log(
        f"results={display_path(base)} loop={plan.loop} scenario={plan.scenario}"
        f" implementations={','.join(plan.implementations)}"
        f" service_cores={plan.service_cores} driver_cores={plan.driver_cores}"
    )
    saturation: dict[str, float] = {}
    rates = plan.rates
    if rates is None:
        saturation = probe(plan, base, log)
        rates = sweep_rates(plan, saturation)
        plan.rates = rates
    log(f"rates (streams/s): {', '.join(format_rate(r) for r in rates)}")
    rows: list[dict[str, str]] = []
    for n in range(1, plan.runs + 1):
        for rate in rates:
            for impl in plan.implementations:
                folder = base / impl / f"rate-{format_rate(rate)}"
                label = f"run {n} ({impl} at {format_rate(rate)} streams/s)"
                row = split_run(plan, impl, folder, n, plan.duration_seconds, rate, label)
                rows.append({"implementation": impl, "rate": format_rate(rate), **row})
                behind = " FELL BEHIND" if row.get("fell_behind") == "true" else ""
                log(
                    f"[run {n}/{plan.runs}] {impl} offered={format_rate(rate)}"
                    f" achieved={row.get('achieved_streams_per_sec', '?')}"
                    f" service_cpu_avg_cores={row.get('service_cpu_avg_cores', '?')}"
                    f" p99_us={row.get('latency_p99_micros', '?')}{behind}"
                )
    write_runs_csv(base / "runs.csv", rows)
    publish(plan, base, rows, saturation, shlex.join([prog, *argv]))
    return 0


def publish(
    plan: Plan,
    base: Path,
    rows: Sequence[Mapping[str, str]],
    saturation: Mapping[str, float],
    command: str,
) -> None:
    """From the runs' rows: the points, the knees, and every output file in ``base``."""
    rates = sorted({float(row["rate"]) for row in rows})
    by_point: dict[tuple[str, float], list[Mapping[str, str]]] = {}
    for row in rows:
        by_point.setdefault((row["implementation"], float(row["rate"])), []).append(row)
    points = [
        make_point(impl, rate, by_point[(impl, rate)])
        for impl in plan.implementations
        for rate in rates
        if (impl, rate) in by_point
    ]
    knees = mark_knees(points, plan.p99_bound_ms)
    write_output(
        base / "cost_curve.csv",
        _csv_text(CURVE_COLUMNS, curve_rows(points, plan)),
        "cost_curve.csv",
    )
    write_output(
        base / "knees.csv",
        _csv_text(KNEE_COLUMNS, knee_rows(points, knees, saturation, plan)),
        "knees.csv",
    )
    title = title_of(rows[0], plan)
    chart = write_chart(base / "cost_curve.png", plan, points, knees, title)
    text = markdown(plan, points, knees, saturation, title, command, chart.name)
    write_output(base / "cost_curve.md", text, "cost_curve.md")
    for impl, knee in knees.items():
        where = f"{format_rate(knee.offered)} streams/s" if knee else "none within the bound"
        cores = f" service_cpu_avg_cores={_num(knee.cores)}" if knee else ""
        print(f"knee {plan.loop} {impl}: {where}{cores}", flush=True)
    print(
        f"cost_curve={display_path(base / 'cost_curve.md')}"
        f" chart={display_path(chart)} csv={display_path(base / 'cost_curve.csv')}"
    )


def _csv_text(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


def replot(args: argparse.Namespace) -> int:
    """``--replot DIR``: the outputs of a finished sweep, again, from its ``runs.csv`` (and
    its probe runs), the knees judged at this ``--p99-bound-ms``; no run."""
    base: Path = args.replot
    runs = base / "runs.csv"
    if not runs.is_file():
        raise UsageError(f"--replot: no runs.csv in {str(base)!r}: not a cost-curve folder")
    rows = read_runs_csv(runs)
    if not rows or any(not row.get("rate") or not row.get("implementation") for row in rows):
        raise UsageError(f"--replot: {str(runs)!r} has no cost-curve runs")
    for name in ("cost_curve.csv", "knees.csv", "cost_curve.md", "cost_curve.png"):
        check_output_file(base / name, f"--replot: {name}")
    first = rows[0]
    impls = sorted({row["implementation"] for row in rows}, key=_rank)
    counts = Counter((row["implementation"], row["rate"]) for row in rows)
    saturation: dict[str, float] = {}
    probe_seconds = 0.0
    for impl in impls:
        probed = base / impl / "probe" / "handoff-run-1.txt"
        if probed.is_file():
            kv = parse_kv_file(probed)
            value = as_number(kv.get("streams_per_sec", ""))
            if value:
                saturation[impl] = value
                probe_seconds = as_number(kv.get("duration_seconds_target", "")) or 0.0
    plan = Plan(
        implementations=impls,
        loop=Loop(first.get("loop", default_loop())),
        scenario=Scenario(first.get("scenario", Scenario.COALESCED)),
        completion=Completion(first.get("completion", Completion.FIRE_AND_FORGET)),
        shape={
            f"--{key.replace('_', '-')}": first.get(key, str(value))
            for key, value in SHAPE_DEFAULTS.items()
        },
        rates=sorted({float(row["rate"]) for row in rows}),
        points=0,
        low_fraction=0.0,
        high_fraction=0.0,
        probe_seconds=probe_seconds,
        duration_seconds=as_number(first.get("duration_seconds_target", "")) or 0.0,
        runs=max(counts.values()),
        p99_bound_ms=args.p99_bound_ms,
        load_flags={},
        service_cores=args.service_cores,
        driver_cores=args.driver_cores,
        results_dir=base,
        python=sys.executable,
    )
    command = ""
    md = base / "cost_curve.md"
    if md.is_file():  # the sweep's own command, as it said it
        for line in md.read_text(encoding="utf-8").splitlines():
            if line.startswith("Command: `") and line.endswith("`"):
                command = line[len("Command: `") : -1]
                break
    publish(plan, base, rows, saturation, command or "(not recorded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
