"""Combining worker measurements and the RSS growth figure."""

from __future__ import annotations

import pytest

from bytes_handoff_bench.harness.metrics import (
    WorkerResult,
    combine,
    growth_per_minute,
    new_histogram,
)


def test_growth_is_the_slope_after_warm_up() -> None:
    warm_up = [(float(t), 50_000_000) for t in range(2)]  # dropped: first 20 %
    steady = [(float(t), 10_000_000 + 1000 * t) for t in range(2, 10)]
    assert growth_per_minute(warm_up + steady) == pytest.approx(60_000)
    assert growth_per_minute([(0.0, 5), (1.0, 5), (2.0, 5)]) == 0
    assert growth_per_minute([(0.0, 5)]) == 0


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
