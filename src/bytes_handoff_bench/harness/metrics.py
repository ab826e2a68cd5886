"""Measurements: CPU and context switches (getrusage), latency (HDR histogram), RSS over time.

Each worker measures its own window and sends back a :class:`WorkerResult`;
:func:`combine` sums them (bytes, CPU, context switches, RSS), spans the wall
window from the earliest start to the latest end, and merges the histograms.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from ..limits import MIN_RSS_GROWTH_SAMPLES, MIN_RSS_GROWTH_SPAN_SECONDS
from ..output_paths import write_output

if TYPE_CHECKING:  # imported where used: a module that only needs the RSS helpers runs without it
    from hdrh.histogram import HdrHistogram

__all__ = [
    "CpuSnapshot",
    "RssGrowth",
    "RssSampler",
    "Summary",
    "WorkerResult",
    "combine",
    "growth_per_minute",
    "new_histogram",
    "rss_growth",
]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_Bytes: TypeAlias = bytes  # the dataclasses below have a field named `bytes`


def new_histogram() -> HdrHistogram:
    """Latency histogram in microseconds: 1 us .. 60 s, 3 significant digits."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, 60_000_000, 3)


@dataclass(frozen=True)
class CpuSnapshot:
    """A point in time with this process's rusage."""

    at: float
    user: float
    system: float
    vcsw: int
    ivcsw: int

    @classmethod
    def now(cls) -> CpuSnapshot:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.monotonic(), ru.ru_utime, ru.ru_stime, ru.ru_nvcsw, ru.ru_nivcsw)


@dataclass
class WorkerResult:
    """What one worker measured over its window (picklable: it crosses a pipe)."""

    streams: int = 0
    bytes: int = 0
    waves: int = 0
    window_start: float | None = None  # time.monotonic(): system-wide on Linux
    window_end: float | None = None
    cpu_user: float = 0.0
    cpu_system: float = 0.0
    vcsw: int = 0
    ivcsw: int = 0
    max_rss_bytes: int = 0
    histogram: _Bytes | None = None  # HdrHistogram.encode()
    error: str | None = None
    error_exit_code: int = 1
    #: Open loop (``--rate``): streams started, and the latest start behind its schedule (s).
    started: int = 0
    start_lag_max: float = 0.0
    #: tcp-service: streams done per route (``--service-addr``/``--sink-addr`` pair).
    route_streams: list[int] = field(default_factory=list)
    #: ``--tls``: the versions and ciphers this worker's clients and sinks negotiated.
    tls_versions: list[str] = field(default_factory=list)
    tls_ciphers: list[str] = field(default_factory=list)

    def count_route(self, route: int) -> None:
        if len(self.route_streams) <= route:
            self.route_streams.extend([0] * (route + 1 - len(self.route_streams)))
        self.route_streams[route] += 1

    def set_window(self, start: CpuSnapshot, end: CpuSnapshot) -> None:
        self.window_start = start.at
        self.window_end = end.at
        self.cpu_user = end.user - start.user
        self.cpu_system = end.system - start.system
        self.vcsw = end.vcsw - start.vcsw
        self.ivcsw = end.ivcsw - start.ivcsw

    def finish(self, hist: HdrHistogram) -> WorkerResult:
        self.max_rss_bytes = peak_rss_bytes()
        self.histogram = hist.encode() if hist.get_total_count() else None
        return self


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux: ``VmHWM`` of the process's own memory. ``ru_maxrss`` is not used
    there because it also counts the parent's RSS at the moment it forked us
    (the kernel keeps the pre-exec high-water mark), which made a service
    started by a large Python parent look large.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Summary:
    """The whole run: workers combined."""

    streams: int
    bytes: int
    waves: int
    seconds: float
    cpu_user: float
    cpu_system: float
    vcsw: int
    ivcsw: int
    max_rss_bytes: int
    latency_micros: dict[str, int] = field(default_factory=dict)
    #: Open loop (``--rate``): streams started, and the latest start behind its schedule (s).
    started: int = 0
    start_lag_max: float = 0.0
    #: The workers' latency histograms added up, ``HdrHistogram.encode()``d (empty without
    #: a stream): what several drivers' reports are merged from (``tools/merge_drivers``).
    histogram: _Bytes | None = None
    histogram_count: int = 0
    #: tcp-service: streams done per route, all workers together.
    route_streams: list[int] = field(default_factory=list)
    #: ``--tls``: every version and cipher the workers' clients and sinks negotiated.
    tls_versions: list[str] = field(default_factory=list)
    tls_ciphers: list[str] = field(default_factory=list)


def combine(results: list[WorkerResult]) -> Summary:
    starts = [r.window_start for r in results if r.window_start is not None]
    ends = [r.window_end for r in results if r.window_end is not None]
    seconds = max(ends) - min(starts) if starts and ends else 0.0
    hist = new_histogram()
    for r in results:
        if r.histogram is not None:
            hist.decode_and_add(r.histogram)
    latency = {
        "p50": hist.get_value_at_percentile(50.0),
        "p95": hist.get_value_at_percentile(95.0),
        "p99": hist.get_value_at_percentile(99.0),
        "p999": hist.get_value_at_percentile(99.9),
        "max": hist.get_max_value(),
    }
    routes = [0] * max((len(r.route_streams) for r in results), default=0)
    for r in results:
        for route, count in enumerate(r.route_streams):
            routes[route] += count
    return Summary(
        streams=sum(r.streams for r in results),
        bytes=sum(r.bytes for r in results),
        waves=max((r.waves for r in results), default=0),
        seconds=max(seconds, 0.0),
        cpu_user=sum(r.cpu_user for r in results),
        cpu_system=sum(r.cpu_system for r in results),
        vcsw=sum(r.vcsw for r in results),
        ivcsw=sum(r.ivcsw for r in results),
        max_rss_bytes=sum(r.max_rss_bytes for r in results),
        latency_micros=latency,
        started=sum(r.started for r in results),
        start_lag_max=max((r.start_lag_max for r in results), default=0.0),
        histogram=hist.encode(),
        histogram_count=hist.get_total_count(),
        route_streams=routes,
        tls_versions=sorted({v for r in results for v in r.tls_versions}),
        tls_ciphers=sorted({c for r in results for c in r.tls_ciphers}),
    )


# -- RSS over time ------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    """Current resident set size of ``pid`` from ``/proc/<pid>/statm`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class RssSampler:
    """A daemon thread sampling the summed RSS of this process and ``pids`` about once a second."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.pids: list[int] = []
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _sample(self) -> None:
        workers = [rss_bytes(pid) for pid in self.pids]
        if not all(workers):
            return  # a worker has exited: a partial sum would look like a drop
        self.samples.append((time.monotonic() - self._t0, rss_bytes() + sum(workers)))

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        return self.samples

    def write_csv(self, path: str) -> None:
        """The samples as CSV (see ``output_paths``: a device or FIFO is written through)."""
        rows = "".join(f"{elapsed:.3f},{rss}\n" for elapsed, rss in self.samples)
        write_output(path, "elapsed_seconds,rss_bytes\n" + rows, "--rss-samples")


def _after_warm_up(samples: list[tuple[float, int]]) -> list[tuple[float, int]]:
    return samples[len(samples) // 5 :]


def growth_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS (bytes/minute) after the first 20 % of samples (warm-up).

    Whatever the span: :func:`rss_growth` says whether the slope means anything.
    """
    tail = _after_warm_up(samples)
    if len(tail) < 2:
        return 0.0
    n = len(tail)
    mx = sum(t for t, _ in tail) / n
    my = sum(r for _, r in tail) / n
    sxx = sum((t - mx) ** 2 for t, _ in tail)
    if sxx == 0:
        return 0.0
    sxy = sum((t - mx) * (r - my) for t, r in tail)
    return sxy / sxx * 60.0


@dataclass(frozen=True)
class RssGrowth:
    """RSS growth per minute, or ``None`` with the reason when the samples are too few."""

    bytes_per_min: float | None
    reason: str | None
    #: Samples the slope is fitted to (after the warm-up), and the time they span.
    samples: int
    span_seconds: float


def rss_growth(samples: list[tuple[float, int]]) -> RssGrowth:
    """:func:`growth_per_minute` when the samples after the warm-up span at least
    ``MIN_RSS_GROWTH_SPAN_SECONDS`` and number at least ``MIN_RSS_GROWTH_SAMPLES``;
    else no figure and why (a slope over milliseconds is not a growth per minute)."""
    tail = _after_warm_up(samples)
    span = tail[-1][0] - tail[0][0] if tail else 0.0
    if span < MIN_RSS_GROWTH_SPAN_SECONDS or len(tail) < MIN_RSS_GROWTH_SAMPLES:
        reason = (
            f"the RSS samples span {span:.3g} s ({len(tail)} after the first 20 %, the warm-up);"
            f" a growth per minute needs at least {MIN_RSS_GROWTH_SAMPLES} samples over at"
            f" least {MIN_RSS_GROWTH_SPAN_SECONDS:g} s (a sustained run of about 15 s or more)"
        )
        return RssGrowth(None, reason, len(tail), span)
    return RssGrowth(growth_per_minute(samples), None, len(tail), span)
