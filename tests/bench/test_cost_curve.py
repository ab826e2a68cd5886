"""bench/run-cost-curve.sh: a tiny sweep end to end (structure, never timings), the knee
arithmetic on made-up points, and bad flags (one line, exit 2, before any run)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from harness_support import assert_one_line_error
from harness_support import run_script as run

from bytes_handoff_bench.tools.artifacts import read_runs_csv
from bytes_handoff_bench.tools.cost_curve import (
    CURVE_COLUMNS,
    KNEE_COLUMNS,
    Point,
    build_parser,
    make_plan,
    mark_knees,
    sweep_rates,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "run-cost-curve.sh"

# A few KiB per stream: each point is mostly interpreter start-up.
TINY = [
    "--connections", "2",
    "--route-frames", "4",
    "--frame-len", "32",
    "--tunnel-bytes", "4096",
    "--read-reserve", "1024",
    "--duration-seconds", "0.5",
    "--loop", "asyncio",
]  # fmt: skip


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def one_folder(results: Path) -> Path:
    folders = [p for p in results.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def test_a_tiny_sweep_writes_the_csv_the_chart_and_the_knee_table(tmp_path: Path) -> None:
    proc = run(
        SCRIPT,
        *TINY,
        "--implementation", "raw_copy,handoff",  # reported in the one order: handoff first
        "--rates", "40,20",
        "--results-dir", str(tmp_path),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    base = one_folder(tmp_path)
    assert base.name.startswith("cost_curve_asyncio_coalesced_")

    columns, rows = read_csv(base / "cost_curve.csv")
    assert columns == CURVE_COLUMNS
    assert [(r["implementation"], r["offered_streams_per_sec"]) for r in rows] == [
        ("handoff", "20"),
        ("handoff", "40"),
        ("raw_copy", "20"),
        ("raw_copy", "40"),
    ]
    for row in rows:
        assert row["fell_behind"] in ("true", "false")
        assert row["knee"] in ("true", "false")
        assert float(row["service_cpu_avg_cores"]) > 0 and float(row["latency_p99_ms"]) > 0
        within = row["fell_behind"] == "false" and float(row["latency_p99_ms"]) <= 50
        assert row["within_bound"] == ("true" if within else "false")
    for impl in ("handoff", "raw_copy"):
        mine = [r for r in rows if r["implementation"] == impl]
        knees = [r for r in mine if r["knee"] == "true"]
        assert len(knees) <= 1
        if knees:  # every point up to the knee is within the bound
            rate = float(knees[0]["offered_streams_per_sec"])
            below = [r for r in mine if float(r["offered_streams_per_sec"]) <= rate]
            assert all(r["within_bound"] == "true" for r in below)

    knee_columns, knee_rows = read_csv(base / "knees.csv")
    assert knee_columns == KNEE_COLUMNS
    assert [r["implementation"] for r in knee_rows] == ["handoff", "raw_copy"]
    assert all(r["p99_bound_ms"] == "50" for r in knee_rows)

    assert (base / "cost_curve.png").read_bytes()[:4] == b"\x89PNG"
    md = (base / "cost_curve.md").read_text()
    assert md.startswith("# Cost curve: split-process TCP, asyncio, fire-and-forget: coalesced")
    assert "Command: `run-cost-curve.sh " in md
    assert "## Knee: the highest offered rate with p99 within 50 ms" in md
    assert "| implementation | knee streams/s | knee MiB/s |" in md
    assert "![cost curve](cost_curve.png)" in md
    knee_lines = [line for line in md.splitlines() if line.startswith(("| handoff |", "| raw"))]
    assert len(knee_lines) == 2  # one knee row each

    runs = read_runs_csv(base / "runs.csv")
    assert len(runs) == 4
    for row in runs:  # the driver paced the load, the service served it: both reported
        assert row["load"] == "open_loop" and row["role"] == "tcp-driver"
        assert row["service_role"] == "tcp-service" and "service_offered_streams_per_sec" not in row
        assert row["loop"] == "asyncio" and row["service_loop"] == "asyncio"
    for impl in ("handoff", "raw_copy"):
        for rate in ("20", "40"):
            assert (base / impl / f"rate-{rate}" / "handoff-run-1.txt").is_file()
            assert (base / impl / f"rate-{rate}" / "service-run-1.txt").is_file()
    assert [line.split(":")[0] for line in proc.stdout.splitlines()[:2]] == [
        "knee asyncio handoff",
        "knee asyncio raw_copy",
    ]
    assert "cost_curve=" in proc.stdout

    # The same sweep judged again at a bound nothing meets: no run, no knee, same points.
    again = run(SCRIPT, "--replot", str(base), "--p99-bound-ms", "0.001", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "knee asyncio handoff: none within the bound" in again.stdout
    _, replotted = read_csv(base / "cost_curve.csv")
    assert [r["knee"] for r in replotted] == ["false"] * 4
    assert [r["latency_p99_ms"] for r in replotted] == [r["latency_p99_ms"] for r in rows]
    md = (base / "cost_curve.md").read_text()
    assert "## Knee: the highest offered rate with p99 within 0.001 ms" in md
    assert "| handoff | none within the bound |" in md
    assert "Command: `run-cost-curve.sh " in md  # the sweep's own command, kept
    assert len(read_runs_csv(base / "runs.csv")) == 4


def test_without_rates_a_probe_picks_them(tmp_path: Path) -> None:
    proc = run(
        SCRIPT,
        *TINY,
        "--implementation", "raw_copy",
        "--points", "2",
        "--probe-seconds", "0.4",
        "--low-fraction", "0.2",
        "--high-fraction", "0.4",
        "--results-dir", str(tmp_path),
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    base = one_folder(tmp_path)
    assert (base / "raw_copy" / "probe" / "handoff-run-1.txt").is_file()
    _, knees = read_csv(base / "knees.csv")
    probed = float(knees[0]["probe_streams_per_sec"])
    _, rows = read_csv(base / "cost_curve.csv")
    offered = [float(r["offered_streams_per_sec"]) for r in rows]
    assert offered == pytest.approx([0.2 * probed, 0.4 * probed], rel=0.01)
    assert "Saturation probe (closed loop" in (base / "cost_curve.md").read_text()


def point(impl: str, rate: float, p99: float, behind: int = 0) -> Point:
    return Point(impl, rate, 1, rate, 0.1, 1.0, p99 / 2, p99, 0.0, 0.0, behind, [])


def test_the_knee_is_the_highest_rate_within_the_bound_that_kept_up() -> None:
    points = [
        point("a", 100, 5), point("a", 200, 8), point("a", 300, 80), point("a", 400, 20),
        point("b", 100, 5), point("b", 200, 9), point("b", 300, 9, behind=1),
        point("c", 100, 60), point("c", 200, 70),
    ]  # fmt: skip
    knees = mark_knees(points, 50.0)
    assert knees["a"] is not None and knees["a"].offered == 400
    # b: a point that fell behind is no result, even with a low p99.
    assert knees["b"] is not None and knees["b"].offered == 200
    assert knees["c"] is None  # no rate within the bound
    assert [p.offered for p in points if p.knee] == [400, 200]


def test_probed_rates_are_evenly_spaced_from_low_to_high_fraction() -> None:
    plan = make_plan(
        build_parser().parse_args(["--points", "4", "--low-fraction", "0.1",
                                   "--high-fraction", "1.3", "--results-dir", "/tmp"]),
        "python",
    )  # fmt: skip
    assert sweep_rates(plan, {"a": 500.0, "b": 1000.0}) == [100, 500, 900, 1300]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rates", "0"], "argument --rates: expected streams per second above 0"),
        (["--rates", "10,abc"], "argument --rates: expected streams per second"),
        (["--rates", "10,10"], "a rate is given twice"),
        (["--p99-bound-ms", "0"], "argument --p99-bound-ms: expected a positive number"),
        (["--implementation", "bogus"], "--implementation: 'bogus' is not one of all, handoff"),
        (["--implementation", "handoff,handoff"], "--implementation names one twice"),
        (["--low-fraction", "2", "--high-fraction", "1"], "--low-fraction (2) must be below"),
        (["--points", "1"], "argument --points: expected a whole number from 2 to 50"),
        (["--runs", "0"], "argument --runs: expected a whole number from 1"),
        (["--rate-tolerance", "1"], "argument --rate-tolerance: expected a fraction"),
        (["--duration-seconds", "0"], "argument --duration-seconds: expected seconds above 0"),
        (["--service-cores", "4096"], "argument --service-cores: CPU 4096 in '4096'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--frame-len", "8"], "argument --frame-len: expected a whole number from 16"),
        (["--replot", "/nonexistent"], "--replot: no runs.csv in '/nonexistent'"),
    ],
)
def test_bad_flags_are_one_line_before_any_run(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = run(SCRIPT, *args, "--results-dir", str(tmp_path), timeout=60)
    line = assert_one_line_error(proc, "run-cost-curve.sh")
    assert needle in line, line
    assert list(tmp_path.iterdir()) == []
