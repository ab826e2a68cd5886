"""Run artifacts (parsing, runs.csv, summary.csv maths), ports and the report,
against recorded key=value run text (no harness process needed)."""

from __future__ import annotations

import csv
import math
import multiprocessing
import statistics
from pathlib import Path

import pytest

from bytes_handoff_bench import ports
from bytes_handoff_bench.tools.artifacts import (
    as_number,
    merge_run,
    parse_kv_text,
    read_runs_csv,
    read_summary_csv,
    rows_from_directory,
    summarize,
    summary_line,
    write_cell_artifacts,
)
from bytes_handoff_bench.tools.report import (
    CellSummary,
    cells_from_directory,
    markdown,
    write_comparison,
)

SAMPLE = """\
mode=stream
role=tcp-driver
transport=tcp
implementation=handoff
scenario=coalesced
completion=fire_and_forget
worker_threads=1
connections=16
total_bytes=17895424
total_seconds=0.412
mib_per_sec={mib}
cpu_usage_measured=true
cpu_avg_cores={cores}
cpu_ns_per_byte={ns}
latency_p99_micros={p99}
max_rss_bytes=41234432
loop=uvloop
python_version=3.11.7
pid=4242
"""


def sample(mib: float, cores: float, ns: float, p99: int) -> str:
    return SAMPLE.format(mib=mib, cores=cores, ns=ns, p99=p99)


def test_parse_kv_ignores_noise_and_keeps_last_value() -> None:
    text = "=== header ===\nkey=1\nnot a pair\n  spaced = 2.5 \nkey=3\nurl=a=b\n# c=1\n"
    assert parse_kv_text(text) == {"key": "3", "spaced": "2.5", "url": "a=b"}


def test_as_number() -> None:
    assert as_number("12") == 12.0
    assert as_number("1e3") == 1000.0
    assert as_number("uvloop") is None
    assert as_number("nan") is None
    assert as_number("") is None


def test_summary_matches_runs_csv_by_recomputation(tmp_path: Path) -> None:
    figures = [(101.5, 0.93, 1.21, 880), (98.25, 0.97, 1.3, 910), (110.0, 0.9, 1.17, 850)]
    rows = []
    for i, (mib, cores, ns, p99) in enumerate(figures):
        driver = parse_kv_text(sample(mib, cores, ns, p99))
        service = parse_kv_text(
            sample(mib * 1.01, cores / 2, ns / 2, p99).replace("tcp-driver", "tcp-service")
        )
        rows.append({"run": str(i + 1), **merge_run(driver, service)})
    stats = write_cell_artifacts(tmp_path, rows)

    runs = read_runs_csv(tmp_path / "runs.csv")
    assert len(runs) == 3
    assert next(iter(runs[0])) == "run"
    assert runs[1]["service_role"] == "tcp-service"
    assert runs[2]["loop"] == "uvloop"

    with (tmp_path / "summary.csv").open(newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["metric", "mean", "stdev"]
        summary_rows = list(reader)
    summary = read_summary_csv(tmp_path / "summary.csv")
    metrics = [r[0] for r in summary_rows]
    # Every numeric column (and only those) is summarized, in runs.csv order.
    numeric = [
        col
        for col in runs[0]
        if col not in ("run", "pid", "service_pid")
        and all(as_number(r[col]) is not None for r in runs)
    ]
    assert metrics == numeric
    assert "loop" not in metrics and "cpu_usage_measured" not in metrics
    assert "service_cpu_ns_per_byte" in metrics
    for metric in metrics:
        values = [float(r[metric]) for r in runs]
        assert math.isclose(summary[metric].mean, statistics.fmean(values), rel_tol=1e-9)
        assert math.isclose(
            summary[metric].stdev, statistics.stdev(values), rel_tol=1e-9, abs_tol=1e-12
        )
        assert math.isclose(stats[metric].mean, summary[metric].mean, rel_tol=1e-9)
    assert summary["worker_threads"].stdev == 0


def test_summary_single_run_stdev_zero_and_missing_cells(tmp_path: Path) -> None:
    rows = [{"a": "1", "b": "x"}, {"a": "3", "c": "5"}]
    stats = summarize(rows)
    assert stats["a"].mean == 2 and math.isclose(stats["a"].stdev, math.sqrt(2))
    assert "b" not in stats
    assert stats["c"].mean == 5 and stats["c"].stdev == 0 and stats["c"].n == 1


def test_a_null_figure_is_a_missing_cell_not_text() -> None:
    # A short sustained run reports rss_growth_bytes_per_min=null (and why): the mean is
    # over the runs that have a figure, and a column of nulls has none.
    rows = [
        {"g": "null", "h": "null", "g_reason": "too short"},
        {"g": "60", "h": "null"},
        {"g": "120", "h": "null"},
    ]
    stats = summarize(rows)
    assert stats["g"].mean == 90 and stats["g"].n == 2
    assert "h" not in stats and "g_reason" not in stats


def test_rows_from_directory_pairs_driver_and_service(tmp_path: Path) -> None:
    for n in (1, 2):
        (tmp_path / f"handoff-run-{n}.txt").write_text(sample(100 + n, 1, 2, 3))
        (tmp_path / f"service-run-{n}.txt").write_text(sample(90 + n, 0.5, 1, 3))
    rows = rows_from_directory(tmp_path)
    assert [r["run"] for r in rows] == ["1", "2"]
    assert rows[1]["mib_per_sec"] == "102" and rows[1]["service_mib_per_sec"] == "92"


def test_summary_line_split_and_integrated(tmp_path: Path) -> None:
    integrated = summarize([parse_kv_text(sample(100, 1.5, 2.0, 900))])
    line = summary_line(
        transport="duplex",
        implementation="handoff",
        scenario="fragmented",
        completion="ticket",
        runs=1,
        stats=integrated,
        location="bench/results/x",
    )
    assert line == (
        "stream duplex handoff fragmented ticket runs=1 mib_per_sec=100.00 cpu_avg_cores=1.500"
        " cpu_ns_per_byte=2.000 p99_us=900.0 -> bench/results/x"
    )
    split = summarize(
        [merge_run(parse_kv_text(sample(100, 1, 2, 900)), parse_kv_text(sample(99, 0.5, 1.25, 0)))]
    )
    line = summary_line(
        transport="tcp",
        implementation="handoff",
        scenario="coalesced",
        completion="fire_and_forget",
        runs=1,
        stats=split,
        location="r",
    )
    assert "service_cpu_ns_per_byte=1.250" in line and "p99_us=900.0" in line


def test_report_markdown_and_chart(tmp_path: Path) -> None:
    for impl, ns in (("handoff", 1.2), ("manual_vec", 2.4), ("raw_copy", 0.9)):
        for scenario in ("fragmented", "coalesced"):
            cell = tmp_path / impl / scenario
            cell.mkdir(parents=True)
            text = sample(100, 1, 5, 700).replace("handoff", impl).replace("coalesced", scenario)
            rows = [merge_run(parse_kv_text(text), parse_kv_text(sample(99, 0.5, ns, 0)))]
            write_cell_artifacts(cell, rows)
    cells = cells_from_directory(tmp_path)
    assert {(c.implementation, c.scenario) for c in cells} == {
        (i, s) for i in ("handoff", "manual_vec", "raw_copy") for s in ("fragmented", "coalesced")
    }
    md, png = write_comparison(tmp_path, cells, "t")
    text = md.read_text()
    assert "| scenario | implementation | driver MiB/s | service MiB/s |" in text
    assert "| coalesced | manual_vec |" in text and "2.00x" in text
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Integrated cells say that CPU covers the whole process.
    integrated = [
        CellSummary(
            "handoff", "fragmented", summarize([parse_kv_text(sample(1, 1, 1, 1))]), tmp_path
        )
    ]
    assert "(whole process)" in markdown(integrated)


# -- ports ----------------------------------------------------------------------------


def _reserve_in_child(lock_dir: str, queue: multiprocessing.Queue[int], hold: float) -> None:
    import time

    held = ports.reserve_ports(5, lock_dir=Path(lock_dir))
    for r in held:
        queue.put(r.port)
    time.sleep(hold)


def test_concurrent_reservations_never_share_a_port(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_in_child, args=(str(tmp_path), queue, 1.0)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    mine = ports.reserve_ports(5, lock_dir=tmp_path)
    got = [queue.get(timeout=30) for _ in range(20)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    everything = got + [r.port for r in mine]
    assert len(set(everything)) == len(everything) == 25
    for r in mine:
        r.release()


def test_held_lock_blocks_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ports.reserve_port(lock_dir=tmp_path)
    assert first.held and first.lock_path.exists()
    # Another holder cannot lock the same port while the reservation lives...
    assert ports.try_lock_port(first.port, tmp_path) is None
    # ...and a reservation that is handed that port by the kernel draws another one.
    real = ports._free_port
    drawn = iter([first.port, first.port])
    monkeypatch.setattr(ports, "_free_port", lambda host: next(drawn, None) or real(host))
    second = ports.reserve_port(lock_dir=tmp_path)
    assert second.port != first.port
    first.release()
    fd = ports.try_lock_port(first.port, tmp_path)
    assert fd is not None
    import os

    os.close(fd)
    second.release()
    with ports.reserve_port(lock_dir=tmp_path) as third:
        assert third.held
    assert not third.held
