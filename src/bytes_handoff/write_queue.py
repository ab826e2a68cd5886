"""``WriteHandoff``: a bounded, owned, batched write queue in front of one writer.

Producers (any number of tasks) enqueue owned chunks; one writer task drains
the queue in submission order, up to 64 chunks or 1 MiB per batch, with one
vectored write per batch where the writer supports it. Two bounds hold at
every moment: at most ``max_items`` chunks wait in the queue, and at most
``max_pending_bytes`` bytes are accepted but not yet written. Budget is given
back as bytes are written.

Owned means owned: ``bytes`` (and read-only views of ``bytes``) are queued as
they are, without a copy; any other buffer (``bytearray``, a writable
``memoryview``, ``array``, ``mmap``) is copied at the call, so changing it
afterwards never changes what the peer receives. Anything that is not a
buffer (``str``, ``int``) is refused with ``TypeError`` at the call.

When the writer fails (an ``OSError``, any other exception, or a count that
breaks the ``ByteWriter`` contract), the chunk being written completes with
``WriteIOError``, every later chunk with ``WriteClosed``, the handoff closes,
and every waiting producer is released: nothing waits forever.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._types import BytesLike
from .adapters import ByteWriter, as_writer
from .errors import (
    BackpressureReason,
    ByteBudgetExceeded,
    WriteBackpressure,
    WriteClosed,
    WriteError,
    WriteIOError,
)

__all__ = ["WriteHandoff", "WriteHandoffConfig", "WriteTicket"]

#: Most chunks in one vectored write, unless the writer says otherwise with a
#: ``max_batch_items`` attribute (a transport takes more than one ``sendmsg``).
BATCH_MAX_ITEMS = 64
#: Most bytes in one vectored write (a batch always takes at least one chunk).
BATCH_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WriteHandoffConfig:
    """Bounds of a :class:`WriteHandoff`: queued chunks, and bytes accepted but unwritten."""

    max_items: int = 1024
    max_pending_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {self.max_items}")
        if self.max_pending_bytes < 1:
            raise ValueError(f"max_pending_bytes must be at least 1, got {self.max_pending_bytes}")


class WriteTicket:
    """Completion of one chunk: ``await ticket`` (or ``await ticket.wait()``).

    Resolves once the chunk was handed to the writer in full; raises the
    ``WriteError`` that ended it otherwise. An unawaited failed ticket is
    silent (the error also surfaces from ``aclose()``).
    """

    __slots__ = ("_done", "_error", "_waiters")

    def __init__(self) -> None:
        self._done = False
        self._error: WriteError | None = None
        self._waiters: list[asyncio.Future[None]] | None = None

    def done(self) -> bool:
        """Whether the chunk's fate is known."""
        return self._done

    def error(self) -> WriteError | None:
        """The error that ended the chunk, or ``None`` (also while pending)."""
        return self._error

    def _resolve(self, error: WriteError | None) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait(self) -> None:
        """Wait for the chunk to be written; raise its ``WriteError`` if it was not."""
        if not self._done:
            # One future per waiter: cancelling one waiter never disturbs another.
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(fut)
            await fut
        if self._error is not None:
            raise self._error

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        state = "pending" if not self._done else ("failed" if self._error else "written")
        return f"<WriteTicket {state}>"


def _owned(data: object) -> tuple[BytesLike, int]:
    """``data`` as an immutable flat buffer the queue may keep, and its size in bytes.

    ``bytes`` and C-contiguous views of ``bytes`` cost no copy; every other
    buffer is copied (its owner may change it later); ``TypeError`` for
    anything that is not a buffer. Every chunk the queue holds satisfies
    ``len(chunk) == its size in bytes``.
    """
    if type(data) is bytes:
        return data, len(data)
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            "write needs a bytes-like object (bytes, bytearray, memoryview, ...),"
            f" got {type(data).__name__}"
        ) from None
    if isinstance(view.obj, bytes) and view.c_contiguous:
        flat = view if (view.format == "B" and view.ndim == 1) else view.cast("B")
        return flat, flat.nbytes
    out = view.tobytes()
    return out, len(out)


class WriteHandoff:
    """A bounded write queue drained by one writer task. Create it with :meth:`spawn`."""

    def __init__(self, writer: ByteWriter, cfg: WriteHandoffConfig) -> None:
        self._writer = writer
        self._max_items = cfg.max_items
        self._max_bytes = cfg.max_pending_bytes
        self._chunks: deque[BytesLike] = deque()
        self._tickets: deque[WriteTicket | None] = deque()
        self._pending = 0
        self._closed = False
        self._error: WriteIOError | None = None
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._space_waiters: list[asyncio.Future[None]] = []
        self._in_flight: list[WriteTicket | None] | None = None
        self._in_flight_first = 0
        self._batch: list[BytesLike] | None = None
        self._batch_left = 0
        self._batch_ticketed = False
        self._queued_tickets = 0  # chunks in the queue that carry a ticket
        # flush() waits until ``_finished`` (chunks completed, in order) reaches the
        # ``_accepted`` count it saw; ``_failed`` says the rest will never complete.
        self._accepted = 0
        self._finished = 0
        self._failed = False
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._write_nowait: Callable[[list[BytesLike]], int] | None = getattr(
            writer, "write_nowait", None
        )
        self._batch_items: int = getattr(writer, "max_batch_items", BATCH_MAX_ITEMS)
        self._flush_scheduled = False
        self._task: asyncio.Task[None] = self._loop.create_task(self._run())

    @classmethod
    def spawn(cls, writer: object, cfg: WriteHandoffConfig | None = None) -> WriteHandoff:
        """Start a handoff and its writer task on the running loop.

        ``writer`` is a non-blocking socket, an ``asyncio.StreamWriter``, a
        ``DuplexStream``, or any registered / protocol-conforming writer.
        """
        return cls(as_writer(writer), cfg or WriteHandoffConfig())

    # -- state ----------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted and not yet written."""
        return self._pending

    @property
    def queued_items(self) -> int:
        """Chunks waiting in the queue (not counting a batch being written)."""
        return len(self._chunks)

    @property
    def closed(self) -> bool:
        """Whether new writes are refused."""
        return self._closed

    @property
    def config(self) -> WriteHandoffConfig:
        return WriteHandoffConfig(self._max_items, self._max_bytes)

    @property
    def error(self) -> WriteIOError | None:
        """The writer failure that closed the handoff, or ``None``."""
        return self._error

    @property
    def writer(self) -> ByteWriter:
        """The adapter the writer task drains into (e.g. ``SocketWriter``)."""
        return self._writer

    async def flush(self) -> None:
        """Wait until every chunk accepted so far was written.

        Works after ``close()`` too (the queue is still written). Raises the
        ``WriteIOError`` that stopped the writer, or ``WriteClosed`` if
        ``abort()`` dropped chunks, when some of them will never be written.
        """
        target = self._accepted
        while self._finished < target:
            if self._failed:
                raise self._error or WriteClosed("write handoff aborted")
            fut = self._loop.create_future()
            self._flush_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._flush_waiters:
                    self._flush_waiters.remove(fut)

    # -- producers --------------------------------------------------------------------------

    def _refusal(self, data: object, size: int) -> WriteBackpressure | None:
        if self._closed:
            return WriteBackpressure(BackpressureReason.CLOSED, data)  # type: ignore[arg-type]
        items = len(self._chunks) + 1
        if items > self._max_items:
            return WriteBackpressure(
                BackpressureReason.QUEUE_FULL,
                data,  # type: ignore[arg-type]
                attempted=items,
                limit=self._max_items,
            )
        if self._pending + size > self._max_bytes:
            return WriteBackpressure(
                BackpressureReason.BYTE_BUDGET_EXCEEDED,
                data,  # type: ignore[arg-type]
                attempted=self._pending + size,
                limit=self._max_bytes,
            )
        return None

    def _enqueue(self, data: BytesLike, size: int, ticket: WriteTicket | None) -> None:
        # Hot path: two appends, a counter, and at most one wake-up per idle writer.
        self._chunks.append(data)
        self._tickets.append(ticket)
        self._pending += size
        self._accepted += 1
        if ticket is not None:
            self._queued_tickets += 1
        if self._wakeup is not None and not self._flush_scheduled:
            self._schedule_flush()

    def _write_through(self) -> None:
        """The queue is full: if the writer is parked and can write at once, write now.

        Writing the queued batch here, instead of a loop turn later, frees the
        room a producer needs without suspending it (or refusing it).
        """
        if self._write_nowait is not None and self._wakeup is not None:
            self._flush_now()

    def _admit_now(self, data: object) -> tuple[BytesLike, int]:
        """The owned form of ``data`` and its size if it fits now, else ``WriteBackpressure``."""
        if type(data) is bytes:
            chunk: BytesLike = data
            size = len(data)
        else:
            chunk, size = _owned(data)
        if (
            self._closed
            or len(self._chunks) >= self._max_items
            or self._pending + size > self._max_bytes
        ):
            if not self._closed:
                self._write_through()  # frees room without a refusal when the writer keeps up
            refusal = self._refusal(data, size)
            if refusal is not None:
                raise refusal
        return chunk, size

    def try_write(self, data: BytesLike) -> WriteTicket:
        """Enqueue ``data`` now and return its ticket, or raise ``WriteBackpressure``."""
        chunk, size = self._admit_now(data)
        ticket = WriteTicket()
        self._enqueue(chunk, size, ticket)
        return ticket

    def try_write_fire_and_forget(self, data: BytesLike) -> None:
        """Enqueue ``data`` now without a ticket, or raise ``WriteBackpressure``."""
        # Hot path (a protocol's parse step): bytes that fit are queued inline.
        if (
            type(data) is bytes
            and not self._closed
            and len(self._chunks) < self._max_items
            and self._pending + len(data) <= self._max_bytes
        ):
            self._chunks.append(data)
            self._tickets.append(None)
            self._pending += len(data)
            self._accepted += 1
            if self._wakeup is not None and not self._flush_scheduled:
                self._schedule_flush()
            return
        chunk, size = self._admit_now(data)
        self._enqueue(chunk, size, None)

    async def _wait_for_room(self, size: int) -> None:
        if size > self._max_bytes:
            raise ByteBudgetExceeded(attempted=size, limit=self._max_bytes)
        if not self._closed:
            self._write_through()
        while True:
            if self._closed:
                raise WriteClosed()
            if len(self._chunks) < self._max_items and self._pending + size <= self._max_bytes:
                return
            fut = self._loop.create_future()
            self._space_waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._space_waiters:
                    self._space_waiters.remove(fut)

    async def write(self, data: BytesLike) -> WriteTicket:
        """Wait for queue room and byte budget, enqueue ``data`` and return its ticket.

        ``ByteBudgetExceeded`` at once if ``data`` alone exceeds the budget;
        ``WriteClosed`` once the handoff is closed, also while waiting.
        """
        data, size = _owned(data)
        if (
            self._closed
            or len(self._chunks) >= self._max_items
            or self._pending + size > self._max_bytes
        ):
            await self._wait_for_room(size)
        ticket = WriteTicket()
        self._enqueue(data, size, ticket)
        return ticket

    async def write_fire_and_forget(self, data: BytesLike) -> None:
        """Like :meth:`write`, without a ticket."""
        # Hot path: the checks and the enqueue inline, no helper calls when there is room.
        if type(data) is bytes:
            size = len(data)
        else:
            data, size = _owned(data)
        if (
            self._closed
            or len(self._chunks) >= self._max_items
            or self._pending + size > self._max_bytes
        ):
            await self._wait_for_room(size)
        self._chunks.append(data)
        self._tickets.append(None)
        self._pending += size
        self._accepted += 1
        if self._wakeup is not None and not self._flush_scheduled:
            self._schedule_flush()

    def _wake_producers(self) -> None:
        waiters = self._space_waiters
        if waiters:
            self._space_waiters = []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new writes; chunks already queued are still written."""
        if self._closed:
            return
        self._closed = True
        self._wake_producers()
        self._wake_task()

    async def aclose(self) -> None:
        """Close, write what is queued, shut the writer's write side, raise the first I/O error.

        Cancelling it (an outer timeout, say) aborts the handoff: a peer that
        never reads cannot keep it open.
        """
        self.close()
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                self.abort()  # our own cancellation: give up on the unwritten rest
                raise
            # Otherwise abort() cancelled the writer task: that is not our error.
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop now: cancel the writer task; every unwritten chunk fails with ``WriteClosed``.

        The writer is released at once: closing its socket right after is safe.
        """
        self.close()
        self._task.cancel()
        stop_waiting = getattr(self._writer, "stop_waiting", None)
        if stop_waiting is not None:
            stop_waiting()  # the cancelled task would only unregister on its next step
        # A task cancelled before its first step never runs _run's handler: fail here too.
        self._fail_queued(WriteClosed("write handoff aborted"), None)

    async def __aenter__(self) -> WriteHandoff:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """A clean exit is ``aclose()``; leaving on an exception or cancellation is ``abort()``."""
        if exc_type is None:
            await self.aclose()
        else:
            self.abort()

    # -- the writer ------------------------------------------------------------------------------
    #
    # The batch being written lives in ``_batch`` (chunks, tickets, index of the
    # first unfinished chunk, bytes left), shared by two drainers:
    # * ``_flush_now``, a plain loop callback used when the writer can write
    #   without waiting (``write_nowait``: sockets, the duplex): while the
    #   writer keeps up, a batch costs one callback and one syscall, no task
    #   switch;
    # * the writer task, which takes over whenever a write would wait (a full
    #   socket, an asyncio StreamWriter's drain) and does the shutdown at the end.

    def _take_batch(self) -> None:
        # Hot path: take <= 64 chunks / <= 1 MiB (at least one chunk).
        chunks = self._chunks
        tickets = self._tickets
        if len(chunks) <= self._batch_items and self._pending <= BATCH_MAX_BYTES:
            # The whole queue fits (the usual case): move it in one step.
            batch = list(chunks)
            batch_tickets = list(tickets)
            chunks.clear()
            tickets.clear()
            size = self._pending
            ticketed = self._queued_tickets
        else:
            batch = []
            batch_tickets = []
            size = 0
            ticketed = 0
            limit = self._batch_items
            while chunks and len(batch) < limit and size < BATCH_MAX_BYTES:
                data = chunks.popleft()
                ticket = tickets.popleft()
                batch.append(data)
                batch_tickets.append(ticket)
                size += len(data)
                if ticket is not None:
                    ticketed += 1
        self._queued_tickets -= ticketed
        self._batch = batch
        self._in_flight = batch_tickets
        self._in_flight_first = 0
        self._batch_left = size
        self._batch_ticketed = ticketed > 0
        if self._space_waiters:  # queue room was freed
            self._wake_producers()

    def _advance(self, n: int) -> None:
        """Account ``n`` written bytes of the batch: finish its chunks, resume at the exact byte."""
        batch = self._batch
        tickets = self._in_flight
        assert batch is not None and tickets is not None
        self._pending -= n
        self._batch_left -= n
        first = self._in_flight_first
        if self._batch_left == 0:
            # Hot path: the whole (rest of the) batch went out in one write.
            done = count = len(batch)
        else:
            done = first
            count = len(batch)
            while done < count and n >= len(batch[done]):
                n -= len(batch[done])
                done += 1
            if n:
                batch[done] = memoryview(batch[done])[n:]
        self._finished += done - first
        if self._batch_ticketed:
            for i in range(first, done):
                ticket = tickets[i]
                if ticket is not None:
                    ticket._resolve(None)
        if done == count:
            self._batch = self._in_flight = None
        else:
            self._in_flight_first = done
        if self._space_waiters:
            self._wake_producers()
        if self._flush_waiters:
            self._wake_flushers()

    def _wake_flushers(self) -> None:
        waiters = self._flush_waiters
        self._flush_waiters = []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _schedule_flush(self) -> None:
        if self._write_nowait is not None:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_now)
        else:
            self._wake_task()

    def _wake_task(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        write_nowait = self._write_nowait
        # Only while the task is parked: otherwise it is mid-write and drains in order itself.
        if write_nowait is None or self._wakeup is None:
            return
        try:
            while (todo := self._unwritten()) is not None:
                n = write_nowait(todo)
                if type(n) is not int or n < 0 or n > self._batch_left:
                    raise self._bad_count(n)
                if n == 0:
                    break  # the writer is full: the task waits for room
                self._advance(n)
        except Exception as exc:
            # Any writer failure, never only OSError: this runs as a loop callback,
            # where an escaping exception would only be logged and the tickets hang.
            self._fail_queued(WriteClosed(), WriteIOError(exc))
        if self._batch is not None or self._closed:
            self._wake_task()

    async def _run(self) -> None:
        try:
            await self._drain()
            if self._error is None:
                await self._writer.shutdown()
        except asyncio.CancelledError:
            self._fail_queued(WriteClosed("write handoff aborted"), None)
            raise
        except Exception as exc:
            self._fail_queued(WriteClosed(), WriteIOError(exc))
        except BaseException:
            self._fail_queued(WriteClosed("writer task crashed"), None)
            raise

    def _unwritten(self) -> list[BytesLike] | None:
        """What is left of the batch being written (taking the next batch), or ``None``: idle."""
        while True:
            if self._batch is None:
                if not self._chunks:
                    return None
                self._take_batch()
            if self._batch_left == 0:
                self._advance(0)  # only empty chunks: complete them in order
                continue
            batch = self._batch
            assert batch is not None
            first = self._in_flight_first
            return batch[first:] if first else batch

    async def _drain(self) -> None:
        writer = self._writer
        while True:
            todo = self._unwritten()
            if todo is None:
                if self._closed:
                    return
                wakeup = self._loop.create_future()
                self._wakeup = wakeup
                await wakeup
                continue
            n = await writer.write_some(todo)
            if type(n) is not int or n <= 0 or n > self._batch_left:
                raise self._bad_count(n)
            self._advance(n)

    def _bad_count(self, n: object) -> ValueError:
        return ValueError(
            f"writer {type(self._writer).__name__} reported {n!r} bytes written"
            f" of {self._batch_left} offered"
        )

    def _fail_queued(self, closed: WriteClosed, io_error: WriteIOError | None) -> None:
        """Fail the in-flight batch and the queue; close; release every waiter."""
        if io_error is not None and self._error is None:
            self._error = io_error
        self._closed = True
        self._failed = True
        in_flight = self._in_flight
        self._in_flight = None
        self._batch = None
        self._batch_left = 0
        if in_flight is not None:
            # The chunk being written gets the I/O error; everything after it WriteClosed.
            first = self._in_flight_first
            for i in range(first, len(in_flight)):
                ticket = in_flight[i]
                if ticket is not None:
                    ticket._resolve(io_error if (i == first and io_error) else closed)
        for ticket in self._tickets:
            if ticket is not None:
                ticket._resolve(closed)
        self._chunks.clear()
        self._tickets.clear()
        self._queued_tickets = 0
        self._pending = 0
        self._wake_producers()
        self._wake_flushers()
