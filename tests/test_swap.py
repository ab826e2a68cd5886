"""``HandoffProtocol.hand_over`` and ``adopt``: a connection changes protocol, the tail kept.

Over real loopback TCP, cut at random (hypothesis), with the peer still sending
while the switch happens: the new protocol gets every byte once, in order,
the buffered tail first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytes_handoff import (
    HandoffBufferConfig,
    HandoffProtocol,
    LimitExceeded,
    WriteHandoff,
    WriteIOError,
    start_handoff_server,
)

WAIT = 10.0
SWAP_SETTINGS = settings(max_examples=25, deadline=None, database=None)


class Collector(asyncio.Protocol):
    """An ``asyncio.Protocol`` that keeps what it receives."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.data = bytearray()
        self.calls: list[str] = []
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append("connection_made")
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None, "data before connection_made"
        self.calls.append("data")
        self.data += data

    def eof_received(self) -> bool:
        self.calls.append("eof")
        if not self.ended.done():
            self.ended.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class BufferedCollector(asyncio.BufferedProtocol):
    """An ``asyncio.BufferedProtocol`` with a small buffer of its own."""

    def __init__(self, size: int) -> None:
        self.store = bytearray(size)
        self.transport: asyncio.BaseTransport | None = None
        self.data = bytearray()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.store)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.store[:nbytes]

    def eof_received(self) -> bool:
        if not self.ended.done():
            self.ended.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, pos, i = [], 0, 0
    while pos < len(data):
        pieces.append(data[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return pieces


async def send(writer: asyncio.StreamWriter, first: bytes, pieces: list[bytes]) -> None:
    """``first`` in one write, then each piece in its own, yielding between them."""
    writer.write(first)
    for piece in pieces:
        await writer.drain()
        await asyncio.sleep(0)
        writer.write(piece)
    await writer.drain()
    writer.write_eof()


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()


payloads = st.binary(max_size=3000).map(lambda b: b.replace(b"\n", b"."))


# -- hand_over ---------------------------------------------------------------------------------


@SWAP_SETTINGS
@given(
    payload=payloads,
    with_head=st.integers(0, 3000),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=6),
    target=st.sampled_from(["protocol", "buffered-1", "buffered-7", "buffered-4096"]),
    style=st.sampled_from(["awaitable", "callback"]),
    max_len=st.integers(64, 4096),
)
@pytest.mark.asyncio
async def test_hand_over_delivers_the_tail_then_the_rest_exactly_once_in_order(
    payload: bytes, with_head: int, sizes: list[int], target: str, style: str, max_len: int
) -> None:
    """A head line, then the payload for the new protocol: part of it in the head's write
    (the tail), the rest cut at random and still arriving while the switch runs."""
    cfg = HandoffBufferConfig(max_len=max_len, read_reserve=min(max_len, 256))
    made: list[Collector | BufferedCollector] = []

    def new_target() -> Collector | BufferedCollector:
        made.append(Collector() if target == "protocol" else BufferedCollector(int(target[9:])))
        return made[-1]

    def on_data(proto: HandoffProtocol) -> None:
        if proto.buffer.split_through(b"\n") is not None:
            proto.hand_over(new_target())  # from the callback, in the middle of a read
        elif len(proto.buffer) == proto.buffer.max_len:
            raise AssertionError("the head never came")

    async def awaitable(proto: HandoffProtocol) -> None:
        assert await proto.read_until(b"\n") == b"SWITCH\n"
        proto.hand_over(new_target())

    loop = asyncio.get_running_loop()
    if style == "callback":
        srv = await loop.create_server(
            lambda: HandoffProtocol(cfg, on_data=on_data), "127.0.0.1", 0
        )
    else:
        srv = await start_handoff_server(awaitable, "127.0.0.1", 0, config=cfg)
    async with asyncio.timeout(WAIT), srv, connected(srv.sockets[0].getsockname()[1]) as (r, w):
        head = b"SWITCH\n" + payload[:with_head]
        await send(w, head, cut(payload[with_head:], sizes))
        while not made:
            await asyncio.sleep(0.001)
        await made[0].ended
        assert await r.read() == b""  # eof_received said False: the transport closed
    assert bytes(made[0].data) == payload


@pytest.mark.asyncio
async def test_hand_over_calls_connection_made_then_the_tail_then_eof_and_lets_go() -> None:
    collector: list[Collector] = []
    old: list[HandoffProtocol] = []

    async def handler(proto: HandoffProtocol) -> None:
        old.append(proto)
        assert await proto.read_until(b"\n") == b"HEAD\n"
        while not proto.at_eof:  # the peer ended its stream: tail, then eof
            await proto.read_available()
        out = WriteHandoff.spawn(proto)
        collector.append(Collector())
        transport = proto.hand_over(collector[0])
        assert proto.transport is None and proto.closed and proto.exception is None
        assert transport.get_protocol() is collector[0]
        assert await proto.read_available() == 0  # its readers see end of stream
        with pytest.raises(WriteIOError):  # writes through it fail
            await (await out.write(b"x"))

    srv = await start_handoff_server(handler, "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv, connected(srv.sockets[0].getsockname()[1]) as (r, w):
        w.write(b"HEAD\nthe tail")
        w.write_eof()
        assert await r.read() == b""
        await collector_ready(collector)
        await collector[0].ended
    assert collector[0].calls == ["connection_made", "data", "eof"]
    assert collector[0].data == b"the tail"


async def collector_ready(made: list[Collector]) -> None:
    while not made:
        await asyncio.sleep(0.001)


@pytest.mark.asyncio
async def test_hand_over_from_one_handoff_protocol_to_another_keeps_the_tail() -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    class Second(HandoffProtocol):
        def __init__(self) -> None:
            super().__init__(HandoffBufferConfig(max_len=1024), on_data=self.step)

        def step(self, proto: HandoffProtocol) -> None:
            if self.at_eof and not received.done():
                received.set_result(self.buffer.freeze_all())
            elif len(self.buffer) == self.buffer.max_len:
                received.set_exception(AssertionError("more than expected"))

    async def handler(proto: HandoffProtocol) -> None:
        await proto.read_until(b"\n")
        too_small = HandoffProtocol(HandoffBufferConfig(max_len=2))
        with pytest.raises(LimitExceeded):  # refused before anything moved
            proto.hand_over(too_small)
        with pytest.raises(TypeError):
            proto.hand_over(object())  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            proto.hand_over(proto)
        proto.hand_over(Second())
        with pytest.raises(RuntimeError):
            proto.hand_over(Second())  # it has nothing left to give

    srv = await start_handoff_server(handler, "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv, connected(srv.sockets[0].getsockname()[1]) as (_r, w):
        w.write(b"HEAD\nbuffered")
        await asyncio.sleep(0.05)
        w.write(b" and later")
        w.write_eof()
        assert await received == b"buffered and later"


@pytest.mark.asyncio
async def test_a_target_that_raises_on_the_tail_aborts_the_connection() -> None:
    class Broken(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("refused")

    async def handler(proto: HandoffProtocol) -> None:
        await proto.read_until(b"\n")
        with pytest.raises(RuntimeError, match="refused"):
            proto.hand_over(Broken())

    srv = await start_handoff_server(handler, "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv, connected(srv.sockets[0].getsockname()[1]) as (r, w):
        w.write(b"HEAD\ntail")
        with contextlib.suppress(ConnectionError):
            assert await r.read() == b""


@pytest.mark.asyncio
async def test_hand_over_after_start_tls_gives_the_new_protocol_plaintext(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    client_ctx, server_ctx = tls_contexts
    made: list[Collector] = []

    async def handler(proto: HandoffProtocol) -> None:
        await proto.read_until(b"\n")
        await proto.start_tls(server_ctx, server_side=True)
        assert await proto.read_until(b"\n") == b"UPGRADE\n"
        made.append(Collector())
        proto.hand_over(made[0])

    srv = await start_handoff_server(handler, "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv, connected(srv.sockets[0].getsockname()[1]) as (r, w):
        w.write(b"STARTTLS\n")
        await w.start_tls(client_ctx, server_hostname="localhost")
        w.write(b"UPGRADE\nsame record")
        await collector_ready(made)
        w.write(b", next record")
        await w.drain()
        while made[0].data != b"same record, next record":
            await asyncio.sleep(0.01)
        assert made[0].transport is not None
        made[0].transport.close()
        assert await r.read() == b""


# -- adopt ---------------------------------------------------------------------------------------


class HeadReader(asyncio.Protocol):
    """Reads a head line itself, then gives the transport and what is left to a HandoffProtocol."""

    def __init__(self, adopted: Callable[[HandoffProtocol], None], cfg: HandoffBufferConfig):
        self.adopted, self.cfg = adopted, cfg
        self.transport: asyncio.Transport | None = None
        self.seen = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.seen += data
        end = self.seen.find(b"\n")
        if end >= 0:
            assert self.transport is not None
            proto = HandoffProtocol(self.cfg)
            proto.adopt(self.transport, self.seen[end + 1 :])
            self.seen.clear()  # reused: adopt() copied what it needed
            self.adopted(proto)


@SWAP_SETTINGS
@given(
    payload=payloads,
    with_head=st.integers(0, 3000),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=6),
    max_len=st.integers(3000, 8192),
)
@pytest.mark.asyncio
async def test_adopt_takes_the_tail_then_the_rest_exactly_once_in_order(
    payload: bytes, with_head: int, sizes: list[int], max_len: int
) -> None:
    cfg = HandoffBufferConfig(max_len=max_len, read_reserve=128)
    adopted: asyncio.Queue[HandoffProtocol] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: HeadReader(adopted.put_nowait, cfg), "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv, connected(srv.sockets[0].getsockname()[1]) as (_r, w):
        sending = asyncio.ensure_future(
            send(w, b"HEAD\n" + payload[:with_head], cut(payload[with_head:], sizes))
        )
        proto = await adopted.get()
        got = bytearray()
        while await proto.read_available():
            got += proto.buffer.freeze_all()
        await sending
        assert proto.transport is not None
        proto.transport.close()
    assert bytes(got) == payload


@pytest.mark.asyncio
async def test_adopt_checks_its_arguments_first() -> None:
    loop = asyncio.get_running_loop()
    taken: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Plain(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            taken.set_result(transport)  # type: ignore[arg-type]

    srv = await loop.create_server(Plain, "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv, connected(srv.sockets[0].getsockname()[1]) as (_r, w):
        transport = await taken
        small = HandoffProtocol(HandoffBufferConfig(max_len=4))
        with pytest.raises(LimitExceeded):
            small.adopt(transport, b"12345")
        with pytest.raises(TypeError):
            small.adopt(transport, "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            small.adopt(object(), b"")  # type: ignore[arg-type]
        assert small.transport is None and not small.buffer
        small.adopt(transport, bytearray(b"1234"))  # exactly max_len: taken, reading paused
        with pytest.raises(RuntimeError, match="no transport"):
            HandoffProtocol().hand_over(Collector())
        assert small.buffer.split_prefix(4) == b"1234"
        w.write(b"ok\n")
        assert await small.read_until(b"\n") == b"ok\n"
        with pytest.raises(ValueError, match="already has a connection"):
            small.adopt(transport, b"")
        transport.close()


@pytest.mark.asyncio
async def test_adopt_after_the_peer_ended_reports_the_end_after_the_tail() -> None:
    # A transport reports the peer's end once: asyncio's stops watching the socket after
    # it, so the adopting protocol hears of it only from adopt(eof=True).
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[tuple[asyncio.Transport, bytes]] = loop.create_future()

    class UntilEnd(asyncio.Protocol):
        def __init__(self) -> None:
            self.seen = b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.seen += data

        def eof_received(self) -> bool:
            ended.set_result((self.transport, self.seen))  # type: ignore[arg-type]
            return True  # the peer only stopped sending: keep our side open

    srv = await loop.create_server(UntilEnd, "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv, connected(srv.sockets[0].getsockname()[1]) as (r, w):
        w.write(b"SWITCH\nTAIL")
        w.write_eof()
        transport, seen = await ended
        proto = HandoffProtocol()
        with pytest.raises(TypeError, match="eof must be a bool"):
            proto.adopt(transport, b"", eof=1)  # type: ignore[arg-type]
        assert proto.transport is None
        proto.adopt(transport, seen.partition(b"\n")[2], eof=True)
        assert await proto.read_available() == 4
        assert proto.buffer.freeze_all() == b"TAIL"
        assert await proto.read_available() == 0
        assert proto.at_eof
        async with WriteHandoff.spawn(proto) as out:  # our side still sends
            await out.write(b"bye")
        assert await r.read() == b"bye"
