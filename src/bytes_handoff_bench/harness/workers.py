"""Event-loop workers: N processes (one loop each), shared counters, results over pipes.

``--worker-threads N`` means N event-loop workers; because of the GIL each one
is a process. The parent binds every listening socket first (so a taken
address is a usage error before anything starts), forks the workers (each
keeps its own listener: the service shares its port with ``SO_REUSEPORT``),
and collects one :class:`~.metrics.WorkerResult` per worker. With N = 1 the
single worker runs in this process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from ..errors import BenchError
from ..names import Loop
from .config import BenchConfig
from .metrics import RssSampler, WorkerResult

__all__ = [
    "ANOTHER_FAILED",
    "Shared",
    "WorkerSpec",
    "early_stop_requested",
    "first_error",
    "install_early_stop",
    "note_early_stop",
    "run_loop",
    "run_workers",
]

_FORK = multiprocessing.get_context("fork")
_T = TypeVar("_T")

#: The error of a worker that stopped only because another one failed.
ANOTHER_FAILED = "aborted: another worker failed"

#: Set by a SIGTERM/SIGINT that arrives before a worker's loop handles signals itself
#: (between writing the ready file and starting the loop); the worker then stops at once.
_early_stop = False


def note_early_stop(signum: int, frame: object) -> None:
    global _early_stop
    _early_stop = True


def early_stop_requested() -> bool:
    """Whether a SIGTERM/SIGINT came while no loop handled the signals."""
    return _early_stop


def install_early_stop() -> Callable[[], None]:
    """Catch SIGTERM/SIGINT from now on; return a function that restores the old handlers."""
    global _early_stop
    _early_stop = False
    old = {sig: signal.signal(sig, note_early_stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore


class Shared:
    """Counters every worker sees (shared memory, one lock).

    ``start_times[conn]`` is when the client of stream ``conn`` began
    (``time.monotonic()``, system-wide on Linux), so whichever worker's sink
    finishes a stream can compute its latency; in an open-loop run it is when
    the stream *should* have begun (``open_loop``). ``done_counts[conn]``
    counts the streams of connection ``conn`` verified so far (by any worker's
    sink), so an open-loop connection knows when its stream is done.
    ``route_accepted[route]`` counts the connections a service accepted on each
    of its routes (one per driver), so it waits for every driver before it
    ends on idle.
    """

    ACCEPTED, ACTIVE, LAST_IDLE, VERIFIED, WAVE_DONE_AT, FAILED, T0, STOP, GAVE_UP = range(9)

    def __init__(self, connections: int, routes: int = 1) -> None:
        self._lock = _FORK.Lock()
        self._vals: Any = _FORK.RawArray("d", 9)
        self.start_times: Any = _FORK.RawArray("d", connections)
        self.done_counts: Any = _FORK.RawArray("d", connections)
        self.route_accepted: Any = _FORK.RawArray("d", max(routes, 1))
        self._vals[self.T0] = float("inf")

    def mark_start(self) -> None:
        """Record a worker's first wave start; ``T0`` is the earliest (for --duration-seconds).

        Every worker marks its start before the first wave can complete, so all
        workers see the same ``T0`` when they decide whether to run another wave.
        """
        with self._lock:
            self._vals[self.T0] = min(self._vals[self.T0], time.monotonic())

    def request_stop(self) -> None:
        """Ask every worker to stop (from a signal handler: one store, no lock)."""
        self._vals[self.STOP] = 1.0

    def get(self, idx: int) -> float:
        return float(self._vals[idx])

    def set(self, idx: int, value: float) -> None:
        with self._lock:
            self._vals[idx] = value

    def add(self, idx: int, delta: float, stamp_zero: int | None = None) -> float:
        """Add ``delta``; when the result is 0 and ``stamp_zero`` is given, stamp that slot now."""
        with self._lock:
            value = self._vals[idx] + delta
            self._vals[idx] = value
            if stamp_zero is not None and value == 0:
                self._vals[stamp_zero] = time.monotonic()
        return float(value)

    def route_opened(self, route: int) -> None:
        """Count a connection accepted on ``route`` (and in ``ACCEPTED``, ``ACTIVE``)."""
        with self._lock:
            self._vals[self.ACCEPTED] += 1
            self._vals[self.ACTIVE] += 1
            self.route_accepted[route] += 1

    def routes_waiting(self) -> list[int]:
        """The routes that have not accepted a connection yet."""
        return [r for r in range(len(self.route_accepted)) if self.route_accepted[r] == 0]

    def stream_verified(self, connections: int, conn: int | None = None) -> None:
        """Count a verified stream (of connection ``conn``); the one that completes a wave
        stamps its time."""
        with self._lock:
            value = self._vals[self.VERIFIED] + 1
            if value % connections == 0:
                self._vals[self.WAVE_DONE_AT] = time.monotonic()
            self._vals[self.VERIFIED] = value
            if conn is not None:
                self.done_counts[conn] += 1

    def done_count(self, conn: int) -> int:
        """Streams of connection ``conn`` verified so far."""
        return int(self.done_counts[conn])


@dataclass
class WorkerSpec:
    """What one worker gets: its index, its slice of the connections, its listeners (the
    service: one per route; the driver: its sink's; none integrated)."""

    index: int
    conns: range
    listeners: list[socket.socket]
    shared: Shared
    all_listeners: list[socket.socket] = field(default_factory=list)

    @property
    def listener(self) -> socket.socket | None:
        """The first (the driver's only) listener."""
        return self.listeners[0] if self.listeners else None


def split_conns(connections: int, workers: int) -> list[range]:
    return [
        range(connections * w // workers, connections * (w + 1) // workers) for w in range(workers)
    ]


def run_loop(cfg: BenchConfig, main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``main()`` on a fresh loop of the configured kind (``--loop``)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if cfg.loop == Loop.UVLOOP:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def _child(
    spec: WorkerSpec,
    work: Callable[[WorkerSpec], WorkerResult],
    pipe: multiprocessing.connection.Connection,
) -> None:
    for other in spec.all_listeners:
        if not any(other is own for own in spec.listeners):
            other.close()
    try:
        result = work(spec)
    except BaseException as exc:  # never a traceback: the parent prints one line
        spec.shared.set(Shared.FAILED, 1)
        result = WorkerResult(error=f"worker {spec.index}: {type(exc).__name__}: {exc}")
    pipe.send(result)
    pipe.close()


def run_workers(
    cfg: BenchConfig,
    listeners: list[list[socket.socket]],
    work: Callable[[WorkerSpec], WorkerResult],
    sampler: RssSampler | None,
) -> list[WorkerResult]:
    """Run ``work`` once per worker (``listeners[i]``: worker ``i``'s, or no list at all);
    return the results in worker order."""
    n = cfg.worker_threads
    shared = Shared(cfg.connections, max(len(cfg.routes), 1))
    ranges = split_conns(cfg.connections, n)
    every = [sock for own in listeners for sock in own]
    specs = [
        WorkerSpec(i, ranges[i], listeners[i] if listeners else [], shared, every) for i in range(n)
    ]
    if n == 1:
        if sampler is not None:
            sampler.start()
        return [work(specs[0])]
    procs: list[tuple[Any, multiprocessing.connection.Connection]] = []
    for spec in specs:
        parent_end, child_end = _FORK.Pipe(duplex=False)
        proc = _FORK.Process(target=_child, args=(spec, work, child_end), daemon=True)
        proc.start()
        child_end.close()
        procs.append((proc, parent_end))
    for sock in every:
        sock.close()  # the workers hold them now
    if sampler is not None:
        sampler.pids = [proc.pid for proc, _ in procs]
        sampler.start()

    def forward(signum: int, frame: object) -> None:
        # A worker forked a moment ago can lose the signal (CPython clears pending
        # signals in a new child); the shared flag reaches it whenever it looks.
        shared.request_stop()
        for proc, _ in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signum)

    old_term = signal.signal(signal.SIGTERM, forward)
    # Ctrl-C reaches the whole process group, but a SIGINT sent to this process
    # alone must stop the workers too; a second one does them no harm.
    old_int = signal.signal(signal.SIGINT, forward)
    if _early_stop:
        forward(signal.SIGTERM, None)
    results: dict[int, WorkerResult] = {}
    try:
        # Each worker sends one result; a worker that dies first makes its pipe read EOF.
        pending: dict[Any, int] = {parent_end: i for i, (_, parent_end) in enumerate(procs)}
        while pending:
            for ready in multiprocessing.connection.wait(list(pending)):
                i = pending.pop(ready)
                try:
                    results[i] = cast(WorkerResult, cast(Any, ready).recv())
                except EOFError:
                    pass
        for proc, _ in procs:
            proc.join(timeout=5)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        for proc, _ in procs:
            if proc.exitcode is None:
                proc.kill()
    out: list[WorkerResult] = []
    for i, (proc, _) in enumerate(procs):
        if i in results:
            out.append(results[i])
        else:
            out.append(
                WorkerResult(error=f"worker {i} died without a result (exit code {proc.exitcode})")
            )
    return out


def first_error(results: list[WorkerResult]) -> BenchError | None:
    """The error to report: a worker's own failure before one that only followed another's."""
    errors = [r for r in results if r.error is not None]
    if not errors:
        return None
    errors.sort(key=lambda r: ANOTHER_FAILED in (r.error or ""))
    err = BenchError(errors[0].error)
    err.exit_code = errors[0].error_exit_code
    return err
