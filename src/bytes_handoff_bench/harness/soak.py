"""Fault-injection soak: the library's safety contract while proxies die and peers reset.

The harness measures healthy streams; this checks what the library promises when
streams break: no byte is lost or changed on a stream that completes, every
broken stream ends (no hang) with a named cause, a peer reset never takes the
proxy down, and a long-lived proxy's memory stays flat.

Processes, all on 127.0.0.1, each in its own process group with the run's token
in its command line (so the end-of-run check can find any that survived):

* **services** (``--services``, default 2) share one port with ``SO_REUSEPORT``.
  Each proxies every accepted stream with the library: ``HandoffBuffer``
  routing of the workload's frames into a ``WriteHandoff`` to the sink, then
  tunnel mode at ``TUNNEL\\n`` keeping the already-read tail, on raw sockets
  (``handoff``: the buffered tunnel loop; ``handoff_splice``: ``tunnel()``) or
  on the protocol path (``handoff_protocol``: ``HandoffProtocol`` transports),
  with completion tickets or fire-and-forget, chosen per stream
  (``--library-path`` narrows the choice to one path). Each stream's error is caught
  and counted by category; an error type the library does not promise is a
  failure. Service 0 is never killed: its memory over the whole run is the
  leak check (below). The others are SIGKILLed at random times and restarted at once, so new
  connections land on the live ones. Each service logs ``<time> <client port>``
  per accepted connection, which tells which streams a killed proxy owned.
* **the driver** runs waves of ``--connections`` streams until
  ``--duration-seconds`` pass: clients send the workload in a per-stream write
  size and a verifying sink checks every byte (``StreamVerifier``). Some client
  and sink sockets are reset (``SO_LINGER`` 0, then close) at random offsets;
  some sinks first stop reading for ``--stall-seconds``, so that the proxy's
  writes pause, and reset while they are paused.
* **this orchestrator** starts them (pinned with ``taskset`` when asked), kills
  and restarts services, samples each service's ``VmRSS`` once a second,
  classifies every stream, kills and reaps every child at the end (also on
  SIGINT/SIGTERM and on errors), checks that none is left and prints the verdict.

A stream ends as ``verified`` (exact length, every byte checked) or in a named
category: ``client_reset``, ``sink_reset``, ``sink_stall_reset``, ``proxy_killed``,
``connect_refused``.
``corrupted`` (wrong bytes), ``hang`` (not ended within ``--hang-seconds``),
``proxy_crashed`` (its proxy died without being killed) and ``unexplained``
(broken with no injected cause) fail the soak.

Everything goes into ``--out-dir`` (a folder, or a new one in an existing
folder; in one that exists, the run's fixed files must be absent, regular files,
character devices or FIFOs: ``output_paths``), checked before any process
starts; by default a new ``soak_<timestamp>`` folder in ``bench/results`` of the
clone (else of the current folder).

The leak gate. Each service, whenever it has had no stream open and accepted
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
collections also keep cyclic garbage from piling up between waves.

Exit status: 0 pass, 1 fail (or interrupted), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import gc
import itertools
import json
import os
import random
import signal
import socket
import stat
import struct
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bytes_handoff import BufferIOError, WriteClosed, WriteIOError
from bytes_handoff.adapters import wait_writable

from ..cli_common import OneLineParser, prog_and_args, run_main
from ..errors import BenchError, ProtocolError, UsageError, VerificationError
from ..extras import default_loop, require_loop
from ..limits import MAX_DURATION_SECONDS, MAX_TIMEOUT_SECONDS, MAX_WORKER_THREADS
from ..names import Completion, Implementation, Loop, Transport
from ..output_paths import (
    check_output_dir,
    check_output_file,
    choose_results_dir,
    make_output_dir,
    output_dir_arg,
    write_output,
)
from ..ports import PortError, reserve_ports
from ..processes import Child, RunError, last_line, raise_on_termination, taskset_prefix
from .config import BenchConfig, parse_addr
from .implementations import IMPLEMENTATIONS
from .metrics import rss_growth
from .transports import bind_listener, connect_tcp, tune
from .workload import StreamVerifier, Workload

MIB = 1024 * 1024
#: The library's two paths and the proxies that use them: raw sockets (``handoff``,
#: the buffered tunnel loop; ``handoff_splice``, ``tunnel()``) and the protocol path
#: (``HandoffProtocol`` transports, callback style or awaited tickets).
LIBRARY_PATHS = {
    "socket": (Implementation.HANDOFF, Implementation.HANDOFF_SPLICE),
    "protocol": (Implementation.HANDOFF_PROTOCOL,),
}
#: Client write sizes, one drawn per stream: a prime (frames and the marker split at
#: odd offsets), about one MSS, one full proxy read.
FRAGMENTS = (97, 1448, 16384)
#: Send buffer of the proxy's sink sockets and receive buffer of the sink: small, so
#: a proxy cannot push a whole stream into kernel buffers ahead of a slow sink, and
#: a sink reset meets a proxy that is still writing (the write-side error path).
SOCKET_BUFFER = 16 * 1024
#: Stream ids cycle through the 4-digit space; ids of consecutive waves never collide
#: as long as a wave is at most a quarter of it.
MAX_CONNECTIONS = 2500
#: --rss-limit-mib-per-min above this checks nothing (a GiB a second).
MAX_RSS_SLOPE_MIB_PER_MIN = 60 * 1024
#: Named categories; the last three fail the soak whenever they occur.
CATEGORIES = (
    "verified",
    "client_reset",
    "sink_reset",
    "sink_stall_reset",
    "proxy_killed",
    "connect_refused",
    "corrupted",
    "hang",
    "proxy_crashed",
    "unexplained",
)
FAILURE_CATEGORIES = ("corrupted", "hang", "proxy_crashed", "unexplained")
#: The RSS gate (when asked for) needs this many samples of service 0 (a shorter run
#: reports, not gates).
MIN_RSS_SAMPLES = 20
#: How often a service looks whether it is idle (no stream open) for its heap sample.
HEAP_POLL_SECONDS = 0.1
#: The leak gate fits service 0's idle samples after this share of them (the warm-up).
HEAP_WARM_UP_FRACTION = 0.2
#: The leak gate needs this many idle samples after the warm-up (a third of them in each
#: of ``steady_slope``'s stretches), spanning this many streams (a shorter run reports,
#: not gates; a 60-second run has 20-30 over 1200-1900).
MIN_HEAP_SAMPLES = 12
MIN_HEAP_STREAMS = 600
#: The leak gate's limits above these check nothing.
MAX_HEAP_LIMIT_BYTES_PER_STREAM = 1024 * 1024
MAX_OBJECTS_LIMIT_PER_STREAM = 1024.0
#: After a wave's clients end, the sink must be idle this long: a proxy's sink
#: connection still in the listen backlog gets accepted (and attributed) in time.
SINK_QUIET_SECONDS = 0.25


@dataclass(frozen=True)
class SoakConfig:
    """Every knob of one soak; children get it as JSON."""

    duration_seconds: float = 60.0
    connections: int = 128
    services: int = 2
    seed: int = 0
    kill_interval_seconds: float = 4.0
    client_reset_rate: float = 0.05
    sink_reset_rate: float = 0.05
    #: Streams whose sink stops reading (the proxy's writes fill and pause) for
    #: ``stall_seconds``, then resets: the fault that once froze the protocol path.
    sink_stall_reset_rate: float = 0.05
    stall_seconds: float = 1.0
    #: Which library path the services proxy with: "socket", "protocol" or "both"
    #: (drawn per stream).
    library_path: str = "both"
    hang_seconds: float = 30.0
    #: The leak gate (see the module docstring): growth of service 0's live heap per
    #: stream it served, sampled by the service itself whenever no stream is open,
    #: after a full collection (``steady_slope``).
    heap_limit_bytes_per_stream: float = 256.0
    py_blocks_limit_per_stream: float = 0.5
    gc_objects_limit_per_stream: float = 0.1
    #: Service 0's RSS slope is reported; it gates only when this is given. RSS keeps
    #: the heap's high-water mark (the peak of streams open at once, up to a whole
    #: wave while its peer is dead) and moves in steps with it: not a leak figure.
    rss_limit_mib_per_min: float | None = None
    #: Calibration only (a hidden flag): every service keeps a ``bytes`` object of
    #: this size per stream, a leak the gate must fail.
    inject_leak_bytes: int = 0
    route_frames: int = 64
    frame_len: int = 63
    tunnel_bytes: int = 256 * 1024
    read_reserve: int = 16 * 1024
    loop: str = Loop.UVLOOP  # a str: children get the config as JSON
    service_cores: str | None = None
    driver_cores: str | None = None

    @property
    def variants(self) -> list[tuple[Implementation, Completion]]:
        """The proxy variants the services draw from."""
        paths = LIBRARY_PATHS if self.library_path == "both" else [self.library_path]
        return [(i, c) for path in paths for i in LIBRARY_PATHS[path] for c in Completion]

    def bench_config(
        self,
        implementation: Implementation = Implementation.HANDOFF,
        completion: Completion = Completion.TICKET,
    ) -> BenchConfig:
        """The harness configuration the workload and the proxy functions read."""
        return BenchConfig(
            transport=Transport.TCP,
            implementation=implementation,
            completion=completion,
            connections=self.connections,
            route_frames=self.route_frames,
            frame_len=self.frame_len,
            tunnel_bytes=self.tunnel_bytes,
            read_reserve=self.read_reserve,
            loop=Loop(self.loop),
        ).validate()


def error_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def reset_close(sock: socket.socket) -> None:
    """Close with ``SO_LINGER`` 0: the kernel sends RST instead of FIN (a peer reset)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def write_json(path: Path, data: object) -> None:
    """Atomically (a new file renamed over it: ``output_paths``), so a reader or a SIGKILL
    never leaves half a file; never through a symlink."""
    write_output(path, json.dumps(data, indent=1), path.name)


def run_on_loop(loop_name: str, main: Any) -> Any:
    factory = None
    if loop_name == Loop.UVLOOP:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


# -- service --------------------------------------------------------------------------------


def proxy_error_category(exc: BaseException) -> str | None:
    """The category of a proxy's per-stream error, or ``None`` for a type nobody promised.

    The library wraps reader failures in ``BufferIOError`` and writer failures in
    ``WriteIOError`` (later chunks: ``WriteClosed``); the harness's parser raises
    ``ProtocolError`` on a stream that ends before the marker.
    """
    if isinstance(exc, BufferIOError | WriteIOError):
        if not isinstance(exc.error, OSError):
            return None  # a reader or writer broke its contract: not a peer's doing
        side = "read" if isinstance(exc, BufferIOError) else "write"
        return f"{side}_{error_name(exc.error)}"
    if isinstance(exc, WriteClosed):
        return "write_closed"
    if isinstance(exc, ProtocolError):
        return "eof_before_marker"
    return None


class Service:
    """One proxy process: accepts on the shared port, proxies each stream, counts outcomes."""

    def __init__(self, cfg: SoakConfig, spec: dict[str, Any], stem: Path) -> None:
        self.cfg = cfg
        self.service_addr = parse_addr(spec["service_addr"], "service_addr")
        self.sink_addr = parse_addr(spec["sink_addr"], "sink_addr")
        self.stem = stem
        self.rng = random.Random(f"{cfg.seed}-{stem.name}")
        self.variants = [
            (IMPLEMENTATIONS[i].proxy, cfg.bench_config(i, c)) for i, c in cfg.variants
        ]
        self.total = cfg.bench_config().bytes_per_connection
        self.counts: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.leaked: list[bytes] = []  # --inject-leak-bytes-per-stream (calibration)

    def write_stats(self) -> None:
        write_json(
            self.stem.with_suffix(".stats.json"),
            {"pid": os.getpid(), "counts": dict(self.counts), "unexpected": self.unexpected[:20]},
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listener = bind_listener(self.service_addr, reuseport=True)
        accept_log = os.open(
            self.stem.with_suffix(".accepts"),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
        )
        heap_log = os.open(
            self.stem.with_suffix(".heap.csv"),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
        )
        os.write(heap_log, HEAP_CSV_HEADER.encode())
        write_json(self.stem.with_suffix(".ready"), {"pid": os.getpid()})
        acceptor = loop.create_task(self.accept_loop(listener, accept_log))
        sampler = loop.create_task(self.sample_heap(heap_log))
        while not stop.is_set() and not acceptor.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            self.write_stats()  # a SIGKILLed service loses at most half a second of counts
        acceptor.cancel()
        sampler.cancel()
        listener.close()
        for task in self.tasks:
            task.cancel()
        stuck = 0
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=5.0)
            stuck = len(pending)
        if stuck:
            self.counts["unexpected_stuck_on_cancel"] += stuck
            self.unexpected.append(f"{stuck} streams did not end within 5 s of cancellation")
        self.write_stats()
        os.close(accept_log)
        os.close(heap_log)
        for task in (acceptor, sampler):
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error  # the accept loop or the heap sampler died: exit 1
        return 0

    async def accept_loop(self, listener: socket.socket, accept_log: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, peer = await loop.sock_accept(listener)
            # Written before serving, one unbuffered write: survives a SIGKILL right after.
            os.write(accept_log, f"{time.monotonic():.6f} {peer[1]}\n".encode())
            self.counts["accepted"] += 1
            task = loop.create_task(self.serve(tune(sock)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def sample_heap(self, heap_log: int) -> None:
        """One ``HeapSample`` line each time the service has been idle (no stream open, none
        accepted) for ``HEAP_POLL_SECONDS``, once per batch of streams: between the
        driver's waves. A full collection first: cyclic garbage is not a leak."""
        last_sampled = -1
        was_idle_at = -1  # the accept count at the previous poll, if no stream was open
        while True:
            await asyncio.sleep(HEAP_POLL_SECONDS)
            accepted = self.counts["accepted"]
            idle = not self.tasks
            if idle and was_idle_at == accepted != last_sampled:
                gc.collect()
                sample = HeapSample.now(accepted, len(gc.get_objects()))
                os.write(heap_log, sample.csv_line().encode())  # one write: survives a kill
                last_sampled = accepted
            was_idle_at = accepted if idle else -1

    async def serve(self, inbound: socket.socket) -> None:
        proxy, pcfg = self.rng.choice(self.variants)
        if self.cfg.inject_leak_bytes:
            self.leaked.append(bytes(self.cfg.inject_leak_bytes))
        self.counts[f"path_{pcfg.implementation}"] += 1
        try:
            try:
                outbound = await connect_tcp(self.sink_addr, "sink")
            except BenchError:
                self.counts["sink_connect_failed"] += 1
                return
            outbound.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            try:
                forwarded = await proxy(inbound, outbound, pcfg)
            finally:
                outbound.close()
            if forwarded == self.total:
                self.counts["completed"] += 1
            else:
                self.counts["unexpected_short_forward"] += 1
                self.unexpected.append(f"forwarded {forwarded} of {self.total} bytes")
        except Exception as exc:
            category = proxy_error_category(exc)
            if category is not None:
                self.counts[category] += 1
            else:
                self.counts[f"unexpected_{type(exc).__name__}"] += 1
                self.unexpected.append(f"{type(exc).__name__}: {exc}")
                traceback.print_exc()
                self.write_stats()
        finally:
            inbound.close()


# -- the leak gate ----------------------------------------------------------------------------


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


# -- driver ---------------------------------------------------------------------------------


@dataclass
class StreamRecord:
    """One stream of a wave, as both ends of the driver saw it."""

    wave: int
    conn: int
    fragment: int
    client_reset_at: int | None
    sink_reset_at: int | None
    sink_stall_at: int | None = None
    client: str = "pending"  # ok | reset_injected | connect_refused | error_<ERRNO> | hang | ...
    sink: str = "none"  # verified | reset_injected | short | error_<ERRNO> | corrupted | hang
    detail: str = ""
    client_port: int = 0
    t_start: float = 0.0
    t_end: float = 0.0

    def classify(self) -> str:
        """The category if the driver alone can tell, else ``pending`` (the orchestrator's)."""
        if self.sink in ("corrupted", "duplicate") or self.client == "unexpected_reply":
            return "corrupted"
        if "hang" in (self.client, self.sink):
            return "hang"
        if self.sink == "verified":
            return "verified"
        if self.client == "reset_injected":
            return "client_reset"
        if self.sink == "reset_injected":
            return "sink_reset"
        if self.sink == "stall_reset_injected":
            return "sink_stall_reset"
        if self.client == "connect_refused":
            return "connect_refused"
        return "pending"


class Driver:
    """Clients and the verifying sink; waves of streams until the duration has passed."""

    def __init__(self, cfg: SoakConfig, spec: dict[str, Any], out: Path) -> None:
        self.cfg = cfg
        self.bench = cfg.bench_config()
        self.service_addr = parse_addr(spec["service_addr"], "service_addr")
        self.sink_addr = parse_addr(spec["sink_addr"], "sink_addr")
        self.out = out
        self.rng = random.Random(f"{cfg.seed}-driver")
        self.wl = Workload(self.bench)
        self.records: dict[int, StreamRecord] = {}
        self.outcomes: Counter[str] = Counter()
        self.pending: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.sink_tasks: set[asyncio.Task[None]] = set()
        self.sink_accepts = 0
        self.client_resets = 0
        self.sink_resets = 0
        self.sink_stall_resets = 0
        self.late_sink = 0
        self.next_id = 0
        self.streams_started = 0
        self.stop = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        listener = bind_listener(self.sink_addr)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)  # inherited
        acceptor = loop.create_task(self.sink_accept_loop(listener))
        began = time.monotonic()
        waves = 0
        try:
            while not self.stop and time.monotonic() - began < self.cfg.duration_seconds:
                await self.wave(waves)
                waves += 1
        finally:
            acceptor.cancel()
            listener.close()
        write_json(
            self.out / "driver.json",
            {
                "waves": waves,
                "seconds": time.monotonic() - began,
                "streams_started": self.streams_started,
                "outcomes": dict(self.outcomes),
                "pending": self.pending,
                "failures": self.failures,
                "client_resets": self.client_resets,
                "sink_resets": self.sink_resets,
                "sink_stall_resets": self.sink_stall_resets,
                "late_sink_connections": self.late_sink,
                "interrupted": self.stop,
            },
        )
        return 0

    def request_stop(self) -> None:
        self.stop = True

    def plan(self, wave: int) -> StreamRecord:
        conn = self.next_id
        self.next_id = (self.next_id + 1) % 10_000
        self.streams_started += 1
        client_reset = sink_reset = sink_stall = None
        draw = self.rng.random()  # one draw: at most one injected fault per stream
        cfg = self.cfg
        if draw < cfg.client_reset_rate:
            client_reset = self.reset_offset()
        elif draw < cfg.client_reset_rate + cfg.sink_reset_rate:
            sink_reset = self.reset_offset()
        elif draw < cfg.client_reset_rate + cfg.sink_reset_rate + cfg.sink_stall_reset_rate:
            sink_stall = self.reset_offset()
        fragment = self.rng.choice(FRAGMENTS)
        return StreamRecord(wave, conn, fragment, client_reset, sink_reset, sink_stall)

    def reset_offset(self) -> int:
        """Half the resets land in routing mode or just past the switch, half anywhere.

        Uniform offsets alone would almost never hit the parser's state: the
        route frames are a few KiB of a stream that is mostly tunnel bytes.
        """
        total = self.bench.bytes_per_connection
        head = min(total, self.bench.prefix_len + 16 * 1024)
        return self.rng.randrange(head if self.rng.random() < 0.5 else total)

    async def wave(self, wave: int) -> None:
        """Start every stream of the wave, then wait (bounded) until both ends of each are done."""
        recs = [self.plan(wave) for _ in range(self.cfg.connections)]
        self.records = {r.conn: r for r in recs}
        self.wl = Workload(self.bench)  # one per wave: its prefix cache stays small
        deadline = time.monotonic() + self.cfg.hang_seconds
        loop = asyncio.get_running_loop()
        clients = [loop.create_task(self.client(r)) for r in recs]
        _, late = await asyncio.wait(clients, timeout=self.cfg.hang_seconds)
        for task in late:
            task.cancel()  # the client records "hang"
        if late:
            await asyncio.wait(late)
        await self.settle_sink(deadline)
        for r in recs:
            category = r.classify()
            if category == "pending":
                self.pending.append(asdict(r))
                continue
            self.outcomes[category] += 1
            if category in FAILURE_CATEGORIES:
                self.failures.append(
                    f"{category}: stream {r.conn:04} (wave {wave}, write size {r.fragment}):"
                    f" client {r.client}, sink {r.sink} {r.detail}".strip()
                )

    async def settle_sink(self, deadline: float) -> None:
        """Until no sink connection is open or waiting to be accepted; past the deadline: hangs."""
        quiet_since, seen = time.monotonic(), self.sink_accepts
        while True:
            now = time.monotonic()
            if self.sink_tasks or self.sink_accepts != seen:
                quiet_since, seen = now, self.sink_accepts
            elif now - quiet_since >= SINK_QUIET_SECONDS:
                return
            if now > deadline:
                open_tasks = set(self.sink_tasks)
                for task in open_tasks:
                    task.cancel()  # each records "hang"
                if open_tasks:  # none: connections kept arriving until the deadline
                    await asyncio.wait(open_tasks)
                return
            await asyncio.sleep(0.01)

    async def client(self, r: StreamRecord) -> None:
        loop = asyncio.get_running_loop()
        r.t_start = time.monotonic()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tune(sock)
            err = sock.connect_ex(self.service_addr)
            r.client_port = sock.getsockname()[1]  # bound by connect, also when it fails later
            if err == errno.EINPROGRESS:
                await wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                r.client = (
                    "connect_refused"
                    if err == errno.ECONNREFUSED
                    else f"error_{errno.errorcode.get(err, err)}"
                )
                return
            data = memoryview(self.wl.stream_bytes(r.conn))
            pos = 0
            while pos < len(data):
                end = min(pos + r.fragment, len(data))
                if r.client_reset_at is not None and end >= r.client_reset_at:
                    await loop.sock_sendall(sock, data[pos : r.client_reset_at])
                    reset_close(sock)
                    self.client_resets += 1
                    r.client = "reset_injected"
                    return
                await loop.sock_sendall(sock, data[pos:end])
                pos = end
            sock.shutdown(socket.SHUT_WR)
            reply = await loop.sock_recv(sock, 1)  # the proxy closes its side when done
            r.client = "unexpected_reply" if reply else "ok"
        except OSError as exc:
            r.client = f"error_{error_name(exc)}"
        except asyncio.CancelledError:
            r.client = "hang"
            raise
        finally:
            r.t_end = max(r.t_end, time.monotonic())
            sock.close()

    async def sink_accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            self.sink_accepts += 1
            task = loop.create_task(self.sink_conn(tune(sock)))
            self.sink_tasks.add(task)
            task.add_done_callback(self.sink_tasks.discard)

    async def sink_conn(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        verifier = StreamVerifier(self.wl)
        buf = bytearray(256 * 1024)
        outcome, detail = "none", ""
        try:
            while True:
                n = await loop.sock_recv_into(sock, buf)
                if n == 0:
                    try:
                        verifier.finish()
                    except VerificationError as exc:
                        outcome, detail = "short", str(exc)
                    else:
                        outcome = "verified"
                    break
                verifier.feed(buf, n)  # VerificationError: wrong bytes
                r = self.records.get(verifier.conn)
                if (
                    r is not None
                    and r.sink_reset_at is not None
                    and verifier.pos >= r.sink_reset_at
                ):
                    reset_close(sock)
                    self.sink_resets += 1
                    outcome = "reset_injected"
                    break
                if (
                    r is not None
                    and r.sink_stall_at is not None
                    and verifier.pos >= r.sink_stall_at
                ):
                    # Stop reading: the proxy fills our window and its own buffers, and
                    # its writes pause; then reset while they are paused.
                    await asyncio.sleep(self.cfg.stall_seconds)
                    reset_close(sock)
                    self.sink_stall_resets += 1
                    outcome = "stall_reset_injected"
                    break
        except VerificationError as exc:
            outcome, detail = "corrupted", str(exc)
        except OSError as exc:
            outcome, detail = f"error_{error_name(exc)}", f"at offset {verifier.pos}"
        except asyncio.CancelledError:
            outcome, detail = "hang", f"sink connection open at offset {verifier.pos}"
            raise
        finally:
            sock.close()
            self.record_sink(verifier, outcome, detail)

    def record_sink(self, verifier: StreamVerifier, outcome: str, detail: str) -> None:
        r = self.records.get(verifier.conn)
        if r is None:
            # Unidentified (fewer than 16 bytes: a proxy broke early) or from an earlier wave.
            if verifier.conn >= 0:
                self.late_sink += 1
            if outcome in ("corrupted", "hang"):
                self.outcomes[outcome] += 1
                self.failures.append(f"{outcome}: {verifier.name} at the sink: {detail}")
            return
        if r.sink != "none":
            outcome, detail = "duplicate", f"a second sink connection ({outcome}) for this stream"
        r.sink, r.detail = outcome, detail
        r.t_end = max(r.t_end, time.monotonic())


# -- orchestrator ---------------------------------------------------------------------------


@dataclass
class Incarnation:
    """One service process; a killed slot gets a new incarnation."""

    slot: int
    index: int
    stem: Path
    child: Child
    rss: list[tuple[float, int]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.stem.with_suffix(".ready").exists()


def vm_rss(pid: int) -> int:
    """``VmRSS`` of ``pid`` in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def exit_text(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"died of {signal.Signals(-status).name}"
    return f"exited with status {status}"


def processes_with(token: str) -> list[int]:
    """Pids (other than ours) whose command line contains ``token``."""
    found = []
    needle = token.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Orchestrator:
    def __init__(self, cfg: SoakConfig, out: Path) -> None:
        self.cfg = cfg
        self.out = out
        self.token = f"soak-{uuid.uuid4().hex}"
        self.rng = random.Random(f"{cfg.seed}-faults")
        self.spec_path = out / "soak.json"
        self.live: dict[int, Incarnation] = {}
        self.incarnations: list[Incarnation] = []
        self.driver: Child | None = None
        #: pid -> (monotonic time just before its SIGKILL, time it was reaped): in between
        #: the kernel still routes new connections to its listener, then resets them.
        self.kills: dict[int, tuple[float, float]] = {}
        #: pid -> when the orchestrator saw it dead without having killed it (within 50 ms).
        self.crashed: dict[int, float] = {}
        self.failures: list[str] = []
        self.t0 = time.monotonic()

    def child_argv(self, cores: str | None, role: str, *extra: str) -> list[str]:
        return [
            *taskset_prefix(cores),
            sys.executable,
            "-m",
            "bytes_handoff_bench.harness.soak",
            "--child",
            role,
            "--spec",
            str(self.spec_path),
            "--run-token",
            self.token,
            *extra,
        ]

    def start_service(self, slot: int) -> Incarnation:
        index = sum(1 for i in self.incarnations if i.slot == slot) + 1
        stem = self.out / f"service-{slot}-{index}"
        with contextlib.suppress(FileNotFoundError):
            # One left in a reused --out-dir would say "ready" before this one is.
            if stat.S_ISREG(stem.with_suffix(".ready").lstat().st_mode):
                stem.with_suffix(".ready").unlink()
        argv = self.child_argv(self.cfg.service_cores, "service", "--stem", str(stem))
        # A fatal signal (SIGSEGV, SIGABRT) leaves the Python stack in the service's log.
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        child = Child(stem.name, argv, None, stem.with_suffix(".err"), env=env)
        inc = Incarnation(slot, index, stem, child)
        self.incarnations.append(inc)
        self.live[slot] = inc
        return inc

    def wait_ready(self, inc: Incarnation, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not inc.ready:
            rc = inc.child.poll()
            if rc is not None:
                raise RunError(
                    f"{inc.stem.name} exited with status {rc} before it was ready:"
                    f" {last_line(inc.child.stderr_path) or 'no message'}"
                )
            if time.monotonic() > deadline:
                raise RunError(f"{inc.stem.name} not ready within {timeout:g} s")
            time.sleep(0.02)

    def run(self) -> None:
        cfg = self.cfg
        reservations = reserve_ports(2)
        try:
            service_addr, sink_addr = (r.addr for r in reservations)
            write_json(
                self.spec_path,
                {"cfg": asdict(cfg), "service_addr": service_addr, "sink_addr": sink_addr},
            )
            for slot in range(cfg.services):
                self.start_service(slot)
            for inc in list(self.live.values()):
                self.wait_ready(inc)
            self.t0 = time.monotonic()
            self.driver = Child(
                "driver",
                self.child_argv(cfg.driver_cores, "driver"),
                None,
                self.out / "driver.err",
            )
            self.supervise(self.driver)
        finally:
            for r in reservations:
                r.release()

    def supervise(self, driver: Child) -> None:
        """Until the driver exits: kill and restart services, restart crashed ones, sample RSS."""
        cfg = self.cfg
        limit = self.t0 + cfg.duration_seconds + cfg.hang_seconds + 30.0
        next_kill = self.t0 + self.kill_gap()
        next_sample = self.t0
        while (rc := driver.poll()) is None:
            now = time.monotonic()
            if now >= next_sample:
                for inc in self.live.values():
                    rss = vm_rss(inc.child.pid)
                    if rss:
                        inc.rss.append((now - self.t0, rss))
                next_sample += 1.0
            for slot, inc in list(self.live.items()):
                status = inc.child.poll()
                if status is not None:
                    self.crashed[inc.child.pid] = now
                    self.failures.append(
                        f"{inc.stem.name} (pid {inc.child.pid}) {exit_text(status)} without being"
                        f" killed (log: {inc.child.stderr_path})"
                    )
                    self.start_service(slot)
            if now >= next_kill and now - self.t0 < cfg.duration_seconds:
                self.kill_one()
                next_kill = now + self.kill_gap()
            if now > limit:
                self.failures.append(f"driver still running {limit - self.t0:.0f} s after start")
                return
            time.sleep(0.05)
        if rc != 0:
            self.failures.append(
                f"driver exited with status {rc}: {last_line(driver.stderr_path) or 'no message'}"
            )

    def kill_gap(self) -> float:
        if self.cfg.kill_interval_seconds <= 0:
            return float("inf")
        return self.cfg.kill_interval_seconds * self.rng.uniform(0.5, 1.5)

    def kill_one(self) -> None:
        """SIGKILL a random ready service other than service 0 and start its successor."""
        victims = [i for s, i in sorted(self.live.items()) if s > 0 and i.ready]
        if not victims:
            return
        inc = self.rng.choice(victims)
        killed_at = time.monotonic()
        inc.child.signal_group(signal.SIGKILL)
        inc.child.wait(5.0)
        self.kills[inc.child.pid] = (killed_at, time.monotonic())
        self.start_service(inc.slot)

    def stop_all(self) -> None:
        """Stop the driver, SIGTERM every live service (it must exit 0), kill and reap all."""
        if self.driver is not None:
            self.driver.kill_group(grace=2.0)  # first: no wave of refused connects at the end
        for inc in self.live.values():
            with contextlib.suppress(RunError):
                self.wait_ready(inc, 30.0)  # before its SIGTERM handler exists, SIGTERM kills it
        for inc in self.live.values():
            inc.child.signal_group(signal.SIGTERM)
        for inc in self.live.values():
            status = inc.child.wait(10.0)
            if status != 0:
                self.failures.append(
                    f"{inc.stem.name} did not exit cleanly on SIGTERM (status {status}):"
                    f" {last_line(inc.child.stderr_path) or 'no message'}"
                )
        children = [i.child for i in self.incarnations]
        if self.driver is not None:
            children.append(self.driver)
        for child in children:
            child.kill_group(grace=2.0)

    # -- results ---------------------------------------------------------------------------

    def accepts(self) -> dict[int, list[tuple[float, int]]]:
        """Client port -> [(accept time, service pid)] from every service's accept log."""
        out: dict[int, list[tuple[float, int]]] = {}
        for inc in self.incarnations:
            path = inc.stem.with_suffix(".accepts")
            with contextlib.suppress(OSError):
                for line in path.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2:
                        out.setdefault(int(parts[1]), []).append((float(parts[0]), inc.child.pid))
        return out

    def classify_pending(
        self, rec: dict[str, Any], accepts: dict[int, list[tuple[float, int]]]
    ) -> tuple[str, str]:
        """``proxy_killed`` only when the proxy that owned the stream died before it ended."""
        lo, hi = rec["t_start"], rec["t_end"]
        owners = [pid for t, pid in accepts.get(rec["client_port"], []) if lo <= t <= hi]
        if owners:
            pid = owners[0]
            killed = self.kills.get(pid)
            if killed is not None and killed[0] <= hi:
                return "proxy_killed", f"its proxy (pid {pid}) was killed"
            if pid in self.crashed:
                return "proxy_crashed", f"its proxy (pid {pid}) died without being killed"
            return "unexplained", f"served by pid {pid}, which was not killed before it ended"
        if any(killed <= hi and lo <= reaped for killed, reaped in self.kills.values()):
            return "proxy_killed", "never accepted: queued on a listener that was killed"
        if any(lo <= seen <= hi + 0.5 for seen in self.crashed.values()):
            return "proxy_crashed", "never accepted: queued on a listener whose service died"
        return "unexplained", "never accepted by any service, and none was dying meanwhile"


def summarize(
    orch: Orchestrator, cfg: SoakConfig, interrupted: bool, started: float
) -> tuple[list[str], dict[str, object]]:
    """Per-category lines and the final key=value summary (with the verdict)."""
    lines: list[str] = []
    reasons = list(orch.failures)
    driver: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        driver = json.loads((orch.out / "driver.json").read_text())
    if not driver:
        reasons.append("the driver wrote no results (driver.json)")
    categories: Counter[str] = Counter(driver.get("outcomes", {}))
    accepts = orch.accepts()
    for rec in driver.get("pending", []):
        category, why = orch.classify_pending(rec, accepts)
        categories[category] += 1
        if category in FAILURE_CATEGORIES:
            reasons.append(
                f"{category}: stream {rec['conn']:04} (wave {rec['wave']}, port"
                f" {rec['client_port']}): client {rec['client']}, sink {rec['sink']}"
                f" {rec['detail']}; {why}"
            )
    reasons.extend(driver.get("failures", []))

    proxy: Counter[str] = Counter()
    for inc in orch.incarnations:
        with contextlib.suppress(OSError, ValueError):
            stats = json.loads(inc.stem.with_suffix(".stats.json").read_text())
            proxy.update(stats["counts"])
            reasons.extend(f"{inc.stem.name}: unexpected {u}" for u in stats["unexpected"])

    for name in CATEGORIES:
        mark = "  FAILURE" if name in FAILURE_CATEGORIES and categories[name] else ""
        lines.append(f"soak: streams {name:<16} {categories[name]:>8}{mark}")
    for name, count in sorted(proxy.items()):
        lines.append(f"soak: proxy   {name:<28} {count:>8}")

    steady = next((i for i in orch.incarnations if i.slot == 0), None)
    heap_samples: list[HeapSample] = []
    if steady is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            heap_samples = parse_heap_samples(steady.stem.with_suffix(".heap.csv").read_text())
    heap = heap_growth(heap_samples)
    reasons.extend(heap_failures(heap, cfg))
    if heap is None:
        lines.append(
            f"soak: heap    service 0: {len(heap_samples)} idle samples, too few for a growth"
            " figure (NOT GATED)"
        )
    else:
        if heap.bytes_per_stream is None or heap.bytes_per_min is None:
            per_stream = "no malloc figure (needs glibc 2.33+)"
        else:
            per_stream = (
                f"malloc'd {heap.bytes_per_stream:+.1f} bytes/stream"
                f" ({heap.bytes_per_min / MIB:+.3f} MiB/min)"
            )
        lines.append(
            f"soak: heap    service 0 idle, after gc: {heap.samples} samples over {heap.streams}"
            f" streams after the first 20 %: {per_stream}, {heap.py_blocks_per_stream:+.3f}"
            f" Python blocks/stream, {heap.gc_objects_per_stream:+.3f} gc objects/stream"
            + (f" (NOT GATED: {heap.not_gated})" if heap.not_gated else "")
        )
    heap_bytes = None if heap is None else heap.bytes_per_stream
    heap_mib_min = None if heap is None or heap.bytes_per_min is None else heap.bytes_per_min / MIB
    samples = steady.rss if steady is not None else []
    fit = rss_growth(samples)
    growth = None if fit.bytes_per_min is None else fit.bytes_per_min / MIB
    rss_limit = cfg.rss_limit_mib_per_min
    gated = rss_limit is not None and growth is not None and len(samples) >= MIN_RSS_SAMPLES
    if gated and growth is not None and rss_limit is not None and growth > rss_limit:
        reasons.append(f"service 0 RSS grew {growth:.2f} MiB/min (limit {rss_limit:g})")
    peak = max((r for i in orch.incarnations for _, r in i.rss), default=0)
    if growth is None:
        shown = f"no growth figure ({fit.reason})"
    else:
        if rss_limit is None:
            gate = " (reported, not gated: a high-water mark, see the heap line)"
        elif not gated:
            gate = f" (not gated: fewer than {MIN_RSS_SAMPLES} samples)"
        else:
            gate = ""
        shown = f"growth {growth:.3f} MiB/min after the first 20 %{gate}"
    lines.append(
        f"soak: rss     service 0: {len(samples)} samples, {shown};"
        f" peak of any service {peak / MIB:.1f} MiB"
    )

    kills = "".join(f"{pid},{k:.6f},{r:.6f}\n" for pid, (k, r) in orch.kills.items())
    write_output(orch.out / "kills.csv", "pid,killed_at,reaped_at\n" + kills, "kills.csv")
    rss = "".join(
        f"{i.stem.name},{i.child.pid},{t:.1f},{r}\n" for i in orch.incarnations for t, r in i.rss
    )
    write_output(
        orch.out / "rss.csv", "service,pid,elapsed_seconds,vm_rss_bytes\n" + rss, "rss.csv"
    )

    time.sleep(0.1)
    leftovers = processes_with(orch.token)
    if leftovers:
        reasons.append(f"processes left behind: {leftovers}")
    lines.append(
        f"soak: processes: {len(orch.incarnations) + (orch.driver is not None)} started,"
        f" {len(leftovers)} left {leftovers if leftovers else '(none remains)'}"
    )
    if interrupted:
        reasons.append("interrupted by a signal")
    if categories["verified"] == 0:
        reasons.append("no stream was verified")
    for reason in reasons[:50]:
        lines.append(f"soak: FAIL {reason}")
    if len(reasons) > 50:
        lines.append(f"soak: FAIL ... and {len(reasons) - 50} more")

    failures = {f"failures_{name}": categories[name] for name in CATEGORIES if name != "verified"}
    summary: dict[str, object] = {
        "seed": cfg.seed,
        "duration_seconds": cfg.duration_seconds,
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "connections": cfg.connections,
        "services": cfg.services,
        "waves": driver.get("waves", 0),
        "streams_started": driver.get("streams_started", 0),
        "streams_verified": categories["verified"],
        **failures,
        "proxy_kills": len(orch.kills),
        "client_resets": driver.get("client_resets", 0),
        "sink_resets": driver.get("sink_resets", 0),
        "sink_stall_resets": driver.get("sink_stall_resets", 0),
        "resets": driver.get("client_resets", 0)
        + driver.get("sink_resets", 0)
        + driver.get("sink_stall_resets", 0),
        "library_path": cfg.library_path,
        "proxy_unexpected_errors": sum(v for k, v in proxy.items() if k.startswith("unexpected")),
        # "null" when the samples are too few to mean anything; the reason beside it.
        "heap_samples": 0 if heap is None else heap.samples,
        "heap_growth_bytes_per_stream": _figure(heap_bytes, 1),
        "heap_growth_mib_per_min": _figure(heap_mib_min, 3),
        "heap_limit_bytes_per_stream": cfg.heap_limit_bytes_per_stream,
        "py_blocks_growth_per_stream": _figure(
            None if heap is None else heap.py_blocks_per_stream, 3
        ),
        "py_blocks_limit_per_stream": cfg.py_blocks_limit_per_stream,
        "gc_objects_growth_per_stream": _figure(
            None if heap is None else heap.gc_objects_per_stream, 3
        ),
        "gc_objects_limit_per_stream": cfg.gc_objects_limit_per_stream,
        "heap_gated": int(heap is not None and heap.not_gated is None),
        "rss_growth_mib_per_min": "null" if growth is None else round(growth, 3),
        **({"rss_growth_reason": fit.reason} if growth is None else {}),
        "rss_limit_mib_per_min": "null" if rss_limit is None else rss_limit,
        "rss_gated": int(gated),
        "leftover_processes": len(leftovers),
        "out_dir": orch.out,
        "verdict": "fail" if reasons else "pass",
    }
    return lines, summary


def _figure(value: float | None, digits: int) -> object:
    """A summary figure rounded, or ``null`` when there is none."""
    if value is None:
        return "null"
    return round(value, digits) if digits else round(value)


# -- command line ---------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    d = SoakConfig()
    p = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--duration-seconds", type=float, default=d.duration_seconds)
    p.add_argument("--connections", type=int, default=d.connections, help="streams per wave")
    p.add_argument("--services", type=int, default=d.services, help="proxy processes (>= 2)")
    p.add_argument("--seed", type=int, help="fault RNG seed (default: random, printed)")
    p.add_argument(
        "--kill-interval-seconds",
        type=float,
        default=d.kill_interval_seconds,
        help="mean time between proxy kills (uniform 0.5x-1.5x); 0: no kills",
    )
    p.add_argument("--client-reset-rate", type=float, default=d.client_reset_rate)
    p.add_argument("--sink-reset-rate", type=float, default=d.sink_reset_rate)
    p.add_argument(
        "--sink-stall-reset-rate",
        type=float,
        default=d.sink_stall_reset_rate,
        help="streams whose sink stops reading for --stall-seconds (the proxy's writes"
        " pause), then resets",
    )
    p.add_argument("--stall-seconds", type=float, default=d.stall_seconds)
    p.add_argument(
        "--library-path",
        choices=(*LIBRARY_PATHS, "both"),
        default=d.library_path,
        help="the library path the proxies use: raw sockets, the protocol path, or both"
        " (drawn per stream)",
    )
    p.add_argument("--hang-seconds", type=float, default=d.hang_seconds)
    p.add_argument(
        "--heap-limit-bytes-per-stream",
        type=float,
        default=d.heap_limit_bytes_per_stream,
        help="leak gate: most growth of service 0's malloc'd bytes in use, idle after a full"
        " collection, per stream it served",
    )
    p.add_argument(
        "--py-blocks-limit-per-stream",
        type=float,
        default=d.py_blocks_limit_per_stream,
        help="leak gate: most growth of service 0's Python allocator blocks"
        " (sys.getallocatedblocks), idle after a full collection, per stream it served",
    )
    p.add_argument(
        "--gc-objects-limit-per-stream",
        type=float,
        default=d.gc_objects_limit_per_stream,
        help="leak gate: most growth of service 0's gc-tracked objects, idle after a full"
        " collection, per stream it served",
    )
    p.add_argument(
        "--rss-limit-mib-per-min",
        type=float,
        help="also gate on service 0's RSS slope (default: reported only; RSS holds the"
        " allocator's high-water mark)",
    )
    p.add_argument("--inject-leak-bytes-per-stream", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--route-frames", type=int, default=d.route_frames)
    p.add_argument("--frame-len", type=int, default=d.frame_len)
    p.add_argument("--tunnel-bytes", type=int, default=d.tunnel_bytes)
    p.add_argument("--read-reserve", type=int, default=d.read_reserve)
    p.add_argument("--loop", choices=[m.value for m in Loop], default=default_loop())
    p.add_argument("--service-cores", help="taskset -c list for the services")
    p.add_argument("--driver-cores", help="taskset -c list for the driver")
    p.add_argument(
        "--out-dir",
        type=output_dir_arg,
        help="a folder, or a new one in an existing folder (default: a new"
        " bench/results/soak_<timestamp> of the clone, else of the current folder)",
    )
    # Internal: how the orchestrator starts its children.
    p.add_argument("--child", choices=("service", "driver"), help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--stem", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--run-token", help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> SoakConfig:
    """Validate the flags; ``UsageError`` naming the first bad one."""
    rss_limit = args.rss_limit_mib_per_min
    optional = (
        []
        if rss_limit is None
        else [("--rss-limit-mib-per-min", rss_limit, 0.0, MAX_RSS_SLOPE_MIB_PER_MIN)]
    )
    for flag, value, low, high in (
        *optional,
        ("--duration-seconds", args.duration_seconds, 0.001, MAX_DURATION_SECONDS),
        ("--hang-seconds", args.hang_seconds, 0.001, MAX_TIMEOUT_SECONDS),
        (
            "--heap-limit-bytes-per-stream",
            args.heap_limit_bytes_per_stream,
            0.0,
            MAX_HEAP_LIMIT_BYTES_PER_STREAM,
        ),
        (
            "--py-blocks-limit-per-stream",
            args.py_blocks_limit_per_stream,
            0.0,
            MAX_OBJECTS_LIMIT_PER_STREAM,
        ),
        (
            "--gc-objects-limit-per-stream",
            args.gc_objects_limit_per_stream,
            0.0,
            MAX_OBJECTS_LIMIT_PER_STREAM,
        ),
        ("--inject-leak-bytes-per-stream", args.inject_leak_bytes_per_stream, 0, MIB),
        ("--kill-interval-seconds", args.kill_interval_seconds, 0.0, MAX_DURATION_SECONDS),
        ("--services", args.services, 2, MAX_WORKER_THREADS),
        ("--connections", args.connections, 1, MAX_CONNECTIONS),
        ("--stall-seconds", args.stall_seconds, 0.001, args.hang_seconds),
    ):
        if not value >= low:  # also rejects nan
            raise UsageError(f"{flag} must be at least {low:g}, got {value}")
        if value > high:  # inf too: every soak and every wait in it ends
            raise UsageError(f"{flag} must be at most {high:g}, got {value}")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise UsageError(f"--seed must be from 0 to 2**64 - 1, got {args.seed}")
    rates = (
        ("--client-reset-rate", args.client_reset_rate),
        ("--sink-reset-rate", args.sink_reset_rate),
        ("--sink-stall-reset-rate", args.sink_stall_reset_rate),
    )
    for flag, rate in rates:
        if not 0.0 <= rate <= 1.0:
            raise UsageError(f"{flag} must be between 0 and 1, got {rate}")
    if sum(rate for _, rate in rates) > 1.0:
        raise UsageError(f"{', '.join(flag for flag, _ in rates)} must add up to at most 1")
    if (args.service_cores is None) != (args.driver_cores is None):
        raise UsageError("--service-cores and --driver-cores go together")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    cfg = SoakConfig(
        duration_seconds=args.duration_seconds,
        connections=args.connections,
        services=args.services,
        seed=seed,
        kill_interval_seconds=args.kill_interval_seconds,
        client_reset_rate=args.client_reset_rate,
        sink_reset_rate=args.sink_reset_rate,
        sink_stall_reset_rate=args.sink_stall_reset_rate,
        stall_seconds=args.stall_seconds,
        library_path=args.library_path,
        hang_seconds=args.hang_seconds,
        heap_limit_bytes_per_stream=args.heap_limit_bytes_per_stream,
        py_blocks_limit_per_stream=args.py_blocks_limit_per_stream,
        gc_objects_limit_per_stream=args.gc_objects_limit_per_stream,
        rss_limit_mib_per_min=rss_limit,
        inject_leak_bytes=args.inject_leak_bytes_per_stream,
        route_frames=args.route_frames,
        frame_len=args.frame_len,
        tunnel_bytes=args.tunnel_bytes,
        read_reserve=args.read_reserve,
        loop=args.loop,
        service_cores=args.service_cores,
        driver_cores=args.driver_cores,
    )
    for implementation, completion in cfg.variants:
        cfg.bench_config(implementation, completion)  # the harness's own size checks
    try:
        taskset_prefix(cfg.service_cores)
    except RunError as exc:
        raise UsageError(str(exc)) from exc
    return cfg


#: The files the orchestrator writes into its folder under fixed names (the services'
#: files are named per incarnation, and written never through a symlink).
FIXED_OUTPUTS = ("soak.json", "driver.json", "driver.err", "kills.csv", "rss.csv", "summary.txt")


def check_out_dir(given: Path | None) -> Path | None:
    """Refuse (``UsageError``), before anything starts, an ``--out-dir`` the soak could not
    write (``output_paths``); the default folder's parent is checked: the folder is new."""
    if given is None:
        choose_results_dir(None, "--out-dir")
        return None
    check_output_dir(given, "--out-dir")
    if given.is_dir():
        for name in FIXED_OUTPUTS:
            check_output_file(given / name, f"--out-dir: {name}")
    return given


def new_out_dir(given: Path | None) -> Path:
    """The checked ``--out-dir`` (made without parents), or a new ``soak_<timestamp>``."""
    if given is not None:
        return make_output_dir(given, "--out-dir")
    results, _default = choose_results_dir(None, "--out-dir")
    make_output_dir(results, "the default results folder", parents=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for n in range(100):
        path = results / f"soak_{stamp}{'' if n == 0 else f'_{n}'}"
        with contextlib.suppress(FileExistsError):
            path.mkdir()
            return path
    raise UsageError(f"cannot create a run folder under {results}")


def die_with_parent() -> None:
    """``PR_SET_PDEATHSIG``: a child goes too when its orchestrator is SIGKILLed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def child_main(args: argparse.Namespace) -> int:
    """A service or the driver: started by the orchestrator, never by hand."""
    die_with_parent()
    spec = json.loads(args.spec.read_text())
    cfg = SoakConfig(**spec["cfg"])
    if args.child == "service":
        assert args.stem is not None
        return int(run_on_loop(cfg.loop, Service(cfg, spec, args.stem).run()))
    return int(run_on_loop(cfg.loop, Driver(cfg, spec, args.spec.parent).run()))


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, "run-fault-soak.sh")
    return run_main(prog, lambda: soak(prog, args), bench_extra=("hdrh",))


def soak(prog: str, argv: Sequence[str]) -> int:
    """Parse, then run the soak (or, with ``--child``, one of its processes)."""
    args = build_parser(prog).parse_args(argv)
    require_loop(args.loop)
    if args.child is not None:
        return child_main(args)
    cfg = config_from_args(args)
    out = new_out_dir(check_out_dir(args.out_dir))
    raise_on_termination()  # SIGTERM/SIGHUP -> KeyboardInterrupt: the cleanup below runs
    print(f"soak: seed={cfg.seed} out_dir={out}", flush=True)
    print(
        f"soak: {cfg.duration_seconds:g} s, {cfg.connections} connections per wave,"
        f" {cfg.services} services, kill every ~{cfg.kill_interval_seconds:g} s,"
        f" reset rates client {cfg.client_reset_rate:g} / sink {cfg.sink_reset_rate:g}"
        f" / sink stalled {cfg.stall_seconds:g} s then reset {cfg.sink_stall_reset_rate:g},"
        f" library path {cfg.library_path}",
        flush=True,
    )
    started = time.monotonic()
    orch = Orchestrator(cfg, out)
    interrupted = False
    try:
        orch.run()
    except KeyboardInterrupt:
        interrupted = True
    except (RunError, PortError, BenchError, OSError) as exc:
        orch.failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        # A second signal during cleanup must not cut it short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        orch.stop_all()
    lines, summary = summarize(orch, cfg, interrupted, started)
    text = "\n".join([*lines, *(f"{k}={v}" for k, v in summary.items())]) + "\n"
    print(text, end="", flush=True)
    write_output(out / "summary.txt", text, "summary.txt")
    return 0 if summary["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
