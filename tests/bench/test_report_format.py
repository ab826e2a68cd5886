"""What people read: number formats, titles, tables sized to a terminal, the matrix's
ratios, plots and progress columns (no harness process needed)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from rich.console import Console

from bytes_handoff_bench.names import Implementation, Transport, implementations_for
from bytes_handoff_bench.tools import report
from bytes_handoff_bench.tools.artifacts import Stat, merge_run, write_cell_artifacts
from bytes_handoff_bench.tools.matrix import (
    Cell,
    cell_result_line,
    make_config,
    matrix_table,
    progress_columns,
    ratio_grid,
    table,
    write_matrix_md,
    write_plots,
)
from bytes_handoff_bench.tools.report import (
    CellSummary,
    cells_from_directory,
    columns,
    comparison_table,
    format_bytes,
    format_ratio,
    format_stat,
    format_tick,
    format_value,
    markdown,
    output_console,
    ratio,
    report_title,
    table_rows,
    write_comparison,
)

PNG = b"\x89PNG\r\n\x1a\n"
#: An exponent anywhere: ``1.13e+03``, ``1e-05``.
EXPONENT = re.compile(r"\d[eE][+-]?\d")


# -- numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1130.0, "1,130"),
        (1369.46, "1,369"),
        (1580031.0, "1,580,031"),
        (587.56, "587.6"),
        (84.094, "84.09"),
        (11.22, "11.22"),
        (1.609, "1.61"),
        (0.651, "0.651"),
        (0.0123, "0.0123"),
        (0.000123, "0.000123"),
        (99.996, "100.0"),  # rounding up a magnitude takes that magnitude's decimals
        (999.96, "1,000"),
        (0.0, "0"),
        (-0.0, "0"),
        (-1234.5, "-1,234"),  # round half to even, as Python formats
        (1e20, "100,000,000,000,000,000,000"),
        (None, "n/a"),
        (math.nan, "n/a"),
        (math.inf, "n/a"),
    ],
)
def test_format_value(value: float | None, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize("exponent", range(-9, 22))
def test_format_value_never_writes_an_exponent(exponent: int) -> None:
    for mantissa in (1.0, 1.13, 9.99):
        value = mantissa * 10.0**exponent
        for text in (format_value(value), format_tick(value), format_stat(Stat(value, value, 3))):
            assert not EXPONENT.search(text), text
            assert text != "0" or value == 0


@pytest.mark.parametrize(
    ("value", "text"),
    [(80.0, "80"), (2.5, "2.5"), (1000.0, "1,000"), (0.001, "0.001"), (-0.0, "0")],
)
def test_format_tick(value: float, text: str) -> None:
    assert format_tick(value) == text


@pytest.mark.parametrize(
    ("stat", "scale", "text"),
    [
        (Stat(587.56, 27.94, 3), 1.0, "587.6 ± 27.9"),
        (Stat(1580031.0, 12415.3, 3), 0.001, "1,580 ± 12"),  # µs shown as ms
        (Stat(123.0, 0.0, 1), 0.001, "0.123 ± n/a"),  # 0.000123 s
        (Stat(0.982, 0.010, 3), 1.0, "0.982 ± 0.010"),
        (Stat(1580.0, 0.3, 3), 1.0, "1,580 ± 0.3"),  # a stdev below the mean's decimals
        (Stat(5.0, 0.0, 1), 1.0, "5.00 ± n/a"),  # one run: no stdev, not "± 0"
        (Stat(5.0, 0.0, 0), 1.0, "5.00 ± n/a"),  # count unknown, stdev 0: one run
        (Stat(5.0, 0.0, 2), 1.0, "5.00 ± 0"),  # two equal runs: a real stdev of 0
        (None, 1.0, "n/a"),
    ],
)
def test_format_stat(stat: Stat | None, scale: float, text: str) -> None:
    assert format_stat(stat, scale) == text


def test_ratio_and_its_format() -> None:
    assert ratio(Stat(2.0, 0, 1), Stat(4.0, 0, 1)) == 0.5
    assert ratio(Stat(2.0, 0, 1), Stat(0.0, 0, 1)) is None
    assert ratio(None, Stat(4.0, 0, 1)) is None and ratio(Stat(2.0, 0, 1), None) is None
    assert format_ratio(0.5) == "0.50x" and format_ratio(1.126) == "1.13x"
    assert format_ratio(None) == "n/a"


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (64, "64 B"),
        (1000, "1,000 B"),
        (1024, "1 KiB"),
        (16384, "16 KiB"),
        (1048576, "1 MiB"),
        (1048577, "1,048,577 B"),
        (3 << 30, "3 GiB"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


# -- the comparison ------------------------------------------------------------------

IMPLS = (
    "handoff",
    "handoff_splice",
    "handoff_protocol",
    "manual_vec",
    "raw_copy",
    "manual_protocol",
    "raw_protocol",
    "floor",
)


def run_row(impl: str, scenario: str, ns: float, split: bool, **extra: str) -> dict[str, str]:
    """A runs.csv row as the harness would give it."""
    driver = {
        "role": "tcp-driver" if split else "integrated",
        "transport": "tcp" if split else "duplex",
        "implementation": impl,
        "scenario": scenario,
        "completion": "fire_and_forget",
        "loop": "uvloop",
        "worker_threads": "1",
        "connections": "16",
        "route_frames": "64",
        "frame_len": "63",
        "tunnel_bytes": "1048576",
        "mib_per_sec": "1369.46",
        "cpu_avg_cores": "0.98",
        "cpu_ns_per_byte": str(ns),
        "latency_p99_micros": "1580031",
        **extra,
    }
    if not split:
        return driver
    service = {"role": "tcp-service", "mib_per_sec": "1369.5", "cpu_avg_cores": "0.9"}
    return merge_run(driver, {**service, "cpu_ns_per_byte": str(ns)})


def write_cells(base: Path, runs: int, split: bool) -> list[CellSummary]:
    for i, impl in enumerate(("handoff", "manual_vec", "raw_copy")):
        for scenario in ("fragmented", "coalesced"):
            cell = base / impl / scenario
            cell.mkdir(parents=True)
            rows = [run_row(impl, scenario, 1.0 + i + 0.01 * n, split) for n in range(runs)]
            write_cell_artifacts(cell, rows)
    return cells_from_directory(base)


@pytest.mark.parametrize("split", [False, True])
def test_no_duplicate_columns(split: bool) -> None:
    cols = columns(split)
    assert len({c.key for c in cols}) == len(cols)
    cells = [
        CellSummary(impl, "coalesced", {"cpu_ns_per_byte": Stat(1, 0, 1)}, Path(impl))
        for impl in ("handoff", "raw_copy")
    ]
    if split:
        cells = [
            CellSummary(
                c.implementation, c.scenario, {"service_cpu_ns_per_byte": Stat(1, 0, 1)}, c.path
            )
            for c in cells
        ]
    headers, _rows = table_rows(cells)
    assert len(set(headers)) == len(headers), headers
    assert all(h.count("MiB/s") <= 1 for h in headers)
    assert sum("MiB/s" in h for h in headers) == (2 if split else 1)
    assert "p99 ms" in headers or "driver p99 ms" in headers


@pytest.mark.parametrize("split", [False, True])
def test_title_names_transport_loop_and_shape(tmp_path: Path, split: bool) -> None:
    cells = write_cells(tmp_path, 1, split)
    title = report_title(cells)
    assert ("split-process TCP" if split else "in-memory duplex") in title
    for words in ("uvloop", "fire-and-forget", "16 connections", "64 frames of 64 B"):
        assert words in title, title
    assert "1 MiB tunnel" in title and "1 worker process" in title
    md = markdown(cells, "stream_x")
    assert md.splitlines()[0] == f"# Comparison: {title}"
    assert "Run: `stream_x`" in md


@pytest.mark.parametrize(
    ("count", "word", "text"),
    [
        (1, "worker process", "1 worker process"),
        (2, "worker process", "2 worker processes"),
        (2, "frame", "2 frames"),
        (1000, "connection", "1,000 connections"),
        (0, "run", "0 runs"),
    ],
)
def test_plural(count: int, word: str, text: str) -> None:
    assert report.plural(count, word) == text


def test_one_order_of_implementations_everywhere() -> None:
    # The run order (the per-run lines, the summary lines) is the table's and the chart's.
    assert tuple(Implementation) == report.REPORT_ORDER
    tcp = implementations_for(Transport.TCP)
    assert tcp == list(Implementation)
    cells = [
        CellSummary(impl, "coalesced", {"cpu_ns_per_byte": Stat(1, 0, 1)}, Path(impl))
        for impl in reversed(tcp)
    ]
    assert [row[1] for _scenario, row in table_rows(cells)[1]] == tcp


def two_worker_cells(base: Path, split: bool = True) -> list[CellSummary]:
    for i, impl in enumerate(("handoff", "manual_vec", "raw_copy")):
        for scenario in ("fragmented", "coalesced"):
            cell = base / impl / scenario
            cell.mkdir(parents=True)
            row = run_row(impl, scenario, 1.0 + i, split, worker_threads="2")
            write_cell_artifacts(cell, [row])
    return cells_from_directory(base)


def test_two_workers_are_worker_processes_everywhere(tmp_path: Path) -> None:
    cells = two_worker_cells(tmp_path)
    title = report_title(cells)  # the chart's title too
    assert title.endswith(", 2 worker processes"), title
    assert markdown(cells).splitlines()[0].endswith(", 2 worker processes")
    assert comparison_table(cells).title.endswith(", 2 worker processes")
    assert "processs" not in markdown(cells)


def test_printed_without_a_terminal_at_natural_width(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A pipe or a CI log: the title and the caption one line each, each row one line,
    # and no line padded with spaces to the table's width.
    cells = two_worker_cells(tmp_path)
    monkeypatch.setattr(report, "_any_terminal", lambda: False)
    monkeypatch.delenv("COLUMNS", raising=False)
    report.print_table(cells, "stream_x")
    lines = capsys.readouterr().out.splitlines()
    grouped = comparison_table(cells, "stream_x")
    assert lines[0] == grouped.title == report_title(cells)
    assert lines[-1] == grouped.caption
    assert [line for line in lines if line != line.rstrip()] == []
    rows = [line for line in lines if line.split()[:1] in (["handoff"], ["raw_copy"])]
    # The ratio ends each row: the reference's 1.00x, the other's with "no interval" (1 run).
    assert len(rows) == 4, lines
    assert all(re.search(r" (1\.00x|\d\.\d\dx \[n/a\])$", row) for row in rows), rows


def test_comparison_markdown_for_people(tmp_path: Path) -> None:
    cells = write_cells(tmp_path, 1, split=True)
    md_path, png = write_comparison(tmp_path, cells, "stream_x")
    md = md_path.read_text()
    assert not EXPONENT.search(md.split("Run folders:")[0])
    assert "Higher is better: driver MiB/s, service MiB/s." in md
    assert "Lower is better: service CPU cores, service ns/B, driver p99 ms." in md
    # One run: the stdev is n/a, never 0; MiB/s with a thousands separator; p99 in ms.
    row = next(line for line in md.splitlines() if line.startswith("| coalesced | manual_vec |"))
    cells_text = [c.strip() for c in row.strip("|").split("|")]
    assert cells_text[2] == "1,369 ± n/a"  # driver MiB/s
    assert cells_text[6] == "1,580 ± n/a"  # driver p99 ms (1580031 µs)
    assert cells_text[-1] == "2.00x [n/a]"  # ns/B 2.0 vs handoff's 1.0; one run: no CI
    assert "± 0" not in md
    assert "One run each" in md
    assert png is not None and png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    assert "![comparison chart](comparison.png)" in md


def test_comparison_with_runs_shows_their_stdev(tmp_path: Path) -> None:
    cells = write_cells(tmp_path, 3, split=False)
    assert all(stat.n == 3 for c in cells for stat in c.stats.values())
    md = markdown(cells)
    assert "over 3 runs" in md and "± n/a" not in md
    row = next(line for line in md.splitlines() if line.startswith("| fragmented | handoff |"))
    assert "1.01 ± 0.01" in row  # ns/B 1.00, 1.01, 1.02


def paired_cells(base: Path, ns: dict[str, list[float]]) -> list[CellSummary]:
    """A split cell (coalesced) per implementation, with its service ns/B per round."""
    for impl, values in ns.items():
        cell = base / impl / "coalesced"
        cell.mkdir(parents=True)
        write_cell_artifacts(cell, [run_row(impl, "coalesced", v, split=True) for v in values])
    return cells_from_directory(base)


def test_every_ratio_has_its_paired_interval_and_a_floor_column(tmp_path: Path) -> None:
    # The rounds swing together (host noise: 1, 2, 3 ns/B), the per-round ratios do not:
    # raw_protocol is 1.5x floor in every round, a point interval; handoff wobbles.
    cells = paired_cells(
        tmp_path,
        {
            "handoff": [2.0, 4.4, 5.7],  # 2.0, 2.2, 1.9 x floor
            "raw_protocol": [1.5, 3.0, 4.5],
            "floor": [1.0, 2.0, 3.0],
        },
    )
    headers, rows = table_rows(cells)
    assert headers[-2:] == ["ns/B vs handoff", "ns/B vs floor"]
    got = {row[1]: row[-2:] for _scenario, row in rows}
    assert got["floor"][1] == got["handoff"][0] == "1.00x"  # each against itself
    assert got["raw_protocol"][1] == "1.50x [1.50, 1.50]"
    # ln 2.0, 2.2, 1.9: mean 0.7078, sd 0.0744; t(0.975, 2) = 4.303: 0.7078 ± 0.1848
    assert got["handoff"][1] == "2.03x [1.69, 2.44]"  # exp: geometric mean and its interval
    assert got["floor"][0] == "0.49x [0.41, 0.59]"  # the same interval, reciprocal
    md = markdown(cells, "stream_x")
    assert "| ns/B vs handoff | ns/B vs floor |" in md
    assert "95% confidence interval (t-interval on the log ratios;" in md
    assert "The harness's own cost: raw_protocol" in md and "coalesced 1.50x [1.50, 1.50]" in md
    caption = comparison_table(cells, "stream_x").caption
    assert "ns/B vs floor" in caption and "The harness's own cost" in caption
    # The chart's ns/B labels: the value, the ratio to handoff with its interval, to floor.
    by_name = {c.implementation: c for c in cells}
    label = report._chart_ratio_label(
        "3.00", "raw_protocol", by_name["raw_protocol"], by_name["handoff"], by_name["floor"]
    )
    # 1.5x floor each round, over handoff's 2.03x [1.69, 2.44]: 1.5 / 2.44 = 0.61, 1.5 / 1.69 = 0.89
    assert label.splitlines() == ["3.00", "0.74x [0.61, 0.89]", "1.50x floor"]
    _md, png = write_comparison(tmp_path, cells, "stream_x")
    assert png is not None and png.read_bytes()[:8] == PNG


def test_ratios_pair_rounds_by_run_index_not_by_position(tmp_path: Path) -> None:
    # runs.csv rows in another order (run 3 first): round k still meets round k.
    paired_cells(tmp_path, {"handoff": [1.0, 2.0, 3.0], "manual_vec": [2.0, 4.0, 6.0]})
    shuffled = tmp_path / "manual_vec" / "coalesced"
    rows = [
        {**run_row("manual_vec", "coalesced", ns, split=True), "run": run}
        for run, ns in (("3", 6.0), ("1", 2.0), ("2", 4.0))
    ]
    write_cell_artifacts(shuffled, rows)
    _headers, table = table_rows(cells_from_directory(tmp_path))
    assert {row[1]: row[-1] for _s, row in table}["manual_vec"] == "2.00x [2.00, 2.00]"


def test_comparison_table_fits_80_columns() -> None:
    cells = [
        CellSummary(
            impl,
            scenario,
            {
                "mib_per_sec": Stat(1369.46 * (i + 1), 120.7, 3),
                "service_mib_per_sec": Stat(1370.03, 120.85, 3),
                "service_cpu_avg_cores": Stat(0.932, 0.034, 3),
                "service_cpu_ns_per_byte": Stat(84.094 / (i + 1), 8.83, 3),
                "latency_p99_micros": Stat(1580031.0, 12415.3, 3),
            },
            Path(impl),
        )
        for scenario in ("fragmented", "coalesced")
        for i, impl in enumerate(IMPLS)
    ]
    console = Console(width=80, record=True)
    console.print(comparison_table(cells, "stream_tcp_all_all_fire_and_forget_20261128_144329"))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    for impl in IMPLS:  # names stay whole
        assert any(line.split()[:1] == [impl] for line in lines), impl
    assert "fragmented" in text and "coalesced" in text
    # Brackets in the caption are text, not rich markup that would vanish.
    assert "log ratios; [n/a] after one round" in " ".join(text.split())


def test_output_console_without_a_terminal_uses_the_natural_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wide = report.GroupedTable(
        ["implementation", *[f"a rather long header {i}" for i in range(8)]],
        [["handoff", *["1,234.5 ± 12.3"] * 8]],
        title="t",
    )
    monkeypatch.setattr(report, "_any_terminal", lambda: False)
    monkeypatch.delenv("COLUMNS", raising=False)
    console = output_console(wide)
    natural = Console(width=10_000).measure(wide).maximum
    assert console.width == natural > 80
    monkeypatch.setenv("COLUMNS", "100")
    assert output_console(wide).width == 100


# -- the matrix ----------------------------------------------------------------------


def matrix_cell(
    impl: str, scenario: str, conns: int, size: int, ns: float | None, runs: int = 1
) -> Cell:
    cell = Cell(impl, scenario, conns, size, size - 1, None, None, Path(f"{impl}_{conns}_{size}"))
    row = {"transport": "duplex", "role": "integrated", "loop": "asyncio"}
    cell.rows = [{**row, "completion": "fire_and_forget"}] * runs
    cell.stats = {"mib_per_sec": Stat(1369.46, 1.0, runs), "latency_p99_micros": Stat(900, 1, runs)}
    if ns is not None:
        cell.stats["cpu_ns_per_byte"] = Stat(ns, ns / 10, runs)
    return cell


def matrix_cells() -> list[Cell]:
    """handoff at 2.0 ns/B everywhere; raw_copy 1.0 except (4, 1024): missing."""
    cells = []
    for conns in (1, 4):
        for size in (64, 1024):
            cells.append(matrix_cell("handoff", "coalesced", conns, size, 2.0 * conns))
            if (conns, size) != (4, 1024):
                cells.append(matrix_cell("raw_copy", "coalesced", conns, size, 1.0 * size / 64))
    cells.append(matrix_cell("manual_vec", "coalesced", 1, 64, 3.0))
    return cells


def test_ratio_grid_divides_by_handoff_in_the_same_cell() -> None:
    cells = matrix_cells()
    grid = ratio_grid(
        cells, "raw_copy", "coalesced", [1, 4], [64, 1024], split=False, reference="handoff"
    )
    assert grid == [[0.5, 8.0], [0.125, None]]  # rows: connections; columns: frame sizes
    grid = ratio_grid(
        cells, "manual_vec", "coalesced", [1, 4], [64, 1024], split=False, reference="handoff"
    )
    assert grid == [[1.5, None], [None, None]]
    # No reference cell, or a scenario that did not run: n/a everywhere.
    assert ratio_grid(
        cells, "raw_copy", "fragmented", [1], [64], split=False, reference="handoff"
    ) == [[None]]
    no_ref = [c for c in cells if c.implementation != "handoff"]
    assert ratio_grid(
        no_ref, "raw_copy", "coalesced", [1], [64], split=False, reference="handoff"
    ) == [[None]]


def test_matrix_table_ratio_column() -> None:
    cells = matrix_cells()
    headers, rows = table(cells, split=False)
    assert len(set(headers)) == len(headers)
    column = headers.index("ns/B vs handoff")
    got = {(r[headers.index("implementation")], r[1], r[2]): r[column] for r in rows}
    assert got[("handoff", "1", "64 B")] == "1.00x"
    assert got[("raw_copy", "1", "64 B")] == "0.50x"
    assert got[("raw_copy", "1", "1 KiB")] == "8.00x"
    assert got[("raw_copy", "4", "64 B")] == "0.12x"  # 1.0 / 8.0
    assert got[("manual_vec", "1", "64 B")] == "1.50x"
    assert rows[0][headers.index("MiB/s")] == "1,369"
    assert rows[0][headers.index("p99 ms")] == "0.900"
    # Without the reference in that shape: n/a.
    _headers, lone = table([matrix_cell("raw_copy", "coalesced", 1, 64, 1.0)], False, "handoff")
    assert lone[0][column] == "n/a"


def test_matrix_table_fits_80_columns() -> None:
    cells = [
        matrix_cell(impl, "fragmented", conns, size, 84.094 * (i + 1))
        for conns in (1, 16, 256)
        for size in (64, 16384, 1048576)
        for i, impl in enumerate(IMPLS)
    ]
    console = Console(width=80, record=True)
    console.print(matrix_table(cells, False, "stream matrix: " + "a long title " * 8, "c " * 80))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    for impl in IMPLS:
        assert any(line.split()[:1] == [impl] for line in lines), impl
    # A wide terminal keeps each group's label on one line.
    console = Console(width=200, record=True)
    console.print(matrix_table(cells, False, "t"))
    assert "fragmented, 256 connections, 1 MiB frames" in console.export_text()


def test_cell_result_line() -> None:
    cell = matrix_cell("raw_copy", "coalesced", 4, 1024, 1.5)
    line = cell_result_line(cell, False, "handoff", 0.75)
    assert line.startswith("done coalesced, 4 connections, 1 KiB frames: raw_copy:")
    assert "1,369 MiB/s" in line and "1.50 ns/B (0.75x handoff)" in line and "0.900 ms" in line


def test_progress_has_an_eta() -> None:
    from rich.progress import TimeElapsedColumn, TimeRemainingColumn

    kinds = [type(c) for c in progress_columns()]
    assert TimeRemainingColumn in kinds and TimeElapsedColumn in kinds


def test_matrix_plots_and_markdown(tmp_path: Path) -> None:
    cells = matrix_cells()
    plots = write_plots(
        tmp_path,
        cells,
        split=False,
        headline="in-memory duplex, one process, asyncio, fire-and-forget",
        workload="16 frames per connection",
    )
    assert [p.name for p in plots] == ["ratio_heatmap_coalesced.png", "ns_per_byte_coalesced.png"]
    for plot in plots:
        data = plot.read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
    # Only the reference ran: no heatmap (every ratio would be 1.00x), still the lines.
    (tmp_path / "alone").mkdir()
    alone = write_plots(
        tmp_path / "alone",
        [c for c in cells if c.implementation == "handoff"],
        split=False,
        headline="h",
        workload="w",
    )
    assert [p.name for p in alone] == ["ns_per_byte_coalesced.png"]

    environ = {
        "IMPLEMENTATIONS": "handoff raw_copy manual_vec",
        "SCENARIOS": "coalesced",
        "CONNECTIONS": "1 4",
        "FRAME_SIZES": "64 1024",
        "RUNS": "1",
        "LOOP": "asyncio",
        "RESULTS_DIR": str(tmp_path),
    }
    cfg = make_config(environ, "python3")
    # Run, listed and plotted in the one order, not the order they were named in.
    assert cfg.implementations == ["handoff", "manual_vec", "raw_copy"]
    md_path = tmp_path / "matrix.md"
    write_matrix_md(md_path, cells, cfg, plots)
    md = md_path.read_text()
    first = md.splitlines()[0]
    assert first == "# Stream matrix: in-memory duplex, one process, asyncio, fire-and-forget"
    assert "connections 1, 4; frame sizes 64 B, 1 KiB" in md
    assert "Lower is better: CPU ns/B (whole process)" in md and "Higher is better: MiB/s." in md
    header = next(line for line in md.splitlines() if line.startswith("| scenario |"))
    assert "| ns/B vs handoff |" in header
    assert "| coalesced | 1 | 64 B | raw_copy | 1,369 | 1.00 | 0.50x |" in md
    assert "![ratio heatmap coalesced](ratio_heatmap_coalesced.png)" in md
    assert "![ns per byte coalesced](ns_per_byte_coalesced.png)" in md
    assert not EXPONENT.search(md)
