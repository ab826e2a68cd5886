"""``WriteAdmission``: a write queue's two bounds and the producers waiting for room."""

from __future__ import annotations

import asyncio

from ._types import BytesLike
from .errors import BackpressureReason, WriteBackpressure

__all__ = ["WriteAdmission"]


class WriteAdmission:
    """Room checks, the byte budget in use, and the producers parked until room is freed.

    A chunk of ``size`` bytes fits while fewer than ``max_items`` chunks are
    queued and ``pending + size <= max_bytes``, ``pending`` being the bytes
    accepted and not yet written (queued or in flight).

    No room is reserved for a parked producer: a wake-up only says room may
    have been freed, and every woken producer checks again, in the order they
    parked. So a producer cancelled while parked, or woken and beaten to the
    room, gives nothing back and is never counted twice.
    """

    __slots__ = ("_loop", "_waiters", "max_bytes", "max_items", "pending")

    def __init__(self, max_items: int, max_bytes: int, loop: asyncio.AbstractEventLoop) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.pending = 0
        self._loop = loop
        self._waiters: list[asyncio.Future[None]] = []

    def fits(self, queued: int, size: int) -> bool:
        """Whether a chunk of ``size`` bytes fits with ``queued`` chunks in the queue."""
        return queued < self.max_items and self.pending + size <= self.max_bytes

    def refusal(
        self, data: BytesLike, size: int, queued: int, closed: bool
    ) -> WriteBackpressure | None:
        """Why ``data`` (``size`` bytes) cannot be queued now, or ``None`` if it can."""
        if closed:
            return WriteBackpressure(BackpressureReason.CLOSED, data)
        items = queued + 1
        if items > self.max_items:
            return WriteBackpressure(
                BackpressureReason.QUEUE_FULL, data, attempted=items, limit=self.max_items
            )
        if self.pending + size > self.max_bytes:
            return WriteBackpressure(
                BackpressureReason.BYTE_BUDGET_EXCEEDED,
                data,
                attempted=self.pending + size,
                limit=self.max_bytes,
            )
        return None

    def next_wake(self) -> asyncio.Future[None]:
        """A future resolved at the next wake-up (room may have been freed, or the queue closed)."""
        fut = self._loop.create_future()
        self._waiters.append(fut)
        return fut

    async def wait(self) -> None:
        """Park until room may have been freed (or the queue closed); then check again."""
        fut = self.next_wake()
        try:
            await fut
        finally:
            if fut in self._waiters:  # cancelled before a wake-up
                self._waiters.remove(fut)

    def wake(self) -> None:
        """Release every parked producer (room was freed, or the queue closed)."""
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def release(self, n: int) -> None:
        """Give back the budget of ``n`` written bytes."""
        self.pending -= n
        if self._waiters:
            self.wake()

    def clear(self) -> None:
        """Drop every accepted byte (the queue failed) and release every parked producer."""
        self.pending = 0
        self.wake()
