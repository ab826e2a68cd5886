"""One worker's supervisor: its role's tasks, how the run fails or stops, and the shutdown.

A role (``roles.py``) runs under :func:`supervise`. It starts its tasks with
:meth:`Supervisor.spawn` (a task that raises fails the run), waits with
:meth:`Supervisor.nap`, looks for a failure here or in another worker with
:meth:`Supervisor.check`, hands what it opens to :meth:`Supervisor.closing`,
and counts what it measured in a :class:`Tally`. :func:`supervise` turns how
the role ended into the worker's :class:`~.metrics.WorkerResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import BenchError
from .metrics import WorkerResult, new_histogram
from .workers import ANOTHER_FAILED, Shared, early_stop_requested, note_early_stop

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

__all__ = ["Stall", "Supervisor", "Tally", "as_bench_error", "supervise"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_MAX_LATENCY_US = 60_000_000


def as_bench_error(exc: BaseException, label: str) -> BaseException:
    """``exc`` itself if it is the harness's own, else a ``BenchError`` naming ``label``."""
    if isinstance(exc, BenchError):
        return exc
    return BenchError(f"{label}: {type(exc).__name__}: {exc}")


@dataclass
class Tally:
    """What a worker measured: its figures, and the latency of each stream it finished."""

    result: WorkerResult = field(default_factory=WorkerResult)
    hist: HdrHistogram = field(default_factory=new_histogram)

    def stream_done(self, seconds: float, nbytes: int) -> None:
        self.hist.record_value(max(1, min(int(seconds * 1e6), _MAX_LATENCY_US)))
        self.result.streams += 1
        self.result.bytes += nbytes


@dataclass
class Stall:
    """How long a progress value has stood still, against ``limit`` seconds."""

    limit: float
    last: object
    since: float

    def moved(self, progress: object, now: float) -> None:
        self.last, self.since = progress, now

    def stalled(self, progress: object, now: float) -> bool:
        if progress != self.last:
            self.moved(progress, now)
            return False
        return now - self.since > self.limit


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


class Supervisor:
    """The tasks of one worker's role, the first failure among them, and a stop request."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        #: Set by a SIGTERM/SIGINT: the role ends (waves fail, the service reports).
        self.stop_requested = False
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._cleanup = contextlib.ExitStack()

    def wake(self) -> None:
        """End the current :meth:`nap`: something the role waits for may have happened."""
        self._wake.set()

    def request_stop(self) -> None:
        self.stop_requested = True
        self._wake.set()

    def fail(self, exc: BaseException) -> None:
        """Fail the run with ``exc`` (the first failure wins) and tell the other workers."""
        if not self.failure.done():
            self.failure.set_result(exc)
            self.shared.set(Shared.FAILED, 1)
        self._wake.set()

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        label: str,
        background: bool = False,
        wake: bool = True,
    ) -> asyncio.Task[Any]:
        """Run ``coro``; its failure fails the run. Background tasks are cancelled at the end.
        ``wake``: its end ends a :meth:`nap` (a wave may wait for it; a service's proxies
        need not wake the idle watch, a failure does anyway)."""
        task = asyncio.get_running_loop().create_task(coro)
        (self._background if background else self._tasks).add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            self._background.discard(t)
            if wake:
                self._wake.set()  # a wave may be waiting for this task
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                self.fail(as_bench_error(exc, label))

        task.add_done_callback(done)
        return task

    def check(self) -> None:
        """Raise if the run failed here or in another worker."""
        if self.failure.done():
            raise self.failure.result()
        if self.shared.get(Shared.FAILED):
            raise BenchError(ANOTHER_FAILED)

    async def nap(self, seconds: float) -> None:
        """Sleep until woken (a stream finished, a failure, a signal) or ``seconds`` pass."""
        self._wake.clear()
        # A timer that sets the event, not wait_for: no task per nap (it runs 20 times a
        # second in every worker, inside the measured window).
        timer = asyncio.get_running_loop().call_later(seconds, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    def closing(self, thing: _C) -> _C:
        """Close ``thing`` at shutdown, after the tasks; the last handed over closes first."""
        self._cleanup.callback(thing.close)
        return thing

    async def shutdown(self) -> None:
        cancelled = set(self._background)
        for task in cancelled:
            task.cancel()
        if self._tasks:
            # After success only a proxy's last step may still be running: give it a moment.
            # After a failure or a signal, stop everything at once.
            ended = self.failure.done() or self.stop_requested or self.shared.get(Shared.FAILED)
            still = set(self._tasks)
            if not ended:
                _, still = await asyncio.wait(still, timeout=1.0)
            for task in still:
                task.cancel()
            cancelled |= still
        if cancelled:
            await asyncio.wait(cancelled, timeout=1.0)
        self._cleanup.close()


async def supervise(
    shared: Shared, role: Callable[[Supervisor, Tally], Coroutine[Any, Any, None]]
) -> WorkerResult:
    """Run ``role`` on this loop until it returns or fails; shut down; return what it measured.

    SIGTERM/SIGINT ask the role to stop; one that came before the loop took the
    signals over (or reached only the shared flag) does so at once.
    """
    loop = asyncio.get_running_loop()
    sup = Supervisor(shared)
    tally = Tally()
    result = tally.result
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, sup.request_stop)
    if early_stop_requested() or shared.get(Shared.STOP):
        sup.request_stop()
    try:
        await role(sup, tally)
    except BenchError as exc:
        result.error = str(exc)
        result.error_exit_code = exc.exit_code
    except Exception as exc:  # HandoffError, OSError, ...: one line, no traceback
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await sup.shutdown()
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, note_early_stop)  # a late signal must not kill the report
    if result.error is None and sup.failure.done():
        # A proxy that failed after its sink had verified everything still fails the run.
        late = sup.failure.result()
        result.error = str(late)
        result.error_exit_code = getattr(late, "exit_code", 1)
    return result.finish(tally.hist)
