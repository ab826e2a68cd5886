"""anyio byte streams as readers and writers: TCP, TLS, buffered and stapled streams.

Every test runs on the standard event loop and on uvloop (see conftest.py):
anyio's asyncio backend runs on whatever asyncio loop is running, so the
library's own async tests drive anyio streams directly; anyio's cancel scopes
(``fail_after``, ``move_on_after``) work in those tasks too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.stapled import StapledByteStream
from anyio.streams.tls import TLSStream
from hypothesis import given, settings
from hypothesis import strategies as st

from bytes_handoff import (
    BufferIOError,
    BytesLike,
    HandoffBuffer,
    HandoffBufferConfig,
    WriteClosed,
    WriteHandoff,
    WriteHandoffConfig,
    WriteIOError,
    as_reader,
    as_writer,
    tunnel,
)
from bytes_handoff.anyio_streams import SEND_BYTES, AnyioReader, AnyioWriter

#: Bound on every wait inside a test: a hang fails fast instead of at the global timeout.
WAIT = 20.0

#: Async examples over real TCP on two busy cores: no deadline, a moderate count.
ASYNC_SETTINGS = settings(max_examples=40, deadline=None, database=None)


# -- connections ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[Any, Any]]:
    """A connected anyio TCP (client, server) ``SocketStream`` pair over 127.0.0.1."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await listener.listeners[0].accept()  # type: ignore[attr-defined]
    try:
        yield client, server
    finally:
        for stream in (client, server):
            await anyio.aclose_forcefully(stream)


@contextlib.asynccontextmanager
async def tls_pair(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> AsyncIterator[tuple[TLSStream, TLSStream]]:
    """A connected (client, server) ``TLSStream`` pair, certificate and host name checked."""
    client_ctx, server_ctx = contexts
    async with tcp_pair() as (client_tcp, server_tcp):
        client, server = await asyncio.gather(
            TLSStream.wrap(client_tcp, hostname="localhost", ssl_context=client_ctx),
            TLSStream.wrap(server_tcp, server_side=True, ssl_context=server_ctx),
        )
        try:
            yield client, server
        finally:
            for stream in (client, server):
                await anyio.aclose_forcefully(stream)


@contextlib.asynccontextmanager
async def pair_of(
    kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[ByteStream, ByteStream]]:
    """A (client, server) pair of ``kind`` "tcp" or "tls"."""
    if kind == "tls":
        async with tls_pair(request.getfixturevalue("tls_contexts")) as pair:
            yield pair
    else:
        async with tcp_pair() as pair:
            yield pair


def shrink_buffers(*streams: Any) -> None:
    """Small kernel buffers, so a peer that does not read stops a writer soon."""
    for stream in streams:
        raw = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)


async def read_all(stream: object, read_reserve: int = 16 * 1024) -> bytes:
    """Everything ``stream`` yields through a ``HandoffBuffer``, until end of stream."""
    buf = HandoffBuffer(max_len=1 << 26, read_reserve=read_reserve)
    while await buf.read_available(stream):
        pass
    assert await buf.read_available(stream) == 0  # end of stream stays end of stream
    return buf.freeze_all()


async def read_all_and_close(stream: Any) -> bytes:
    """:func:`read_all`, then close: a TLS writer's close waits for the peer's close_notify."""
    data = await read_all(stream)
    await stream.aclose()
    return data


# -- registration -----------------------------------------------------------------------


def test_core_package_does_not_import_anyio() -> None:
    script = (
        "import sys\n"
        "import bytes_handoff\n"
        "assert 'anyio' not in sys.modules, 'the core imported anyio'\n"
        "import bytes_handoff.anyio_streams\n"
        "assert 'anyio' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_without_anyio_the_import_error_names_the_package_and_the_extra() -> None:
    script = (
        "import sys\n"
        "sys.modules['anyio'] = None  # as if anyio were not installed\n"
        "import bytes_handoff  # the core needs no anyio\n"
        "try:\n"
        "    import bytes_handoff.anyio_streams\n"
        "except ModuleNotFoundError as e:\n"
        "    print(e.name)\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.splitlines() == [
        "anyio",
        "bytes_handoff.anyio_streams needs the anyio package, which is not installed:"
        " install the anyio extra with pip install 'bytes-handoff[anyio]'"
        " (from a clone: pip install '.[anyio]')",
    ]


def test_without_the_import_the_type_error_says_which_module_to_import() -> None:
    script = (
        "from anyio.streams.stapled import StapledByteStream\n"
        "from bytes_handoff import as_reader, as_writer\n"
        "stream = StapledByteStream(None, None)  # a real anyio class; never used\n"
        "for adapt in (as_reader, as_writer):\n"
        "    try:\n"
        "        adapt(stream)\n"
        "    except TypeError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.endswith("(for anyio streams, import bytes_handoff.anyio_streams first)")


@pytest.mark.asyncio
async def test_anyio_streams_get_the_anyio_adapters(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    with anyio.fail_after(WAIT):
        async with tls_pair(tls_contexts) as (tls_client, _), tcp_pair() as (client, _):
            buffered = BufferedByteReceiveStream(client)
            stapled = StapledByteStream(client, buffered)
            for stream in (client, tls_client, stapled):
                reader, writer = as_reader(stream), as_writer(stream)
                assert isinstance(reader, AnyioReader) and reader.stream is stream
                assert isinstance(writer, AnyioWriter) and writer.stream is stream
            assert isinstance(as_reader(buffered), AnyioReader)
            with pytest.raises(TypeError, match="BufferedByteReceiveStream"):
                as_writer(buffered)  # receive-only
            # Explicit adapters are protocol-shaped: used as they are.
            explicit = AnyioReader(client)
            assert as_reader(explicit) is explicit


# -- reading ----------------------------------------------------------------------------


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in fragments whose sizes cycle through ``sizes``."""
    pieces, pos, i = [], 0, 0
    while pos < len(data):
        pieces.append(data[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return pieces


def source_view(kind: str, server: Any) -> Any:
    """The read side of ``server`` as ``kind``: the stream, buffered, or stapled."""
    if kind == "buffered":
        return BufferedByteReceiveStream(server)
    if kind == "stapled":
        return StapledByteStream(server, BufferedByteReceiveStream(server))
    return server


@pytest.mark.asyncio
@ASYNC_SETTINGS
@given(
    frames=st.lists(
        st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=40
    ),
    fragments=st.lists(st.integers(1, 97), min_size=1, max_size=8),
    yields=st.lists(st.booleans(), min_size=1, max_size=8),
    source_kind=st.sampled_from(["tcp", "buffered", "stapled"]),
    max_len=st.integers(61, 160),
    read_reserve=st.integers(1, 64),
    max_items=st.integers(1, 8),
    budget=st.integers(64, 400),
)
async def test_frames_from_a_fragmented_anyio_stream_are_routed_whole_and_in_order(
    frames: list[bytes],
    fragments: list[int],
    yields: list[bool],
    source_kind: str,
    max_len: int,
    read_reserve: int,
    max_items: int,
    budget: int,
) -> None:
    with anyio.fail_after(WAIT):
        async with (
            tcp_pair() as (src_client, src_server),
            tcp_pair() as (out0_client, out0_server),
            tcp_pair() as (out1_client, out1_server),
        ):
            pieces = cut(b"".join(frames), fragments)

            async def produce() -> None:
                for i, piece in enumerate(pieces):
                    await src_client.send(piece)
                    if yields[i % len(yields)]:
                        await anyio.sleep(0)  # let the reader take a partial frame
                await src_client.send_eof()

            cfg = WriteHandoffConfig(max_items, budget)
            # One route is a stapled stream: its send_eof closes its send half.
            routes = [
                WriteHandoff.spawn(out0_client, cfg),
                WriteHandoff.spawn(StapledByteStream(out1_client, out1_client), cfg),
            ]
            sinks = [asyncio.ensure_future(read_all(s, 50)) for s in (out0_server, out1_server)]
            producing = asyncio.ensure_future(produce())
            source = source_view(source_kind, src_server)
            buf = HandoffBuffer(max_len, read_reserve)
            while True:
                n = await buf.read_available(source)
                while (frame := buf.split_through(b"\n")) is not None:
                    await routes[frame[0] % 2].write_fire_and_forget(frame)
                if n == 0:
                    break
            assert len(buf) == 0
            await producing
            await asyncio.gather(*(route.aclose() for route in routes))
            received = await asyncio.gather(*sinks)
        for route_index in (0, 1):
            expected = b"".join(f for f in frames if f[0] % 2 == route_index)
            assert received[route_index] == expected


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest.mark.asyncio
async def test_end_of_stream_reads_zero_every_time(
    kind: str, request: pytest.FixtureRequest
) -> None:
    with anyio.fail_after(WAIT):
        async with pair_of(kind, request) as (client, server):
            buf = HandoffBuffer(64, read_reserve=4)

            async def read_to_the_end() -> None:
                while await buf.read_available(server):
                    pass
                for _ in range(3):
                    assert await buf.read_available(server) == 0
                if kind == "tls":
                    await server.aclose()  # answer the close_notify the client waits for

            reading = asyncio.ensure_future(read_to_the_end())
            # The handoff's shutdown ends the stream: send_eof, or aclose over TLS.
            async with WriteHandoff.spawn(client) as handoff:
                await handoff.write(b"last words")
            await reading
            assert buf.freeze_all() == b"last words"


@pytest.mark.asyncio
async def test_shutdown_half_closes_a_tcp_stream() -> None:
    with anyio.fail_after(WAIT):
        async with tcp_pair() as (client, server):
            async with WriteHandoff.spawn(client) as handoff:
                await handoff.write(b"request")
            assert await read_all(server) == b"request"
            await server.send(b"reply after end of stream")  # the other direction is open
            await server.send_eof()
            assert await read_all(client) == b"reply after end of stream"


def reset(stream: Any) -> None:
    """Make closing ``stream`` send a TCP reset instead of an orderly end of stream."""
    raw = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.asyncio
async def test_peer_reset_is_a_buffer_io_error_chaining_broken_resource() -> None:
    with anyio.fail_after(WAIT):
        async with tcp_pair() as (client, server):
            buf = HandoffBuffer(64)
            await server.send(b"before")
            assert await buf.read_available(client) == 6
            reset(server)
            await server.aclose()
            with pytest.raises(BufferIOError) as info:
                while await buf.read_available(client):
                    pass
            assert buf.freeze_all() == b"before"  # what was read stays
            error = info.value.error
            assert isinstance(error, ConnectionResetError)
            assert isinstance(error.__cause__, anyio.BrokenResourceError)
            assert isinstance(error.__cause__.__cause__, ConnectionResetError)


@pytest.mark.asyncio
async def test_peer_reset_fails_the_handoff_with_write_io_error() -> None:
    with anyio.fail_after(WAIT):
        async with tcp_pair() as (client, server):
            handoff = WriteHandoff.spawn(client, WriteHandoffConfig(8, 64 * 1024))
            reset(server)
            await server.aclose()
            # The kernel learns of the reset from the first send; the next one fails.
            tickets = []
            with pytest.raises((WriteIOError, WriteClosed)):
                for i in range(10_000):
                    tickets.append(await handoff.write(b"x" * (i % 100 + 1)))
                    await anyio.sleep(0.001)
            with pytest.raises(WriteIOError) as info:
                await handoff.aclose()
            error = info.value.error
            assert isinstance(error, (ConnectionResetError, BrokenPipeError))
            assert isinstance(error.__cause__, anyio.BrokenResourceError)
            failed = [t.error() for t in tickets if t.error() is not None]
            assert failed and isinstance(failed[0], WriteIOError)
            assert all(isinstance(e, WriteClosed) for e in failed[1:])


@pytest.mark.asyncio
async def test_a_stream_closed_on_our_side_is_ebadf_on_both_sides() -> None:
    with anyio.fail_after(WAIT):
        async with tcp_pair() as (client, _):
            await client.aclose()
            with pytest.raises(BufferIOError) as read_info:
                await HandoffBuffer(16).read_available(client)
            handoff = WriteHandoff.spawn(client)
            with pytest.raises(WriteIOError) as write_info:
                await handoff.write(b"too late")
                await handoff.aclose()
        for info in (read_info, write_info):
            error = info.value.error
            assert isinstance(error, OSError) and error.errno == errno.EBADF
            assert isinstance(error.__cause__, anyio.ClosedResourceError)


# -- cancellation -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest.mark.asyncio
async def test_fail_after_mid_read_leaves_the_buffer_as_it_was(
    kind: str, request: pytest.FixtureRequest
) -> None:
    with anyio.fail_after(WAIT):
        async with pair_of(kind, request) as (client, server):
            buf = HandoffBuffer(64, read_reserve=8)
            await client.send(b"kept")
            assert await buf.read_available(server) == 4
            for delay in (0, 0.01, 0.05):
                with pytest.raises(TimeoutError), anyio.fail_after(delay):
                    await buf.read_available(server)  # nothing more was sent
                assert bytes(buf.peek()) == b"kept"
            await client.send(b" and more")
            while len(buf) < 13:
                assert await buf.read_available(server) > 0
            assert buf.freeze_all() == b"kept and more"


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest.mark.asyncio
async def test_reads_cancelled_at_random_moments_lose_and_duplicate_nothing(
    kind: str, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(f"{kind}-cancel")
    payload = rng.randbytes(256 * 1024)
    with anyio.fail_after(WAIT):
        async with pair_of(kind, request) as (client, server):

            async def produce() -> None:
                for piece in cut(payload, [1, 700, 13, 4096, 64, 20_000]):
                    await client.send(piece)
                    await anyio.sleep(0)
                await anyio.sleep(0.01)
                await client.aclose() if kind == "tls" else await client.send_eof()

            producing = asyncio.ensure_future(produce())
            buf = HandoffBuffer(64 * 1024, read_reserve=rng.choice([7, 512, 16 * 1024]))
            received = bytearray()
            cancelled = 0
            while True:
                before = bytes(buf.peek())
                with anyio.move_on_after(rng.choice([0, 0, 1e-5, 1e-4, 1e-3])) as scope:
                    n = await buf.read_available(server)
                if scope.cancelled_caught:
                    cancelled += 1
                    assert bytes(buf.peek()) == before  # no half-stored read
                    continue
                if n == 0:
                    break
                if rng.random() < 0.3:
                    received += buf.freeze_all()
            received += buf.freeze_all()
            if kind == "tls":
                await server.aclose()  # answer the close_notify the producer waits for
            await producing
        assert cancelled > 0
        assert received == payload


def numbered(count: int, size: int) -> list[bytes]:
    """``count`` chunks of ``size`` bytes, each starting with its index."""
    return [struct.pack(">I", i) + bytes([i % 251]) * (size - 4) for i in range(count)]


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest.mark.asyncio
async def test_fail_after_mid_flush_and_mid_write_leaves_the_queue_consistent(
    kind: str, request: pytest.FixtureRequest
) -> None:
    chunks = numbered(256, 16 * 1024)
    stray = b"\xff" * (16 * 1024)  # offered by a write that times out: must never arrive
    with anyio.fail_after(WAIT):
        # The client is the peer that does not read: a connected anyio stream
        # reads nothing until asked, an accepted one reads ahead without bound.
        async with pair_of(kind, request) as (peer, ours):
            shrink_buffers(peer, ours)
            handoff = WriteHandoff.spawn(ours, WriteHandoffConfig(16, 128 * 1024))
            accepted: list[bytes] = []

            async def produce() -> None:
                for chunk in chunks:
                    await handoff.write_fire_and_forget(chunk)
                    accepted.append(chunk)

            producing = asyncio.ensure_future(produce())
            await anyio.sleep(0.05)  # the peer does not read: everything fills up
            with pytest.raises(TimeoutError), anyio.fail_after(0.1):
                await handoff.flush()
            assert not producing.done()  # still waiting for room
            pending = handoff.pending_bytes
            assert pending > 0
            with pytest.raises(TimeoutError), anyio.fail_after(0.05):
                await handoff.write(stray)  # waits for room, then gives up
            assert handoff.pending_bytes == pending  # the stray chunk was never taken
            assert (handoff.closed, handoff.error) == (False, None)
            reading = asyncio.ensure_future(read_all_and_close(peer))
            await producing
            await handoff.flush()
            await handoff.aclose()
            received = await reading
        assert accepted == chunks
        assert received == b"".join(chunks)


@pytest.mark.asyncio
async def test_fail_after_on_aclose_aborts_and_the_peer_gets_a_prefix() -> None:
    chunks = numbered(256, 16 * 1024)
    stream = b"".join(chunks)
    with anyio.fail_after(WAIT):
        async with tcp_pair() as (peer, ours):
            shrink_buffers(peer, ours)
            handoff = WriteHandoff.spawn(ours, WriteHandoffConfig(512, 8 * 1024 * 1024))
            tickets = [handoff.try_write(chunk) for chunk in chunks]
            with pytest.raises(TimeoutError), anyio.fail_after(0.1):
                await handoff.aclose()  # the peer does not read: give up
            assert handoff.closed and handoff.pending_bytes == 0
            await ours.aclose()
            received = await read_all(peer)
        assert stream.startswith(received)
        written = [t for t in tickets if t.done() and t.error() is None]
        assert all(t.done() for t in tickets)
        assert len(received) >= sum(len(c) for c in chunks[: len(written)])
        assert tickets[: len(written)] == written  # written tickets are a prefix
        assert all(isinstance(t.error(), WriteClosed) for t in tickets[len(written) :])


# -- writing ----------------------------------------------------------------------------

PRODUCERS = 8
PER_PRODUCER = 120
HEADER = struct.Struct(">BII")  # producer, sequence number, payload length


def frame_of(producer: int, seq: int) -> bytes:
    size = (producer * 7919 + seq * 104_729) % 3000
    payload = random.Random(producer * 100_000 + seq).randbytes(size)
    return HEADER.pack(producer, seq, size) + payload


@pytest.mark.parametrize("kind", ["tcp", "tls"])
@pytest.mark.asyncio
async def test_many_producers_through_one_handoff_deliver_every_byte(
    kind: str, request: pytest.FixtureRequest
) -> None:
    with anyio.fail_after(WAIT):
        async with pair_of(kind, request) as (client, server):
            handoff = WriteHandoff.spawn(client, WriteHandoffConfig(32, 64 * 1024))

            async def produce(producer: int) -> None:
                tickets = []
                for seq in range(PER_PRODUCER):
                    frame = frame_of(producer, seq)
                    if seq % 3 == 0:
                        tickets.append(await handoff.write(bytearray(frame)))  # copied
                    elif seq % 3 == 1:
                        tickets.append(await handoff.write(memoryview(frame)))
                    else:
                        await handoff.write_fire_and_forget(frame)
                    if seq % 16 == 0:
                        await anyio.sleep(0)
                for ticket in tickets:
                    await ticket

            async def consume() -> dict[int, list[int]]:
                buf = HandoffBuffer(64 * 1024, read_reserve=1500 if kind == "tcp" else 16 * 1024)
                seen: dict[int, list[int]] = {p: [] for p in range(PRODUCERS)}
                while True:
                    n = await buf.read_available(server)
                    while len(buf) >= HEADER.size:
                        producer, seq, size = HEADER.unpack(bytes(buf.peek()[: HEADER.size]))
                        if len(buf) < HEADER.size + size:
                            break
                        assert buf.split_prefix(HEADER.size + size) == frame_of(producer, seq)
                        seen[producer].append(seq)
                    if n == 0:
                        assert len(buf) == 0
                        await server.aclose()  # over TLS, the writer's close waits for ours
                        return seen

            consuming = asyncio.ensure_future(consume())
            await asyncio.gather(*(produce(p) for p in range(PRODUCERS)))
            await handoff.aclose()
            seen = await consuming
        assert seen == {p: list(range(PER_PRODUCER)) for p in range(PRODUCERS)}


class Recorder(ByteStream):
    """An in-memory anyio byte stream that records every ``send``."""

    def __init__(self, *incoming: bytes, over_deliver: bool = False) -> None:
        self.incoming = list(incoming)
        self.over_deliver = over_deliver
        self.sent: list[bytes] = []
        self.eof_sent = False
        self.closed = False
        self.error: Exception | None = None

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        if not self.incoming:
            raise anyio.EndOfStream
        data = self.incoming.pop(0)
        if not self.over_deliver and len(data) > max_bytes:
            data, rest = data[:max_bytes], data[max_bytes:]
            self.incoming.insert(0, rest)
        return data

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        assert type(item) is bytes
        self.sent.append(item)

    async def send_eof(self) -> None:
        self.eof_sent = True

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.asyncio
async def test_writer_joins_small_chunks_and_sends_large_ones_alone() -> None:
    with anyio.fail_after(WAIT):
        stream = Recorder()
        writer = AnyioWriter(stream)
        small: list[BytesLike] = [b"a" * 100, bytearray(b"b" * 50), memoryview(b"c" * 10)]
        assert await writer.write_some(small) == 160
        big = b"d" * SEND_BYTES
        assert await writer.write_some([big, b"tail"]) == SEND_BYTES
        assert stream.sent[-1] is big  # not copied
        half = b"e" * (SEND_BYTES // 2 + 1)
        assert await writer.write_some([half, half, b"f"]) == len(half)  # stays near SEND_BYTES
        assert await writer.write_some([memoryview(b"only")]) == 4
        assert stream.sent == [b"a" * 100 + b"b" * 50 + b"c" * 10, big, half, b"only"]


@pytest.mark.asyncio
async def test_handoff_through_a_recording_stream_sends_few_large_sends() -> None:
    with anyio.fail_after(WAIT):
        stream = Recorder()
        chunks = [bytes([i % 256]) * (i % 300 + 1) for i in range(2000)]
        async with WriteHandoff.spawn(stream, WriteHandoffConfig(4096, 1 << 22)) as handoff:
            for chunk in chunks:
                handoff.try_write_fire_and_forget(chunk)
        assert b"".join(stream.sent) == b"".join(chunks)
        assert len(stream.sent) < len(chunks) // 100
        assert max(map(len, stream.sent)) <= SEND_BYTES
        assert (stream.eof_sent, stream.closed) == (True, False)


@pytest.mark.asyncio
async def test_reader_keeps_what_a_stream_over_delivers() -> None:
    with anyio.fail_after(WAIT):
        parts = [bytes(range(i, i + 40)) for i in range(0, 200, 40)]
        stream = Recorder(*parts, over_deliver=True)
        buf = HandoffBuffer(1024, read_reserve=7)
        counts = []
        while n := await buf.read_available(stream):
            counts.append(n)
        assert max(counts) <= 7
        assert buf.freeze_all() == b"".join(parts)


class UnhashableRecorder(Recorder):
    """A stream that cannot be a dict key (it defines ``__eq__``, as a dataclass would)."""

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("kind", [Recorder, UnhashableRecorder], ids=["hashable", "unhashable"])
@pytest.mark.parametrize("switch", ["tunnel", "take_tail"])
@pytest.mark.asyncio
async def test_over_delivered_bytes_survive_a_mode_switch(switch: str, kind: type) -> None:
    """The parser reads a little, then moves on: the stream's excess must go with it."""
    with anyio.fail_after(WAIT):
        parts = [bytes(range(i, i + 11)) for i in range(0, 55, 11)]  # 55 bytes, 11 per receive
        stream = kind(*parts, over_deliver=True)
        buf = HandoffBuffer(1024, read_reserve=4)
        assert await buf.read_available(stream) == 4  # 7 bytes over-delivered, kept
        got = bytearray(buf.split_prefix(2))
        if switch == "tunnel":
            sink = Recorder()
            async with WriteHandoff.spawn(sink) as out:
                await tunnel(buf, stream, out)
            got += b"".join(sink.sent)
        else:
            next_mode = HandoffBuffer.from_tail(buf.take_tail(), HandoffBufferConfig(1024))
            while await next_mode.read_available(stream):
                pass
            got += next_mode.freeze_all()
        assert bytes(got) == b"".join(parts)


@pytest.mark.asyncio
async def test_an_empty_chunk_before_a_large_one_is_written_with_it() -> None:
    with anyio.fail_after(WAIT):
        stream = Recorder()
        large = bytes(range(256)) * 800  # 200 KB: more than one send joins
        async with WriteHandoff.spawn(stream) as out:
            empty = out.try_write(b"")
            whole = out.try_write(large)
        await empty
        await whole
        assert b"".join(stream.sent) == large


def broken(cause: BaseException | None) -> anyio.BrokenResourceError:
    error = anyio.BrokenResourceError()
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "read_kind", "write_kind"),
    [
        (broken(ConnectionResetError(errno.ECONNRESET, "reset")), ConnectionResetError, None),
        (broken(BrokenPipeError(errno.EPIPE, "pipe")), BrokenPipeError, None),
        (broken(TimeoutError(errno.ETIMEDOUT, "timed out")), TimeoutError, None),
        (broken(None), ConnectionResetError, BrokenPipeError),
        (broken(ssl.SSLEOFError(8, "EOF occurred")), ConnectionResetError, BrokenPipeError),
        (anyio.ClosedResourceError(), OSError, None),
    ],
    ids=["reset", "pipe", "timeout", "no-cause", "ssl", "closed"],
)
@pytest.mark.asyncio
async def test_anyio_errors_become_the_os_error_a_socket_would_raise(
    error: Exception, read_kind: type[OSError], write_kind: type[OSError] | None
) -> None:
    with anyio.fail_after(WAIT):
        stream = Recorder()
        stream.error = error
        with pytest.raises(BufferIOError) as read_info:
            await HandoffBuffer(8).read_available(stream)
        handoff = WriteHandoff.spawn(stream)
        ticket = handoff.try_write(b"x")
        with pytest.raises(WriteIOError) as write_info:
            await ticket
        with pytest.raises(WriteIOError):
            await handoff.aclose()
        for info, kind in ((read_info, read_kind), (write_info, write_kind or read_kind)):
            assert type(info.value.error) is kind
            assert info.value.error.__cause__ is error
        if isinstance(error, anyio.ClosedResourceError):
            assert read_info.value.error.errno == errno.EBADF


@pytest.mark.asyncio
async def test_other_errors_pass_through_unchanged() -> None:
    with anyio.fail_after(WAIT):
        stream = Recorder()
        stream.error = anyio.BusyResourceError("reading from")
        with pytest.raises(anyio.BusyResourceError):
            await HandoffBuffer(8).read_available(stream)
