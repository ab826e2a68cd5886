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

# How a WriteHandoff is put together, and what holds between any two steps of the loop.
#
# Parts: admission (WriteAdmission: the two bounds, the byte budget in use, the producers
# parked until room is freed); the queue (``_chunks`` and ``_tickets``, one entry each per
# chunk, in submission order); the batch in flight (WriteBatch in ``_batch``, taken off the
# queue's front and written front to back; ``None`` while nothing is being written); two
# drainers; the lifecycle.
#
# Who may drain when: at most one drainer writes at any moment, so bytes reach the writer
# in submission order.
# * The writer task (``_drain``) drains whenever it runs, with ``write_some`` (which may
#   wait), and parks only when there is nothing to write.
# * ``_flush_now``, for writers that can write without waiting (``write_nowait``: sockets,
#   the duplex), drains only while the task is parked: run as a loop callback after an
#   enqueue, or at once by a producer facing a full queue (``_write_through``). While the
#   writer keeps up, a batch costs one callback and one syscall, no task switch. When the
#   writer is full (``write_nowait`` returns 0), it wakes the task to wait for room.
# * ``_write_now``, for the same writers: a chunk of at least ``WRITE_THROUGH_BYTES``
#   offered while the task is parked and nothing is queued or in flight goes to the writer
#   in the producer's own call (batching could gain nothing, and a loop turn costs); what
#   the writer does not take is queued as the whole queue, so order still holds.
#
# ``_wakeup`` is set (to the future the task parks on) exactly while the writer task is
# parked with nothing to write: set by the task alone, cleared and resolved by
# ``_wake_task`` alone. So set means "no write in progress: ``_flush_now`` may drain", and
# an enqueue must then wake a drainer: one ``_flush_now`` callback at most
# (``_flush_scheduled``), or the task itself when the writer has no ``write_nowait``.
#
# Counters: ``_accepted`` counts chunks ever accepted, ``_finished`` chunks completed (in
# order, so chunks ``< _finished`` are exactly the written ones); ``flush()`` waits until
# ``_finished`` reaches the ``_accepted`` it saw. ``_queued_tickets`` counts the queued chunks
# that carry a ticket, so taking the whole queue needs no count.
#
# Lifecycle:
# * open: writes are accepted;
# * closed (``_closed``; ``close()``, ``aclose()``): writes are refused and parked producers
#   released, the queue is still written; then the task shuts the writer's write side and ends;
# * failed (``_closed`` and ``_failed``; a writer failure or ``abort()``): the batch in flight
#   and the queue are failed with their tickets and dropped, the budget is cleared, every
#   producer and flusher is released; ``_error`` keeps the writer's failure (``None`` on abort).
# Every change of state wakes whoever waits on it: nothing waits forever.

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._checks import positive_int
from ._types import BytesLike
from ._write_admission import WriteAdmission
from ._write_batch import WriteBatch
from .adapters import ByteWriter, as_writer
from .errors import ByteBudgetExceeded, WriteClosed, WriteError, WriteIOError

__all__ = ["WriteHandoff", "WriteHandoffConfig", "WriteTicket"]

#: Most chunks in one vectored write, unless the writer says otherwise with a
#: ``max_batch_items`` attribute (a transport takes more than one ``sendmsg``).
BATCH_MAX_ITEMS = 64
#: Most bytes in one vectored write (a batch always takes at least one chunk).
BATCH_MAX_BYTES = 1024 * 1024
#: A chunk at least this large, offered while nothing is queued or being written, goes
#: to the writer at once: batching would gain nothing and a loop turn costs (about a
#: fifth of the protocol path's CPU per byte on asyncio, for 16 KiB reads).
WRITE_THROUGH_BYTES = 4096


@dataclass(frozen=True, slots=True)
class WriteHandoffConfig:
    """Bounds of a :class:`WriteHandoff`: queued chunks, and bytes accepted but unwritten."""

    max_items: int = 1024
    max_pending_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_items", positive_int(self.max_items, "max_items"))
        object.__setattr__(
            self, "max_pending_bytes", positive_int(self.max_pending_bytes, "max_pending_bytes")
        )


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


def _bad_size(size: object) -> Exception:
    if type(size) is int:
        return ValueError(f"size must be >= 0, got {size}")
    return TypeError(f"size must be an int, got {type(size).__name__}")


def _drop_cancelled_error(task: asyncio.Task[None]) -> None:
    """Let a writer task cancelled by ``abort()`` drop its ``CancelledError``.

    Its traceback holds ``_run``'s frame, which holds the handoff, which holds the
    task: a cycle that kept the handoff and its writer until a full collection.
    Retrieving the error once makes the task let go of it.
    """
    if task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            task.exception()


class WriteHandoff:
    """A bounded write queue drained by one writer task. Create it with :meth:`spawn`."""

    def __init__(self, writer: ByteWriter, cfg: WriteHandoffConfig) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._admission = WriteAdmission(cfg.max_items, cfg.max_pending_bytes, self._loop)
        self._chunks: deque[BytesLike] = deque()
        self._tickets: deque[WriteTicket | None] = deque()
        self._queued_tickets = 0
        self._batch: WriteBatch[WriteTicket] | None = None
        self._accepted = 0
        self._finished = 0
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._failed = False
        self._error: WriteIOError | None = None
        self._write_nowait: Callable[[list[BytesLike]], int] | None = getattr(
            writer, "write_nowait", None
        )
        self._batch_items: int = getattr(writer, "max_batch_items", BATCH_MAX_ITEMS)
        self._wakeup: asyncio.Future[None] | None = None
        self._flush_scheduled = False
        self._task: asyncio.Task[None] = self._loop.create_task(self._run())
        self._task.add_done_callback(_drop_cancelled_error)

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
        return self._admission.pending

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
        return WriteHandoffConfig(self._admission.max_items, self._admission.max_bytes)

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

    def fits(self, size: int) -> bool:
        """Whether a ``size``-byte chunk would be accepted now (``try_write`` would not refuse it).

        ``False`` once the handoff is closed.
        """
        if type(size) is not int or size < 0:
            raise _bad_size(size)
        adm = self._admission
        if self._closed:
            return False
        if len(self._chunks) < adm.max_items and adm.pending + size <= adm.max_bytes:
            return True
        self._write_through()  # frees room at once when the writer keeps up
        return not self._closed and adm.fits(len(self._chunks), size)

    def call_when_fits(self, size: int, callback: Callable[[], object]) -> None:
        """Call ``callback()`` on the loop, once, when ``size`` bytes fit or the handoff closes.

        The callback-style way to wait for room (no task): see
        ``HandoffProtocol.pause_until_room``. ``ByteBudgetExceeded`` at once
        if ``size`` is over the whole byte budget, ``WriteClosed`` if the
        handoff is closed already: neither would ever change.
        """
        if type(size) is not int or size < 0:
            raise _bad_size(size)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if size > self._admission.max_bytes:
            raise ByteBudgetExceeded(attempted=size, limit=self._admission.max_bytes)
        if self._closed:
            raise WriteClosed() from self._error
        if self.fits(size):
            self._loop.call_soon(callback)
        else:
            self._call_on_room(size, callback)

    def _call_on_room(self, size: int, callback: Callable[[], object]) -> None:
        def woken(_: asyncio.Future[None]) -> None:
            # A wake-up says room may have been freed; another producer may have taken it.
            if self._closed or self.fits(size):
                callback()
            else:
                self._call_on_room(size, callback)

        self._admission.next_wake().add_done_callback(woken)

    # -- producers --------------------------------------------------------------------------
    #
    # Each write method checks for room inline (the test of WriteAdmission.fits, spelled
    # out): on these hot paths a method call would cost more than the check itself.

    def _enqueue(self, data: BytesLike, size: int, ticket: WriteTicket | None) -> None:
        """Queue an admitted chunk, or hand it to an idle writer at once (``_write_now``)."""
        if size >= WRITE_THROUGH_BYTES and self._idle():
            self._write_now(data, size, ticket)
        else:
            self._append(data, size, ticket)

    def _append(self, data: BytesLike, size: int, ticket: WriteTicket | None) -> None:
        # Hot path: two appends, a counter, and at most one wake-up per idle writer.
        self._chunks.append(data)
        self._tickets.append(ticket)
        self._admission.pending += size
        self._accepted += 1
        if ticket is not None:
            self._queued_tickets += 1
        if self._wakeup is not None and not self._flush_scheduled:
            self._schedule_flush()

    def _admit_now(self, data: BytesLike) -> tuple[BytesLike, int]:
        """The owned form of ``data`` and its size if it fits now, else ``WriteBackpressure``.

        The one admission step of :meth:`try_write` and :meth:`try_write_fire_and_forget`.
        """
        if type(data) is bytes:
            chunk: BytesLike = data
            size = len(data)
        else:
            chunk, size = _owned(data)
        adm = self._admission
        if self._closed or len(self._chunks) >= adm.max_items or adm.pending + size > adm.max_bytes:
            if not self._closed:
                self._write_through()  # frees room without a refusal when the writer keeps up
            refusal = adm.refusal(data, size, len(self._chunks), self._closed)
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
        adm = self._admission
        if (
            type(data) is bytes
            and not self._closed
            and len(self._chunks) < adm.max_items
            and adm.pending + len(data) <= adm.max_bytes
        ):
            if len(data) >= WRITE_THROUGH_BYTES:
                self._enqueue(data, len(data), None)
                return
            self._chunks.append(data)
            self._tickets.append(None)
            adm.pending += len(data)
            self._accepted += 1
            if self._wakeup is not None and not self._flush_scheduled:
                self._schedule_flush()
            return
        chunk, size = self._admit_now(data)
        self._enqueue(chunk, size, None)

    async def _wait_for_room(self, size: int) -> None:
        adm = self._admission
        if size > adm.max_bytes:  # could never fit: refused at once
            raise ByteBudgetExceeded(attempted=size, limit=adm.max_bytes)
        if not self._closed:
            self._write_through()
        while True:
            if self._closed:
                raise WriteClosed()
            if adm.fits(len(self._chunks), size):
                return
            await adm.wait()

    async def write(self, data: BytesLike) -> WriteTicket:
        """Wait for queue room and byte budget, enqueue ``data`` and return its ticket.

        ``ByteBudgetExceeded`` at once if ``data`` alone exceeds the budget;
        ``WriteClosed`` once the handoff is closed, also while waiting.
        """
        data, size = _owned(data)
        adm = self._admission
        if self._closed or len(self._chunks) >= adm.max_items or adm.pending + size > adm.max_bytes:
            await self._wait_for_room(size)
        ticket = WriteTicket()
        self._enqueue(data, size, ticket)
        return ticket

    async def write_fire_and_forget(self, data: BytesLike) -> None:
        """Like :meth:`write`, without a ticket."""
        # Hot path: the room check and the enqueue inline, no method call when there is room.
        if type(data) is bytes:
            size = len(data)
        else:
            data, size = _owned(data)
        adm = self._admission
        if self._closed or len(self._chunks) >= adm.max_items or adm.pending + size > adm.max_bytes:
            await self._wait_for_room(size)
        if size >= WRITE_THROUGH_BYTES:
            self._enqueue(data, size, None)
            return
        self._chunks.append(data)
        self._tickets.append(None)
        adm.pending += size
        self._accepted += 1
        if self._wakeup is not None and not self._flush_scheduled:
            self._schedule_flush()

    def _idle(self) -> bool:
        """The writer can write at once, is parked, and nothing is queued or in flight."""
        return (
            self._wakeup is not None
            and self._write_nowait is not None
            and self._batch is None
            and not self._chunks
            and not self._closed
        )

    def _write_now(self, data: BytesLike, size: int, ticket: WriteTicket | None) -> None:
        """Hand ``data`` to the idle writer in this call; queue what it does not take.

        Hot path (a large chunk, a tunnel read): one ``write_nowait``, no loop turn.
        A writer failure fails the handoff exactly as it would on the queued path.
        """
        write_nowait = self._write_nowait
        assert write_nowait is not None
        self._accepted += 1
        try:
            n = write_nowait([data])
            if type(n) is not int or n < 0 or n > size:
                raise self._bad_count(n, size)
        except Exception as exc:
            error = WriteIOError(exc)
            if ticket is not None:
                ticket._resolve(error)
            self._fail_queued(WriteClosed(), error)
            self._wake_task()  # parked: it must see the failure and end
            return
        if n == size:
            self._finished += 1
            if ticket is not None:
                ticket._resolve(None)
            return
        # The rest becomes the whole queue (a view of owned bytes: it never changes).
        self._accepted -= 1
        self._append(memoryview(data).cast("B")[n:] if n else data, size - n, ticket)

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new writes; chunks already queued are still written."""
        if self._closed:
            return
        self._closed = True
        self._admission.wake()
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

    # -- draining -------------------------------------------------------------------------------

    def _next_batch(self) -> WriteBatch[WriteTicket] | None:
        """The batch with bytes left to write (taking the next one off the queue), or ``None``."""
        while True:
            batch = self._batch
            if batch is None:
                if not self._chunks:
                    return None
                batch = self._batch = WriteBatch.take(
                    self._chunks,
                    self._tickets,
                    queued_bytes=self._admission.pending,  # nothing is in flight
                    queued_tickets=self._queued_tickets,
                    max_items=self._batch_items,
                    max_bytes=BATCH_MAX_BYTES,
                )
                self._queued_tickets -= batch.ticketed
                self._admission.wake()  # queue room was freed
            if batch.left:
                return batch
            self._advance(0)  # only empty chunks: complete them in order

    def _advance(self, n: int) -> None:
        """Account ``n`` bytes of the batch in flight as written; release what they free."""
        # Hot path: once per write call.
        batch = self._batch
        assert batch is not None
        self._finished += batch.advance(n)
        if not batch.left:
            self._batch = None
        self._admission.release(n)
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

    def _write_through(self) -> None:
        """The queue is full: if the writer is parked and can write at once, write now.

        Writing the queued batch here, instead of a loop turn later, frees the
        room a producer needs without suspending it (or refusing it).
        """
        if self._write_nowait is not None and self._wakeup is not None:
            self._flush_now()

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        write_nowait = self._write_nowait
        # Only while the task is parked: otherwise it is mid-write and drains in order itself.
        if write_nowait is None or self._wakeup is None:
            return
        try:
            while (batch := self._next_batch()) is not None:
                n = write_nowait(batch.unwritten())
                if type(n) is not int or n < 0 or n > batch.left:
                    raise self._bad_count(n, batch.left)
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

    async def _drain(self) -> None:
        writer = self._writer
        while True:
            batch = self._next_batch()
            if batch is None:
                if self._closed:
                    return
                wakeup = self._loop.create_future()
                self._wakeup = wakeup
                await wakeup
                continue
            n = await writer.write_some(batch.unwritten())
            if type(n) is not int or n <= 0 or n > batch.left:
                raise self._bad_count(n, batch.left)
            self._advance(n)

    def _bad_count(self, n: object, offered: int) -> ValueError:
        return ValueError(
            f"writer {type(self._writer).__name__} reported {n!r} bytes written"
            f" of {offered} offered"
        )

    def _fail_queued(self, closed: WriteClosed, io_error: WriteIOError | None) -> None:
        """Fail the in-flight batch and the queue; close; release every waiter."""
        if io_error is not None and self._error is None:
            self._error = io_error
        self._closed = True
        self._failed = True
        batch = self._batch
        self._batch = None
        if batch is not None:
            batch.fail(io_error, closed)
        for ticket in self._tickets:
            if ticket is not None:
                ticket._resolve(closed)
        self._chunks.clear()
        self._tickets.clear()
        self._queued_tickets = 0
        self._admission.clear()
        self._wake_flushers()
