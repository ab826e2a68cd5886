"""The leak gate: service 0's live heap, sampled by the service itself while it is idle.

Each service, whenever it has had no stream open and accepted
none for ``HEAP_POLL_SECONDS`` (between the driver's waves: once a wave), runs
a full garbage collection and appends a ``HeapSample`` to its
``<stem>.heap.csv``: the bytes ``malloc`` has handed out and not got back
(glibc ``mallinfo2``: Python objects over 512 bytes, every stream buffer,
uvloop's and libuv's own allocations), ``sys.getallocatedblocks()`` (one
block per live Python object, ``bytes`` and ``str`` included) and the
objects ``gc`` tracks (containers, instances, futures, tasks). All three
count only what is live at zero load, and none counts the free memory an
allocator keeps. Over service 0's samples after the first 20 %, the run fails
if, per stream it served, malloc'd bytes grow more than
``--heap-limit-bytes-per-stream`` (256), Python blocks more than
``--py-blocks-limit-per-stream`` (0.5) or gc objects more than
``--gc-objects-limit-per-stream`` (0.1). The growth is ``steady_slope``: the
smallest Theil-Sen slope of the samples' three consecutive stretches. A leak
grows alike in all three; a table or free list that grows once, at a new peak
of streams open at once (a step), or fills ever slower (a flattening curve)
does not. Seven healthy 60-second runs (socket, protocol and both paths, with
and without kills) measured -13 to +11 bytes, 0.01-0.07 blocks and 0 gc
objects a stream; a 4 KiB ``bytes`` kept per stream measured 4148 bytes and
1.03 blocks, a 64-byte one 1.06 blocks, an empty list 1.03 blocks and 1.00 gc
object (``--inject-leak-bytes-per-stream N``, a hidden flag, makes every
service keep a ``bytes`` object of N bytes per stream: the check of the gate).
Fewer than ``MIN_HEAP_SAMPLES`` samples over ``MIN_HEAP_STREAMS`` streams after
the warm-up (a run of under about 30 s) are reported, not gated; without glibc
2.33+ the bytes are not measured.

Service 0's RSS slope (``metrics.rss_growth``, after the first 20 %) is
reported beside it, and gates only with ``--rss-limit-mib-per-min``. It is no
leak figure: the allocator keeps its high-water mark, so RSS steps up whenever
service 0 reaches a new peak of streams open at once (all of a wave while its
peer is dead, ~90 KiB a stream on the protocol path) and stays there, and a
step late in a 60-second run fits as 10-17 MiB/min; a leak, meanwhile, can
fill the free memory under that mark first (the 4 KiB and list leaks above
measured +0.4 and -0.6 MiB/min of RSS in 60 s). The heap samples' full
collections also keep cyclic garbage from piling up between waves. The
orchestrator samples each service's RSS once a second (``metrics.rss_bytes``).
"""

from __future__ import annotations

import ctypes
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import SoakConfig

#: How often a service looks whether it is idle (no stream open) for its heap sample.
HEAP_POLL_SECONDS = 0.1
#: The leak gate fits service 0's idle samples after this share of them (the warm-up).
HEAP_WARM_UP_FRACTION = 0.2
#: The leak gate needs this many idle samples after the warm-up (a third of them in each
#: of ``steady_slope``'s stretches), spanning this many streams (a shorter run reports,
#: not gates; a 60-second run has 20-30 over 1200-1900).
MIN_HEAP_SAMPLES = 12
MIN_HEAP_STREAMS = 600


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _load_mallinfo2() -> Any:
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc 2.33 or later
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    fn.argtypes = []
    return fn


_MALLINFO2 = _load_mallinfo2()


def malloc_in_use() -> int | None:
    """Bytes ``malloc`` has handed out and not got back (glibc ``mallinfo2``: ``uordblks +
    hblkhd``, every arena), or ``None`` without glibc 2.33+. Free memory the allocator
    keeps (its high-water mark, fragmentation) is not in it; Python objects over 512
    bytes, every buffer the streams use and uvloop's and libuv's own allocations are."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


HEAP_CSV_HEADER = "elapsed_seconds,streams,malloc_in_use_bytes,py_blocks,gc_objects\n"


@dataclass(frozen=True)
class HeapSample:
    """Service 0's live heap while no stream is open, after a full garbage collection."""

    t: float  # monotonic seconds
    #: Streams the service had accepted when it sampled.
    streams: int
    #: ``malloc_in_use()``: -1 where unavailable.
    heap_bytes: int
    #: ``sys.getallocatedblocks()``: memory blocks Python's object allocator holds, one
    #: for every live object (``bytes`` too, which ``gc`` does not track) and a few more.
    py_blocks: int
    #: Objects the cyclic GC tracks (reported only).
    gc_objects: int

    @classmethod
    def now(cls, streams: int, gc_objects: int) -> HeapSample:
        heap = malloc_in_use()
        return cls(
            time.monotonic(),
            streams,
            -1 if heap is None else heap,
            sys.getallocatedblocks(),
            gc_objects,
        )

    def csv_line(self) -> str:
        return f"{self.t:.3f},{self.streams},{self.heap_bytes},{self.py_blocks},{self.gc_objects}\n"


def parse_heap_samples(text: str) -> list[HeapSample]:
    """The samples of a ``.heap.csv`` (the header and any torn line skipped)."""
    samples = []
    for line in text.splitlines()[1:]:
        parts = line.split(",")
        if len(parts) != 5:
            continue
        try:
            samples.append(HeapSample(float(parts[0]), *(int(p) for p in parts[1:])))
        except ValueError:
            continue
    return samples


def robust_slope(points: Sequence[tuple[float, float]]) -> float:
    """Theil-Sen slope of ``y`` over ``x``: the median of the slopes between every two points
    (0 when ``x`` does not vary): one odd sample does not move it."""
    slopes = sorted(
        (y1 - y0) / (x1 - x0)
        for i, (x0, y0) in enumerate(points)
        for x1, y1 in points[i + 1 :]
        if x1 != x0
    )
    if not slopes:
        return 0.0
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def steady_slope(points: Sequence[tuple[float, float]], parts: int = 3) -> float:
    """The smallest ``robust_slope`` of ``parts`` consecutive stretches of ``points`` (each
    shares its first point with the previous one's last).

    A leak grows alike in every stretch. What is not a leak does not: a table or
    free list that grows once, at a new peak of streams open at once, and keeps its
    size (a step: one stretch), and free lists that fill early on (uvloop keeps up
    to 250 freed handles and write contexts of a type) at ever rarer new peaks (a
    curve that flattens: the later stretches much less).
    """
    last = len(points) - 1
    cuts = [round(k * last / parts) for k in range(parts + 1)]
    return min(robust_slope(points[a : b + 1]) for a, b in itertools.pairwise(cuts))


@dataclass(frozen=True)
class HeapGrowth:
    """Service 0's live-heap growth after the warm-up (``HEAP_WARM_UP_FRACTION`` of its
    samples)."""

    samples: int
    streams: int  # streams served between the first and the last sample fitted
    bytes_per_stream: float | None  # None: no malloc figure (no glibc 2.33+)
    py_blocks_per_stream: float
    gc_objects_per_stream: float
    bytes_per_min: float | None
    #: Why the figures do not gate (too few samples or streams), else ``None``.
    not_gated: str | None


def heap_growth(samples: Sequence[HeapSample]) -> HeapGrowth | None:
    """Growth (``steady_slope``) per stream served (gated) and per minute (reported), or
    ``None`` with fewer than two samples after the warm-up."""
    tail = list(samples[int(len(samples) * HEAP_WARM_UP_FRACTION) :])
    if len(tail) < 2:
        return None
    streams = tail[-1].streams - tail[0].streams
    has_heap = all(s.heap_bytes >= 0 for s in tail)
    not_gated = None
    if len(tail) < MIN_HEAP_SAMPLES or streams < MIN_HEAP_STREAMS:
        not_gated = (
            f"{len(tail)} idle samples over {streams} streams after the warm-up; the gate needs"
            f" at least {MIN_HEAP_SAMPLES} over at least {MIN_HEAP_STREAMS} streams"
        )
    return HeapGrowth(
        samples=len(tail),
        streams=streams,
        bytes_per_stream=steady_slope([(s.streams, s.heap_bytes) for s in tail])
        if has_heap
        else None,
        py_blocks_per_stream=steady_slope([(s.streams, s.py_blocks) for s in tail]),
        gc_objects_per_stream=steady_slope([(s.streams, s.gc_objects) for s in tail]),
        bytes_per_min=steady_slope([(s.t, s.heap_bytes) for s in tail]) * 60 if has_heap else None,
        not_gated=not_gated,
    )


def heap_failures(growth: HeapGrowth | None, cfg: SoakConfig) -> list[str]:
    """The leak gate's reasons to fail (none when it passes or cannot gate)."""
    if growth is None or growth.not_gated is not None:
        return []
    reasons = []
    if (
        growth.bytes_per_stream is not None
        and growth.bytes_per_stream > cfg.heap_limit_bytes_per_stream
    ):
        reasons.append(
            f"service 0's live heap grew {growth.bytes_per_stream:.0f} bytes per stream"
            f" (limit {cfg.heap_limit_bytes_per_stream:g}) over {growth.streams} streams"
        )
    if growth.py_blocks_per_stream > cfg.py_blocks_limit_per_stream:
        reasons.append(
            f"service 0's Python blocks grew {growth.py_blocks_per_stream:.2f} per stream"
            f" (limit {cfg.py_blocks_limit_per_stream:g}) over {growth.streams} streams"
        )
    if growth.gc_objects_per_stream > cfg.gc_objects_limit_per_stream:
        reasons.append(
            f"service 0's gc-tracked objects grew {growth.gc_objects_per_stream:.2f} per stream"
            f" (limit {cfg.gc_objects_limit_per_stream:g}) over {growth.streams} streams"
        )
    return reasons
