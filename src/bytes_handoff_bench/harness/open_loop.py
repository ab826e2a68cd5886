"""Open-loop (constant-rate) driving: streams start on a clock, not when the last one ended.

A closed-loop run (waves) starts a connection's next stream when its last one
ends, so a service that stalls also stops its load: the streams that would
have arrived during the stall are never sent, and the latency histogram never
sees them (coordinated omission). With ``--rate R`` (streams per second, all
connections together) a driver keeps a schedule instead, as wrk2 does:

* stream ``i`` is due at ``t0 + i / R`` on connection ``i mod C``
  (``--connections``): each connection carries every C-th stream, ``C / R``
  seconds apart, and the streams of all connections interleave evenly;
* a connection starts its stream when it is due or, when its previous stream
  is not yet verified, as soon as it is (one stream per connection at a time,
  as in the closed loop);
* the stream's latency counts from when it was **due**, not from when it
  started: the wait for a busy connection is latency the service caused;
* a stream that cannot start within ``--max-lag-millis`` of its due time is
  not started: the schedule has slipped past the bound, every worker stops
  starting streams, and the report counts the ones never started.

:func:`judge` says what the run achieved: the offered rate, the achieved rate
(verified streams over the window from ``t0`` to the last one verified) and
``fell_behind``: streams that never started, or an achieved rate more than
``--rate-tolerance`` below the offered one. A run that fell behind measured a
service that could not keep up: its figures are not a result at that load.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import BenchError, Interrupted
from .config import BenchConfig
from .metrics import Summary
from .supervisor import Stall, Supervisor, Tally
from .workers import Shared, WorkerSpec

__all__ = ["LoadVerdict", "PacedStreams", "Pacer", "judge"]


class PacedStreams(Protocol):
    """How a worker runs one stream (the roles' ``WaveStreams``)."""

    #: False until a first connection succeeds: no stall is counted before.
    connected: bool

    async def stream(self, conn: int, due: float | None = None) -> None: ...

    def progress(self) -> tuple[int, ...]: ...


@dataclass
class Pacer:
    """One worker's connections (``spec.conns``) on the run's schedule."""

    cfg: BenchConfig
    spec: WorkerSpec
    sup: Supervisor
    tally: Tally
    #: Streams started and not yet verified, in this worker.
    in_flight: int = field(default=0, init=False)
    #: Streams started per connection of this worker.
    started: dict[int, int] = field(default_factory=dict, init=False)
    #: Set when this worker's sink verifies a stream of the connection.
    events: dict[int, asyncio.Event] = field(default_factory=dict, init=False)

    def verified(self, conn: int) -> None:
        """A sink of this worker verified a stream of ``conn`` (counted in ``Shared`` already)."""
        event = self.events.get(conn)
        if event is not None:
            event.set()

    async def run(self, streams: PacedStreams) -> int:
        """Start this worker's streams on the schedule and wait for them; return the most
        streams one connection carried (the report's ``actual_iterations``)."""
        shared = self.spec.shared
        shared.mark_start()
        t0 = shared.get(Shared.T0)  # the first worker's start: one schedule for all
        slots = [
            self.sup.spawn(self._connection(streams, conn, t0), f"client of stream {conn:04}")
            for conn in self.spec.conns
        ]
        await self._wait(streams, slots)
        return max(self.started.values(), default=0)

    async def _connection(self, streams: PacedStreams, conn: int, t0: float) -> None:
        cfg, shared, result = self.cfg, self.spec.shared, self.tally.result
        rate = cfg.offered_streams_per_sec
        max_lag = cfg.max_lag_millis / 1000.0
        for started, i in enumerate(range(conn, cfg.scheduled_streams, cfg.connections), 1):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if shared.get(Shared.GAVE_UP) or self.sup.stop_requested:
                return
            lag = time.monotonic() - due
            if lag > max_lag:
                shared.set(Shared.GAVE_UP, 1.0)  # every worker stops starting streams
                self.sup.wake()
                return
            self.started[conn] = started
            result.started += 1
            result.start_lag_max = max(result.start_lag_max, lag)
            self.in_flight += 1
            try:
                await streams.stream(conn, due)
                await self._until_verified(conn, started)
            finally:
                self.in_flight -= 1

    async def _until_verified(self, conn: int, count: int) -> None:
        """Until ``count`` streams of ``conn`` are verified, by this worker's sink or another's."""
        shared = self.spec.shared
        # A sink of this worker wakes us; one of another worker is polled for.
        poll = 0.25 if self.cfg.worker_threads == 1 else 0.002
        event = self.events.setdefault(conn, asyncio.Event())
        while shared.done_count(conn) < count:
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), poll)
            except TimeoutError:
                pass

    async def _wait(self, streams: PacedStreams, slots: list[asyncio.Task[None]]) -> None:
        """Until every connection is done; fails after ``--startup-timeout-seconds`` with
        streams running and none of them moving."""
        sup, shared = self.sup, self.spec.shared

        def progress() -> tuple[float, ...]:
            return (shared.get(Shared.VERIFIED), *streams.progress())

        stall = Stall(self.cfg.startup_timeout_seconds, progress(), time.monotonic())
        while True:
            sup.check()
            if sup.stop_requested:
                raise Interrupted("interrupted by a signal")
            if all(t.done() for t in slots):
                return
            await sup.nap(0.25)
            now = time.monotonic()
            if not streams.connected or not self.in_flight:
                stall.moved(progress(), now)  # between streams nothing has to move
            elif stall.stalled(progress(), now):
                raise BenchError(
                    f"no progress for {stall.limit:g} s with {self.in_flight} streams running"
                    f" ({int(shared.get(Shared.VERIFIED))} verified)"
                )


@dataclass(frozen=True)
class LoadVerdict:
    """What an open-loop run offered and achieved, and whether it fell behind."""

    offered_streams_per_sec: float
    achieved_streams_per_sec: float
    scheduled: int
    started: int
    #: The latest a started stream began after it was due (seconds).
    start_lag_max: float
    fell_behind: bool
    #: Why it fell behind, with the numbers ("" when it did not).
    reason: str

    @property
    def unsent(self) -> int:
        return self.scheduled - self.started


def judge(cfg: BenchConfig, summary: Summary) -> LoadVerdict:
    """The verdict on an open-loop run (``cfg.open_loop``) from its combined summary."""
    offered = cfg.offered_streams_per_sec
    achieved = summary.streams / summary.seconds if summary.seconds > 0 else 0.0
    scheduled = cfg.scheduled_streams
    unsent = scheduled - summary.started
    reasons = []
    if unsent > 0:
        reasons.append(
            f"the schedule slipped past --max-lag-millis {cfg.max_lag_millis}:"
            f" {unsent} of {scheduled} streams never started"
        )
    short = 1.0 - achieved / offered
    if short > cfg.rate_tolerance:
        reasons.append(
            f"achieved {achieved:.4g} streams/s, {short:.1%} below the offered {offered:.4g}"
            f" (--rate-tolerance {cfg.rate_tolerance:g})"
        )
    return LoadVerdict(
        offered_streams_per_sec=offered,
        achieved_streams_per_sec=achieved,
        scheduled=scheduled,
        started=summary.started,
        start_lag_max=summary.start_lag_max,
        fell_behind=bool(reasons),
        reason="; ".join(reasons),
    )
