"""The protocol path: ``HandoffProtocol`` (callback and awaitable), ``WriteHandoff`` over a
transport, TLS end to end, ``tunnel()`` from a protocol, flow control both ways."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

import bytes_handoff.raw_tunnel as tunnel_module
from bytes_handoff import (
    BufferIOError,
    HandoffBufferConfig,
    HandoffProtocol,
    LimitExceeded,
    TransportWriter,
    WriteBackpressure,
    WriteHandoff,
    WriteHandoffConfig,
    WriteIOError,
    open_handoff_connection,
    start_handoff_server,
    tunnel,
)
from net_support import recv_all

WAIT = 10.0
MiB = 1024 * 1024


def frames_of(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


async def send_pieces(writer: asyncio.StreamWriter, data: bytes, sizes: list[int]) -> None:
    pos = i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        writer.write(data[pos : pos + n])
        await writer.drain()
        pos += n
        i += 1
    writer.write_eof()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while chunk := await reader.read(65536):
        out += chunk
    return bytes(out)


# -- callback style -------------------------------------------------------------------------


class LineRouter(HandoffProtocol):
    """Callback style: every complete line goes back through a WriteHandoff as an owned chunk."""

    def __init__(self, config: HandoffBufferConfig, seen: list[HandoffProtocol]) -> None:
        super().__init__(config, on_data=self.step)
        self.out: WriteHandoff | None = None
        self.frames: list[bytes] = []
        self.max_seen = 0
        seen.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.out = WriteHandoff.spawn(self, WriteHandoffConfig(max_pending_bytes=MiB))

    def step(self, proto: HandoffProtocol) -> None:
        assert self.out is not None
        buf = self.buffer
        self.max_seen = max(self.max_seen, len(buf))
        while (frame := buf.split_through(b"\n")) is not None:
            self.frames.append(frame)
            self.out.try_write_fire_and_forget(frame)
        if self.at_eof:
            self.out.close()  # the handoff shuts the write side once everything is written


@contextlib.asynccontextmanager
async def line_server() -> AsyncIterator[tuple[int, list[HandoffProtocol]]]:
    seen: list[HandoffProtocol] = []
    loop = asyncio.get_running_loop()
    cfg = HandoffBufferConfig(max_len=4096, read_reserve=512)
    server = await loop.create_server(lambda: LineRouter(cfg, seen), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


@settings(max_examples=25, deadline=None, database=None)
@given(
    lines=st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=6),
)
@pytest.mark.asyncio
async def test_callback_style_routes_every_frame_whatever_the_fragmentation(
    lines: list[bytes], sizes: list[int]
) -> None:
    data = b"".join(line + b"\n" for line in lines)
    async with asyncio.timeout(WAIT), line_server() as (port, seen):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sending = asyncio.create_task(send_pieces(writer, data, sizes))
        echoed = await read_all(reader)
        await sending
        writer.close()
    assert echoed == data
    router = seen[-1]
    assert isinstance(router, LineRouter)
    assert router.frames == frames_of(data)
    assert router.max_seen <= router.buffer.max_len


# -- awaitable style ------------------------------------------------------------------------


@pytest_asyncio.fixture
async def pair() -> AsyncIterator[Callable[..., object]]:
    """``await pair(cfg)`` -> (server-side HandoffProtocol, client StreamReader, StreamWriter)."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def make(
        cfg: HandoffBufferConfig | None = None,
    ) -> tuple[HandoffProtocol, asyncio.StreamReader, asyncio.StreamWriter]:
        accepted: asyncio.Future[HandoffProtocol] = asyncio.get_running_loop().create_future()

        async def handler(proto: HandoffProtocol) -> None:
            accepted.set_result(proto)
            await asyncio.sleep(3600)

        server = await start_handoff_server(handler, "127.0.0.1", 0, config=cfg)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        return await accepted, reader, writer

    yield make
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        server.close_clients() if hasattr(server, "close_clients") else None


@pytest.mark.asyncio
async def test_read_until_and_read_exactly_follow_stream_reader_semantics(
    pair: Callable[..., object],
) -> None:
    async with asyncio.timeout(WAIT):
        proto, _r, w = await pair(HandoffBufferConfig(max_len=64, read_reserve=16))  # type: ignore[misc]
        w.write(b"HEAD\r\nbody-12345")
        assert await proto.read_until(b"\r\n") == b"HEAD\r\n"
        assert await proto.read_exactly(5) == b"body-"
        w.write(b"678\r\ntail")
        w.write_eof()
        assert await proto.read_until(b"\r\n") == b"12345678\r\n"
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await proto.read_exactly(10)
        assert info.value.partial == b"tail"
        assert await proto.read_available() == 0


@pytest.mark.asyncio
async def test_read_until_past_its_limit_raises_and_keeps_the_bytes(
    pair: Callable[..., object],
) -> None:
    async with asyncio.timeout(WAIT):
        proto, _r, w = await pair(HandoffBufferConfig(max_len=64, read_reserve=16))  # type: ignore[misc]
        w.write(b"x" * 20)
        with pytest.raises(asyncio.LimitOverrunError):
            await proto.read_until(b"\n", max_bytes=10)
        assert bytes(proto.buffer.peek()).startswith(b"x" * 10)
        with pytest.raises(LimitExceeded):
            await proto.read_exactly(65)  # can never fit max_len: refused at once


@pytest.mark.parametrize("max_bytes", [-1, 0, 1])
@pytest.mark.asyncio
async def test_read_until_refuses_a_limit_the_separator_cannot_fit_in(
    pair: Callable[..., object], max_bytes: int
) -> None:
    """A bad argument is a ValueError at the call, not an overrun of a limit never reached."""
    async with asyncio.timeout(WAIT):
        proto, _r, w = await pair()  # type: ignore[misc]
        w.write(b"a\r\n")
        with pytest.raises(ValueError, match="max_bytes must be at least len\\(sep\\) = 2"):
            await proto.read_until(b"\r\n", max_bytes=max_bytes)
        assert await proto.read_until(b"\r\n") == b"a\r\n"  # nothing was taken


@pytest.mark.asyncio
async def test_read_until_at_eof_gives_the_partial_frame(pair: Callable[..., object]) -> None:
    async with asyncio.timeout(WAIT):
        proto, _r, w = await pair()  # type: ignore[misc]
        w.write(b"no newline")
        w.write_eof()
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await proto.read_until(b"\n")
        assert info.value.partial == b"no newline"


@pytest.mark.asyncio
async def test_a_full_buffer_pauses_reading_and_nothing_is_lost(
    pair: Callable[..., object],
) -> None:
    data = random.Random(1).randbytes(300_000)
    async with asyncio.timeout(WAIT):
        proto, _r, w = await pair(HandoffBufferConfig(max_len=1000, read_reserve=300))  # type: ignore[misc]
        w.write(data)
        w.write_eof()
        got = bytearray()
        paused = 0
        while True:
            await asyncio.sleep(0.001)  # a slow consumer: the buffer fills up
            assert len(proto.buffer) <= 1000
            if proto.transport is not None and not proto.transport.is_reading():
                paused += 1
            try:
                n = await proto.read_available()
            except LimitExceeded:
                n = -1
            got += proto.buffer.freeze_all()
            if n == 0:
                break
        assert bytes(got) == data
        assert paused > 0


@pytest.mark.asyncio
async def test_a_reset_connection_fails_the_read_with_buffer_io_error(
    pair: Callable[..., object],
) -> None:
    async with asyncio.timeout(WAIT):
        proto, _r, w = await pair()  # type: ignore[misc]
        w.write(b"partial")
        await asyncio.sleep(0.05)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        w.transport.abort()  # RST
        with pytest.raises(BufferIOError):
            while True:
                await proto.read_until(b"\n")
        assert isinstance(proto.exception, ConnectionResetError)


@pytest.mark.asyncio
async def test_a_cancelled_read_leaves_the_buffer_intact(pair: Callable[..., object]) -> None:
    async with asyncio.timeout(WAIT):
        proto, _r, w = await pair()  # type: ignore[misc]
        w.write(b"abc")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await proto.read_until(b"\n")
        w.write(b"def\n")
        assert await proto.read_until(b"\n") == b"abcdef\n"


@pytest.mark.asyncio
async def test_two_readers_at_once_are_refused(pair: Callable[..., object]) -> None:
    async with asyncio.timeout(WAIT):
        proto, _r, _w = await pair()  # type: ignore[misc]
        first = asyncio.create_task(proto.read_available())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="already reading"):
            await proto.read_available()
        first.cancel()


# -- WriteHandoff over a transport ----------------------------------------------------------


@pytest.mark.asyncio
async def test_handoff_over_a_transport_waits_on_pause_writing_and_keeps_order() -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a slow peer
        proto = await open_handoff_connection("127.0.0.1", listener.getsockname()[1])
        peer, _ = await loop.sock_accept(listener)
    assert proto.transport is not None
    proto.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    proto.transport.set_write_buffer_limits(high=64 * 1024)
    chunks = [bytes([i % 251]) * 1000 for i in range(3000)]  # 3 MB: far past the limits
    async with asyncio.timeout(WAIT):
        handoff = WriteHandoff.spawn(proto, WriteHandoffConfig(max_pending_bytes=32 * 1024))
        assert isinstance(handoff.writer, TransportWriter)
        tickets = [await handoff.write(c) for c in chunks[:10]]
        sent = 10
        # The peer does not read: the transport fills to its high-water mark and says pause,
        # the handoff stops handing it bytes, and its own budget fills up.
        while sent < len(chunks):
            try:
                handoff.try_write_fire_and_forget(chunks[sent])
            except WriteBackpressure:
                await asyncio.sleep(0.01)
                if proto._write_paused and handoff.pending_bytes > 16 * 1024:
                    break
                continue
            sent += 1
            assert handoff.pending_bytes <= 32 * 1024
        assert proto._write_paused
        assert proto.transport.get_write_buffer_size() <= 64 * 1024 + 32 * 1024
        received = asyncio.create_task(recv_all(peer))
        for c in chunks[sent:]:
            await handoff.write_fire_and_forget(c)
        for t in tickets:
            await t
        await handoff.aclose()  # write_eof: the peer sees end of stream
        assert await received == b"".join(chunks)
    proto.transport.close()
    peer.close()


@pytest.mark.asyncio
async def test_handoff_over_a_reset_transport_fails_its_tickets() -> None:
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        proto = await open_handoff_connection("127.0.0.1", listener.getsockname()[1])
        peer, _ = await loop.sock_accept(listener)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()  # RST
    async with asyncio.timeout(WAIT):
        handoff = WriteHandoff.spawn(proto)
        await asyncio.sleep(0.05)
        with pytest.raises(WriteIOError):
            for _ in range(200):
                ticket = await handoff.write(b"z" * 65536)
                await ticket
                await asyncio.sleep(0.001)
        with pytest.raises(WriteIOError):
            await handoff.aclose()


# -- TLS end to end -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tls_end_to_end_through_the_protocol_path(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    lines = [f"frame {i:05} ".encode() + b"y" * (i % 97) + b"\n" for i in range(2000)]
    stream = b"".join(lines)
    routed: list[bytes] = []

    async def handler(proto: HandoffProtocol) -> None:
        # Frames come out of the TLS connection as plaintext and go back the same way.
        async with WriteHandoff.spawn(proto) as out:
            while True:
                try:
                    frame = await proto.read_until(b"\n")
                except asyncio.IncompleteReadError as end:
                    assert end.partial == b""
                    break
                routed.append(frame)
                await out.write_fire_and_forget(frame)

    async with asyncio.timeout(WAIT):
        server = await start_handoff_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        client = await open_handoff_connection("127.0.0.1", port, ssl=client_ctx)
        out = WriteHandoff.spawn(client)
        for line in lines:
            await out.write_fire_and_forget(line)
        await out.flush()
        echoed = bytearray()
        while len(echoed) < len(stream):
            await client.read_available()
            echoed += client.buffer.freeze_all()
        await out.aclose()
        assert client.transport is not None
        assert client.transport.get_extra_info("ssl_object") is not None
        client.transport.close()
        server.close()
        await server.wait_closed()
    assert bytes(echoed) == stream
    assert routed == lines


# -- tunnel() from the protocol path ----------------------------------------------------------


async def _proxy_route_then_tunnel(
    client_port_holder: list[int], *, splice: bool, sink_port: int
) -> tuple[asyncio.Server, asyncio.Future[int]]:
    forwarded: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(proto: HandoffProtocol) -> None:
        sink = await open_handoff_connection("127.0.0.1", sink_port)
        out = WriteHandoff.spawn(sink, WriteHandoffConfig(max_pending_bytes=64 * 1024))
        total = 0
        try:
            while True:
                frame = await proto.read_until(b"\n")
                total += len(frame)
                await out.write_fire_and_forget(frame)
                if frame == b"TUNNEL\n":
                    break
            total += await tunnel(proto.buffer, proto, out, splice=splice)
            forwarded.set_result(total)
        except BaseException as exc:
            forwarded.set_exception(exc)
            raise
        finally:
            assert sink.transport is not None
            sink.transport.close()

    server = await start_handoff_server(handler, "127.0.0.1", 0)
    client_port_holder.append(server.sockets[0].getsockname()[1])
    return server, forwarded


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.asyncio
async def test_tunnel_from_a_protocol_forwards_tail_and_rest(
    splice: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    spliced: list[int] = []
    real_splice = tunnel_module._splice

    async def counting_splice(src: socket.socket, dst: socket.socket, idle: float | None) -> int:
        n = await real_splice(src, dst, idle)
        spliced.append(n)
        return n

    monkeypatch.setattr(tunnel_module, "_splice", counting_splice)
    payload = (bytes(i * 13 % 251 for i in range(251)) * (3 * MiB // 251 + 1))[: 3 * MiB + 5]
    stream = b"GET /a\nGET /b\nTUNNEL\n" + payload
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as sink_listener:
        sink_listener.setblocking(False)
        ports: list[int] = []
        server, forwarded = await _proxy_route_then_tunnel(
            ports, splice=splice, sink_port=sink_listener.getsockname()[1]
        )
        async with asyncio.timeout(WAIT * 3):
            _reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])
            writer.write(stream[:40_000])  # the tail after TUNNEL arrives with the head
            await writer.drain()
            sink, _ = await loop.sock_accept(sink_listener)
            received = asyncio.create_task(recv_all(sink))
            await asyncio.sleep(0.05)
            writer.write(stream[40_000:])
            await writer.drain()
            writer.write_eof()
            assert await received == stream
            assert await forwarded == len(stream)
        writer.close()
        sink.close()
        server.close()
    assert bool(spliced) == splice
    if splice:
        assert sum(spliced) > MiB  # the bulk moved kernel to kernel


# -- awaitable style under random fragmentation ------------------------------------------------


@settings(max_examples=25, deadline=None, database=None)
@given(
    frames=st.lists(st.binary(min_size=1, max_size=90), min_size=1, max_size=20),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=6),
    max_len=st.integers(100, 400),
    read_reserve=st.integers(1, 128),
)
@pytest.mark.asyncio
async def test_awaitable_readers_give_back_exactly_the_stream_however_it_is_cut(
    frames: list[bytes], sizes: list[int], max_len: int, read_reserve: int
) -> None:
    """Length-prefixed frames: ``read_exactly`` for the header and body, ``read_until`` for the
    trailer, over a TCP stream cut into random pieces, with a small buffer that pauses reading."""
    stream = b"".join(len(f).to_bytes(2, "big") + f + b"\r\n" for f in frames)
    got: list[bytes] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler(proto: HandoffProtocol) -> None:
        try:
            while True:
                try:
                    header = await proto.read_exactly(2)
                except asyncio.IncompleteReadError as end:
                    assert end.partial == b""
                    break
                body = await proto.read_exactly(int.from_bytes(header, "big"))
                assert await proto.read_until(b"\r\n") == b"\r\n"
                assert len(proto.buffer) <= max_len
                got.append(body)
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)

    cfg = HandoffBufferConfig(max_len=max_len, read_reserve=read_reserve)
    async with asyncio.timeout(WAIT):
        server = await start_handoff_server(handler, "127.0.0.1", 0, config=cfg)
        async with server:
            _reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1]
            )
            await send_pieces(writer, stream, sizes)
            await done
            writer.close()
    assert got == frames
