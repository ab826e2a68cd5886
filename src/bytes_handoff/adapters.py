"""I/O adapters: how ``HandoffBuffer`` reads and ``WriteHandoff`` writes.

The library talks to I/O through two tiny protocols:

* :class:`ByteReader` -- ``async read_into(view) -> int`` fills a prefix of
  ``view`` and returns the count, ``0`` at end of stream.
* :class:`ByteWriter` -- ``async write_some(chunks) -> int`` writes a prefix of
  the concatenated ``chunks`` (at least one byte) and returns its length;
  ``async shutdown()`` ends the write side.

Two optional synchronous methods let the hot paths skip a coroutine when the
I/O can be done at once: ``read_into_nowait(view) -> int | None`` (``None``:
nothing to read yet) and ``write_nowait(chunks) -> int`` (``0``: no room yet).
Sockets and the duplex have them.

Any object with those methods is used as it is (the in-memory
:class:`~bytes_handoff.DuplexStream` is one). Other types are wrapped by a
factory found along their MRO in a registry; this module registers
non-blocking ``socket.socket`` and asyncio's ``StreamReader``/``StreamWriter``.
To support another type, write a class with those methods in a small module
and call :func:`register_reader` / :func:`register_writer` for it.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ._types import BytesLike

__all__ = [
    "ByteReader",
    "ByteWriter",
    "SocketReader",
    "SocketSendWriter",
    "SocketWriter",
    "StreamReaderAdapter",
    "StreamWriterAdapter",
    "as_reader",
    "as_writer",
    "check_plain_nonblocking",
    "register_reader",
    "register_writer",
    "stop_waiting",
    "wait_readable",
    "wait_writable",
]

#: The most buffers one ``sendmsg`` call is given (well under IOV_MAX = 1024).
MAX_IOVECS = 64


@runtime_checkable
class ByteReader(Protocol):
    """Something ``HandoffBuffer.read_available`` can read from."""

    async def read_into(self, view: memoryview) -> int: ...


@runtime_checkable
class ByteWriter(Protocol):
    """Something ``WriteHandoff`` can drain into."""

    async def write_some(self, chunks: Sequence[BytesLike]) -> int: ...

    async def shutdown(self) -> None: ...


_READERS: dict[type, Callable[[Any], ByteReader]] = {}
_WRITERS: dict[type, Callable[[Any], ByteWriter]] = {}


def register_reader(cls: type, factory: Callable[[Any], ByteReader]) -> None:
    """Teach ``as_reader`` (and so ``HandoffBuffer``) to read from ``cls`` instances."""
    _READERS[cls] = factory


def register_writer(cls: type, factory: Callable[[Any], ByteWriter]) -> None:
    """Teach ``as_writer`` (and so ``WriteHandoff.spawn``) to write to ``cls`` instances."""
    _WRITERS[cls] = factory


def _hint(obj: object) -> str:
    # Adapters for optional libraries register themselves on import.
    if type(obj).__module__.split(".")[0] == "anyio":
        return " (for anyio streams, import bytes_handoff.anyio_streams first)"
    return ""


def as_reader(obj: object) -> ByteReader:
    """Return a :class:`ByteReader` for ``obj``; ``TypeError`` naming the type if none fits."""
    for cls in type(obj).__mro__:
        factory = _READERS.get(cls)
        if factory is not None:
            return factory(obj)
    if isinstance(obj, ByteReader):
        return obj
    raise TypeError(
        f"cannot read from {type(obj).__name__}: expected a socket, an asyncio.StreamReader,"
        " a DuplexStream, or an object with `async read_into(view) -> int`" + _hint(obj)
    )


def as_writer(obj: object) -> ByteWriter:
    """Return a :class:`ByteWriter` for ``obj``; ``TypeError`` naming the type if none fits."""
    for cls in type(obj).__mro__:
        factory = _WRITERS.get(cls)
        if factory is not None:
            return factory(obj)
    if isinstance(obj, ByteWriter):
        return obj
    raise TypeError(
        f"cannot write to {type(obj).__name__}: expected a socket, an asyncio.StreamWriter,"
        " a DuplexStream, or an object with `async write_some(chunks) -> int`"
        " and `async shutdown()`" + _hint(obj)
    )


# -- sockets ----------------------------------------------------------------------------

#: How often a socket wait checks that the socket is still open. Closing a
#: socket never wakes the loop (the kernel drops it from epoll silently), so a
#: wait on a socket closed under it would otherwise last forever.
CLOSED_CHECK_SECONDS = 0.5


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _ClosedSocketWatch:
    """One per loop: wakes every socket wait whose socket was closed under it.

    While any wait is pending it checks them all every ``CLOSED_CHECK_SECONDS``
    (one timer per loop, not one per wait: a wait costs a dict insert and pop).
    """

    __slots__ = ("loop", "timer", "waits")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waits: dict[asyncio.Future[None], tuple[socket.socket, bool]] = {}
        self.timer: asyncio.TimerHandle | None = None

    @staticmethod
    def of(loop: asyncio.AbstractEventLoop) -> _ClosedSocketWatch:
        watch: _ClosedSocketWatch | None = getattr(loop, "_bytes_handoff_closed_watch", None)
        if watch is None:
            watch = _ClosedSocketWatch(loop)
            setattr(loop, "_bytes_handoff_closed_watch", watch)  # noqa: B010
        return watch

    def add(self, fut: asyncio.Future[None], sock: socket.socket, writing: bool) -> None:
        self.waits[fut] = (sock, writing)
        if self.timer is None:
            self.timer = self.loop.call_later(CLOSED_CHECK_SECONDS, self.check)

    def check(self) -> None:
        self.timer = None
        for fut, (sock, _) in list(self.waits.items()):
            if sock.fileno() < 0:
                _wake(fut)  # the waiter's next syscall fails with EBADF
        if self.waits:
            self.timer = self.loop.call_later(CLOSED_CHECK_SECONDS, self.check)


async def _wait_ready(sock: socket.socket, writing: bool) -> None:
    fd = sock.fileno()
    if fd < 0:
        raise OSError(errno.EBADF, "socket is closed")
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    if writing:
        loop.add_writer(fd, _wake, fut)
    else:
        loop.add_reader(fd, _wake, fut)
    watch = _ClosedSocketWatch.of(loop)
    watch.add(fut, sock, writing)
    try:
        await fut
    finally:
        # Not when stop_waiting() unregistered it already: the descriptor may be closed and
        # its number taken by a new socket, whose watch this would remove.
        if watch.waits.pop(fut, None) is not None:
            if writing:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)


def stop_waiting(sock: socket.socket) -> None:
    """Unregister every pending wait on ``sock`` from the running loop, now, and wake it.

    Call it before closing a socket that a task may still be waiting on:
    uvloop (libuv) aborts the process when a descriptor it was told to watch
    is closed before the watch is removed, and a cancelled task only removes
    its watch on its next step. A woken read or write tries again and, the
    socket being closed by then, fails with ``EBADF`` (``BufferIOError`` /
    ``WriteIOError``) instead of waiting forever.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    watch: _ClosedSocketWatch | None = getattr(loop, "_bytes_handoff_closed_watch", None)
    fd = sock.fileno()
    if watch is None or fd < 0:
        return
    for fut, (waiting_on, writing) in list(watch.waits.items()):
        if waiting_on is sock:
            del watch.waits[fut]
            if writing:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)
            _wake(fut)


async def wait_readable(sock: socket.socket) -> None:
    """Wait until ``sock`` is readable, has an error or end of stream pending, or is closed."""
    await _wait_ready(sock, writing=False)


async def wait_writable(sock: socket.socket) -> None:
    """Wait until ``sock`` can take more bytes, has an error pending, or is closed."""
    await _wait_ready(sock, writing=True)


def check_plain_nonblocking(sock: socket.socket) -> None:
    """``TypeError`` for a TLS socket, ``ValueError`` for a blocking one; else nothing.

    The socket adapters and ``tunnel()`` move raw bytes with ``recv_into``,
    ``sendmsg`` and ``splice``: on an ``ssl.SSLSocket`` that would forward
    ciphertext as plaintext, and on a blocking socket it would freeze the loop.
    """
    ssl = sys.modules.get("ssl")  # no ssl imported: no TLS socket can exist
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError(
            "TLS sockets are not supported by the raw socket adapters (they would move"
            " ciphertext): use the TLS connection's asyncio streams instead"
        )
    _check_nonblocking(sock)


def _check_nonblocking(sock: socket.socket) -> None:
    if sock.gettimeout() != 0.0:
        raise ValueError(
            "socket must be non-blocking: call sock.setblocking(False) first"
            " (and leave it so while the library uses it)"
        )


class SocketReader:
    """Reads a non-blocking socket with ``recv_into``: bytes land in the caller's view."""

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        check_plain_nonblocking(sock)
        self._sock = sock

    @property
    def sock(self) -> socket.socket:
        return self._sock

    def read_into_nowait(self, view: memoryview) -> int | None:
        """Read what the kernel has now; ``None`` if that is nothing yet."""
        sock = self._sock
        if sock.gettimeout() != 0.0:  # switched to blocking since: recv would freeze the loop
            _check_nonblocking(sock)
        try:
            return sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return None

    async def read_into(self, view: memoryview) -> int:
        # Try the read first; only wait for readiness when the kernel has nothing.
        while (n := self.read_into_nowait(view)) is None:
            await wait_readable(self._sock)
        return n


class SocketWriter:
    """Writes a batch with one ``sendmsg`` (up to 64 buffers); waits only on a full socket.

    Where the socket has no ``sendmsg`` (Windows), constructing one gives a
    :class:`SocketSendWriter` instead: the choice is made once, here, so the
    ``sendmsg`` hot path has no per-call check.
    """

    __slots__ = ("_sock",)

    def __new__(cls, sock: socket.socket) -> SocketWriter:
        if cls is SocketWriter and not hasattr(sock, "sendmsg"):
            cls = SocketSendWriter
        return object.__new__(cls)

    def __init__(self, sock: socket.socket) -> None:
        check_plain_nonblocking(sock)
        self._sock = sock

    @property
    def sock(self) -> socket.socket:
        return self._sock

    def write_nowait(self, chunks: Sequence[BytesLike]) -> int:
        """Send what the kernel takes now with one ``sendmsg``; ``0`` if the socket is full."""
        # Hot path: one vectored syscall per batch, no coroutine.
        sock = self._sock
        if sock.gettimeout() != 0.0:  # switched to blocking since: sendmsg would freeze the loop
            _check_nonblocking(sock)
        try:
            return sock.sendmsg(chunks[:MAX_IOVECS] if len(chunks) > MAX_IOVECS else chunks)
        except (BlockingIOError, InterruptedError):
            return 0

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        # One vectored syscall per batch; the caller resumes a partial send.
        while (n := self.write_nowait(chunks)) == 0 and any(chunks):
            await wait_writable(self._sock)
        return n

    def stop_waiting(self) -> None:
        """``WriteHandoff.abort()`` calls it: the socket may be closed right after."""
        stop_waiting(self._sock)

    async def shutdown(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            # ENOTCONN after the peer already closed: nothing left to signal.
            if exc.errno != errno.ENOTCONN:
                raise


class SocketSendWriter(SocketWriter):
    """A :class:`SocketWriter` for sockets without ``sendmsg`` (Windows): one ``send``.

    Each call sends (a prefix of) the first non-empty chunk; ``WriteHandoff``
    resumes partial sends, so every byte still goes out, in order.
    """

    __slots__ = ()

    def write_nowait(self, chunks: Sequence[BytesLike]) -> int:
        """Send what the kernel takes now of the first non-empty chunk; ``0`` if full."""
        sock = self._sock
        if sock.gettimeout() != 0.0:  # switched to blocking since: send would freeze the loop
            _check_nonblocking(sock)
        for chunk in chunks:
            if chunk:
                try:
                    return sock.send(chunk)
                except (BlockingIOError, InterruptedError):
                    return 0
        return 0


register_reader(socket.socket, SocketReader)
register_writer(socket.socket, SocketWriter)


# -- asyncio streams ---------------------------------------------------------------------


class StreamReaderAdapter:
    """Reads an ``asyncio.StreamReader``; it returns new ``bytes``, so one copy is made."""

    __slots__ = ("_reader",)

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def read_into(self, view: memoryview) -> int:
        data = await self._reader.read(len(view))
        n = len(data)
        view[:n] = data
        return n


class StreamWriterAdapter:
    """Writes a batch to an ``asyncio.StreamWriter`` with ``writelines`` and one ``drain``."""

    __slots__ = ("_writer",)

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        writer = self._writer
        if writer.is_closing():
            raise BrokenPipeError(errno.EPIPE, "stream writer is closing")
        total = 0
        for chunk in chunks:
            total += len(chunk) if not isinstance(chunk, memoryview) else chunk.nbytes
        writer.writelines(chunks)
        await _drain(writer)
        return total

    async def shutdown(self) -> None:
        writer = self._writer
        if writer.is_closing():
            return
        if writer.can_write_eof():
            writer.write_eof()
            await _drain(writer)
        else:
            writer.close()
            await writer.wait_closed()


async def _drain(writer: asyncio.StreamWriter) -> None:
    """``writer.drain()``, ended with ``BrokenPipeError`` if the writer is closed under it.

    ``close()`` with a backlog the peer never reads leaves ``drain()`` waiting
    for good (asyncio flushes before it closes): look again now and then.
    """
    transport = writer.transport
    if transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[0]:
        await writer.drain()  # at or under the low mark: not paused, returns at once
        return
    draining = asyncio.ensure_future(writer.drain())
    try:
        while not draining.done():
            await asyncio.wait([draining], timeout=CLOSED_CHECK_SECONDS)
            if not draining.done() and writer.is_closing():
                raise BrokenPipeError(errno.EPIPE, "stream writer closed before the peer took all")
        draining.result()
    finally:
        draining.cancel()


register_reader(asyncio.StreamReader, StreamReaderAdapter)
register_writer(asyncio.StreamWriter, StreamWriterAdapter)
