"""Byte transports: TCP sockets and in-memory duplex pipes, and the lean client and sink.

The client and the sink are deliberately cheap so the proxy is what a run
measures (an asyncio-streams client and sink cost more CPU than most proxies
they would be measuring): on TCP they are raw non-blocking
sockets driven by the loop's ``add_reader``/``add_writer`` callbacks, no
asyncio streams, no per-chunk coroutines. Coalesced client sends of tunnel
bytes use ``os.sendfile`` from a memfd; the sink reads with ``recv_into`` a
reused buffer and verifies with slice compares.

The proxy implementations (``implementations.py``) get either two raw
non-blocking sockets or two :class:`~bytes_handoff.DuplexStream` ends; those
that want asyncio streams call :func:`open_streams`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from bytes_handoff import DuplexStream
from bytes_handoff.adapters import wait_writable

from ..errors import BenchError, UsageError, VerificationError
from .workload import StreamVerifier, Workload

__all__ = [
    "BufferPool",
    "ByteCount",
    "DuplexStreamFacade",
    "StreamReaderLike",
    "StreamWriterLike",
    "TcpClient",
    "TcpSink",
    "bind_listener",
    "connect_tcp",
    "duplex_client",
    "duplex_sink",
    "fmt_addr",
    "open_streams",
    "send_plan",
    "wait_connected",
]

Addr = tuple[str, int]


def fmt_addr(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}"


# -- sockets ------------------------------------------------------------------------------


#: A sink's connection: what its table holds for each accepted socket.
Conn = TypeVar("Conn")


def tune(sock: socket.socket) -> socket.socket:
    """Non-blocking with TCP_NODELAY: every TCP socket of the harness."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bind_listener(addr: Addr, reuseport: bool = False, backlog: int = 1024) -> socket.socket:
    """A listening, non-blocking socket on ``addr``; ``UsageError`` naming it if it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"cannot listen on {fmt_addr(addr)}: address already in use") from exc
        raise UsageError(f"cannot listen on {fmt_addr(addr)}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


async def wait_connected(sock: socket.socket, err: int) -> int:
    """Finish ``sock.connect_ex(addr)``, which returned ``err``: wait while the connect is in
    progress; then 0, or the connect's errno.

    A numeric address needs no resolver: connect directly rather than through
    ``loop.sock_connect``, which on uvloop resolves the address in its thread
    pool (a thread hop and futex wake-ups per connection).
    """
    if err == errno.EINPROGRESS:
        await wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return err


async def connect_tcp(addr: Addr, what: str, retry_until: float | None = None) -> socket.socket:
    """Connect a tuned socket to ``addr``.

    With ``retry_until`` (a ``time.monotonic()`` deadline) a refused connection
    is retried every 50 ms until then: how a driver waits for its service.
    """
    began = time.monotonic()
    while True:
        sock = tune(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        try:
            err = await wait_connected(sock, sock.connect_ex(addr))
            if err:
                raise OSError(err, os.strerror(err))
            return sock
        except OSError as exc:
            sock.close()
            refused = isinstance(exc, ConnectionRefusedError)
            if refused and retry_until is not None and time.monotonic() < retry_until:
                await asyncio.sleep(0.05)
                continue
            reason = "connection refused" if refused else (exc.strerror or str(exc))
            if refused and retry_until is not None:
                reason += f" (retried for {time.monotonic() - began:.1f} s)"
            cls = UsageError if refused and retry_until is not None else BenchError
            raise cls(f"cannot connect to {what} at {fmt_addr(addr)}: {reason}") from exc
        except BaseException:
            sock.close()
            raise


def send_plan(pos: int, total: int, prefix_len: int, fragment: int) -> int:
    """End of the next client write starting at ``pos``.

    Writes are ``fragment``-sized in stream coordinates; a write that would
    cross from the prefix into the tunnel stops at the boundary (it comes from
    a different source).
    """
    end = min(pos - pos % fragment + fragment, total)
    if pos < prefix_len < end:
        end = prefix_len
    return end


class TcpClient:
    """Sends one stream on a connected socket from loop callbacks, then half-closes.

    ``done`` resolves when the proxy has closed its side (the stream is fully
    handed over) or fails with the socket error.
    """

    __slots__ = (
        "_base",
        "_fd",
        "_loop",
        "_memfd",
        "_pattern",
        "_prefix",
        "_prefix_len",
        "_total",
        "_writer_armed",
        "conn",
        "done",
        "fragment",
        "pos",
        "sock",
    )

    def __init__(
        self, sock: socket.socket, wl: Workload, conn: int, fragment: int, sendfile: bool
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.sock = sock
        self._fd = sock.fileno()
        self.conn = conn
        self.fragment = fragment
        self._prefix = memoryview(wl.prefix(conn))
        self._prefix_len = wl.prefix_len
        self._pattern = memoryview(wl.pattern)
        self._base = wl.tunnel_base(conn)
        self._memfd = wl.memfd() if sendfile else -1
        self._total = wl.total
        self._writer_armed = False
        self.pos = 0
        self.done: asyncio.Future[None] = self._loop.create_future()

    def start(self) -> asyncio.Future[None]:
        self._pump()
        return self.done

    def _pump(self) -> None:
        # Hot path: one send (or sendfile) per fragment until the socket is full.
        sock = self.sock
        pos = self.pos
        total = self._total
        plen = self._prefix_len
        fragment = self.fragment
        try:
            while pos < total:
                end = min(pos - pos % fragment + fragment, total)
                if pos < plen:
                    if end > plen:
                        end = plen
                    pos += sock.send(self._prefix[pos:end])
                elif self._memfd >= 0:
                    t = self._base + pos - plen
                    try:
                        pos += os.sendfile(self._fd, self._memfd, t, end - pos)
                    except OSError as exc:
                        if exc.errno in (errno.EAGAIN, errno.EINTR):
                            raise
                        self._memfd = -1  # sendfile unsupported here: plain sends from now on
                else:
                    t = self._base + pos - plen
                    pos += sock.send(self._pattern[t : t + end - pos])
        except (BlockingIOError, InterruptedError):
            self.pos = pos
            if not self._writer_armed:
                self._writer_armed = True
                self._loop.add_writer(self._fd, self._pump)
            return
        except OSError as exc:
            self.pos = pos
            self._fail(exc)
            return
        self.pos = pos
        if self._writer_armed:
            self._writer_armed = False
            self._loop.remove_writer(self._fd)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fail(exc)
            return
        self._loop.add_reader(self._fd, self._wait_eof)

    def _wait_eof(self) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # a reset after everything was sent still ends the stream
        if data:
            return  # the proxy never writes back; ignore stray bytes
        self._loop.remove_reader(self._fd)
        if not self.done.done():
            self.done.set_result(None)

    def _fail(self, exc: OSError) -> None:
        if self._writer_armed:
            self._writer_armed = False
            self._loop.remove_writer(self._fd)
        if not self.done.done():
            self.done.set_exception(
                BenchError(
                    f"client of stream {self.conn:04}: send failed after {self.pos} bytes: {exc}"
                )
            )

    def close(self) -> None:
        if self._writer_armed:
            self._writer_armed = False
            self._loop.remove_writer(self._fd)
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self._fd)
        self.sock.close()


class AcceptingSink(Generic[Conn]):
    """What the TCP and TLS sinks share: the listener, the accept loop, the table of
    connections by descriptor, the receive buffer, and closing it all.

    A subclass says what an accepted socket becomes (``_accepted``) and how one
    connection is dropped (``_drop``).
    """

    def __init__(
        self,
        listener: socket.socket,
        wl: Workload,
        on_done: Callable[[StreamVerifier], None],
        on_error: Callable[[BaseException], None],
        bufsize: int,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        self._wl = wl
        self._on_done = on_done
        self._on_error = on_error
        self._buf = bytearray(bufsize)
        self._conns: dict[int, Conn] = {}
        #: Bytes received so far, over all streams (a progress signal for watchdogs).
        self.bytes_seen = 0

    def start(self) -> None:
        self._loop.add_reader(self._listener.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._on_error(BenchError(f"sink accept failed: {exc}"))
                return
            self._accepted(tune(sock))

    def _accepted(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _drop(self, conn: Conn) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._listener.fileno() >= 0:
            self._loop.remove_reader(self._listener.fileno())
        for conn in list(self._conns.values()):
            self._drop(conn)
        self._listener.close()


class TcpSink(AcceptingSink[socket.socket]):
    """Accepts streams on a listening socket and verifies each one from loop callbacks.

    One receive buffer serves every connection of the sink: a callback reads
    and verifies synchronously, so the buffer is free again when it returns.
    """

    def _accepted(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._conns[fd] = sock
        self._loop.add_reader(fd, self._readable, sock, StreamVerifier(self._wl))

    def _readable(self, sock: socket.socket, verifier: StreamVerifier) -> None:
        # Hot path: one recv_into the shared buffer, one verification, no allocation.
        buf = self._buf
        try:
            n = sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(sock)
            self._on_error(
                BenchError(f"sink: {verifier.name}: read failed at offset {verifier.pos}: {exc}")
            )
            return
        if n:
            self.bytes_seen += n
            try:
                verifier.feed(buf, n)
            except VerificationError as exc:
                self._drop(sock)
                self._on_error(exc)
            return
        self._drop(sock)
        try:
            verifier.finish()
        except VerificationError as exc:
            self._on_error(exc)
            return
        self._on_done(verifier)

    def _drop(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._conns.pop(fd, None)
        sock.close()


# -- duplex -------------------------------------------------------------------------------


class BufferPool:
    """Reused receive buffers for coroutine sinks (a fresh buffer per stream costs page faults)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[bytearray] = []

    def get(self) -> bytearray:
        return self._free.pop() if self._free else bytearray(self.size)

    def put(self, buf: bytearray) -> None:
        self._free.append(buf)


async def duplex_client(end: DuplexStream, wl: Workload, conn: int, fragment: int) -> None:
    """Write stream ``conn`` in ``fragment``-sized writes, then shut the write side."""
    prefix = memoryview(wl.prefix(conn))
    pattern = memoryview(wl.pattern)
    base = wl.tunnel_base(conn)
    plen = wl.prefix_len
    total = wl.total
    pos = 0
    # Hot path: one pipe write per fragment, views only.
    while pos < total:
        end_pos = send_plan(pos, total, plen, fragment)
        if pos < plen:
            await end.write(prefix[pos:end_pos])
        else:
            t = base + pos - plen
            await end.write(pattern[t : t + end_pos - pos])
        pos = end_pos
    end.shutdown_write()


class ByteCount:
    """Bytes seen so far by a set of sinks (a progress signal for watchdogs)."""

    __slots__ = ("bytes_seen",)

    def __init__(self) -> None:
        self.bytes_seen = 0


async def duplex_sink(
    end: DuplexStream, wl: Workload, conn: int, pool: BufferPool, seen: ByteCount
) -> StreamVerifier:
    """Drain and verify stream ``conn``, adding each read's size to ``seen``."""
    verifier = StreamVerifier(wl, expected_conn=conn)
    buf = pool.get()
    view = memoryview(buf)
    try:
        # Hot path: read into the reused buffer, verify in place.
        while n := await end.read_into(view):
            seen.bytes_seen += n
            verifier.feed(buf, n)
        verifier.finish()
    finally:
        view.release()
        pool.put(buf)
        end.close()
    return verifier


# -- asyncio streams for the hand-written baselines ------------------------------------------


class StreamReaderLike(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class StreamWriterLike(Protocol):
    def write(self, data: bytes | bytearray) -> None: ...

    async def drain(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class DuplexStreamFacade:
    """``StreamReader``/``StreamWriter`` look-alike over a ``DuplexStream``.

    ``write`` buffers like a transport; ``drain`` hands the buffer to the pipe.
    """

    def __init__(self, end: DuplexStream) -> None:
        self._end = end
        self._pending: list[bytes | bytearray] = []

    async def read(self, n: int = -1) -> bytes:
        return await self._end.read(n if n > 0 else 65536)

    def write(self, data: bytes | bytearray) -> None:
        self._pending.append(data)

    async def drain(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            await self._end.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._pending:
            raise RuntimeError("write_eof() with undrained writes")
        self._end.shutdown_write()

    def close(self) -> None:
        self._end.close()

    async def wait_closed(self) -> None:
        return None


async def open_streams(
    endpoint: object,
    limit: int = 2**16,
    *,
    tls: Mapping[str, Any] | None = None,
    accepted: bool = False,
) -> tuple[StreamReaderLike, StreamWriterLike]:
    """asyncio streams over a raw socket (``open_connection(sock=...)``) or a duplex end.

    ``tls``: the ``ssl=`` keyword arguments (``tls.server_ssl``/``client_ssl``) for a
    socket: ``accepted``, the server side of a connection this end accepted (as
    ``asyncio.start_server`` sets it up); else the client side (``open_connection``).
    """
    if isinstance(endpoint, DuplexStream):
        facade = DuplexStreamFacade(endpoint)
        return facade, facade
    if not isinstance(endpoint, socket.socket):
        raise TypeError(f"cannot open streams over {type(endpoint).__name__}")
    if not tls:
        return await asyncio.open_connection(sock=endpoint, limit=limit)
    if not accepted:
        return await asyncio.open_connection(sock=endpoint, limit=limit, **tls)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock=endpoint, **tls)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
