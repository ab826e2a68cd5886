"""Combining worker measurements and the RSS growth figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from bytes_handoff_bench.harness.config import BenchConfig
from bytes_handoff_bench.harness.metrics import (
    WorkerResult,
    combine,
    growth_per_minute,
    new_histogram,
)
from bytes_handoff_bench.harness.output import report_lines
from bytes_handoff_bench.harness.roles import RunOutcome


def test_growth_is_the_slope_after_warm_up() -> None:
    warm_up = [(float(t), 50_000_000) for t in range(2)]  # dropped: first 20 %
    steady = [(float(t), 10_000_000 + 1000 * t) for t in range(2, 10)]
    assert growth_per_minute(warm_up + steady) == pytest.approx(60_000)
    assert growth_per_minute([(0.0, 5), (1.0, 5), (2.0, 5)]) == 0
    assert growth_per_minute([(0.0, 5)]) == 0


def _report(samples: list[tuple[float, int]], tmp_path: Path) -> dict[str, str]:
    """The report's keys for a run with these RSS samples."""
    cfg = BenchConfig(rss_samples=str(tmp_path / "rss.csv"))
    results = [_worker(0.0, 1.0, [100], 1000)]
    outcome = RunOutcome(combine(results), results, samples, None)
    return dict(line.split("=", 1) for line in report_lines(cfg, outcome))


def test_a_short_run_reports_no_growth_and_says_why(tmp_path: Path) -> None:
    # A 0.5 s run: two samples 7 ms apart, 80 kB apart, once reported as ~689 MB/min.
    report = _report([(0.0, 30_000_000), (0.007, 30_080_000)], tmp_path)
    assert report["rss_samples"] == "2"
    assert report["rss_growth_bytes_per_min"] == "null"
    reason = report["rss_growth_reason"]
    assert "samples span 0.007 s" in reason and "at least 10 s" in reason, reason


def test_a_long_enough_run_reports_its_growth(tmp_path: Path) -> None:
    # 30 samples a second apart, growing 1000 bytes a second after the warm-up.
    samples = [(float(t), 10_000_000 + 1000 * t) for t in range(30)]
    report = _report(samples, tmp_path)
    assert float(report["rss_growth_bytes_per_min"]) == pytest.approx(60_000)
    assert "rss_growth_reason" not in report


def test_growth_needs_both_the_span_and_the_samples() -> None:
    from bytes_handoff_bench.harness.metrics import rss_growth
    from bytes_handoff_bench.limits import MIN_RSS_GROWTH_SAMPLES, MIN_RSS_GROWTH_SPAN_SECONDS

    floor_span, floor_n = MIN_RSS_GROWTH_SPAN_SECONDS, MIN_RSS_GROWTH_SAMPLES
    # Enough span, too few samples (after the first 20 % are dropped as warm-up).
    sparse = [(0.0, 1), (20.0, 2), (40.0, 3)]
    assert rss_growth(sparse).bytes_per_min is None
    assert f"at least {floor_n} samples" in (rss_growth(sparse).reason or "")
    # Many samples, too short a span.
    dense = [(t / 100, 5) for t in range(100)]
    assert rss_growth(dense).bytes_per_min is None
    assert f"at least {floor_span:g} s" in (rss_growth(dense).reason or "")
    # Just enough of both: a number, and no reason.
    enough = [(float(t), 5) for t in range(13)]  # the fit keeps t = 2..12: 11 samples, 10 s
    assert rss_growth(enough).bytes_per_min == 0 and rss_growth(enough).reason is None
    assert rss_growth([]).bytes_per_min is None


def _worker(start: float, end: float, latencies: list[int], nbytes: int) -> WorkerResult:
    hist = new_histogram()
    for us in latencies:
        hist.record_value(us)
    r = WorkerResult(streams=len(latencies), bytes=nbytes, waves=1)
    r.window_start, r.window_end = start, end
    r.cpu_user, r.cpu_system, r.vcsw, r.ivcsw = 0.5, 0.25, 3, 4
    r.finish(hist)
    return r


def test_workers_are_summed_and_histograms_merged() -> None:
    s = combine([_worker(10.0, 11.0, [100, 200], 1000), _worker(10.5, 12.0, [5000], 500)])
    assert s.seconds == pytest.approx(2.0)  # earliest start to latest end
    assert (s.streams, s.bytes, s.waves) == (3, 1500, 1)
    assert s.cpu_user == pytest.approx(1.0) and s.cpu_system == pytest.approx(0.5)
    assert (s.vcsw, s.ivcsw) == (6, 8)
    assert s.max_rss_bytes > 0
    assert s.latency_micros["max"] == pytest.approx(5000, rel=0.001)
    assert s.latency_micros["p50"] == pytest.approx(200, rel=0.01)


def test_a_worker_without_a_window_adds_nothing() -> None:
    s = combine([_worker(1.0, 2.0, [10], 10), WorkerResult()])
    assert s.seconds == pytest.approx(1.0)
    assert s.streams == 1


def test_peak_rss_is_the_process_own_not_its_forking_parents() -> None:
    """A child of a large parent reports its own peak: ru_maxrss would report the parent's."""
    import subprocess
    import sys

    ballast = bytearray(256 * 1024 * 1024)
    ballast[::4096] = b"x" * len(range(0, len(ballast), 4096))  # touch every page
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource; from bytes_handoff_bench.harness.metrics import peak_rss_bytes;"
            " print(peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    del ballast
    peak, ru_maxrss = map(int, child.stdout.split())
    assert ru_maxrss > 200 * 1024 * 1024  # the kernel's inherited high-water mark
    assert peak < 100 * 1024 * 1024
