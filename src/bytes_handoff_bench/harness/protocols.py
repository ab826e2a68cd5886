"""Hand-written ``asyncio.BufferedProtocol`` proxies: the loop's fastest Python path.

* ``manual_protocol``: what an expert asyncio user writes for the workload. The
  loop ``recv_into``s a reused, bounded buffer (``get_buffer``);
  ``buffer_updated`` cuts each complete frame out as owned ``bytes`` and sends
  every frame of one read with one ``writelines``. At ``TUNNEL\\n`` it forwards
  the tail already read, then copies each read as it arrives.
* ``raw_protocol``: the same plumbing without framing, one ``bytes`` copy per
  read: the loop's floor.

Protocols need transports, so both run on TCP sockets only: the inbound socket
goes to ``loop.connect_accepted_socket``, the outbound one to
``loop.create_connection(sock=...)``. The outbound protocol's
``pause_writing``/``resume_writing`` pause and resume reading the inbound. At
the inbound EOF the outbound gets ``write_eof()`` and ``close()`` (which
flushes first). The proxy returns once both transports are closed, so the
sockets its caller closes afterwards are already detached from the loop
(closing them again is a no-op).

With ``--tls`` (``--tls-mode accept`` only) both get ``ssl=``: the loop's own TLS
transports (asyncio's ``sslproto``, uvloop's), which hand a ``BufferedProtocol``
plaintext in its ``get_buffer`` room as a socket transport does. TLS has no
half-close: at the client's close_notify the outbound gets ``close()`` alone,
which sends close_notify after what is queued.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

from ..errors import BenchError, ProtocolError
from ..names import Implementation
from .config import BenchConfig
from .tls import client_ssl, server_ssl, tls_setup
from .workload import MARKER

__all__ = ["proxy_manual_protocol", "proxy_raw_protocol"]


class _Link:
    """One proxied stream: its two transports and how it ended."""

    __slots__ = ("closed", "eof", "error", "inbound", "outbound", "pauses")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.inbound: asyncio.Transport | None = None
        self.outbound: asyncio.Transport | None = None
        #: Inbound and outbound ``connection_lost`` seen.
        self.closed = (loop.create_future(), loop.create_future())
        self.eof = False  # the inbound EOF was passed on to the outbound
        self.error: BenchError | None = None
        self.pauses = 0  # times the outbound's flow control paused the inbound

    def fail(self, error: BenchError) -> None:
        """Keep the first error and abort both transports (their connection_lost follows)."""
        if self.error is None:
            self.error = error
        self.abort()

    def abort(self) -> None:
        for transport, closed in zip((self.inbound, self.outbound), self.closed, strict=True):
            if transport is not None and not closed.done():
                transport.abort()

    def lost(self, index: int, exc: Exception | None, what: str) -> None:
        if exc is not None:
            self.fail(BenchError(f"{what} connection lost: {exc}"))
        elif not self.eof:
            self.fail(BenchError(f"{what} connection closed before the end of the stream"))
        if not self.closed[index].done():
            self.closed[index].set_result(None)


class _Outbound(asyncio.Protocol):
    """The connection to the sink: its flow control pauses the inbound reads."""

    def __init__(self, link: _Link) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.link.outbound = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        link = self.link
        link.pauses += 1
        if link.inbound is not None:
            link.inbound.pause_reading()

    def resume_writing(self) -> None:
        if self.link.inbound is not None:
            self.link.inbound.resume_reading()

    def data_received(self, data: bytes) -> None:
        pass  # the sink never writes back

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost(1, exc, "outbound (sink)")


class RawCopy(asyncio.BufferedProtocol):
    """``raw_protocol``'s inbound side: every read forwarded as one ``bytes`` copy."""

    def __init__(self, link: _Link, size: int) -> None:
        assert link.outbound is not None
        self.link = link
        self.out = link.outbound
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.forwarded = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.link.inbound = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        # Hot path: the loop recv_into'd the reused buffer; one copy, one write.
        self.forwarded += nbytes
        self.out.write(self.view[:nbytes].tobytes())

    def eof_received(self) -> bool | None:
        self.link.eof = True
        if self.out.can_write_eof():  # TLS cannot half-close: close() sends close_notify
            self.out.write_eof()
        self.out.close()  # flushes what is queued, then closes
        return None  # the inbound transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost(0, exc, "inbound (client)")


class FrameProxy(RawCopy):
    """``manual_protocol``'s inbound side: frames out of a bounded buffer, then raw copies."""

    def __init__(self, link: _Link, size: int) -> None:
        super().__init__(link, size)
        self.end = 0  # buf[:end] holds a partial frame
        self.routing = True

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.end :] if self.end else self.view

    def buffer_updated(self, nbytes: int) -> None:
        if not self.routing:
            # Hot path (tunnel): one copy, one write per read.
            self.forwarded += nbytes
            self.out.write(self.view[:nbytes].tobytes())
            return
        # Hot path (route): one find and one bytes copy per frame, one writelines per read.
        buf = self.buf
        view = self.view
        end = self.end + nbytes
        start = 0
        frames = []
        while (i := buf.find(b"\n", start, end)) >= 0:
            frame = view[start : i + 1].tobytes()
            frames.append(frame)
            start = i + 1
            if frame == MARKER:
                self.routing = False
                if start < end:
                    frames.append(view[start:end].tobytes())  # the tail goes first
                start = end
                break
        self.forwarded += start
        if frames:
            self.out.writelines(frames)
        rest = end - start
        if rest and start:
            buf[:rest] = buf[start:end]  # compact: the partial frame moves to the front
        self.end = rest
        if rest == len(buf):
            self.link.fail(ProtocolError(f"a frame is longer than the {rest}-byte read buffer"))

    def eof_received(self) -> bool | None:
        if self.routing:
            self.link.fail(
                ProtocolError(f"stream ended before the TUNNEL marker ({self.end} bytes unparsed)")
            )
            return None
        return super().eof_received()


async def _run(
    inbound: object,
    outbound: object,
    make: Callable[[_Link], RawCopy],
    what: str,
    cfg: BenchConfig,
) -> int:
    if not isinstance(inbound, socket.socket) or not isinstance(outbound, socket.socket):
        raise BenchError(f"{what} runs on TCP sockets only, got {type(inbound).__name__}")
    loop = asyncio.get_running_loop()
    link = _Link(loop)
    tls = tls_setup(cfg)  # --tls: ssl= on both (each returns once its handshake is done)
    try:
        await loop.create_connection(lambda: _Outbound(link), sock=outbound, **client_ssl(tls))
        # The protocol from the transport: with ssl=, uvloop returns its own TLS protocol.
        transport, _ = await loop.connect_accepted_socket(
            lambda: make(link), sock=inbound, **server_ssl(tls)
        )
        protocol = cast(RawCopy, transport.get_protocol())
        for closed in link.closed:
            await closed
    except BaseException:
        link.abort()
        raise
    if link.error is not None:
        raise link.error
    return protocol.forwarded


async def proxy_manual_protocol(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """BufferedProtocol parser: owned frames, one writelines per read, then raw copies."""
    size = cfg.read_reserve + cfg.frame_len + 1  # one partial frame plus one full read
    return await _run(
        inbound, outbound, lambda link: FrameProxy(link, size), Implementation.MANUAL_PROTOCOL, cfg
    )


async def proxy_raw_protocol(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """Unparsed BufferedProtocol copy: one bytes copy and one write per read."""
    size = cfg.read_reserve
    return await _run(
        inbound, outbound, lambda link: RawCopy(link, size), Implementation.RAW_PROTOCOL, cfg
    )
