"""Comparison table and chart: implementations side by side per scenario.

Columns (mean ± sample stdev over the runs):

* ``driver MiB/s``: end-to-end throughput seen by the driver (split runs) or
  by the integrated process;
* ``service MiB/s``, ``service CPU cores``, ``service ns/B``: the proxy
  service's own figures in split runs. Integrated runs have no separate
  service, so these columns show the whole process (client, proxy and sink),
  marked ``(whole process)`` in the header;
* ``driver p99 µs``: per-stream latency p99;
* ``ns/B vs <first>``: service ns/B relative to the first implementation.

As a program, ``python -m bytes_handoff_bench.tools.report DIR`` rebuilds
``comparison.md`` and ``comparison.png`` in DIR from the ``summary.csv`` and
``runs.csv`` files below it, and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bytes_handoff_bench.names import REPORT_ORDER, Scenario
from bytes_handoff_bench.tools.artifacts import Stat, read_runs_csv, read_summary_csv


@dataclass(frozen=True)
class CellSummary:
    implementation: str
    scenario: str
    stats: Mapping[str, Stat]
    path: Path


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    fallback: str | None
    digits: int


def is_split(cells: Sequence[CellSummary]) -> bool:
    return any("service_cpu_ns_per_byte" in c.stats for c in cells)


def columns(split: bool) -> list[Column]:
    if split:
        return [
            Column("driver MiB/s", "mib_per_sec", None, 2),
            Column("service MiB/s", "service_mib_per_sec", None, 2),
            Column("service CPU cores", "service_cpu_avg_cores", None, 3),
            Column("service ns/B", "service_cpu_ns_per_byte", None, 3),
            Column("driver p99 µs", "latency_p99_micros", None, 1),
        ]
    return [
        Column("MiB/s", "mib_per_sec", None, 2),
        Column("service MiB/s (whole process)", "mib_per_sec", None, 2),
        Column("service CPU cores (whole process)", "cpu_avg_cores", None, 3),
        Column("service ns/B (whole process)", "cpu_ns_per_byte", None, 3),
        Column("p99 µs", "latency_p99_micros", None, 1),
    ]


def ns_key(split: bool) -> str:
    return "service_cpu_ns_per_byte" if split else "cpu_ns_per_byte"


def _order(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(values))
    rank = {name: i for i, name in enumerate(preferred)}
    return sorted(unique, key=lambda v: (rank.get(v, len(rank)), unique.index(v)))


def cell_value(stats: Mapping[str, Stat], key: str, digits: int) -> str:
    stat = stats.get(key)
    if stat is None:
        return "n/a"
    if stat.stdev:
        return f"{stat.mean:.{digits}f} ± {stat.stdev:.{digits}f}"
    return f"{stat.mean:.{digits}f}"


def table_rows(cells: Sequence[CellSummary]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Headers and ``(scenario, row)`` pairs, scenarios and implementations ordered."""
    split = is_split(cells)
    cols = columns(split)
    scenarios = _order([c.scenario for c in cells], tuple(Scenario))
    impls = _order([c.implementation for c in cells], REPORT_ORDER)
    by_key = {(c.scenario, c.implementation): c for c in cells}
    base_impl = impls[0] if impls else ""
    headers = ["scenario", "implementation", *[c.header for c in cols], f"ns/B vs {base_impl}"]
    rows: list[tuple[str, list[str]]] = []
    for scenario in scenarios:
        base = by_key.get((scenario, base_impl))
        base_ns = base.stats.get(ns_key(split)) if base else None
        for impl in impls:
            cell = by_key.get((scenario, impl))
            if cell is None:
                continue
            values = [cell_value(cell.stats, col.key, col.digits) for col in cols]
            ns = cell.stats.get(ns_key(split))
            ratio = f"{ns.mean / base_ns.mean:.2f}x" if ns and base_ns and base_ns.mean else "n/a"
            rows.append((scenario, [scenario, impl, *values, ratio]))
    return headers, rows


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


def shape_line(cells: Sequence[CellSummary]) -> str:
    """The run shape shared by the cells, from the first cell's ``runs.csv``."""
    for cell in cells:
        runs = cell.path / "runs.csv"
        if runs.exists():
            rows = read_runs_csv(runs)
            if rows:
                first = rows[0]
                return " ".join(f"{k}={first[k]}" for k in SHAPE_KEYS if first.get(k))
    return ""


def markdown(cells: Sequence[CellSummary], title: str = "", relative_to: Path | None = None) -> str:
    headers, rows = table_rows(cells)
    split = is_split(cells)
    lines = [f"# Comparison{': ' + title if title else ''}", ""]
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
        lines += ["", f"Shape: {shape}"]
    lines += ["", "Values are mean ± sample stdev over the runs.", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(headers) - 2)) + "|")
    for _scenario, row in rows:
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
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


def write_chart(path: Path, cells: Sequence[CellSummary], title: str = "") -> Path:
    """Bars of ns/B and throughput per implementation; one row per scenario.

    Each scenario gets its own axes: fragmented and coalesced differ by an order
    of magnitude, and a shared scale would flatten one of them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = is_split(cells)
    scenarios = _order([c.scenario for c in cells], tuple(Scenario))
    impls = _order([c.implementation for c in cells], REPORT_ORDER)
    by_key = {(c.scenario, c.implementation): c for c in cells}
    panels = [
        (ns_key(split), "service CPU ns/B" if split else "CPU ns/B (whole process)"),
        ("mib_per_sec", "driver MiB/s (end to end)" if split else "MiB/s (end to end)"),
    ]
    colors = [f"C{i}" for i in range(len(impls))]
    fig, axes = plt.subplots(
        len(scenarios),
        len(panels),
        figsize=(5.2 * len(panels), 3.2 * len(scenarios)),
        squeeze=False,
    )
    for row, scenario in enumerate(scenarios):
        for col, (key, label) in enumerate(panels):
            ax = axes[row][col]
            means: list[float] = []
            errs: list[float] = []
            for impl in impls:
                cell = by_key.get((scenario, impl))
                stat = cell.stats.get(key) if cell else None
                means.append(stat.mean if stat else 0.0)
                errs.append(stat.stdev if stat else 0.0)
            bars = ax.bar(range(len(impls)), means, yerr=errs, capsize=4, color=colors)
            ax.bar_label(bars, labels=[f"{m:.3g}" for m in means], fontsize=8)
            ax.set_xticks(range(len(impls)))
            ax.set_xticklabels(impls, rotation=30, ha="right")  # seven names do not fit flat
            ax.set_title(f"{scenario}: {label}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            ax.margins(y=0.15)
    if title:
        fig.suptitle(f"{title} (mean, error bar = sample stdev)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_comparison(
    directory: Path, cells: Sequence[CellSummary], title: str = ""
) -> tuple[Path, Path | None]:
    """Write ``comparison.md`` and ``comparison.png`` into ``directory``."""
    md = directory / "comparison.md"
    md.write_text(markdown(cells, title, relative_to=directory), encoding="utf-8")
    try:
        png = write_chart(directory / "comparison.png", cells, title)
    except ImportError:
        return md, None
    return md, png


def print_table(cells: Sequence[CellSummary], title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    headers, rows = table_rows(cells)
    table = Table(title=title or "comparison", show_lines=False)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 2 else "right")
    previous = None
    for scenario, row in rows:
        if previous is not None and scenario != previous:
            table.add_section()
        table.add_row(*row)
        previous = scenario
    Console(width=200).print(table)


def cells_from_directory(directory: Path) -> list[CellSummary]:
    """Every cell folder (one with ``summary.csv``) below ``directory``."""
    cells: list[CellSummary] = []
    for summary in sorted(directory.rglob("summary.csv")):
        runs = summary.with_name("runs.csv")
        first = read_runs_csv(runs)[0] if runs.exists() else {}
        impl = first.get("implementation") or summary.parent.name
        scenario = first.get("scenario") or "?"
        cells.append(CellSummary(impl, scenario, read_summary_csv(summary), summary.parent))
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
