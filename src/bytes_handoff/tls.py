"""TLS on a connection that is already open: ``await proto.start_tls(ctx, server_side=...)``.

A STARTTLS command, a PROXY header, a first line that picks the protocol:
whatever the peer sent before its TLS handshake was read into the
:class:`~bytes_handoff.HandoffProtocol`'s buffer, and the peer may have sent
its first TLS bytes (a ClientHello) in the same packet. ``loop.start_tls()``
cannot be given those bytes (and uvloop's drops them), so the library runs TLS
itself, on ``ssl.MemoryBIO`` / ``ssl.SSLObject`` as trio's and anyio's TLS
streams do:

* the bytes already buffered are the first ciphertext the handshake sees;
* ciphertext from the socket goes into the incoming BIO, and
  ``SSLObject.read`` decrypts straight into the protocol's buffer (its
  ``get_buffer`` room: no extra copy), so ``max_len``, ``on_data`` and the
  awaitable readers work as before;
* writes (a ``WriteHandoff`` on the protocol, or ``transport.write``) are
  encrypted with ``SSLObject.write`` and go to the socket's transport from the
  outgoing BIO, one ``write`` per batch.

:class:`TLSTransport` is the ``asyncio.Transport`` the protocol talks to once
TLS is on; the socket's transport then talks to the TLS layer. Reading from
the socket stops while the protocol has reading paused (a full buffer), so
the incoming BIO holds at most one socket read beyond a record. TLS cannot
half-close: shutting the write side sends close_notify and closes; a peer's
close_notify, or a TCP close without one after the handshake, is end of
stream (as with ``ssl=`` transports), and the transport closes after it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from ._types import BytesLike
from .errors import HandoffError

if TYPE_CHECKING:
    from .protocol import HandoffProtocol
    from .write_queue import WriteHandoff

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "TLSHandshakeError", "TLSTransport", "start_tls"]

logger = logging.getLogger("bytes_handoff")

#: Seconds a handshake may take unless told otherwise (asyncio's own default).
DEFAULT_HANDSHAKE_TIMEOUT = 60.0
#: Ciphertext taken from the socket per read: what the incoming BIO may hold beyond a record.
CIPHERTEXT_READ = 64 * 1024
#: The most plaintext one TLS record carries: smaller chunks are joined up to it.
RECORD = 16 * 1024

# What stopped a read: the room is full (read on), the BIO is drained, end of stream.
_MORE, _DRAINED, _EOF = object(), object(), object()


class TLSHandshakeError(HandoffError):
    """The TLS handshake failed, timed out, or the connection ended during it.

    ``error`` is the cause (an ``ssl.SSLError``, ``TimeoutError``, or
    ``ConnectionError``), also chained as ``__cause__``. The connection is
    closed by the time it is raised.
    """

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(f"TLS handshake failed: {str(error) or type(error).__name__}")
        self.__cause__ = error

    def __reduce__(self) -> tuple[type, tuple[BaseException]]:
        return (type(self), (self.error,))


class _CipherSide(asyncio.BufferedProtocol):
    """The socket transport's protocol once TLS is on: ciphertext in, flow control out."""

    def __init__(self, tls: TLSTransport) -> None:
        self._tls = tls
        self._view = memoryview(bytearray(CIPHERTEXT_READ))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self._tls._ciphertext(self._view[:nbytes])

    def eof_received(self) -> bool:
        return self._tls._raw_eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._tls._raw_lost(exc)

    def pause_writing(self) -> None:
        self._tls._raw_pause_writing()

    def resume_writing(self) -> None:
        self._tls._raw_resume_writing()


class TLSTransport(asyncio.Transport):
    """TLS over another transport, on ``ssl.SSLObject``: what a protocol gets from ``start_tls``.

    It behaves as asyncio's TLS transports do (``get_extra_info`` answers
    ``ssl_object``, ``sslcontext``, ``peercert``, ``cipher`` and the
    socket's own keys; ``set_protocol`` takes an ``asyncio.Protocol`` or
    ``asyncio.BufferedProtocol``; no ``write_eof``), and is made by
    :func:`start_tls`, never directly.
    """

    def __init__(
        self,
        raw: asyncio.Transport,
        app: asyncio.BaseProtocol,
        sslobj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._raw = raw
        self._sslobj = sslobj
        self._in = incoming
        self._out = outgoing
        self._app: asyncio.BaseProtocol = app
        self._app_buffered = isinstance(app, asyncio.BufferedProtocol)
        self._handshaking = True
        self._handshake_waiter: asyncio.Future[None] | None = None
        self._early: list[bytes] = []  # plaintext written before the handshake ended
        self._closing = False  # close() or abort() was called, or a fatal error
        self._raw_eof = False  # the socket reached end of stream
        self._raw_gone = False  # the socket's connection was lost
        self._eof_delivered = False
        self._error: BaseException | None = None
        self._app_paused = False  # the protocol asked to pause reading
        self._decrypt_scheduled = False
        self._raw_write_paused = False
        self._app_write_paused = False

    # -- asyncio.Transport ----------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._sslobj
        if name == "sslcontext":
            return self._sslobj.context
        if name in ("peercert", "cipher", "compression"):
            if self._handshaking:
                return default
            value = getattr(self._sslobj, "getpeercert" if name == "peercert" else name)()
            return default if value is None else value
        return self._raw.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = protocol
        self._app_buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._app

    def is_closing(self) -> bool:
        return self._closing or self._raw_gone or self._raw.is_closing()

    def is_reading(self) -> bool:
        return not self._app_paused and not self.is_closing()

    def pause_reading(self) -> None:
        self._app_paused = True
        self._update_raw_reading()

    def resume_reading(self) -> None:
        if self._app_paused:
            self._app_paused = False
            # The records already in the BIO go first, on the next turn; the socket is
            # read again once they are delivered, so the BIO never holds two reads.
            self._schedule_decrypt()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        limits: tuple[int, int] = self._raw.get_write_buffer_limits()
        return limits

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() + sum(map(len, self._early))

    def write(self, data: BytesLike) -> None:
        self.writelines((data,))

    def writelines(self, list_of_data: Iterable[BytesLike]) -> None:
        if self._closing or self._raw_gone:
            return  # as asyncio's transports: a write after close is dropped
        if self._handshaking:
            self._early.extend(bytes(chunk) for chunk in list_of_data)
            return
        self._encrypt(list_of_data)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close: close() sends close_notify")

    def close(self) -> None:
        """Send close_notify after what was written, then close the socket's transport.

        The peer's close_notify is not waited for (what it sends after is dropped).
        """
        if self._closing:
            return
        self._closing = True
        if not self._handshaking and self._error is None and not self._raw_gone:
            try:
                self._sslobj.unwrap()
            except ssl.SSLError:
                pass  # SSLWantReadError: close_notify is written; the peer's is not awaited
            self._flush()
        self._raw.close()

    def abort(self) -> None:
        self._closing = True
        self._raw.abort()

    # -- the socket's side ------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand what the TLS layer wrote (records, alerts, tickets) to the socket's transport."""
        if self._out.pending and not self._raw_gone and not self._raw.is_closing():
            self._raw.write(self._out.read())

    def _update_raw_reading(self) -> None:
        """Read from the socket during the handshake, and after it while the protocol reads
        (resumed by ``_decrypt`` once the BIO is drained)."""
        raw = self._raw
        if self._raw_eof or self._raw_gone or self._closing or raw.is_closing():
            return
        want = self._handshaking or not self._app_paused
        if want and not raw.is_reading():
            raw.resume_reading()
        elif not want and raw.is_reading():
            raw.pause_reading()

    def _ciphertext(self, data: memoryview) -> None:
        self._in.write(data)
        if self._handshaking:
            self._wake_handshake()
        elif not self._app_paused:
            self._decrypt()

    def _raw_eof_received(self) -> bool:
        self._raw_eof = True
        self._in.write_eof()
        if self._handshaking:
            self._wake_handshake()
        elif not self._app_paused:
            self._decrypt()
        return True  # keep the socket open: the protocol still has records to read

    def _raw_lost(self, exc: Exception | None) -> None:
        self._raw_gone = True
        self._closing = True
        if exc is not None and self._error is None:
            self._error = exc
        if self._handshaking:
            self._wake_handshake()
            return  # start_tls tells the protocol
        error = self._error
        self._app.connection_lost(error if isinstance(error, Exception) else None)

    def _raw_pause_writing(self) -> None:
        self._raw_write_paused = True
        self._pause_app_writing()

    def _raw_resume_writing(self) -> None:
        self._raw_write_paused = False
        if not self._handshaking:
            self._resume_app_writing()

    def _pause_app_writing(self) -> None:
        if not self._app_write_paused:
            self._app_write_paused = True
            self._app.pause_writing()

    def _resume_app_writing(self) -> None:
        if self._app_write_paused and not self._raw_write_paused:
            self._app_write_paused = False
            self._app.resume_writing()

    def _fatal(self, exc: BaseException, what: str) -> None:
        """Fail the connection: the protocol gets ``connection_lost(exc)``."""
        if self._error is None:
            self._error = exc
        if not self._closing:
            logger.error("TLS connection: %s: %s: %s", what, type(exc).__name__, exc)
        self._closing = True
        self._raw.abort()

    # -- the handshake ------------------------------------------------------------------------

    def _wake_handshake(self) -> None:
        waiter = self._handshake_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _handshake(self) -> None:
        while True:
            try:
                self._sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self._flush()
            if self._raw_gone or self._raw_eof:
                # What the BIO still held was not a complete handshake.
                raise ConnectionResetError("the connection ended during the TLS handshake")
            waiter = self._handshake_waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._handshake_waiter = None
        self._flush()
        if self._raw_gone:
            raise ConnectionResetError("the connection ended with the TLS handshake")

    def _handshake_done(self) -> None:
        self._handshaking = False
        early, self._early = self._early, []
        if early:
            self._encrypt(early)
        self._update_raw_reading()
        self._schedule_decrypt()  # application data that came with the last handshake flight
        self._resume_app_writing()

    def _handshake_failed(self, exc: BaseException) -> None:
        """Close the connection; the protocol gets ``connection_lost`` with the cause."""
        if self._error is None:
            self._error = exc
        self._handshaking = False  # from here on, _raw_lost tells the protocol
        self._closing = True
        if self._raw_gone:
            error = self._error
            self._app.connection_lost(error if isinstance(error, Exception) else None)
            return
        self._flush()  # the alert that says why, where there is one
        if self._raw.get_write_buffer_size():
            self._raw.abort()  # a peer that does not read must not keep it open
        else:
            self._raw.close()

    # -- reading ------------------------------------------------------------------------------

    def _schedule_decrypt(self) -> None:
        if not self._decrypt_scheduled:
            self._decrypt_scheduled = True
            self._loop.call_soon(self._decrypt)

    def _decrypt(self) -> None:
        """Deliver every plaintext byte the BIO holds, while the protocol reads."""
        self._decrypt_scheduled = False
        try:
            while not self._app_paused and not self._closing and not self._eof_delivered:
                app = self._app  # looked up each round: a callback may hand the transport on
                if self._app_buffered:
                    n, state = self._read_into(app.get_buffer(-1))  # type: ignore[attr-defined]
                    if n:
                        app.buffer_updated(n)  # type: ignore[attr-defined]
                else:
                    data, state = self._read_bytes()
                    if data:
                        app.data_received(data)  # type: ignore[attr-defined]
                if state is _EOF:
                    self._eof_delivered = True
                    self._flush()
                    if not self._closing:
                        app.eof_received()  # type: ignore[attr-defined]
                    self.close()  # TLS cannot half-close: whatever it answers, close
                    return
                if state is _DRAINED:
                    break
        except ssl.SSLError as exc:
            self._fatal(exc, "decrypting failed")
            return
        except Exception as exc:
            self._fatal(exc, "the protocol's callback failed")
            return
        self._flush()  # post-handshake answers (key updates) and session tickets
        self._update_raw_reading()

    def _read_into(self, buffer: Any) -> tuple[int, object]:
        """Decrypt into ``buffer`` (the protocol's own room): the count and what stopped it."""
        # Hot path: SSLObject.read decrypts straight into the buffer, one record per call:
        # fill the room, then tell the protocol once.
        sslobj = self._sslobj
        with memoryview(buffer) as view:
            size = view.nbytes
            if not size:  # reading on would spin: fail the connection, as asyncio does
                raise RuntimeError("the protocol's get_buffer() returned an empty buffer")
            filled = 0
            while filled < size:
                try:
                    # typeshed says bytes: with a buffer, read() returns the count.
                    n = cast(int, sslobj.read(size - filled, view[filled:] if filled else view))
                except ssl.SSLWantReadError:
                    return filled, _DRAINED
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError) as exc:
                    return filled, self._ended(exc)
                if not n:
                    return filled, _EOF  # close_notify
                filled += n
            return filled, _MORE

    def _read_bytes(self) -> tuple[bytes, object]:
        """One record's plaintext, for an ``asyncio.Protocol``."""
        try:
            data = self._sslobj.read(CIPHERTEXT_READ)
        except ssl.SSLWantReadError:
            return b"", _DRAINED
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError) as exc:
            return b"", self._ended(exc)
        return data, (_MORE if data else _EOF)

    def _ended(self, exc: ssl.SSLError) -> object:
        """close_notify, or a TCP close without one after the handshake: end of stream."""
        if isinstance(exc, ssl.SSLEOFError) and not self._raw_eof:
            raise exc
        return _EOF

    # -- writing ------------------------------------------------------------------------------

    def _encrypt(self, chunks: Iterable[BytesLike]) -> None:
        """Encrypt a batch into full records and hand it to the socket's transport in one write."""
        # Hot path: chunks under a record are joined, so a batch of small writes costs
        # a few records, not one each; the ciphertext leaves in one transport write.
        write = self._sslobj.write
        small: list[BytesLike] = []
        small_len = 0
        try:
            for chunk in chunks:
                n = memoryview(chunk).nbytes if type(chunk) is not bytes else len(chunk)
                if n >= RECORD:
                    if small:
                        write(b"".join(small))
                        small, small_len = [], 0
                    write(chunk)
                elif n:
                    small.append(chunk)
                    small_len += n
                    if small_len >= RECORD:
                        write(b"".join(small))
                        small, small_len = [], 0
            if small:
                write(small[0] if len(small) == 1 else b"".join(small))
        except ssl.SSLError as exc:
            # SSLWantReadError here is a renegotiation, which this layer does not do.
            self._fatal(exc, "encrypting failed")
            return
        self._flush()


async def start_tls(
    proto: HandoffProtocol,
    ssl_context: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    flush: WriteHandoff | None = None,
) -> None:
    """Run a TLS handshake on ``proto``'s connection; see :meth:`HandoffProtocol.start_tls`."""
    from .protocol import TransportWriter

    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
    if type(server_side) is not bool:
        raise TypeError(f"server_side must be a bool, got {type(server_side).__name__}")
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise TypeError(f"server_hostname must be a str, got {type(server_hostname).__name__}")
    if server_side and server_hostname is not None:
        raise ValueError("server_hostname is for the client side (server_side=False)")
    if not server_side and server_hostname is None and ssl_context.check_hostname:
        raise ValueError("server_hostname is needed: the context checks the host name")
    if handshake_timeout is not None:
        if isinstance(handshake_timeout, bool) or not isinstance(handshake_timeout, int | float):
            raise TypeError(
                f"handshake_timeout must be a number, got {type(handshake_timeout).__name__}"
            )
        if not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be > 0, got {handshake_timeout}")
    if flush is not None:
        writer = getattr(flush, "writer", None)
        if not isinstance(writer, TransportWriter) or writer.protocol is not proto:
            raise ValueError("flush must be a WriteHandoff that writes to this protocol")
    raw = proto.transport
    if raw is None:
        raise RuntimeError("the protocol has no transport yet (connection_made was not called)")
    if proto._tls:
        raise RuntimeError("the connection already runs TLS")
    if proto.closed or raw.is_closing():
        raise RuntimeError("the connection is closed")
    if proto.at_eof:
        raise RuntimeError("the peer ended its stream: there is no handshake to read")
    if proto._reader_waiting is not None:
        raise RuntimeError("another task is reading from this protocol")

    if flush is not None:
        try:
            async with asyncio.timeout(handshake_timeout):
                await flush.flush()  # what was queued before the switch goes out in plaintext
        except TimeoutError:
            raw.abort()
            error = TimeoutError(f"the plaintext before TLS not written in {handshake_timeout} s")
            raise TLSHandshakeError(error) from None
        if proto.transport is not raw or proto.closed or proto.at_eof:
            raise TLSHandshakeError(ConnectionResetError("the connection ended before TLS"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = ssl_context.wrap_bio(
        incoming, outgoing, server_side=server_side, server_hostname=server_hostname
    )
    # The switch: from here on the socket's bytes are ciphertext, the buffered ones first.
    tls = TLSTransport(raw, proto, sslobj, incoming, outgoing)
    tail = proto.buffer.take_tail()
    if tail:
        incoming.write(tail)
    proto._unseen = 0
    proto._paused_full = False
    tls._app_paused = proto._paused_by_user or proto._paused_for_room
    tls._raw_write_paused = proto._write_paused
    tls._app_write_paused = proto._write_paused
    tls._pause_app_writing()  # a WriteHandoff waits for the handshake; write() calls are kept
    raw.set_protocol(_CipherSide(tls))
    proto.transport = tls
    proto._tls = True
    tls._update_raw_reading()
    try:
        async with asyncio.timeout(handshake_timeout):
            await tls._handshake()
    except asyncio.CancelledError:
        tls._handshake_failed(ConnectionAbortedError("TLS handshake cancelled"))
        raise
    except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            exc = TimeoutError(f"no TLS handshake within {handshake_timeout} s")
        tls._handshake_failed(exc)
        raise TLSHandshakeError(exc) from exc
    tls._handshake_done()
