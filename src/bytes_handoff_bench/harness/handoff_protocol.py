"""``handoff_protocol``: the library's protocol path (``HandoffProtocol`` + ``WriteHandoff``).

The inbound socket becomes a ``HandoffProtocol`` (``loop.connect_accepted_socket``):
the loop reads straight into the ``HandoffBuffer``'s spare room. The outbound
socket becomes a second ``HandoffProtocol`` (``loop.create_connection(sock=...)``)
that a ``WriteHandoff`` drains with one ``writelines`` per batch.

* ``fire_and_forget``: the callback style. After every read, on the loop and
  with no task switch, each complete frame is split off as owned ``bytes``
  and queued with ``try_write_fire_and_forget``; the queue hands the whole
  read's frames to the transport in one batch. After the marker each read is
  one owned chunk. When the next frame or chunk does not fit the write
  budget it stays buffered and ``pause_until_room`` stops reading until it
  fits (no task; an earlier version kept the refused chunk aside while a task
  waited, and a read that arrived meanwhile overtook it).
* ``ticket``: the awaitable style, as on the socket path: route the frames of
  a read, await the read's last ticket, read on.

The proxy returns once both transports are closed (everything flushed), so the
sockets its caller closes afterwards are already detached from the loop.

``--tls`` (both legs TLS), in either ``--tls-mode``:

* ``accept``: ``ssl=`` given to ``connect_accepted_socket`` and
  ``create_connection``: the loop's own TLS transport under each
  ``HandoffProtocol`` (asyncio's ``sslproto``, uvloop's), set up before the
  protocol sees a byte;
* ``starttls``: plain TCP on both, then the library's ``start_tls()``: the
  inbound side reads the ``STARTTLS`` line (``read_until``) and upgrades with
  what the client pipelined behind it (its ClientHello) as the handshake's
  first bytes; the outbound side writes the line and upgrades at once. The
  callback style's router routes nothing before the upgrade is done
  (``on_data`` is set afterwards, and what was decrypted meanwhile goes
  first). The library's TLS runs on ``ssl.MemoryBIO``: this against
  ``accept`` in one interleaved run is what ``start_tls()`` costs next to
  ``ssl=`` at connect time.

Either way the ``WriteHandoff``'s close sends close_notify (TLS has no
half-close).

No stream leaves a reference cycle behind on the healthy path: the router's
``on_data`` is a plain function (a bound ``self.step`` would be a cycle through
the protocol), the sink side forgets the client side when the stream ends (the
two reference each other through the ``WriteHandoff``), and the proxy's frame
drops its locals before an error leaves it (a traceback keeps the frame, whose
locals hold the objects that hold the error). Cyclic garbage waits for the
cyclic GC's next full collection (in the fault soak's proxy, about every 1,200
streams), and each of these cycles kept a stream's read buffer and both
transports alive until then: up to ~7 MiB more heap at the long-lived proxy's
peaks, whose RSS then climbed ~10-17 MiB/min for a minute, like a leak.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import cast

from bytes_handoff import (
    BufferIOError,
    HandoffBufferConfig,
    HandoffProtocol,
    WriteHandoff,
    WriteHandoffConfig,
    WriteTicket,
)

from ..errors import BenchError, ProtocolError
from ..names import Completion, TlsMode
from .config import BenchConfig
from .tls import PREAMBLE, SERVER_NAME, client_ssl, server_ssl, tls_setup
from .workload import MARKER

__all__ = ["proxy_handoff_protocol"]

_OnData = Callable[[HandoffProtocol], object]

#: The sink never writes back: the outbound protocol's read buffer stays tiny.
SINK_SIDE = HandoffBufferConfig(max_len=4096, read_reserve=4096)


class _SinkSide(HandoffProtocol):
    """The connection to the sink: while its transport says pause, the client side is paused too.

    The write budget alone would also stop the client side (``WriteBackpressure``),
    but later, and through a task; following the transport's own flow control
    costs nothing.
    """

    def __init__(self) -> None:
        super().__init__(SINK_SIDE)
        self.client_side: HandoffProtocol | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.client_side is not None:
            self.client_side.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.client_side is not None:
            self.client_side.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        # Lost while paused, resume_writing never comes: without this the client side
        # stayed paused and its stream hung instead of failing on its next write.
        super().connection_lost(exc)
        if self.client_side is not None:
            self.client_side.resume_reading()


class _Router(HandoffProtocol):
    """Callback style: routes frames, then forwards raw reads, through ``out``."""

    def __init__(
        self, config: HandoffBufferConfig, out: WriteHandoff, *, routing_later: bool = False
    ) -> None:
        # The function, not the bound method: ``on_data(self)`` calls it with this
        # protocol, and no cycle (self -> bound method -> self) outlives the stream.
        # ``routing_later`` (STARTTLS): no step before start_tls() is done (route_from_now).
        on_data = None if routing_later else cast(_OnData, _Router.step)
        super().__init__(config, on_data=on_data)
        self.out = out
        self.routing = True
        self.forwarded = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def step(self) -> None:
        buf = self.buffer
        out = self.out
        if out.closed:
            self._finish(out.error or BenchError("outbound write handoff closed"))
            return
        if self.routing:
            # Hot path (route): one search and one split per frame, one enqueue, no await.
            while (end := buf.find(b"\n")) >= 0:
                if not out.fits(end + 1):
                    # Back-pressure: the frame stays buffered, reading stops, and this
                    # step runs again once the frame fits. No task, nothing reordered.
                    self._wait_for_room(end + 1)
                    return
                frame = buf.split_prefix(end + 1)
                self.forwarded += len(frame)
                out.try_write_fire_and_forget(frame)
                if frame == MARKER:
                    self.routing = False
                    break
        budget = out.config.max_pending_bytes
        while not self.routing and buf:
            # Hot path (tunnel): one owned copy of what was read, one enqueue.
            size = min(len(buf), budget)
            if not out.fits(size):
                self._wait_for_room(size)
                return
            chunk = buf.freeze_all() if size == len(buf) else buf.split_prefix(size)
            self.forwarded += size
            out.try_write_fire_and_forget(chunk)
        if self.at_eof:
            if self.routing:
                self._finish(
                    ProtocolError(
                        f"stream ended before the TUNNEL marker ({len(buf)} bytes unparsed)"
                    )
                )
            else:
                self._finish(None)

    def route_from_now(self) -> None:
        """Start routing (after the STARTTLS upgrade): what was decrypted meanwhile first."""
        self.on_data = cast(_OnData, _Router.step)
        self.step()
        self.resume_reading()  # reading paused on a full buffer resumes once there is room

    def _wait_for_room(self, size: int) -> None:
        out = self.out
        if out.closed:  # fits() says no once the writer failed: no room will come
            self._finish(out.error or BenchError("outbound write handoff closed"))
        else:
            self.pause_until_room(out, size)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if exc is not None:
            self._finish(BufferIOError(exc))
        elif self.routing or self.buffer:
            self._finish(BenchError("inbound connection closed before the end of the stream"))

    def _finish(self, error: BaseException | None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)


async def _route_awaiting(proto: HandoffProtocol, out: WriteHandoff) -> int:
    """Ticket style: frames of a read, then wait for the read's last ticket; then raw reads."""
    buf = proto.buffer
    forwarded = 0
    routing = True
    while True:
        n = await proto.read_available()
        if n == 0:
            if routing or buf:
                raise ProtocolError(
                    f"stream ended before the TUNNEL marker ({len(buf)} bytes unparsed)"
                )
            return forwarded
        last: WriteTicket | None = None
        if routing:
            while (frame := buf.split_through(b"\n")) is not None:
                forwarded += len(frame)
                last = await out.write(frame)
                if frame == MARKER:
                    routing = False
                    break
        if not routing and buf:
            chunk = buf.freeze_all()
            forwarded += len(chunk)
            last = await out.write(chunk)
        if last is not None:
            await last


async def _start_tls_inbound(proto: HandoffProtocol, ctx: ssl.SSLContext) -> None:
    """STARTTLS, server side: the plaintext line, then ``start_tls()``: the ClientHello the
    client pipelined behind the line is in the buffer already, and the handshake reads it."""
    try:
        line = await proto.read_until(b"\n", max_bytes=len(PREAMBLE))
    except (asyncio.LimitOverrunError, asyncio.IncompleteReadError) as exc:
        raise ProtocolError(f"expected {PREAMBLE!r} before TLS: {exc}") from None
    if line != PREAMBLE:
        raise ProtocolError(f"expected {PREAMBLE!r} before TLS, got {line!r}")
    await proto.start_tls(ctx, server_side=True)


async def _start_tls_outbound(proto: HandoffProtocol, ctx: ssl.SSLContext) -> None:
    """STARTTLS, client side: the line, and the ClientHello right behind it (pipelined)."""
    assert proto.transport is not None
    proto.transport.write(PREAMBLE)
    await proto.start_tls(ctx, server_side=False, server_hostname=SERVER_NAME)


async def proxy_handoff_protocol(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """The ``handoff`` workload over ``HandoffProtocol`` transports (TCP sockets only)."""
    if not isinstance(inbound, socket.socket) or not isinstance(outbound, socket.socket):
        raise BenchError(f"the protocol path needs TCP sockets, got {type(inbound).__name__}")
    loop = asyncio.get_running_loop()
    buf_cfg = HandoffBufferConfig(cfg.read_reserve + cfg.frame_len + 1, cfg.read_reserve)
    out_cfg = WriteHandoffConfig(max_items=1024, max_pending_bytes=cfg.write_pending_bytes)
    tls = tls_setup(cfg)
    starttls = tls is not None and tls.mode == TlsMode.STARTTLS
    # --tls-mode accept: ssl= on both (the loop's TLS); starttls: plain TCP, upgraded here.
    accept_tls = None if starttls else tls
    # The protocol from the transport: with ssl=, uvloop returns its own TLS protocol.
    transport, _ = await loop.create_connection(_SinkSide, sock=outbound, **client_ssl(accept_tls))
    sink_side = cast(_SinkSide, transport.get_protocol())
    if starttls:
        assert tls is not None
        await _start_tls_outbound(sink_side, tls.client)
    out = WriteHandoff.spawn(sink_side, out_cfg)
    client_side: HandoffProtocol | None = None
    try:
        if cfg.completion == Completion.FIRE_AND_FORGET:
            transport, _ = await loop.connect_accepted_socket(
                lambda: _Router(buf_cfg, out, routing_later=starttls),
                inbound,
                **server_ssl(accept_tls),
            )
            router = cast(_Router, transport.get_protocol())
            client_side = sink_side.client_side = router
            if starttls:
                assert tls is not None
                await _start_tls_inbound(router, tls.server)
                router.route_from_now()
            await router.done
            forwarded = router.forwarded
        else:
            transport, _ = await loop.connect_accepted_socket(
                lambda: HandoffProtocol(buf_cfg), inbound, **server_ssl(accept_tls)
            )
            client_side = cast(HandoffProtocol, transport.get_protocol())
            sink_side.client_side = client_side
            if starttls:
                assert tls is not None
                await _start_tls_inbound(client_side, tls.server)
            forwarded = await _route_awaiting(client_side, out)
        await out.aclose()  # flush, then write_eof on the sink side
    except BaseException:
        out.abort()
        for proto in (client_side, sink_side):
            if proto is not None and proto.transport is not None:
                proto.transport.abort()
        raise
    finally:
        try:
            for proto in (client_side, sink_side):
                if proto is not None and proto.transport is not None:
                    proto.transport.close()  # flushes what is buffered first
                    await proto.wait_closed()
        finally:
            # No cycle outlives the stream (see the module docstring): the protocols
            # reference each other through the WriteHandoff, and an error leaving here
            # keeps this frame in its traceback, and with it the locals that reach the
            # objects holding that error. Drop both links, as asyncio's own tasks do.
            sink_side.client_side = None
            client_side = router = proto = sink_side = out = transport = None  # type: ignore[assignment]
    return forwarded
