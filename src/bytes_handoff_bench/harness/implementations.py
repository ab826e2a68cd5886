"""The proxy implementations, registered by name in :data:`IMPLEMENTATIONS`.

The registry is keyed by :class:`bytes_handoff_bench.names.Implementation`, in
its run order; what a name implies (the transports it runs on, whether its
frames must fit the write budget) is defined there too, once.

A proxy is ``async proxy(inbound, outbound, cfg) -> int``: it reads the
client's stream from ``inbound`` (a non-blocking socket or a ``DuplexStream``),
forwards it to ``outbound``, shuts ``outbound``'s write side at the end and
returns the bytes forwarded. The caller closes both endpoints afterwards.
The ``asyncio.BufferedProtocol`` baselines live in ``protocols.py``.

One registered beside them is a whole service instead: ``floor``
(``floor.py``) has a ``serve`` function that the TCP roles call in place of
their accept loop, so that no harness code runs per stream on its path.

To add one: write the coroutine and :func:`register` it (a few lines).

``--tls`` (``names.TLS_MODES`` says who runs which ``--tls-mode``): the
asyncio-streams baselines open their streams with ``ssl=``; ``handoff`` (raw
sockets: ``recv_into``, ``sendmsg``) and ``handoff_splice`` (``splice``) have
no TLS form and are refused before the run; the protocol path and ``floor``
say what TLS means for them in their modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from bytes_handoff import (
    HandoffBuffer,
    HandoffBufferConfig,
    WriteHandoff,
    WriteHandoffConfig,
    WriteTicket,
    tunnel,
)

from ..errors import ProtocolError
from ..names import FRAME_BUDGET, Completion, Transport, transports_of
from ..names import Implementation as Name
from .config import BenchConfig
from .floor import ServeFn, StreamHooks, proxy_floor, serve_floor
from .handoff_protocol import proxy_handoff_protocol
from .protocols import proxy_manual_protocol, proxy_raw_protocol
from .tls import client_ssl, server_ssl, tls_setup
from .transports import StreamReaderLike, StreamWriterLike, open_streams
from .workload import MARKER

__all__ = [
    "IMPLEMENTATIONS",
    "Implementation",
    "ProtocolError",
    "ProxyFn",
    "ServeFn",
    "StreamHooks",
    "names",
    "register",
]

ProxyFn = Callable[[object, object, BenchConfig], Awaitable[int]]


@dataclass(frozen=True)
class Implementation:
    """One proxy of the registry: ``name`` is a :class:`~bytes_handoff_bench.names.Implementation`
    (or, for one registered beside them, any other name: it runs on both transports)."""

    name: str
    proxy: ProxyFn
    description: str
    #: A whole service (``floor``): the TCP roles call it instead of accepting themselves.
    serve: ServeFn | None = None

    @property
    def transports(self) -> tuple[Transport, ...]:
        """The transports it runs on."""
        return transports_of(self.name)

    @property
    def needs_frame_budget(self) -> bool:
        """Each routed frame is one owned chunk of a byte-budgeted queue: the frame must fit
        the write budget (``--write-pending-bytes``)."""
        return self.name in FRAME_BUDGET


IMPLEMENTATIONS: dict[str, Implementation] = {}


def register(impl: Implementation) -> Implementation:
    IMPLEMENTATIONS[impl.name] = impl
    return impl


def names(transport: str | None = None) -> list[str]:
    """Registered implementations that run (on ``transport``), in order: ``handoff`` first."""
    return [
        impl.name
        for impl in IMPLEMENTATIONS.values()
        if transport is None or transport in impl.transports
    ]


# -- handoff: the library path --------------------------------------------------------------


def _spawn_handoff(outbound: object, cfg: BenchConfig) -> WriteHandoff:
    return WriteHandoff.spawn(
        outbound, WriteHandoffConfig(max_items=1024, max_pending_bytes=cfg.write_pending_bytes)
    )


def _submitter(
    handoff: WriteHandoff, cfg: BenchConfig
) -> Callable[[bytes], Awaitable[WriteTicket | None]]:
    return handoff.write if cfg.completion == Completion.TICKET else handoff.write_fire_and_forget


def _buffer_config(cfg: BenchConfig) -> HandoffBufferConfig:
    # Room for one partial frame plus one full read.
    return HandoffBufferConfig(cfg.read_reserve + cfg.frame_len + 1, cfg.read_reserve)


async def _route(
    buf: HandoffBuffer, inbound: object, submit: Callable[[bytes], Awaitable[WriteTicket | None]]
) -> int:
    """Route mode: forward each complete frame as an owned chunk, up to and with the marker.

    Returns the bytes forwarded; what was read after the marker stays in ``buf``.
    """
    forwarded = 0
    while True:
        if await buf.read_available(inbound) == 0:
            raise ProtocolError(
                f"stream ended before the TUNNEL marker ({len(buf)} bytes unparsed)"
            )
        last: WriteTicket | None = None
        # Hot path: one split per frame, one submit per frame.
        while (frame := buf.split_through(b"\n")) is not None:
            forwarded += len(frame)
            last = await submit(frame)
            if frame == MARKER:
                if last is not None:
                    await last
                return forwarded
        if last is not None:
            await last  # submission order: every earlier chunk of this read is written too


async def proxy_handoff(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """HandoffBuffer reads, owned frames routed through a WriteHandoff, tail kept for the tunnel.

    On TCP it reads and writes the raw non-blocking sockets (``recv_into``,
    ``sendmsg``): measured against the protocol path (``handoff_protocol``) in
    the same runs it costs less CPU per byte coalesced and ties fragmented.
    """
    handoff = _spawn_handoff(outbound, cfg)
    submit = _submitter(handoff, cfg)
    buf_cfg = _buffer_config(cfg)
    buf = HandoffBuffer.with_config(buf_cfg)
    try:
        forwarded = await _route(buf, inbound, submit)
        # Tunnel mode: the already-read tail goes first, in chunks within the write budget ...
        last: WriteTicket | None = None
        while buf:
            chunk = buf.split_prefix(min(len(buf), cfg.read_reserve))
            forwarded += len(chunk)
            last = await submit(chunk)
        if last is not None:
            await last
        # ... then each read (at most read_reserve bytes) is one owned chunk.
        # Hot path: one read, one copy out, one enqueue per chunk.
        while await buf.read_available(inbound):
            chunk = buf.freeze_all()
            forwarded += len(chunk)
            last = await submit(chunk)
            if last is not None:
                await last
        await handoff.aclose()  # flush, then shut the outbound write side
    except BaseException:
        handoff.abort()
        raise
    return forwarded


async def proxy_handoff_splice(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """Route like ``handoff``, then ``bytes_handoff.tunnel``: the rest moves by ``splice``."""
    handoff = _spawn_handoff(outbound, cfg)
    buf = HandoffBuffer.with_config(_buffer_config(cfg))
    try:
        forwarded = await _route(buf, inbound, _submitter(handoff, cfg))
    except BaseException:
        handoff.abort()
        raise
    return forwarded + await tunnel(buf, inbound, handoff)  # closes the handoff


# -- manual_vec: what a Python user writes by hand ---------------------------------------------


@contextlib.asynccontextmanager
async def _streams(
    inbound: object, outbound: object, cfg: BenchConfig
) -> AsyncIterator[tuple[StreamReaderLike, StreamWriterLike]]:
    """asyncio streams over both ends; both are closed on the way out.

    With ``--tls`` (``--tls-mode accept``) the streams are opened with ``ssl=``: the
    inbound one as ``asyncio.start_server`` would (the server side), the outbound one with
    ``open_connection``; each returns once its handshake is done.
    """
    tls = tls_setup(cfg)
    reader, in_writer = await open_streams(inbound, tls=server_ssl(tls), accepted=True)
    _, writer = await open_streams(outbound, tls=client_ssl(tls))
    try:
        yield reader, writer
    finally:
        writer.close()
        in_writer.close()
        await writer.wait_closed()
        await in_writer.wait_closed()


async def _copy_to_eof(reader: StreamReaderLike, writer: StreamWriterLike, size: int) -> int:
    """read / write / drain until end of stream, then write_eof: the stream-path copy loop.

    TLS cannot half-close: there the end is the close_notify that closing sends."""
    copied = 0
    while data := await reader.read(size):
        writer.write(data)
        copied += len(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    await writer.drain()
    return copied


async def proxy_manual_vec(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """asyncio streams, a bytearray parser, one write per frame and one drain per read."""
    async with _streams(inbound, outbound, cfg) as (reader, writer):
        forwarded = 0
        pending = bytearray()
        routing = True
        while routing:
            data = await reader.read(cfg.read_reserve)
            if not data:
                raise ProtocolError(
                    f"stream ended before the TUNNEL marker ({len(pending)} bytes unparsed)"
                )
            pending += data
            while (i := pending.find(b"\n")) >= 0:
                frame = bytes(pending[: i + 1])
                del pending[: i + 1]
                writer.write(frame)
                forwarded += len(frame)
                if frame == MARKER:
                    routing = False
                    break
            await writer.drain()
        if pending:
            writer.write(bytes(pending))
            forwarded += len(pending)
        return forwarded + await _copy_to_eof(reader, writer, cfg.read_reserve)


# -- raw_copy: an unparsed lower bound ------------------------------------------------------------


async def proxy_raw_copy(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """Copy without parsing: read, write, drain until end of stream."""
    async with _streams(inbound, outbound, cfg) as (reader, writer):
        return await _copy_to_eof(reader, writer, cfg.read_reserve)


register(
    Implementation(
        Name.HANDOFF,
        proxy_handoff,
        "HandoffBuffer + WriteHandoff (the library path: raw sockets on TCP)",
    )
)
register(
    Implementation(
        Name.HANDOFF_SPLICE,
        proxy_handoff_splice,
        "HandoffBuffer routing, then bytes_handoff.tunnel (splice, kernel to kernel)",
    )
)
register(
    Implementation(
        Name.HANDOFF_PROTOCOL,
        proxy_handoff_protocol,
        "HandoffProtocol + WriteHandoff over transports (the library's create_server path)",
    )
)
register(Implementation(Name.MANUAL_VEC, proxy_manual_vec, "bytearray parser on asyncio streams"))
register(Implementation(Name.RAW_COPY, proxy_raw_copy, "unparsed copy on asyncio streams"))
register(
    Implementation(
        Name.MANUAL_PROTOCOL,
        proxy_manual_protocol,
        "BufferedProtocol parser: owned frames, one writelines per read (an expert's asyncio)",
    )
)
register(
    Implementation(
        Name.RAW_PROTOCOL,
        proxy_raw_protocol,
        "unparsed BufferedProtocol copy behind the harness's accept loop",
    )
)
register(
    Implementation(
        Name.FLOOR,
        proxy_floor,
        "bare create_server BufferedProtocol copy, no harness code per read (the reference)",
        serve=serve_floor,
    )
)
