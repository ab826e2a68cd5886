"""``floor``: the cheapest service the event loop allows, the reference line of every report.

A bare ``loop.create_server`` with an ``asyncio.BufferedProtocol``. The loop
accepts (no accept coroutine, no supervised task, no future per stream); each
accepted connection opens its own connection to the sink with
``loop.create_connection`` (reading paused until it is up) and then forwards
each read as one ``write`` of a ``bytes`` copy of its reused read buffer. No
framing: the bytes go out exactly as the client sent them, so the driver's sink
verifies them like every implementation's (exact count, every byte).

No harness code runs on its hot path (``buffer_updated``). The harness hears of
a stream twice, through :class:`StreamHooks`: when it opens (the service's
active window, the idle watch) and when both of its connections are closed
(latency, the forwarded byte count, an error). ``raw_protocol`` moves the bytes
with the same copy behind the harness's own plumbing (its accept loop, its
socket connect, a supervised task and futures per stream), so ``raw_protocol``
against ``floor`` in one interleaved run is what that plumbing costs, and every
implementation against ``floor`` is how far it is from what the loop allows.

It is a whole service, not a per-stream proxy, so it is registered with a
``serve`` function (:func:`serve_floor`) that the ``tcp-service`` and the
integrated TCP roles call instead of their accept loop. It needs real sockets:
TCP only.

With ``--tls`` (``--tls-mode accept``) the server gets ``ssl=`` and so does each
connection to the sink: the loop's own TLS on both legs, still no harness code
per read. TLS has no half-close, so the client's close_notify makes it
``close()`` the outbound (close_notify after what is queued), not
``write_eof()``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, cast

from ..errors import BenchError
from ..names import Implementation
from .config import BenchConfig
from .tls import TlsSetup, client_ssl, server_ssl, tls_setup

__all__ = ["FloorService", "ServeFn", "Service", "StreamHooks", "proxy_floor", "serve_floor"]

Addr = tuple[str, int]


@dataclass(frozen=True)
class StreamHooks:
    """What a whole-service implementation tells the harness, once per stream each.

    ``opened()`` when a connection is accepted; ``finished(began, forwarded, error)``
    when the stream is over (``began``: ``time.monotonic()`` at its accept;
    ``forwarded``: bytes it forwarded; ``error``: why it failed, or ``None``).
    """

    opened: Callable[[], None]
    finished: Callable[[float, int, BaseException | None], None]


class Service(Protocol):
    """A running whole service: ``close()`` stops accepting and aborts open streams."""

    def close(self) -> None: ...


#: ``serve(listener, sink_addr, cfg, hooks)``: start serving ``listener``; each stream goes to
#: ``sink_addr``; return the running service (closed by the harness at its shutdown).
ServeFn = Callable[[socket.socket, Addr, BenchConfig, StreamHooks], Awaitable[Service]]


class _Outbound(asyncio.Protocol):
    """The connection to the sink: its flow control pauses and resumes the inbound reads."""

    __slots__ = ("stream",)

    def __init__(self, stream: FloorStream) -> None:
        self.stream = stream

    def pause_writing(self) -> None:
        self.stream.sink_full = True
        self.stream.inbound.pause_reading()

    def resume_writing(self) -> None:
        self.stream.sink_full = False
        self.stream.inbound.resume_reading()

    def data_received(self, data: bytes) -> None:
        pass  # the sink never writes back

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.lost(1, exc, "outbound (sink)")


class _Pending:
    """The outbound until the sink's connection is up: it keeps what the inbound sends and
    pauses it (uvloop may deliver a read before a pause in ``connection_made`` holds)."""

    __slots__ = ("chunks", "closed", "eof", "stream")

    def __init__(self, stream: FloorStream) -> None:
        self.stream = stream
        self.chunks: list[bytes] = []
        self.eof = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.stream.inbound.pause_reading()

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def hand_over(self, out: asyncio.Transport) -> None:
        """Pass on what was kept, in order, then the end of the stream if it came."""
        if self.chunks:
            out.writelines(self.chunks)
        if self.eof and out.can_write_eof():  # TLS: close() below sends close_notify
            out.write_eof()
        if self.closed:
            out.close()


class FloorStream(asyncio.BufferedProtocol):
    """One stream: the accepted connection's protocol, and its connection to the sink."""

    def __init__(self, service: FloorService) -> None:
        self.service = service
        self.buf = bytearray(service.read_size)
        self.view = memoryview(self.buf)
        self.forwarded = 0
        self.began = 0.0
        self.inbound: asyncio.Transport = cast(asyncio.Transport, None)
        self.pending = _Pending(self)
        #: The sink's transport once connected; until then :class:`_Pending` stands in.
        self.out: asyncio.Transport = cast(asyncio.Transport, self.pending)
        self.connected = False
        self.sink_full = False  # the outbound's flow control paused the inbound
        self.connecting: asyncio.Task[None] | None = None
        self.eof = False
        self.error: BaseException | None = None
        self.open = [True, True]  # inbound, outbound: not yet lost

    # -- the inbound side ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.began = time.monotonic()
        self.inbound = cast(asyncio.Transport, transport)
        self.inbound.pause_reading()  # until the sink's connection is up (_Pending otherwise)
        self.service.opened(self)
        self.connecting = asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        service = self.service
        loop = asyncio.get_running_loop()
        try:
            out, _ = await loop.create_connection(
                lambda: _Outbound(self), *service.sink_addr, **service.connect_ssl
            )
        except (OSError, asyncio.CancelledError) as exc:  # cancelled: the stream was aborted
            self.open[1] = False
            if isinstance(exc, OSError):
                host, port = service.sink_addr
                self.fail(BenchError(f"cannot connect to sink at {host}:{port}: {exc}"))
            self.done_if_closed()
            return
        self.out = out
        self.connected = True
        if self.error is not None:
            out.abort()
            return
        self.pending.hand_over(out)
        if not self.eof and not self.sink_full:
            self.inbound.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        # Hot path: the loop recv_into'd the reused buffer; one copy, one write, nothing else.
        self.forwarded += nbytes
        self.out.write(self.view[:nbytes].tobytes())

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.out.can_write_eof():  # TLS cannot half-close: close() sends close_notify
            self.out.write_eof()
        self.out.close()  # flushes what is queued, then closes
        return None  # the inbound transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost(0, exc, "inbound (client)")

    # -- both sides ------------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """Keep the first error; abort what is still open (its ``connection_lost`` follows)."""
        if self.error is None:
            self.error = error
        self.abort()

    def abort(self) -> None:
        if self.open[0]:
            self.inbound.abort()
        if self.open[1] and self.connected:
            self.out.abort()
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()

    def lost(self, index: int, exc: Exception | None, what: str) -> None:
        if not self.open[index]:
            return
        self.open[index] = False
        if exc is not None:
            self.fail(BenchError(f"{what} connection lost: {exc}"))
        elif not self.eof:
            self.fail(BenchError(f"{what} connection closed before the end of the stream"))
        self.done_if_closed()

    def done_if_closed(self) -> None:
        if not self.open[0] and not self.open[1]:
            self.service.finished(self)


class FloorService:
    """The running ``floor`` service: its server and its open streams."""

    def __init__(
        self, sink_addr: Addr, read_size: int, hooks: StreamHooks, tls: TlsSetup | None = None
    ) -> None:
        self.sink_addr = sink_addr
        self.read_size = read_size
        self.hooks = hooks
        #: ``ssl=`` for each connection to the sink (``--tls``), made once: none per stream.
        self.connect_ssl = client_ssl(tls)
        self.streams: set[FloorStream] = set()
        self.server: asyncio.AbstractServer | None = None
        self.closed = False  # after close(), aborted streams report nothing

    def opened(self, stream: FloorStream) -> None:
        self.streams.add(stream)
        self.hooks.opened()

    def finished(self, stream: FloorStream) -> None:
        if stream in self.streams:
            self.streams.discard(stream)
            if not self.closed:
                self.hooks.finished(stream.began, stream.forwarded, stream.error)

    def close(self) -> None:
        self.closed = True
        if self.server is not None:
            self.server.close()
        for stream in list(self.streams):
            stream.abort()


async def serve_floor(
    listener: socket.socket, sink_addr: Addr, cfg: BenchConfig, hooks: StreamHooks
) -> FloorService:
    """Serve ``listener`` with ``loop.create_server``: each stream copied to ``sink_addr``."""
    loop = asyncio.get_running_loop()
    tls = tls_setup(cfg)
    service = FloorService(sink_addr, cfg.read_reserve, hooks, tls)
    # The harness's listeners are bound with a backlog of 1024; create_server listens again.
    service.server = await loop.create_server(
        lambda: FloorStream(service), sock=listener, backlog=1024, **server_ssl(tls)
    )
    return service


async def proxy_floor(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """``floor`` has no per-stream proxy: it is a whole service (:func:`serve_floor`)."""
    raise BenchError(
        f"{Implementation.FLOOR} runs only as a whole service (create_server), not per stream"
    )
