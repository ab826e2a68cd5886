"""The logic behind ``bench/run-stream-matrix.sh``: a decision matrix.

Every implementation over scenario x connections x frame size, configured by
environment variables (:data:`SETTINGS`: name, default, meaning; defaults
scaled to a 2-core machine). ``--help`` prints them with :data:`NOTES`: how
frame sizes map to the harness's flags, how cells are run, and what is
written. An upper-case variable that is not a setting but close to one
(``CONECTIONS``) is named in one warning line on stderr before the run.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import os
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bytes_handoff_bench import defaults
from bytes_handoff_bench.cli_common import (
    OneLineParser,
    UsageError,
    cpuset,
    prog_and_args,
    run_main,
)
from bytes_handoff_bench.errors import BenchError
from bytes_handoff_bench.extras import require_loop
from bytes_handoff_bench.limits import MAX_FRAME_LEN, MAX_RUNS, MIN_FRAME_LEN
from bytes_handoff_bench.names import (
    Completion,
    Implementation,
    Loop,
    Scenario,
    Transport,
    implementations_for,
)
from bytes_handoff_bench.output_paths import choose_results_dir
from bytes_handoff_bench.processes import RunError, raise_on_termination
from bytes_handoff_bench.tools.artifacts import Stat, format_number, write_cell_artifacts
from bytes_handoff_bench.tools.formats import format_bytes, format_ratio, format_value
from bytes_handoff_bench.tools.report import (
    GroupedTable,
    plural,
    print_out,
    ratio,
    run_headline,
    run_shape,
    single_run,
)
from bytes_handoff_bench.tools.wrapper import (
    Plan,
    check_cells,
    display_path,
    new_run_dir,
    run_cell_once,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.progress import ProgressColumn

#: The settings: (variable, default, meaning). An empty default means "not passed on".
SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("TRANSPORT", defaults.TRANSPORT, "duplex or tcp"),
    ("IMPLEMENTATIONS", "all", "all: each that runs on TRANSPORT"),
    ("SCENARIOS", "fragmented coalesced", "client write patterns"),
    ("CONNECTIONS", "1 4 16", "connections per wave"),
    ("FRAME_SIZES", "64 1024 16384", "frame sizes, newline included"),
    ("INPUT_FRAGMENTS", "", "client write sizes (default: by scenario)"),
    (
        "COMPLETION",
        Completion.FIRE_AND_FORGET,
        f"ticket or fire_and_forget (the harness's default is {defaults.COMPLETION}; the"
        " published comparisons use fire_and_forget)",
    ),
    ("WORKER_THREADS", str(defaults.WORKER_THREADS), "event-loop processes"),
    ("RUNS", "3", "runs per cell"),
    ("ROUTE_FRAMES", str(defaults.ROUTE_FRAMES), "route frames per connection"),
    (
        "TUNNEL_BYTES",
        "262144",
        f"tunnel bytes per connection (the harness's default is {defaults.TUNNEL_BYTES}:"
        " smaller here, so that the matrix ends in minutes on 2 cores)",
    ),
    ("READ_RESERVE", str(defaults.READ_RESERVE), "proxy read size"),
    ("DURATION_SECONDS", "0", ">0: sustained runs"),
    ("LOOP", "", "asyncio or uvloop (default: the harness's)"),
    ("SERVICE_CORES", "", "with DRIVER_CORES: split TCP, e.g. 0"),
    ("DRIVER_CORES", "", "e.g. 1"),
    (
        "RESULTS_DIR",
        "",
        "a folder, or a new one in an existing folder (default: bench/results of the"
        " clone, else of the current folder); checked before any run",
    ),
)
DEFAULTS: dict[str, str] = {name: default for name, default, _meaning in SETTINGS}

#: The rest of ``--help``, after the settings.
NOTES = """\
A frame size maps to --frame-len size - 1 (the frame plus its newline is size
bytes); sizes outside the harness's 17 bytes to 1 MiB + 1 are refused before
any run. When a frame (plus newline) is larger than the default write budget
(2 * READ_RESERVE), the cell raises --write-pending-bytes to the frame size so
the handoff can queue one frame.

Cells of one shape run interleaved per run index (run 1 of every
implementation, then run 2, ...). Output: <RESULTS_DIR>/matrix_<timestamp>/
with one folder per cell (run files, runs.csv, summary.csv), matrix.csv (one
row per cell: mean and sample stdev of the key metrics), matrix.md (the table,
with each cell's ns/B relative to handoff in the same shape, and the plots),
and per scenario two PNGs: ratio_heatmap_<scenario>.png (each implementation's
ns/B over handoff's, connections x frame size; blue below 1.00x, red above)
and ns_per_byte_<scenario>.png (ns/B against frame size, one line per
implementation, one panel per connection count). Without handoff the ratios
are to the first implementation.

While it runs: a progress bar with elapsed time and ETA, and each cell's
result printed above it as the cell finishes (without a terminal, one line per
run instead of the bar). At the end, a table sized to the terminal (without
one: its natural width, or COLUMNS).

An upper-case variable close to a setting's name (CONECTIONS, RUN) is not one:
it is named in a warning on stderr, and the setting keeps its value."""

#: How alike a variable's name must be to a setting's to be warned about (difflib's
#: ratio: CONECTIONS/CONNECTIONS is 0.95, RUN/RUNS 0.86, SSH_CONNECTION/CONNECTIONS 0.8).
CLOSE_NAME = 0.85


def build_parser(prog: str) -> OneLineParser:
    """``--help`` (the settings and :data:`NOTES`) and ``--version``; no other argument."""
    width = max(len(name) for name, _default, _meaning in SETTINGS) + 2
    shown = max(len(default or "-") for _name, default, _meaning in SETTINGS) + 2
    rows = []
    for name, default, meaning in SETTINGS:
        lines = textwrap.wrap(meaning, 78 - 2 - width - shown) or [""]
        rows.append(f"  {name:<{width}}{default or '-':<{shown}}{lines[0]}")
        rows += [" " * (2 + width + shown) + line for line in lines[1:]]
    header = f"  {'variable':<{width}}{'default':<{shown}}meaning"
    return OneLineParser(
        prog=prog,
        description=(
            "A decision matrix: every implementation over scenario x connections x frame\n"
            "size, each cell's runs interleaved, with tables and plots. It takes no\n"
            "arguments: it is configured by environment variables (defaults scaled to\n"
            "a 2-core machine)."
        ),
        epilog="environment variables:\n" + "\n".join([header, *rows]) + "\n\n" + NOTES,
    )


def unknown_settings(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(variable, setting)`` for each upper-case variable that looks like a setting's
    name but is none (a misspelling the matrix would otherwise ignore)."""
    found = []
    for name in sorted(environ):
        if name in DEFAULTS or name != name.upper() or not any(c.isalpha() for c in name):
            continue
        close = difflib.get_close_matches(name, list(DEFAULTS), n=1, cutoff=CLOSE_NAME)
        if close:
            found.append((name, close[0]))
    return found


KEY_METRICS = (
    "mib_per_sec",
    "streams_per_sec",
    "cpu_avg_cores",
    "cpu_ns_per_byte",
    "latency_p50_micros",
    "latency_p99_micros",
    "max_rss_bytes",
)
SERVICE_METRICS = (
    "service_mib_per_sec",
    "service_cpu_avg_cores",
    "service_cpu_ns_per_byte",
    "service_max_rss_bytes",
)


@dataclass
class Cell:
    implementation: str
    scenario: str
    connections: int
    frame_size: int
    frame_len: int
    input_fragment: int | None
    write_pending_bytes: int | None
    path: Path
    rows: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def name(self) -> str:
        frag = f"_i{self.input_fragment}" if self.input_fragment else ""
        return f"{self.implementation}_{self.scenario}_c{self.connections}_f{self.frame_size}{frag}"


def env(name: str, environ: Mapping[str, str]) -> str:
    return environ.get(name, "").strip() or DEFAULTS[name]


def int_list(
    name: str, environ: Mapping[str, str], low: int = 1, high: int | None = None
) -> list[int]:
    """Whole numbers, space separated; ``high`` bounds what the harness would not check first."""
    values = []
    for word in env(name, environ).split():
        # 18 digits: int() refuses very long digit strings with a ValueError of its own.
        if not re.fullmatch(r"\d{1,18}", word) or int(word) < low:
            raise UsageError(f"{name}: expected integers >= {low}, got {word[:40]!r}")
        if high is not None and int(word) > high:
            raise UsageError(f"{name}: at most {high}, got {word}")
        values.append(int(word))
    return values


def one_int(name: str, environ: Mapping[str, str], low: int = 1, high: int | None = None) -> int:
    values = int_list(name, environ, low, high)
    if len(values) != 1:
        raise UsageError(f"{name}: expected one integer, got {env(name, environ)!r}")
    return values[0]


def choice_list(name: str, environ: Mapping[str, str], choices: Sequence[str]) -> list[str]:
    words = env(name, environ).split()
    for word in words:
        if word not in choices:
            raise UsageError(f"{name}: {word!r} is not one of {', '.join(choices)}")
    if not words:
        raise UsageError(f"{name} is empty")
    return list(dict.fromkeys(words))


@dataclass
class MatrixConfig:
    plan: Plan
    implementations: list[Implementation]
    scenarios: list[Scenario]
    connections: list[int]
    frame_sizes: list[int]
    input_fragments: list[int | None]
    read_reserve: int


def make_config(environ: Mapping[str, str], python: str) -> MatrixConfig:
    transport = choice_list("TRANSPORT", environ, tuple(Transport))
    if len(transport) != 1:
        raise UsageError("TRANSPORT: expected one of duplex, tcp")
    completion = choice_list("COMPLETION", environ, tuple(Completion))
    if len(completion) != 1:
        raise UsageError("COMPLETION: expected one of ticket, fire_and_forget")
    loop = env("LOOP", environ)
    if loop and loop not in tuple(Loop):
        raise UsageError(f"LOOP: {loop!r} is not one of {', '.join(Loop)}")
    require_loop(loop or None, "LOOP")
    service_cores = env("SERVICE_CORES", environ)
    driver_cores = env("DRIVER_CORES", environ)
    if bool(service_cores) != bool(driver_cores):
        raise UsageError("SERVICE_CORES and DRIVER_CORES go together (split TCP)")
    split = bool(service_cores)
    if split:
        if transport[0] != Transport.TCP:
            raise UsageError("SERVICE_CORES/DRIVER_CORES need TRANSPORT=tcp")
        try:
            service_cores, driver_cores = cpuset(service_cores), cpuset(driver_cores)
        except Exception as exc:
            raise UsageError(f"SERVICE_CORES/DRIVER_CORES: {exc}") from exc
    duration = env("DURATION_SECONDS", environ)
    try:
        duration_value = float(duration)
    except ValueError:
        duration_value = -1.0
    if not 0 <= duration_value < float("inf"):
        raise UsageError(f"DURATION_SECONDS: expected a non-negative number, got {duration!r}")
    read_reserve = one_int("READ_RESERVE", environ)
    shape = {
        "--worker-threads": str(one_int("WORKER_THREADS", environ)),
        "--route-frames": str(one_int("ROUTE_FRAMES", environ)),
        "--tunnel-bytes": str(one_int("TUNNEL_BYTES", environ, 0)),
        "--read-reserve": str(read_reserve),
    }
    if duration_value > 0:
        shape["--duration-seconds"] = duration
    frags: list[int | None] = list(int_list("INPUT_FRAGMENTS", environ)) or [None]
    frame_sizes = int_list("FRAME_SIZES", environ)
    for size in frame_sizes:
        if not MIN_FRAME_LEN + 1 <= size <= MAX_FRAME_LEN + 1:
            raise UsageError(
                f"FRAME_SIZES: {size} is outside the harness's {MIN_FRAME_LEN + 1} to"
                f" {MAX_FRAME_LEN + 1} bytes (a frame plus its newline: --frame-len"
                f" {MIN_FRAME_LEN} to {MAX_FRAME_LEN})"
            )
    results = env("RESULTS_DIR", environ)
    plan = Plan(
        transport=Transport(transport[0]),
        implementations=[],
        scenarios=[],
        completion=Completion(completion[0]),
        runs=one_int("RUNS", environ, high=MAX_RUNS),
        shape=shape,
        loop=Loop(loop) if loop else None,
        split=split,
        service_cores=service_cores or None,
        driver_cores=driver_cores or None,
        service_addr=None,
        sink_addr=None,
        idle_timeout_millis=defaults.IDLE_TIMEOUT_MILLIS,
        run_timeout_seconds=max(600.0, 3.0 * duration_value + 300.0),
        results_dir=choose_results_dir(Path(results) if results else None, "RESULTS_DIR")[0],
        python=python,
    )
    return MatrixConfig(
        plan=plan,
        # In the one order of every list (names.Implementation), whatever order they came in.
        implementations=sorted(
            {
                impl
                for word in choice_list("IMPLEMENTATIONS", environ, (*Implementation, "all"))
                for impl in (
                    implementations_for(transport[0]) if word == "all" else [Implementation(word)]
                )
            },
            key=list(Implementation).index,
        ),
        scenarios=[Scenario(word) for word in choice_list("SCENARIOS", environ, tuple(Scenario))],
        connections=int_list("CONNECTIONS", environ),
        frame_sizes=frame_sizes,
        input_fragments=frags,
        read_reserve=read_reserve,
    )


def build_cells(cfg: MatrixConfig, base: Path) -> list[list[Cell]]:
    """Groups of cells that share a shape (one cell per implementation)."""
    groups: list[list[Cell]] = []
    for scenario in cfg.scenarios:
        for connections in cfg.connections:
            for frame_size in cfg.frame_sizes:
                frame_len = frame_size - 1  # make_config refused sizes the harness cannot run
                budget = frame_len + 1 if frame_len + 1 > 2 * cfg.read_reserve else None
                for frag in cfg.input_fragments:
                    group = []
                    for impl in cfg.implementations:
                        cell = Cell(
                            impl, scenario, connections, frame_size, frame_len, frag, budget, base
                        )
                        cell.path = base / cell.name
                        group.append(cell)
                    groups.append(group)
    return groups


def cell_plan(cfg: MatrixConfig, cell: Cell) -> Plan:
    shape = dict(cfg.plan.shape)
    shape["--connections"] = str(cell.connections)
    shape["--frame-len"] = str(cell.frame_len)
    if cell.input_fragment is not None:
        shape["--input-fragment"] = str(cell.input_fragment)
    if cell.write_pending_bytes is not None:
        shape["--write-pending-bytes"] = str(cell.write_pending_bytes)
    return dataclasses.replace(cfg.plan, shape=shape)


def metric_names(split: bool) -> list[str]:
    return [*KEY_METRICS, *(SERVICE_METRICS if split else ())]


def write_matrix_csv(path: Path, cells: Sequence[Cell], split: bool) -> None:
    metrics = metric_names(split)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "implementation",
                "scenario",
                "connections",
                "frame_size",
                "frame_len",
                "input_fragment",
                "runs",
                *[f"{m}_{s}" for m in metrics for s in ("mean", "stdev")],
                "path",
            ]
        )
        for cell in cells:
            values: list[str] = []
            for metric in metrics:
                stat = cell.stats.get(metric)
                values += (
                    [format_number(stat.mean), format_number(stat.stdev)] if stat else ["", ""]
                )
            writer.writerow(
                [
                    cell.implementation,
                    cell.scenario,
                    cell.connections,
                    cell.frame_size,
                    cell.frame_len,
                    cell.input_fragment or "",
                    len(cell.rows),
                    *values,
                    cell.path.name,
                ]
            )


def ns_metric(split: bool) -> str:
    """The ns/B the matrix compares: the service's own in split runs, else the whole process."""
    return "service_cpu_ns_per_byte" if split else "cpu_ns_per_byte"


def ns_label(split: bool) -> str:
    return "service CPU ns/B" if split else "CPU ns/B (whole process)"


def reference_of(implementations: Sequence[str]) -> str:
    """What the ratios are relative to: ``handoff`` when it ran, else the first implementation."""
    if Implementation.HANDOFF in implementations:
        return Implementation.HANDOFF
    return implementations[0] if implementations else ""


def shape_of(cell: Cell) -> tuple[str, int, int, int | None]:
    """The cells that compare with each other share this (one per implementation)."""
    return (cell.scenario, cell.connections, cell.frame_size, cell.input_fragment)


def ns_ratios(cells: Sequence[Cell], split: bool, reference: str) -> dict[str, float | None]:
    """Per cell name: its ns/B divided by ``reference``'s in the same shape (``None``: n/a)."""
    metric = ns_metric(split)
    refs = {shape_of(c): c.stats.get(metric) for c in cells if c.implementation == reference}
    return {c.name: ratio(c.stats.get(metric), refs.get(shape_of(c))) for c in cells}


def ratio_grid(
    cells: Sequence[Cell],
    implementation: str,
    scenario: str,
    connections: Sequence[int],
    frame_sizes: Sequence[int],
    *,
    split: bool,
    reference: str,
    input_fragment: int | None = None,
) -> list[list[float | None]]:
    """``grid[i][j]``: ``implementation``'s ns/B over ``reference``'s at ``connections[i]``
    and ``frame_sizes[j]``; ``None`` where either cell is missing or has no ns/B."""
    metric = ns_metric(split)
    stats = {
        (c.implementation, c.connections, c.frame_size): c.stats.get(metric)
        for c in cells
        if c.scenario == scenario and c.input_fragment == input_fragment
    }
    return [
        [
            ratio(stats.get((implementation, conns, size)), stats.get((reference, conns, size)))
            for size in frame_sizes
        ]
        for conns in connections
    ]


def table(
    cells: Sequence[Cell], split: bool, reference: str | None = None
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the matrix table: means, and ns/B relative to ``reference``
    (default: :func:`reference_of` the cells) in the same shape."""
    ref = reference if reference is not None else reference_of([c.implementation for c in cells])
    ratios = ns_ratios(cells, split, ref)
    cores = "service_cpu_avg_cores" if split else "cpu_avg_cores"
    fragments = any(c.input_fragment for c in cells)
    headers = [
        "scenario",
        "conns",
        "frame",
        *(["client write"] if fragments else []),
        "implementation",
        "MiB/s",
        "service ns/B" if split else "ns/B (whole process)",
        f"ns/B vs {ref}",
        "service cores" if split else "CPU cores",
        "p99 ms",
        "max RSS MiB",
    ]
    rows = []
    for cell in cells:

        def fmt(key: str, scale: float = 1.0, stats: Mapping[str, Stat] = cell.stats) -> str:
            stat = stats.get(key)
            return format_value(None if stat is None else stat.mean * scale)

        rows.append(
            [
                cell.scenario,
                str(cell.connections),
                format_bytes(cell.frame_size),
                *([format_bytes(cell.input_fragment) if cell.input_fragment else ""] * fragments),
                cell.implementation,
                fmt("mib_per_sec"),
                fmt(ns_metric(split)),
                format_ratio(ratios.get(cell.name)),
                fmt(cores),
                fmt("latency_p99_micros", 0.001),
                fmt("service_max_rss_bytes" if split else "max_rss_bytes", 1 / (1024 * 1024)),
            ]
        )
    return headers, rows


def matrix_legend(split: bool, reference: str) -> str:
    return (
        f"Higher is better: MiB/s. Lower is better: {ns_label(split)}, CPU cores, p99 latency,"
        f" max RSS, and ns/B vs {reference} (below 1.00x: less CPU per byte than {reference}"
        " in the same cell)."
    )


def group_label(cell: Cell) -> str:
    """A shape in words: ``coalesced, 4 connections, 1 KiB frames``."""
    words = [
        cell.scenario,
        plural(cell.connections, "connection"),
        f"{format_bytes(cell.frame_size)} frames",
    ]
    if cell.input_fragment:
        words.append(f"{format_bytes(cell.input_fragment)} client writes")
    return ", ".join(words)


def matrix_table(cells: Sequence[Cell], split: bool, title: str, caption: str = "") -> GroupedTable:
    """The printed table: one group per shape, so it needs no shape columns and fits 80 columns."""
    headers, rows = table(cells, split)
    first = headers.index("implementation")
    return GroupedTable(
        headers[first:],
        [row[first:] for row in rows],
        title=title,
        caption=caption,
        groups=[group_label(cell) for cell in cells],
    )


def cell_result_line(cell: Cell, split: bool, reference: str, ratio_value: float | None) -> str:
    """One finished cell, printed above the progress bar."""
    stats = cell.stats
    mib = stats.get("mib_per_sec")
    ns = stats.get(ns_metric(split))
    p99 = stats.get("latency_p99_micros")
    parts = [
        f"{format_value(mib.mean if mib else None)} MiB/s",
        f"{format_value(ns.mean if ns else None)} ns/B"
        + (
            f" ({format_ratio(ratio_value)} {reference})"
            if ratio_value is not None and cell.implementation != reference
            else ""
        ),
        f"p99 {format_value(p99.mean / 1000 if p99 else None)} ms",
    ]
    return f"done {group_label(cell)}: {cell.implementation}: {', '.join(parts)}"


def first_row(cells: Sequence[Cell]) -> dict[str, str]:
    return next((dict(c.rows[0]) for c in cells if c.rows), {})


def matrix_title(cells: Sequence[Cell], cfg: MatrixConfig) -> tuple[str, str]:
    """(headline, workload): transport and mode, loop, completion; what every cell runs."""
    plan = cfg.plan
    row = first_row(cells) or {
        "transport": plan.transport,
        "completion": plan.completion,
        **({"loop": plan.loop} if plan.loop else {}),
    }
    if plan.split:
        row = {**row, "role": row.get("role") or "tcp-driver"}
    headline = run_headline(row)
    if plan.split:
        headline += f" (service cores {plan.service_cores}, driver cores {plan.driver_cores})"
    shape_row = {
        "route_frames": plan.shape.get("--route-frames", ""),
        "tunnel_bytes": plan.shape.get("--tunnel-bytes", ""),
        "worker_threads": plan.shape.get("--worker-threads", ""),
        "duration_seconds_target": plan.shape.get("--duration-seconds", ""),
    }
    workload = run_shape(shape_row, per_connection_only=True)
    runs = f"{plural(plan.runs, 'run')} per cell"
    return headline, f"{workload}; {runs}" if workload else runs


def axes_text(cfg: MatrixConfig) -> str:
    """What the matrix varies, in words."""
    return (
        f"connections {', '.join(str(c) for c in cfg.connections)}; frame sizes"
        f" {', '.join(format_bytes(s) for s in cfg.frame_sizes)} (a frame's size includes"
        " its newline)"
    )


def write_matrix_md(
    path: Path, cells: Sequence[Cell], cfg: MatrixConfig, plots: Sequence[Path] = ()
) -> None:
    headers, rows = table(cells, cfg.plan.split)
    plan = cfg.plan
    headline, workload = matrix_title(cells, cfg)
    reference = reference_of([c.implementation for c in cells] or cfg.implementations)
    lines = [
        f"# Stream matrix: {headline}",
        "",
        f"Run: `{path.parent.name}`",
        "",
        f"Workload: {workload}; {axes_text(cfg)}.",
        "",
        f"Harness settings: `transport={plan.transport} completion={plan.completion}"
        f" runs={plan.runs} "
        + " ".join(f"{k[2:]}={v}" for k, v in plan.shape.items())
        + (
            f" service_cores={plan.service_cores} driver_cores={plan.driver_cores}"
            if plan.split
            else ""
        )
        + "`",
        "",
        "Means over the runs; matrix.csv has the sample stdevs. "
        + matrix_legend(plan.split, reference),
        "",
        "| " + " | ".join(headers) + " |",
        "|"
        + "|".join("---" if h in ("scenario", "implementation") else "---:" for h in headers)
        + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if plots:
        lines += ["", "## Plots", ""]
        for plot in plots:
            lines += [f"![{plot.stem.replace('_', ' ')}]({plot.name})", ""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


# -- plots ---------------------------------------------------------------------------


def _suffix(scenario: str, fragment: int | None) -> str:
    return f"{scenario}_i{fragment}" if fragment else scenario


def write_plots(
    directory: Path,
    cells: Sequence[Cell],
    *,
    split: bool,
    headline: str,
    workload: str,
    implementations: Sequence[str] = (),
    connections: Sequence[int] = (),
    frame_sizes: Sequence[int] = (),
) -> list[Path]:
    """Per scenario (and client write size): ``ratio_heatmap_<scenario>.png`` (each
    implementation's ns/B relative to the reference over connections x frame size; none
    when only the reference ran) and ``ns_per_byte_<scenario>.png`` (ns/B against frame
    size, one line per implementation, one panel per connection count).

    The axes default to what the cells have. Without matplotlib: no plots.
    """
    try:
        from bytes_handoff_bench.tools import plots
    except ImportError:
        return []
    impls = list(dict.fromkeys([*implementations, *(c.implementation for c in cells)]))
    conns = list(connections) or sorted({c.connections for c in cells})
    sizes = list(frame_sizes) or sorted({c.frame_size for c in cells})
    reference = reference_of(impls)
    written: list[Path] = []
    shapes = list(dict.fromkeys((c.scenario, c.input_fragment) for c in cells))
    for scenario, fragment in shapes:
        label = scenario + (f", {format_bytes(fragment)} client writes" if fragment else "")
        others = [i for i in impls if i != reference]
        if others:
            grids = {
                impl: ratio_grid(
                    cells,
                    impl,
                    scenario,
                    conns,
                    sizes,
                    split=split,
                    reference=reference,
                    input_fragment=fragment,
                )
                for impl in others
            }
            heading = [
                f"{ns_label(split)} relative to {reference}, {label}: lower is better",
                headline,
                workload,
            ]
            fig = heatmap_figure(grids, conns, sizes, reference, heading, split)
            path = directory / f"ratio_heatmap_{_suffix(scenario, fragment)}.png"
            written.append(plots.save(fig, path))
        series = {
            impl: {
                (c.connections, c.frame_size): c.stats.get(ns_metric(split))
                for c in cells
                if c.implementation == impl
                and c.scenario == scenario
                and c.input_fragment == fragment
            }
            for impl in impls
        }
        heading = [f"{ns_label(split)} against frame size, {label}: lower is better", headline]
        fig = lines_figure(series, conns, sizes, impls, [*heading, workload], split, reference)
        path = directory / f"ns_per_byte_{_suffix(scenario, fragment)}.png"
        written.append(plots.save(fig, path))
    return written


#: The frame-size axis of both plots.
FRAME_SIZE_AXIS = "frame size (bytes, incl. newline)"


def ns_axis_label(split: bool) -> str:
    """The ns/B axis, with its unit."""
    return (
        "service CPU time per byte (ns/B)" if split else "CPU time per byte (ns/B, whole process)"
    )


def heatmap_figure(
    grids: Mapping[str, list[list[float | None]]],
    connections: Sequence[int],
    frame_sizes: Sequence[int],
    reference: str,
    heading: Sequence[str],
    split: bool,
) -> Figure:
    """One panel per implementation: its ns/B over ``reference``'s, cell by cell.

    A diverging scale, log-symmetric about 1.00x and shared by the panels: blue
    cells cost less CPU per byte than ``reference``, red ones more; grey is n/a.
    """
    from bytes_handoff_bench.tools import plots

    panels = [
        (plots.Panel(f"{impl} ÷ {reference}", FRAME_SIZE_AXIS, "connections"), grid)
        for impl, grid in grids.items()
    ]
    colorbar = (
        f"{'service ' if split else ''}ns/B relative to {reference}\n(below 1.00x: less CPU"
        f" per byte than {reference})"
    )
    return plots.ratio_heatmaps(
        panels,
        [format_bytes(s) for s in frame_sizes],
        [str(c) for c in connections],
        colorbar,
        heading,
    )


def lines_figure(
    series: Mapping[str, Mapping[tuple[int, int], Stat | None]],
    connections: Sequence[int],
    frame_sizes: Sequence[int],
    implementations: Sequence[str],
    heading: Sequence[str],
    split: bool,
    reference: str = "",
) -> Figure:
    """ns/B against frame size: one panel per connection count, one line per implementation.

    A log-2 frame-size axis; a log ns/B axis where the values span more than 20x.
    Error bars (sample stdev) where a cell had more than one run. ``reference``'s
    line is drawn thicker, on top.
    """
    from bytes_handoff_bench.tools import plots

    panels = []
    for conns in connections:
        lines = []
        for impl in implementations:
            points = [
                (size, stat)
                for size in frame_sizes
                if (stat := series.get(impl, {}).get((conns, size))) is not None
            ]
            if points:
                lines.append(
                    plots.Series(
                        impl,
                        plots.implementation_color(impl),
                        [size for size, _ in points],
                        [stat.mean for _, stat in points],
                        [0.0 if single_run(stat) else stat.stdev for _, stat in points],
                        bold=impl == reference,
                    )
                )
        panel = plots.Panel(plural(conns, "connection"), FRAME_SIZE_AXIS, ns_axis_label(split))
        panels.append(plots.LinePanel(panel, lines))
    if any(e for p in panels for s in p.series for e in s.errors):
        heading = [*heading[:-1], heading[-1] + ", error bars: sample stdev"]
    width = max(3.8, 0.7 * len(frame_sizes) + 2.4)
    return plots.line_chart(
        panels,
        heading,
        ncols=min(3, len(connections)),
        panel_size=(width, 3.3),
        byte_sizes=frame_sizes,
        dodge=True,
        legend_title="implementation",
    )


def progress_columns() -> list[ProgressColumn]:
    """The progress line: current cell and run, bar, runs done, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, "run-stream-matrix.sh")
    # rich draws the progress: checked before any run.
    return run_main(prog, lambda: run(prog, args), bench_extra=("rich",))


def run(prog: str, argv: Sequence[str]) -> int:
    """Check every cell (``UsageError``, ``RunError``), then run the matrix."""
    _ns, extra = build_parser(prog).parse_known_args(argv)
    if extra:
        raise UsageError(
            f"takes no arguments, got {extra[0][:40]!r} (configure with environment variables;"
            " see --help)"
        )
    misspelt = unknown_settings(os.environ)
    if misspelt:
        sys.stdout.flush()
        print(
            f"{prog}: warning: not a setting, ignored: "
            + ", ".join(f"{name} (did you mean {setting}?)" for name, setting in misspelt),
            file=sys.stderr,
            flush=True,
        )
    python = os.environ.get("PYTHON") or sys.executable
    cfg = make_config(os.environ, python)  # RESULTS_DIR checked too
    probe = cell_plan(cfg, build_cells(cfg, Path("."))[0][0])
    check_cells(
        probe,
        [
            (
                f"cell {cell.name}: ",
                cell_plan(cfg, cell).harness_args(cell.implementation, cell.scenario),
            )
            for cell in (c for group in build_cells(cfg, Path(".")) for c in group)
        ],
    )
    supported = probe.supported_flags

    from rich.console import Console
    from rich.progress import Progress

    err = Console(stderr=True)
    raise_on_termination()
    try:
        base = new_run_dir(cfg.plan.results_dir, "matrix")
    except (RunError, BenchError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    groups = build_cells(cfg, base)
    cells = [c for g in groups for c in g]
    plan = cfg.plan
    err.print(
        f"matrix={display_path(base)} transport={plan.transport} cells={len(cells)} "
        f"runs={plan.runs} "
        f"implementations=[{' '.join(cfg.implementations)}] scenarios=[{' '.join(cfg.scenarios)}] "
        f"connections={cfg.connections} frame_sizes={cfg.frame_sizes}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    failure: str | None = None
    done_runs = 0
    ns_name = ns_metric(plan.split)
    reference = reference_of(cfg.implementations)
    # The ETA averages over the whole matrix so far (rich's default is the last 30 s,
    # which holds no finished run at all once a run takes longer).
    with Progress(
        *progress_columns(), console=err, transient=False, speed_estimate_period=7 * 24 * 3600
    ) as progress:
        task = progress.add_task("matrix", total=len(cells) * plan.runs)
        try:
            for group in groups:
                for n in range(1, plan.runs + 1):
                    for cell in group:
                        progress.update(task, description=f"{cell.name} run {n}/{plan.runs}")
                        cplan = cell_plan(cfg, cell)
                        cplan.supported_flags = supported
                        row = run_cell_once(cplan, cell.implementation, cell.scenario, cell.path, n)
                        cell.rows.append(row)
                        progress.advance(task)
                        done_runs += 1
                        if n == plan.runs:
                            cell.stats = write_cell_artifacts(cell.path, cell.rows)
                            finished = [c for c in group if c.stats]
                            ratios = ns_ratios(finished, plan.split, reference)
                            # Printed above the live bar (or in order, without a terminal).
                            progress.console.print(
                                cell_result_line(
                                    cell, plan.split, reference, ratios.get(cell.name)
                                ),
                                highlight=False,
                                markup=False,
                                soft_wrap=True,
                            )
                        elif not err.is_terminal:
                            # No live bar without a terminal (CI logs): one line per run.
                            err.print(
                                f"[{done_runs}/{len(cells) * plan.runs}] {cell.name} run {n}: "
                                f"mib_per_sec={row.get('mib_per_sec', '?')} "
                                f"{ns_name}={row.get(ns_name, '?')}",
                                highlight=False,
                                markup=False,
                                soft_wrap=True,
                            )
        except RunError as exc:
            failure = str(exc)
        except KeyboardInterrupt:
            failure = "interrupted"
    done = [c for c in cells if c.stats]
    headline, workload = matrix_title(done, cfg)
    plots = (
        write_plots(
            base,
            done,
            split=plan.split,
            headline=headline,
            workload=workload,
            implementations=cfg.implementations,
            connections=cfg.connections,
            frame_sizes=cfg.frame_sizes,
        )
        if done
        else []
    )
    write_matrix_csv(base / "matrix.csv", done, plan.split)
    write_matrix_md(base / "matrix.md", done, cfg, plots)
    out = matrix_table(
        done,
        plan.split,
        title=f"stream matrix: {headline}",
        caption=f"{workload}. Means over the runs. {matrix_legend(plan.split, reference)}",
    )
    print_out(out)
    csv_path, md_path = display_path(base / "matrix.csv"), display_path(base / "matrix.md")
    print(f"matrix_csv={csv_path} matrix_md={md_path}")
    if plots:
        print("plots=" + " ".join(display_path(p) for p in plots))
    if failure is not None:
        print(f"{prog}: error: {failure}", file=sys.stderr)
        return 130 if failure == "interrupted" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
