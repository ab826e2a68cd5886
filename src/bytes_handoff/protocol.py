"""The asyncio protocol path: a ``HandoffBuffer`` as a ``BufferedProtocol``'s storage,
and ``WriteHandoff`` draining into the protocol's transport.

This is how servers built on ``loop.create_server`` / ``asyncio.start_server``
(TLS through ``ssl=``, uvloop's C read path) use the library. The loop reads
straight into the buffer's spare room (``get_buffer`` / ``buffer_updated``):
no copy, no readiness registration per read, no task switch per read. A full
buffer pauses reading: nothing is dropped and ``max_len`` is never passed.

Two ways to consume what arrives:

* **callback**: ``HandoffProtocol(cfg, on_data=step)``; ``step(proto)`` runs on
  the loop after every read (and once at end of stream) and takes what it
  can from ``proto.buffer``. The fastest path.
* **awaitable**: ``await proto.read_available()``, ``read_until(sep)``,
  ``read_exactly(n)``, with asyncio's end-of-stream and limit semantics
  (``IncompleteReadError``, ``LimitOverrunError``).

``WriteHandoff.spawn(proto)`` drains into ``proto``'s transport: one
``writelines`` per batch, waiting on ``pause_writing`` / ``resume_writing``
instead of polling. A ticket resolves when the transport accepted the chunk in
full (it may still sit in the transport's own bounded buffer). The queue only
ever holds immutable chunks, so a transport that keeps a reference to what it
could not send at once never sees reused storage.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._types import BytesLike
from .adapters import CLOSED_CHECK_SECONDS, _wake, register_writer
from .errors import BufferIOError, LimitExceeded
from .read_buffer import HandoffBuffer, HandoffBufferConfig
from .swap import adopt as _adopt
from .swap import hand_over as _hand_over
from .tls import DEFAULT_HANDSHAKE_TIMEOUT
from .tls import start_tls as _start_tls

if TYPE_CHECKING:
    from .write_queue import WriteHandoff

__all__ = [
    "HandoffProtocol",
    "TransportWriter",
    "open_handoff_connection",
    "start_handoff_server",
]

logger = logging.getLogger("bytes_handoff")

#: Read bounds when none are given: 64 KiB buffered, 16 KiB per read.
DEFAULT_CONFIG = HandoffBufferConfig(max_len=64 * 1024)

OnData = Callable[["HandoffProtocol"], object]


class HandoffProtocol(asyncio.BufferedProtocol):
    """A ``BufferedProtocol`` whose receive storage is a :class:`HandoffBuffer`.

    ``on_data(proto)``, if given, is called after every read and once at end
    of stream (``proto.at_eof``); otherwise use the awaitable readers. End of
    stream keeps the write side open (half-close), so a proxy can finish
    writing after its client is done sending; once both sides are done (end
    of stream received, and a ``WriteHandoff`` on this protocol closed) the
    transport is closed.
    """

    def __init__(
        self, config: HandoffBufferConfig | None = None, *, on_data: OnData | None = None
    ) -> None:
        self.buffer = HandoffBuffer.with_config(config or DEFAULT_CONFIG)
        self.transport: asyncio.Transport | None = None
        self.on_data = on_data
        self.at_eof = False
        self._eof_from_peer = False  # at_eof because the peer ended, not a local close
        self.closed = False
        #: Why the connection was lost, ``None`` for a clean close.
        self.exception: Exception | None = None
        #: Bytes arrived since read_available last returned; the ones still buffered
        #: (the last ``min(_unseen, len(buffer))``) are what it has not reported yet.
        self._unseen = 0
        self._reader_waiting: asyncio.Future[None] | None = None
        # Why reading is paused; the transport reads only while none of these holds.
        self._paused_full = False  # the buffer is full
        self._paused_by_user = False  # pause_reading()
        self._paused_for_room = False  # pause_until_room(): a write queue is full
        self._write_paused = False
        self._write_shut = False  # a WriteHandoff shut our write side
        self._tls = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost: asyncio.Future[None] | None = None

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self._tls = transport.get_extra_info("sslcontext") is not None

    def get_buffer(self, sizehint: int) -> memoryview:
        # Hot path: the loop recv_into()s straight into the buffer's spare room.
        # The loop holds the view until buffer_updated returns; it pins nothing after that.
        return self.buffer._spare()

    def buffer_updated(self, nbytes: int) -> None:
        # Hot path: commit, then one parse step (callback style) or one wake-up.
        buf = self.buffer
        buf._commit(nbytes)
        self._unseen += nbytes
        on_data = self.on_data
        if on_data is not None:
            on_data(self)
        elif self._reader_waiting is not None:
            self._wake_reader()
        if (
            buf._end - buf._start >= buf._max_len  # full (attributes: no calls on the hot path)
            and not self._paused_full
            and self.transport is not None
        ):
            self._paused_full = True  # never read past max_len: wait for the consumer
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.at_eof = True
        self._eof_from_peer = True
        if self.on_data is not None:
            self.on_data(self)
        self._wake_reader()
        if self._write_shut and self.transport is not None:
            self.transport.close()  # both directions are done
        # Keep the write side open (the peer only stopped sending); TLS cannot half-close.
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self.closed = True
        self.exception = exc
        self.at_eof = True
        # Nothing calls it any more, and it is often a bound method of this protocol
        # (on_data=self.route): a cycle that kept the protocol, its buffer and its
        # transport alive until the collector's next full pass.
        self.on_data = None
        self._wake_reader()
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the connection is lost (after ``transport.close()`` flushed, say)."""
        if not self.closed:
            if self._lost is None:
                self._lost = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._lost)

    # -- switching modes on the same connection (tls.py, swap.py) -------------------------------

    async def start_tls(
        self,
        ssl_context: _ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        flush: WriteHandoff | None = None,
    ) -> None:
        """Upgrade this connection to TLS, the bytes already buffered first (STARTTLS).

        Bytes the peer sent right after its last plaintext message (a
        ClientHello in the same packet as ``STARTTLS``, or after a PROXY
        header) are in :attr:`buffer`: the handshake reads them before the
        socket. Afterwards the buffer, ``on_data``, the readers and
        ``WriteHandoff.spawn(self)`` work as before, on plaintext, with the
        same bounds; ``transport`` is the TLS layer (``get_extra_info``
        answers ``ssl_object``, ``peercert``, ``cipher``). ``flush``: a
        ``WriteHandoff`` on this protocol whose queued chunks go out in
        plaintext first (the ``220 ready`` reply); what it is given after the
        call is encrypted. ``TLSHandshakeError`` if the handshake fails, the
        connection ends, or ``handshake_timeout`` seconds pass (each for the
        flush and the handshake); the connection is closed then. Arguments are
        checked at the call (``TypeError``, ``ValueError``), and the state
        (``RuntimeError``: not connected, closed, at end of stream, TLS
        already, another task reading).
        """
        await _start_tls(
            self,
            ssl_context,
            server_side=server_side,
            server_hostname=server_hostname,
            handshake_timeout=handshake_timeout,
            flush=flush,
        )

    def hand_over(self, protocol: asyncio.BaseProtocol) -> asyncio.Transport:
        """Give the transport and the buffered tail to ``protocol``; return the transport.

        ``protocol`` (an ``asyncio.Protocol`` or ``asyncio.BufferedProtocol``)
        gets ``connection_made``, then the tail (once, before any later
        byte), then reading resumes; if the peer already ended its stream it
        gets ``eof_received()`` after the tail. This protocol lets go: it gets
        ``connection_lost(None)``, its ``transport`` is ``None``, and writes
        through it fail, so flush a ``WriteHandoff`` on it first. Works from
        ``on_data`` and on a TLS connection (the new protocol reads plaintext).
        """
        return _hand_over(self, protocol)

    def adopt(
        self, transport: asyncio.BaseTransport, tail: BytesLike = b"", *, eof: bool = False
    ) -> None:
        """Take over ``transport`` from the protocol that read from it, ``tail`` first.

        ``tail`` is what that protocol read and did not use; it lands in
        :attr:`buffer` (``on_data`` runs, the readers see it) before any later
        byte. ``eof=True`` when that protocol's ``eof_received`` already ran (the
        peer ended its stream): the end of stream follows the tail, since a
        transport reports it once. For a fresh protocol: ``ValueError`` if it
        already has a connection, ``LimitExceeded`` if ``tail`` is over
        ``max_len``, with nothing changed.
        """
        _adopt(self, transport, tail, eof)

    # -- flow control the consumer controls ---------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading from the transport until :meth:`resume_reading` (for write backpressure)."""
        self._paused_by_user = True
        self._pause_transport()

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`, and read again if the buffer has room.

        Call it after taking bytes out of a full buffer outside ``on_data``
        (the awaitable readers resume by themselves): reading paused on a full
        buffer resumes as soon as there is room and nothing else holds it.
        """
        self._paused_by_user = False
        self._resume_transport()

    def pause_until_room(self, out: WriteHandoff, size: int = 1) -> None:
        """Back-pressure for the callback style: stop reading until ``out`` has room for ``size``.

        Call it from ``on_data`` when the next frame does not fit ``out``
        (``out.fits(size)`` is false) and return, leaving the frame buffered.
        Once a ``size``-byte chunk fits (or ``out`` closes), ``on_data`` runs
        again, so the step goes on with what is buffered, and then reading
        resumes unless something else still holds it. No task is involved.
        ``ByteBudgetExceeded`` at once if ``size`` could never fit;
        ``WriteClosed`` if ``out`` is closed (nothing will make room).
        """
        out.call_when_fits(size, self._room_ready)  # checks its arguments first
        self._paused_for_room = True
        self._pause_transport()

    def _room_ready(self) -> None:
        self._paused_for_room = False
        on_data = self.on_data
        if on_data is not None and not self.closed:
            try:
                on_data(self)  # it may pause again for the next frame
            except Exception as exc:
                # Raised outside the transport's own callbacks: fail the connection as
                # the transport does when buffer_updated raises, in one log line.
                logger.error("on_data failed after room was freed: %s: %s", type(exc).__name__, exc)
                self.exception = exc
                if self.transport is not None:
                    self.transport.abort()
                return
        self._resume_transport()

    def _pause_transport(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed and transport.is_reading():
            transport.pause_reading()

    def _resume_transport(self) -> None:
        if self._paused_full:
            if len(self.buffer) >= self.buffer.max_len:
                return
            self._paused_full = False
        if self._paused_by_user or self._paused_for_room:
            return
        transport = self.transport
        if (
            transport is not None
            and not self.closed
            and not transport.is_closing()
            and not transport.is_reading()
        ):
            transport.resume_reading()

    # -- awaitable readers ----------------------------------------------------------------------

    def _wake_reader(self) -> None:
        fut = self._reader_waiting
        if fut is not None:
            self._reader_waiting = None
            if not fut.done():
                fut.set_result(None)

    async def _wait(self) -> None:
        """Wait for more bytes or end of stream; resume a transport paused on a full buffer."""
        if self._reader_waiting is not None:
            raise RuntimeError("another task is already reading from this protocol")
        self._resume_transport()
        fut = asyncio.get_running_loop().create_future()
        self._reader_waiting = fut
        try:
            await fut
        finally:
            if self._reader_waiting is fut:
                self._reader_waiting = None

    def _raise_if_failed(self) -> None:
        exc = self.exception
        if exc is not None:
            raise BufferIOError(exc) from exc

    async def read_available(self) -> int:
        """Wait for bytes it has not reported yet; their count, ``0`` at end of stream.

        The bytes are in :attr:`buffer`: the last ``n`` buffered ones. Bytes
        left buffered by ``read_until`` / ``read_exactly`` count as not
        reported, so reading a head with ``read_until`` and then the body with
        ``read_available`` returns at once. A full buffer whose bytes were all
        reported raises ``LimitExceeded(attempted=len + 1, limit=max_len)``
        (take bytes out first); a connection lost with an error raises
        ``BufferIOError``.
        """
        buf = self.buffer
        while True:
            length = buf._end - buf._start
            n = self._unseen if self._unseen < length else length
            if n:
                self._unseen = 0
                return n
            if self.at_eof:
                self._raise_if_failed()
                return 0
            if length >= buf._max_len:
                raise LimitExceeded(attempted=length + 1, limit=buf._max_len)
            await self._wait()

    async def read_until(self, sep: bytes = b"\n", max_bytes: int | None = None) -> bytes:
        """The next frame up to and with ``sep``, as owned ``bytes`` (``StreamReader.readuntil``).

        ``asyncio.LimitOverrunError`` if no ``sep`` ends within ``max_bytes``
        (default ``max_len``; the bytes stay buffered);
        ``asyncio.IncompleteReadError`` carrying the rest at end of stream.
        The search resumes where the previous one stopped. A full buffer
        without ``sep`` raises ``LimitOverrunError`` too, whatever
        ``max_bytes`` says: nothing more can arrive until bytes are taken out.
        """
        if type(sep) is not bytes:
            try:
                sep = bytes(memoryview(sep))  # one copy: the resumed search needs bytes
            except TypeError:
                raise TypeError(
                    f"sep must be a bytes-like object, got {type(sep).__name__}"
                ) from None
        if not sep:
            raise ValueError("sep must not be empty")
        buf = self.buffer
        if max_bytes is None:
            limit = buf.max_len
        elif type(max_bytes) is not int:
            raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
        elif max_bytes < len(sep):
            raise ValueError(f"max_bytes must be at least len(sep) = {len(sep)}, got {max_bytes}")
        else:
            limit = max_bytes
        while True:
            pos = buf.find(sep)
            if pos >= 0:
                end = pos + len(sep)
                if end > limit:
                    raise asyncio.LimitOverrunError(
                        f"separator found at byte {end}, past the limit of {limit}", pos
                    )
                return buf.split_prefix(end)
            if len(buf) >= limit:
                raise asyncio.LimitOverrunError(
                    f"separator not found within {limit} bytes", len(buf)
                )
            if len(buf) >= buf.max_len:
                raise asyncio.LimitOverrunError(
                    f"separator not found in a full buffer ({len(buf)} bytes, max_len"
                    f" {buf.max_len}; max_bytes {limit})",
                    len(buf),
                )
            if self.at_eof:
                self._raise_if_failed()
                raise asyncio.IncompleteReadError(buf.freeze_all(), None)
            await self._wait()

    async def read_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes as owned ``bytes`` (``StreamReader.readexactly``).

        ``LimitExceeded`` at once if ``n`` is over ``max_len`` (it could
        never fit); ``asyncio.IncompleteReadError`` carrying the rest at end
        of stream.
        """
        buf = self.buffer
        if type(n) is not int:
            raise TypeError(f"n must be an int, got {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n > buf.max_len:
            raise LimitExceeded(attempted=n, limit=buf.max_len)
        while len(buf) < n:
            if self.at_eof:
                self._raise_if_failed()
                raise asyncio.IncompleteReadError(buf.freeze_all(), n)
            await self._wait()
        return buf.split_prefix(n)

    # -- the write side -------------------------------------------------------------------------

    async def _writable(self) -> None:
        """Wait until the transport takes more bytes (``resume_writing``), the connection
        ends, or the transport is closing (then it never takes more)."""
        loop = asyncio.get_running_loop()
        while self._write_paused and not self.closed:
            transport = self.transport
            if transport is None or transport.is_closing():
                return
            fut = loop.create_future()
            self._drain_waiters.append(fut)
            # close() called here, with a backlog the peer never reads, calls nothing back:
            # look at the transport again now and then.
            timer = loop.call_later(CLOSED_CHECK_SECONDS, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()


def _broken(proto: HandoffProtocol) -> OSError:
    exc = proto.exception
    if isinstance(exc, OSError):
        return exc
    return BrokenPipeError(errno.EPIPE, "transport is closed")


class TransportWriter:
    """Writes batches to a :class:`HandoffProtocol`'s transport with ``writelines``.

    Returns the whole batch as accepted (a transport buffers what the socket
    does not take at once) unless the transport asked to pause writing, in
    which case it waits for ``resume_writing``. The transport's own buffer is
    bounded by its high-water mark, the handoff's by its budget.
    """

    __slots__ = ("_proto",)

    #: A transport writes a whole list at once (uvloop: one ``writev``).
    max_batch_items = 1024

    def __init__(self, proto: HandoffProtocol) -> None:
        if proto.transport is None:
            raise ValueError("the protocol has no transport yet (connection_made was not called)")
        self._proto = proto

    @property
    def protocol(self) -> HandoffProtocol:
        return self._proto

    def write_nowait(self, chunks: Sequence[BytesLike]) -> int:
        """Hand the batch to the transport; ``0`` while it asks to pause writing."""
        # Hot path: one writelines per batch. "Closed" is looked at before "paused": a
        # transport lost while paused never resumes, and answering 0 then would spin.
        proto = self._proto
        transport = proto.transport
        if proto.closed or transport is None or transport.is_closing():
            raise _broken(proto)
        if proto._write_paused:
            return 0
        transport.writelines(chunks)
        return sum(map(len, chunks))

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        while (n := self.write_nowait(chunks)) == 0 and any(chunks):
            await self._proto._writable()
        return n

    async def shutdown(self) -> None:
        """Shut the write side; close the transport if the peer is done sending too."""
        proto = self._proto
        proto._write_shut = True
        transport = proto.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof() and not proto.at_eof:
            transport.write_eof()
        else:  # both directions done, or TLS (no half-close): close after the buffered bytes
            transport.close()


register_writer(HandoffProtocol, TransportWriter)


# -- connecting -----------------------------------------------------------------------------------

Handler = Callable[[HandoffProtocol], Awaitable[object]]


async def start_handoff_server(
    handler: Handler,
    host: str | Sequence[str] | None = None,
    port: int | None = None,
    *,
    config: HandoffBufferConfig | None = None,
    ssl: _ssl.SSLContext | None = None,
    **kwargs: Any,
) -> asyncio.Server:
    """``asyncio.start_server`` for the protocol path: ``handler(proto)`` runs per connection.

    Each connection reads into a buffer bounded by ``config`` (default:
    ``max_len`` 64 KiB, 16 KiB per read). The transport is closed when the
    handler returns or fails; a handler that raises is logged in one line
    (logger ``bytes_handoff``, with the traceback at DEBUG level) and only
    its connection is closed. ``ssl=`` and the other keyword arguments go to
    ``loop.create_server``.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def run(proto: HandoffProtocol) -> None:
        try:
            await handler(proto)
        except Exception as exc:
            # One line per failed connection, as asyncio.start_server reports its callback's
            # failures through logging; never "Task exception was never retrieved".
            peer = proto.transport.get_extra_info("peername") if proto.transport else None
            logger.error(
                "connection from %s: handler failed: %s: %s",
                _address(peer),
                type(exc).__name__,
                exc,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )
        finally:
            if proto.transport is not None:
                proto.transport.close()

    def factory() -> HandoffProtocol:
        proto = _ConnectingProtocol(config)

        def started(p: HandoffProtocol) -> None:
            task = loop.create_task(run(p))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        proto.on_connection_made = started
        return proto

    return await loop.create_server(factory, host, port, ssl=ssl, **kwargs)


def _address(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer) if peer else "an unnamed peer"


class _ConnectingProtocol(HandoffProtocol):
    """Calls ``on_connection_made(self)`` once the transport is set (server side)."""

    def __init__(self, config: HandoffBufferConfig | None) -> None:
        super().__init__(config)
        self.on_connection_made: Callable[[HandoffProtocol], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.on_connection_made is not None:
            self.on_connection_made(self)


async def open_handoff_connection(
    host: str | None = None,
    port: int | None = None,
    *,
    config: HandoffBufferConfig | None = None,
    ssl: _ssl.SSLContext | bool | None = None,
    **kwargs: Any,
) -> HandoffProtocol:
    """``asyncio.open_connection`` for the protocol path: the connected protocol.

    Read with ``proto.read_*``; write with ``WriteHandoff.spawn(proto)``.
    ``ssl=`` and the other keyword arguments go to ``loop.create_connection``.
    """
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: HandoffProtocol(config),
        host,  # type: ignore[arg-type]  # None with sock=, as create_connection allows
        port,  # type: ignore[arg-type]
        ssl=ssl,
        **kwargs,
    )
    return proto
