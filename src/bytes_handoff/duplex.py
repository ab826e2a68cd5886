"""An in-memory, bounded, bidirectional byte stream for one event loop.

``duplex_pair(capacity)`` returns two connected endpoints. Each direction is a
pipe holding at most ``capacity`` bytes: a writer that finds it full waits, a
reader that finds it empty waits, ``shutdown_write()`` ends the stream (the
peer reads ``b""`` / ``0`` once the pipe is drained), and ``close()`` drops an
endpoint (the peer's writes then fail with ``BrokenPipeError``).

The endpoints are valid readers for ``HandoffBuffer.read_available`` (they read
straight into the buffer's spare room) and valid writers for
``WriteHandoff.spawn`` (a batch is copied into the pipe in one call).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence

from ._checks import positive_int
from ._types import BytesLike

__all__ = ["DuplexStream", "duplex_pair"]


class _Pipe:
    """One direction: a bounded byte FIFO with wake-ups for one reader and one writer side."""

    __slots__ = ("_buf", "_readable", "_writable", "capacity", "eof", "reader_closed")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # CPython deletes from the front of a bytearray in O(1) (it moves a start offset).
        self._buf = bytearray()
        self.eof = False
        self.reader_closed = False
        self._readable: list[asyncio.Future[None]] = []
        self._writable: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._buf)

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    @staticmethod
    async def _wait(waiters: list[asyncio.Future[None]]) -> None:
        # One future per waiter: cancelling one waiter never disturbs another.
        fut = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        finally:
            if fut in waiters:  # cancelled before a wake-up cleared the list
                waiters.remove(fut)

    def _check_open(self) -> None:
        if self.reader_closed:  # as a socket closed under a read
            raise OSError(errno.EBADF, "duplex: this end is closed")

    def read_into_nowait(self, view: memoryview) -> int | None:
        self._check_open()
        buf = self._buf
        if not buf:
            return 0 if (self.eof or len(view) == 0) else None
        n = min(len(view), len(buf))
        with memoryview(buf) as src:
            view[:n] = src[:n]
        del buf[:n]
        self._wake(self._writable)
        return n

    async def read_into(self, view: memoryview) -> int:
        while True:
            n = self.read_into_nowait(view)
            if n is not None:
                return n
            await self._wait(self._readable)

    async def read(self, max_bytes: int) -> bytes:
        self._check_open()
        if max_bytes <= 0:
            return b""
        while not self._buf:
            if self.eof:
                return b""
            await self._wait(self._readable)
            self._check_open()
        n = min(max_bytes, len(self._buf))
        with memoryview(self._buf) as src:
            out = bytes(src[:n])
        del self._buf[:n]
        self._wake(self._writable)
        return out

    def write_nowait(self, chunks: Sequence[BytesLike]) -> int:
        if self.eof:
            raise BrokenPipeError(errno.EPIPE, "duplex: write after shutdown_write()")
        if self.reader_closed:
            raise BrokenPipeError(errno.EPIPE, "duplex: peer closed its end")
        room = self.capacity - len(self._buf)
        written = 0
        for chunk in chunks:
            if written >= room:
                break
            with memoryview(chunk) as view, view.cast("B") as flat:
                take = min(len(flat), room - written)
                self._buf += flat[:take]
            written += take
        if written:
            self._wake(self._readable)
        return written

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        while True:
            n = self.write_nowait(chunks)
            if n or not any(memoryview(chunk).nbytes for chunk in chunks):
                return n
            await self._wait(self._writable)

    def shutdown(self) -> None:
        self.eof = True
        self._wake(self._readable)
        self._wake(self._writable)

    def close_reader(self) -> None:
        self.reader_closed = True
        self._buf.clear()
        self._wake(self._writable)
        self._wake(self._readable)  # a read waiting on this end fails instead of waiting on


class DuplexStream:
    """One endpoint of an in-memory duplex pipe; create pairs with :func:`duplex_pair`."""

    __slots__ = ("_incoming", "_outgoing")

    def __init__(self, incoming: _Pipe, outgoing: _Pipe) -> None:
        self._incoming = incoming
        self._outgoing = outgoing

    @property
    def capacity(self) -> int:
        """Bytes each direction can hold before a writer waits."""
        return self._outgoing.capacity

    async def read_into(self, view: memoryview) -> int:
        """Copy up to ``len(view)`` available bytes into ``view``; ``0`` at end of stream."""
        return await self._incoming.read_into(view)

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Return up to ``max_bytes`` available bytes; ``b""`` at end of stream."""
        return await self._incoming.read(max_bytes)

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        """Copy as much of ``chunks`` as fits (waiting until at least one byte does)."""
        return await self._outgoing.write_some(chunks)

    def write_nowait(self, chunks: Sequence[BytesLike]) -> int:
        """Copy as much of ``chunks`` as fits now; ``0`` when the pipe is full."""
        return self._outgoing.write_nowait(chunks)

    def read_into_nowait(self, view: memoryview) -> int | None:
        """Copy what is buffered now into ``view``; ``None`` if nothing yet, ``0`` at the end."""
        return self._incoming.read_into_nowait(view)

    async def write(self, data: BytesLike) -> None:
        """Write all of ``data``, waiting for room as needed."""
        view = memoryview(data).cast("B")
        while view:
            n = await self._outgoing.write_some((view,))
            view = view[n:]

    def shutdown_write(self) -> None:
        """Signal end of stream to the peer; later writes fail with ``BrokenPipeError``."""
        self._outgoing.shutdown()

    async def shutdown(self) -> None:
        """Writer protocol: shut the write side (same as :meth:`shutdown_write`)."""
        self._outgoing.shutdown()

    def close(self) -> None:
        """Drop this endpoint: the peer reads end of stream and its writes fail; reads
        here (waiting ones included) fail with ``OSError(EBADF)``, as on a closed socket."""
        self._outgoing.shutdown()
        self._incoming.close_reader()

    @property
    def buffered_incoming(self) -> int:
        """Bytes waiting to be read at this endpoint."""
        return len(self._incoming)


def duplex_pair(capacity: int = 64 * 1024) -> tuple[DuplexStream, DuplexStream]:
    """Return two connected endpoints; each direction buffers at most ``capacity`` bytes."""
    capacity = positive_int(capacity, "duplex capacity")
    a_to_b = _Pipe(capacity)
    b_to_a = _Pipe(capacity)
    return DuplexStream(b_to_a, a_to_b), DuplexStream(a_to_b, b_to_a)
