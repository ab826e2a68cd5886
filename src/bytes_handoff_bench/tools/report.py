"""Comparison table and chart: implementations side by side per scenario.

Columns (mean ± sample stdev over the runs; ``± n/a`` after a single run):

* ``driver MiB/s`` (split runs) or ``MiB/s`` (integrated): end-to-end
  throughput; higher is better;
* ``service MiB/s``, ``service CPU cores``, ``service ns/B``: the proxy
  service's own figures in split runs. Integrated runs have no separate
  service, so they show ``CPU cores`` and ``ns/B`` of the whole process
  (client, proxy and sink), marked ``(whole process)``, and no second MiB/s
  column (it would repeat the first); CPU figures are lower-is-better;
* ``driver p99 ms`` / ``p99 ms``: per-stream latency p99 in milliseconds;
  lower is better;
* ``ns/B vs <first>``: ns/B relative to the first implementation (``handoff``
  when it ran): below ``1.00x`` costs less CPU per byte than it;
* ``ns/B vs floor``: ns/B relative to ``floor``, the cheapest service the loop
  allows (a bare ``create_server`` copy with no harness code on its hot path),
  when it ran: how far each implementation is from it. ``raw_protocol`` moves
  the bytes as ``floor`` does behind the harness's own per-stream plumbing, so
  its row is what the harness itself costs (:func:`harness_line` says so).

Every ratio is the geometric mean of the **paired per-round ratios** (round
*k* of each implementation ran back to back: the runs are interleaved), with
its 95 % confidence interval, a t-interval on the log ratios
(:mod:`~bytes_handoff_bench.tools.intervals` says why): ``1.13x [1.05, 1.21]``;
``[n/a]`` after a single round. An interval that contains ``1.00x`` cannot
tell the two apart.

Numbers are formatted for people (:func:`~.formats.format_value`): fixed decimals
chosen by magnitude, thousands separators from 1,000 up, never an exponent; the
chart is drawn in the tools' one style (:mod:`.plots`). The CSV
files keep the full values. Titles come from the runs themselves
(:func:`run_headline`, :func:`run_shape`): transport and mode, loop,
completion, and the workload's shape.

As a program, ``python -m bytes_handoff_bench.tools.report DIR`` rebuilds
``comparison.md`` and ``comparison.png`` in DIR from the ``summary.csv`` and
``runs.csv`` files below it, and prints the table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bytes_handoff_bench.names import FLOOR, REPORT_ORDER, Implementation, Scenario
from bytes_handoff_bench.tools.artifacts import (
    Stat,
    fell_behind_in_folder,
    open_loop_line,
    read_runs_csv,
    read_summary_csv,
)
from bytes_handoff_bench.tools.formats import format_bytes, format_ratio, format_tick, format_value
from bytes_handoff_bench.tools.intervals import CONFIDENCE, Estimate, format_interval, paired_ratio

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.measure import Measurement
    from rich.table import Table


@dataclass(frozen=True)
class CellSummary:
    implementation: str
    scenario: str
    stats: Mapping[str, Stat]
    path: Path
    #: The ``runs.csv`` rows (per-round figures for the paired ratios); empty: read from
    #: ``path/runs.csv`` when there is one.
    rows: Sequence[Mapping[str, str]] = ()


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    #: The value shown is the stored one times this (µs -> ms: 0.001).
    scale: float = 1.0
    #: ``True``: higher is better; ``False``: lower is better; ``None``: neither.
    higher_is_better: bool | None = None


def is_split(cells: Sequence[CellSummary]) -> bool:
    return any("service_cpu_ns_per_byte" in c.stats for c in cells)


def columns(split: bool) -> list[Column]:
    """The metric columns; no two share a key (integrated runs have one MiB/s)."""
    if split:
        return [
            Column("driver MiB/s", "mib_per_sec", higher_is_better=True),
            Column("service MiB/s", "service_mib_per_sec", higher_is_better=True),
            Column("service CPU cores", "service_cpu_avg_cores", higher_is_better=False),
            Column("service ns/B", "service_cpu_ns_per_byte", higher_is_better=False),
            Column("driver p99 ms", "latency_p99_micros", 0.001, higher_is_better=False),
        ]
    return [
        Column("MiB/s", "mib_per_sec", higher_is_better=True),
        Column("CPU cores (whole process)", "cpu_avg_cores", higher_is_better=False),
        Column("ns/B (whole process)", "cpu_ns_per_byte", higher_is_better=False),
        Column("p99 ms", "latency_p99_micros", 0.001, higher_is_better=False),
    ]


def ns_key(split: bool) -> str:
    return "service_cpu_ns_per_byte" if split else "cpu_ns_per_byte"


def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(values))
    rank = {name: i for i, name in enumerate(preferred)}
    return sorted(unique, key=lambda v: (rank.get(v, len(rank)), unique.index(v)))


# -- numbers and words for people ----------------------------------------------------


def single_run(stat: Stat) -> bool:
    """Whether ``stat`` comes from one run (so it has no sample stdev).

    ``n == 0`` means the count is unknown (a ``summary.csv`` read alone); there a
    stdev of 0 is what ``summary.csv`` writes for one run.
    """
    return stat.n == 1 or (stat.n == 0 and stat.stdev == 0)


def format_stat(stat: Stat | None, scale: float = 1.0) -> str:
    """``mean ± stdev`` formatted for people; ``mean ± n/a`` after one run; ``n/a`` if missing.

    The stdev takes the mean's decimals, or its own when those would round it to 0.
    """
    if stat is None:
        return "n/a"
    mean = format_value(stat.mean * scale)
    if single_run(stat):
        return f"{mean} ± n/a"
    places = len(mean.partition(".")[2])
    stdev = stat.stdev * scale
    if stdev and round(stdev, places) == 0:
        places = -math.floor(math.log10(stdev))  # one significant digit: below the mean's
    return f"{mean} ± {format_value(stdev, places)}"


def ratio(value: Stat | None, reference: Stat | None) -> float | None:
    """``value.mean / reference.mean``, or ``None`` when either is missing or the reference 0."""
    if value is None or reference is None or not reference.mean:
        return None
    return value.mean / reference.mean


def round_values(cell: CellSummary, key: str) -> dict[str, float]:
    """``key`` per round of ``cell``: ``{run index: value}`` (the rows' ``run``, else their
    position), from its rows or its ``runs.csv``; rounds without the figure are left out."""
    rows = cell.rows
    if not rows and (cell.path / "runs.csv").is_file():
        rows = read_runs_csv(cell.path / "runs.csv")
    out: dict[str, float] = {}
    for index, row in enumerate(rows, start=1):
        try:
            value = float(row.get(key, "") or "nan")
        except ValueError:
            continue
        if math.isfinite(value):
            out[row.get("run") or str(index)] = value
    return out


def ratio_estimate(cell: CellSummary, reference: CellSummary, key: str) -> Estimate | None:
    """``cell``'s ``key`` against ``reference``'s: the paired per-round ratio and its interval
    (:func:`~bytes_handoff_bench.tools.intervals.paired_ratio`). Without per-round figures
    both have, the ratio of the means, with no interval; ``None`` without those either."""
    estimate = paired_ratio(round_values(cell, key), round_values(reference, key))
    if estimate is not None:
        return estimate
    value = ratio(cell.stats.get(key), reference.stats.get(key))
    if value is None or value <= 0:
        return None
    return Estimate(value, None, None, 0, math.log(value), None, True)


def format_ratio_interval(estimate: Estimate | None, same: bool = False) -> str:
    """``1.13x [1.05, 1.21]``; ``1.13x [n/a]`` without an interval; ``1.00x`` for the
    reference itself (``same``); ``n/a`` without a ratio."""
    if same:
        return format_ratio(1.0)
    if estimate is None:
        return format_ratio(None)
    return f"{format_ratio(estimate.value)} {format_interval(estimate)}"


def floor_name(cells: Sequence[CellSummary]) -> str | None:
    """``floor`` when it ran and is not already the first implementation (whose column every
    table has), else ``None``: no second column against it."""
    names = {c.implementation for c in cells}
    return FLOOR if FLOOR in names and reference_name(cells) != FLOOR else None


def harness_line(cells: Sequence[CellSummary]) -> str:
    """What the harness itself costs: ``raw_protocol`` against ``floor`` per scenario, when
    both ran (the same copy, with and without the harness's per-stream plumbing)."""
    raw = Implementation.RAW_PROTOCOL
    by_key = {(c.scenario, c.implementation): c for c in cells}
    key = ns_key(is_split(cells))
    parts = []
    for scenario in _order([c.scenario for c in cells], tuple(Scenario)):
        mine, floor = by_key.get((scenario, raw)), by_key.get((scenario, FLOOR))
        if mine is not None and floor is not None:
            estimate = ratio_estimate(mine, floor, key)
            parts.append(f"{scenario} {format_ratio_interval(estimate)}")
    if not parts:
        return ""
    return (
        f"The harness's own cost: {raw} moves the bytes as {FLOOR} does (one copy, one write"
        " per read) but behind the harness's per-stream plumbing (its accept loop, socket"
        f" connect and supervised task); its ns/B vs {FLOOR}: {', '.join(parts)}."
    )


COMPLETION_WORDS = {"fire_and_forget": "fire-and-forget", "ticket": "ticket per frame"}


def run_headline(row: Mapping[str, str]) -> str:
    """Transport and mode, loop and completion of a run: ``split-process TCP, uvloop, ...``."""
    transport = row.get("transport", "")
    role = row.get("role", "")
    if role.startswith("tcp-"):
        mode = "split-process TCP"
    elif transport == "tcp":
        mode = "localhost TCP, one process"
    elif transport == "duplex":
        mode = "in-memory duplex, one process"
    else:
        mode = transport or "unknown transport"
    parts = [mode]
    if row.get("tls") == "true":  # --tls: both legs (the run folder's name says the mode)
        version = row.get("tls_version", "")
        parts.append(f"TLS ({version})" if version else "TLS")
    if row.get("loop"):
        parts.append(row["loop"])
    if row.get("completion"):
        parts.append(COMPLETION_WORDS.get(row["completion"], row["completion"]))
    return ", ".join(parts)


def _count(row: Mapping[str, str], key: str) -> int | None:
    text = row.get(key, "").strip()
    return int(text) if text.isdigit() else None


def plural(count: int, word: str) -> str:
    """A count and its noun: ``1 frame``, ``2 frames``, ``2 worker processes``."""
    if count == 1:
        return f"{count:,} {word}"
    ending = "es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s"
    return f"{count:,} {word}{ending}"


def run_shape(row: Mapping[str, str], *, per_connection_only: bool = False) -> str:
    """The workload in words: ``16 connections, each 64 frames of 64 B + 1 MiB tunnel``.

    A frame's size includes its newline (``frame_len + 1``). ``per_connection_only``
    leaves out the connection count and the frame size (a matrix varies them).
    """
    frames = _count(row, "route_frames")
    frame_len = _count(row, "frame_len")
    tunnel = _count(row, "tunnel_bytes")
    per_conn: list[str] = []
    if frames is not None:
        if frame_len is not None and not per_connection_only:
            per_conn.append(f"{plural(frames, 'frame')} of {format_bytes(frame_len + 1)}")
        else:
            per_conn.append(plural(frames, "frame"))
    if tunnel is not None:
        per_conn.append(f"{format_bytes(tunnel)} tunnel")
    workload = " + ".join(per_conn)
    connections = _count(row, "connections")
    if per_connection_only or connections is None:
        text = f"{workload} per connection" if workload else ""
    else:
        text = f"{plural(connections, 'connection')}, each {workload}" if workload else ""
    extras = []
    workers = _count(row, "worker_threads")
    if workers is not None:
        extras.append(plural(workers, "worker process"))
    duration = row.get("duration_seconds_target", "").strip()
    try:
        seconds = float(duration) if duration else 0.0
    except ValueError:
        seconds = 0.0
    if seconds > 0:
        extras.append(f"{format_tick(seconds)} s sustained runs")
    return ", ".join(p for p in [text, *extras] if p)


def legend(cols: Sequence[Column], reference: str, floor: str | None = None) -> str:
    """Which columns are better high and which low, in one line."""
    higher = [c.header for c in cols if c.higher_is_better is True]
    lower = [c.header for c in cols if c.higher_is_better is False]
    parts = []
    if higher:
        parts.append(f"Higher is better: {', '.join(higher)}.")
    if lower:
        parts.append(f"Lower is better: {', '.join(lower)}.")
    if reference:
        parts.append(f"ns/B vs {reference}: below 1.00x costs less CPU per byte than {reference}.")
    if floor:
        parts.append(
            f"ns/B vs {floor}: how far from {floor}, the cheapest service the loop allows (a"
            " bare create_server copy, no harness code on its hot path)."
        )
    if reference or floor:
        parts.append(
            "Ratios: geometric mean of the paired per-round ratios (the runs are interleaved:"
            f" round k of each ran back to back), in brackets its {CONFIDENCE:.0%} confidence"
            " interval (t-interval on the log ratios; [n/a] after one round); an interval"
            " containing 1.00x cannot tell the two apart."
        )
    return " ".join(parts)


def table_rows(cells: Sequence[CellSummary]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Headers and ``(scenario, row)`` pairs, scenarios and implementations ordered."""
    split = is_split(cells)
    cols = columns(split)
    scenarios = _order([c.scenario for c in cells], tuple(Scenario))
    impls = _order([c.implementation for c in cells], REPORT_ORDER)
    by_key = {(c.scenario, c.implementation): c for c in cells}
    base_impl = impls[0] if impls else ""
    floor = floor_name(cells)
    headers = ["scenario", "implementation", *[c.header for c in cols], f"ns/B vs {base_impl}"]
    if floor:
        headers.append(f"ns/B vs {floor}")
    key = ns_key(split)
    rows: list[tuple[str, list[str]]] = []
    for scenario in scenarios:
        base = by_key.get((scenario, base_impl))
        floor_cell = by_key.get((scenario, floor)) if floor else None
        for impl in impls:
            cell = by_key.get((scenario, impl))
            if cell is None:
                continue
            values = [format_stat(cell.stats.get(col.key), col.scale) for col in cols]
            relatives = [
                format_ratio_interval(
                    ratio_estimate(cell, ref, key) if ref is not None else None, impl == ref_name
                )
                for ref_name, ref in [(base_impl, base), *([(floor, floor_cell)] if floor else [])]
            ]
            behind = fell_behind_in_folder(cell.path)  # open loop: never shown as normal
            name = f"{impl} {behind}" if behind else impl
            rows.append((scenario, [scenario, name, *values, *relatives]))
    return headers, rows


def reference_name(cells: Sequence[CellSummary]) -> str:
    """The implementation the ratios are relative to (``handoff`` when it ran)."""
    impls = _order([c.implementation for c in cells], REPORT_ORDER)
    return impls[0] if impls else ""


def run_count(cells: Sequence[CellSummary]) -> int:
    """The most runs behind any figure (0: unknown)."""
    return max((stat.n for c in cells for stat in c.stats.values()), default=0)


def runs_note(cells: Sequence[CellSummary]) -> str:
    runs = run_count(cells)
    if runs == 1 or (runs == 0 and all(single_run(s) for c in cells for s in c.stats.values())):
        return "One run each: values are that run's, with no standard deviation (± n/a)."
    count = f"{runs} runs" if runs else "the runs"
    return f"Values are mean ± sample standard deviation over {count}."


SHAPE_KEYS = (
    "transport",
    "completion",
    "loop",
    "worker_threads",
    "connections",
    "route_frames",
    "frame_len",
    "tunnel_bytes",
    "read_reserve",
    "write_pending_bytes",
    "duration_seconds_target",
    "python_version",
)


def first_run(cells: Sequence[CellSummary]) -> dict[str, str]:
    """The first run's ``runs.csv`` row of the first cell that has one (``{}`` if none)."""
    for cell in cells:
        runs = cell.path / "runs.csv"
        if runs.exists():
            rows = read_runs_csv(runs)
            if rows:
                return rows[0]
    return {}


def shape_line(cells: Sequence[CellSummary]) -> str:
    """The run shape shared by the cells as ``key=value`` pairs, from the first ``runs.csv``."""
    first = first_run(cells)
    return " ".join(f"{k}={first[k]}" for k in SHAPE_KEYS if first.get(k))


def report_title(cells: Sequence[CellSummary], fallback: str = "") -> str:
    """The human title: transport and mode, loop, completion, then the shape in words."""
    first = first_run(cells)
    if not first:
        return fallback
    shape = run_shape(first)
    return run_headline(first) + (f": {shape}" if shape else "")


def markdown(
    cells: Sequence[CellSummary],
    title: str = "",
    relative_to: Path | None = None,
    chart: str | None = None,
) -> str:
    """``comparison.md``: a human title, how to read it, the table, the run folders.

    ``title`` names the run (the wrapper passes its folder's name); the heading
    says what ran, from the first ``runs.csv`` (``title`` alone when there is none).
    ``chart``: the chart's file name, shown below the table.
    """
    headers, rows = table_rows(cells)
    split = is_split(cells)
    heading = report_title(cells)
    lines = [f"# Comparison: {heading or title}" if heading or title else "# Comparison", ""]
    if heading and title:
        lines += [f"Run: `{title}`", ""]
    if split:
        lines.append(
            "Split-process TCP: the service (proxy) and the driver (client + sink) ran as "
            "separate pinned processes. Service CPU cores and ns/B are the proxy's own cost; "
            "compare those."
        )
    else:
        lines.append(
            "Integrated runs: client, proxy and sink share one process, so CPU and ns/B cover "
            "all three. Use --service-cores/--driver-cores for the proxy's own cost."
        )
    shape = shape_line(cells)
    if shape:
        lines += ["", f"Harness settings: `{shape}`"]
    lines += [
        "",
        runs_note(cells),
        "",
        legend(columns(split), reference_name(cells), floor_name(cells)),
        "",
    ]
    if harness := harness_line(cells):
        lines[-1:-1] = ["", harness]
    if load := open_loop_line(first_run(cells)):
        lines[-1:-1] = ["", load]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(headers) - 2)) + "|")
    for _scenario, row in rows:
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if chart:
        lines += [f"![comparison chart]({chart})", ""]
    lines.append("Run folders:")
    lines.append("")
    for cell in cells:
        where = cell.path
        if relative_to is not None:
            try:
                where = cell.path.resolve().relative_to(relative_to.resolve())
            except ValueError:
                pass
        lines.append(f"- {cell.scenario} / {cell.implementation}: `{where}`")
    return "\n".join(lines) + "\n"


def chart_panels(split: bool) -> list[tuple[str, str, str, Literal["lower", "higher"]]]:
    """``(metric, panel title, y-axis label, which way is better)`` of each chart column."""
    return [
        (
            ns_key(split),
            "service CPU ns/B" if split else "CPU ns/B (whole process)",
            "CPU time per byte (ns/B)",
            "lower",
        ),
        (
            "mib_per_sec",
            ("driver MiB/s" if split else "MiB/s") + " end to end",
            "throughput (MiB/s)",
            "higher",
        ),
    ]


def comparison_figure(cells: Sequence[CellSummary], title: str = "") -> Figure:
    """Bars of ns/B and throughput per implementation; one row per scenario.

    Each scenario gets its own axes: fragmented and coalesced differ by an order
    of magnitude, and a shared scale would flatten one of them. The ns/B bars
    carry their paired ratio to the reference implementation with its confidence
    interval (the reference's level is a dashed line) and, when ``floor`` ran,
    their ratio to it (its level a dotted line). Error bars (sample stdev) only
    where there was more than one run.
    """
    from bytes_handoff_bench.tools import plots

    split = is_split(cells)
    scenarios = _order([c.scenario for c in cells], tuple(Scenario))
    impls = _order([c.implementation for c in cells], REPORT_ORDER)
    by_key = {(c.scenario, c.implementation): c for c in cells}
    reference = reference_name(cells)
    floor = floor_name(cells)
    rows: list[list[plots.BarPanel]] = []
    for scenario in scenarios:
        base = by_key.get((scenario, reference))
        floor_cell = by_key.get((scenario, floor)) if floor else None
        row = []
        for key, name, ylabel, better in chart_panels(split):
            bars = []
            for impl in impls:
                cell = by_key.get((scenario, impl))
                stat = cell.stats.get(key) if cell else None
                text = format_value(stat.mean) if stat else "n/a"
                if key == ns_key(split):
                    text = _chart_ratio_label(text, impl, cell, base, floor_cell)
                error = 0.0 if stat is None or single_run(stat) else stat.stdev
                color = plots.implementation_color(impl)
                bars.append(plots.Bar(impl, stat.mean if stat else None, error, text, color))
            levels = []
            if key == ns_key(split):
                for level_cell, dotted in ((base, False), (floor_cell, True)):
                    level = level_cell.stats.get(key) if level_cell else None
                    if level is not None:
                        levels.append(plots.Level(level.mean, dotted))
            panel = plots.Panel(f"{scenario}: {name}", "implementation", ylabel, better)
            row.append(plots.BarPanel(panel, bars, levels))
        rows.append(row)
    heading = report_title(cells) or title
    runs = run_count(cells)
    if runs == 1 or (runs == 0 and all(single_run(s) for c in cells for s in c.stats.values())):
        how = "one run each, no error bars"
    else:
        how = f"mean of {runs or 'the'} runs, error bars: sample stdev"
    ratio_note = (
        f"ns/B labels: value, then paired ratio to {reference} (dashed line) with its"
        f" {CONFIDENCE:.0%} interval"
        if reference
        else ""
    )
    if reference and floor:
        ratio_note += f", then ratio to {floor} (dotted line)"
    sub = " · ".join(p for p in (how, ratio_note, title if heading != title else "") if p)
    return plots.bar_chart(rows, [heading, sub])


def write_chart(path: Path, cells: Sequence[CellSummary], title: str = "") -> Path:
    """``comparison_figure`` as a PNG (``ImportError`` without matplotlib)."""
    from bytes_handoff_bench.tools import plots

    return plots.save(comparison_figure(cells, title), path)


def _chart_ratio_label(
    text: str,
    impl: str,
    cell: CellSummary | None,
    base: CellSummary | None,
    floor: CellSummary | None,
) -> str:
    """A ns/B bar's label: its value, its ratio to the reference with the interval, and its
    ratio to ``floor`` when that ran."""
    if cell is None:
        return text
    split = is_split([cell])
    lines = [text]
    if base is not None:
        same = impl == base.implementation
        lines.append(format_ratio_interval(ratio_estimate(cell, base, ns_key(split)), same))
    if floor is not None:
        same = impl == floor.implementation
        value = ratio_estimate(cell, floor, ns_key(split))
        shown = format_ratio(1.0 if same else value.value if value else None)
        lines.append(f"{shown} {floor.implementation}")
    return "\n".join(lines)


def write_comparison(
    directory: Path, cells: Sequence[CellSummary], title: str = ""
) -> tuple[Path, Path | None]:
    """Write ``comparison.png`` (without matplotlib: none) and ``comparison.md``, which
    shows the chart when there is one, into ``directory``."""
    png: Path | None
    try:
        png = write_chart(directory / "comparison.png", cells, title)
    except ImportError:
        png = None
    md = directory / "comparison.md"
    md.write_text(
        markdown(cells, title, relative_to=directory, chart=png.name if png else None),
        encoding="utf-8",
    )
    return md, png


def _any_terminal() -> bool:
    for fd in (0, 1, 2):
        try:
            os.get_terminal_size(fd)
        except (OSError, ValueError):
            continue
        return True
    return False


def fits_a_terminal() -> bool:
    """Whether printed tables are fitted to a width: a terminal's, or ``COLUMNS``."""
    return "COLUMNS" in os.environ or _any_terminal()


def output_console(renderable: GroupedTable | None = None) -> Console:
    """A stdout ``Console`` for a table, as wide as rich detects.

    On a terminal (or with ``COLUMNS`` set) that is rich's own width detection,
    and tables fit it. With neither (CI logs, a pipe into a file) rich would
    assume 80 columns; the console is as wide as the table's columns instead.
    :func:`print_out` prints a :class:`GroupedTable` so.
    """
    from rich.console import Console

    console = Console()
    if renderable is None or fits_a_terminal():
        return console
    natural = console.measure(renderable, options=console.options.update_width(10_000))
    return Console(width=max(natural.maximum, 1))


def print_out(table: GroupedTable) -> None:
    """Print ``table`` on stdout, as the README says.

    On a terminal (or with ``COLUMNS`` set) it fits that width. Without one (CI
    logs, a pipe) it is printed at its natural width: the title and the caption
    one line each, each row one line, and no line padded with spaces (rich
    pads every line to the table's width, and breaks a title at it).
    """
    from rich.console import Console

    if fits_a_terminal():
        Console().print(table)
        return
    console = Console(width=10_000)
    with console.capture() as captured:
        console.print(table.table(annotations=False))
    lines = [table.title, *(line.rstrip() for line in captured.get().splitlines())]
    if table.caption:
        lines.append(table.caption)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


class GroupedTable:
    """A rich renderable table: text columns left, numbers right, rows in labelled groups.

    ``groups[i]`` labels row ``i``'s group: where it changes, a rule and a bold
    label row in the first column, so a label takes no column of its own. A
    label is one line where the table fits the console that way; otherwise it
    breaks at its ``, `` into lines no wider than the first column's names, to
    keep the table inside an 80-column terminal. Names are never broken; the
    numbers' columns wrap at spaces (headers, ``mean ± stdev``).
    """

    def __init__(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        title: str,
        caption: str = "",
        left_columns: Sequence[int] = (0,),
        groups: Sequence[str] = (),
    ) -> None:
        self.headers = list(headers)
        self.rows = [list(row) for row in rows]
        self.title = title
        self.caption = caption
        self.left_columns = tuple(left_columns)
        self.groups = list(groups)

    def table(self, label_width: int | None = None, *, annotations: bool = True) -> Table:
        """The rich ``Table``; labels broken to ``label_width`` columns when it is given;
        without its title and caption for ``annotations=False``."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(
            # Text, not markup: a caption's "[n/a]" or "[1.05, 1.21]" is no style tag.
            title=Text(self.title) if annotations else None,
            caption=Text(self.caption) if annotations and self.caption else None,
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
            title_justify="left",
            caption_justify="left",
        )
        for i, header in enumerate(self.headers):
            if i in self.left_columns:
                table.add_column(header, justify="left", no_wrap=True)
            else:
                table.add_column(header, justify="right")
        previous: str | None = None
        for i, row in enumerate(self.rows):
            group = self.groups[i] if i < len(self.groups) else None
            if group is not None and group != previous:
                if i:
                    table.add_section()
                label = group if label_width is None else _break_label(group, label_width)
                table.add_row(Text(label, style="bold"), *[""] * (len(self.headers) - 1))
                previous = group
            table.add_row(*(Text(cell) for cell in row))
        return table

    def narrow_label_width(self) -> int:
        """The first column's width without the labels: its header's words and its names."""
        words = [w for w in self.headers[0].split()] if self.headers else []
        cells = [row[0] for row in self.rows if row]
        return max([len(w) for w in words + cells] or [1])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table()
        wide = console.measure(table, options=options.update_width(10_000)).maximum
        if self.groups and wide > options.max_width:
            table = self.table(self.narrow_label_width())
        yield table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        from rich.measure import Measurement

        return Measurement.get(console, options, self.table())


def _break_label(label: str, width: int) -> str:
    """``label``'s ``, ``-separated parts, packed into lines of at most ``width`` (a longer
    part keeps a line of its own)."""
    lines: list[str] = []
    for part in label.split(", "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            if lines:
                lines[-1] += ","
            lines.append(part)
    return "\n".join(lines)


def comparison_table(cells: Sequence[CellSummary], title: str = "") -> GroupedTable:
    """The comparison as a rich table: one group per scenario, the human title, the legend."""
    headers, rows = table_rows(cells)
    heading = report_title(cells) or title or "comparison"
    caption = " ".join(
        [
            runs_note(cells),
            legend(columns(is_split(cells)), reference_name(cells), floor_name(cells)),
        ]
        + ([harness] if (harness := harness_line(cells)) else [])
        + ([f"Run: {title}."] if title and title != heading else [])
    )
    return GroupedTable(
        headers[1:],
        [row[1:] for _scenario, row in rows],
        title=heading,
        caption=caption,
        groups=[scenario for scenario, _row in rows],
    )


def print_table(cells: Sequence[CellSummary], title: str = "") -> None:
    print_out(comparison_table(cells, title))


def cells_from_directory(directory: Path) -> list[CellSummary]:
    """Every cell folder (one with ``summary.csv``) below ``directory``."""
    cells: list[CellSummary] = []
    for summary in sorted(directory.rglob("summary.csv")):
        runs = summary.with_name("runs.csv")
        rows = read_runs_csv(runs) if runs.exists() else []
        first = rows[0] if rows else {}
        impl = first.get("implementation") or summary.parent.name
        scenario = first.get("scenario") or "?"
        stats = read_summary_csv(summary)
        if rows:  # summary.csv does not say how many runs; runs.csv does
            stats = {
                metric: Stat(stat.mean, stat.stdev, sum(1 for r in rows if r.get(metric, "")))
                for metric, stat in stats.items()
            }
        cells.append(CellSummary(impl, scenario, stats, summary.parent))
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bytes_handoff_bench.tools.report",
        description="Write comparison.md and comparison.png for a results folder.",
    )
    parser.add_argument("directory", type=Path)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"report: error: not a folder: {directory}", file=sys.stderr)
        return 2
    cells = cells_from_directory(directory)
    if not cells:
        print(f"report: error: no summary.csv below {directory}", file=sys.stderr)
        return 1
    md, png = write_comparison(directory, cells, directory.name)
    print_table(cells, directory.name)
    print(f"comparison={md}" + (f" chart={png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
