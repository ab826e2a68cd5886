"""I/O adapters: sockets, asyncio streams, the duplex, custom readers and writers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from bytes_handoff import (
    ByteReader,
    BytesLike,
    ByteWriter,
    HandoffBuffer,
    WriteHandoff,
    WriteHandoffConfig,
    WriteIOError,
    as_reader,
    as_writer,
    duplex_pair,
    register_reader,
    register_writer,
)

#: Bound on every wait inside a test: a hang fails fast instead of at the global timeout.
WAIT = 5.0
SOCKET_PAIRS = pytest.mark.parametrize("pair_fixture", ["socket_pair", "tcp_pair"])
ReadToEof = Callable[[Any], Awaitable[bytes]]

#: More than socket buffers hold, so writers must wait for the peer to drain.
PAYLOAD_CHUNKS: list[BytesLike] = [
    kind(bytes([i % 251]) * (32 * 1024 + i))
    for i, kind in enumerate([bytes, bytearray, memoryview] * 40)
]
PAYLOAD = b"".join(PAYLOAD_CHUNKS)


async def read_stream(reader: object, read_reserve: int = 4096) -> bytes:
    """Everything ``reader`` yields through a ``HandoffBuffer``, until end of stream."""
    buf = HandoffBuffer(max_len=1 << 24, read_reserve=read_reserve)
    while await buf.read_available(reader):
        pass
    return buf.freeze_all()


async def write_through_handoff(writer: object, read_peer: Awaitable[bytes]) -> bytes:
    """Push :data:`PAYLOAD_CHUNKS` through a handoff on ``writer``; return what the peer read."""
    cfg = WriteHandoffConfig(max_items=16, max_pending_bytes=512 * 1024)
    reading = asyncio.ensure_future(read_peer)
    async with WriteHandoff.spawn(writer, cfg) as handoff:
        tickets = [await handoff.write(chunk) for chunk in PAYLOAD_CHUNKS]
    for ticket in tickets:
        await ticket
    return await reading


# -- read side ---------------------------------------------------------------------------


@SOCKET_PAIRS
@pytest.mark.asyncio
async def test_reads_a_nonblocking_socket_until_eof(
    pair_fixture: str, request: pytest.FixtureRequest
) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = request.getfixturevalue(pair_fixture)
        peer.sendall(b"first")
        buf = HandoffBuffer(64)
        assert await buf.read_available(ours) == 5
        peer.sendall(b" second")
        peer.shutdown(socket.SHUT_WR)
        assert buf.freeze_all() + await read_stream(ours) == b"first second"


@SOCKET_PAIRS
@pytest.mark.asyncio
async def test_socket_read_waits_for_data(
    pair_fixture: str, request: pytest.FixtureRequest
) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = request.getfixturevalue(pair_fixture)
        buf = HandoffBuffer(64)
        reading = asyncio.create_task(buf.read_available(ours))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not reading.done()  # parked on readiness, nothing to read yet
        peer.sendall(b"late")
        assert await reading == 4
        assert buf.freeze_all() == b"late"


@pytest.mark.asyncio
async def test_reads_an_asyncio_stream_reader(open_stream_pair: Callable[[], Any]) -> None:
    async with asyncio.timeout(WAIT):
        async with open_stream_pair() as streams:
            streams.server_writer.write(b"over asyncio streams")
            streams.server_writer.write_eof()
            received = await read_stream(streams.client_reader, read_reserve=3)
        assert received == b"over asyncio streams"


@pytest.mark.asyncio
async def test_reads_a_duplex_stream() -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = duplex_pair(4)

        async def send() -> None:
            await peer.write(b"through a small pipe")
            peer.shutdown_write()

        sending = asyncio.create_task(send())
        assert await read_stream(ours, read_reserve=3) == b"through a small pipe"
        await sending


# -- write side --------------------------------------------------------------------------


@SOCKET_PAIRS
@pytest.mark.asyncio
async def test_handoff_writes_a_nonblocking_socket_and_shuts_it(
    pair_fixture: str, request: pytest.FixtureRequest, read_to_eof: ReadToEof
) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = request.getfixturevalue(pair_fixture)
        assert await write_through_handoff(ours, read_to_eof(peer)) == PAYLOAD


@pytest.mark.asyncio
async def test_handoff_writes_an_asyncio_stream_writer(
    open_stream_pair: Callable[[], Any], read_to_eof: ReadToEof
) -> None:
    async with asyncio.timeout(WAIT):
        async with open_stream_pair() as streams:
            received = await write_through_handoff(
                streams.client_writer, read_to_eof(streams.server_reader)
            )
        assert received == PAYLOAD


@pytest.mark.asyncio
async def test_handoff_writes_a_duplex_stream(read_to_eof: ReadToEof) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = duplex_pair(8192)
        assert await write_through_handoff(ours, read_to_eof(peer)) == PAYLOAD


@pytest.mark.asyncio
async def test_writing_a_closed_stream_writer_fails_the_ticket(
    open_stream_pair: Callable[[], Any],
) -> None:
    async with asyncio.timeout(WAIT):
        async with open_stream_pair() as streams:
            handoff = WriteHandoff.spawn(streams.client_writer)
            streams.client_writer.close()
            ticket = handoff.try_write(b"too late")
            with pytest.raises(WriteIOError) as info:
                await ticket
            with pytest.raises(WriteIOError):
                await handoff.aclose()
        assert isinstance(info.value.__cause__, BrokenPipeError)


# -- what is accepted and what is refused ---------------------------------------------


@pytest.mark.parametrize("convert", [as_reader, as_writer])
def test_blocking_socket_is_rejected(convert: Callable[[object], object]) -> None:
    a, b = socket.socketpair()
    with (
        a,
        b,
        pytest.raises(
            ValueError, match=r"socket must be non-blocking: call sock\.setblocking\(False\) first"
        ),
    ):
        convert(a)


@pytest.mark.asyncio
async def test_buffer_and_handoff_reject_a_blocking_socket() -> None:
    async with asyncio.timeout(WAIT):
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(ValueError, match="non-blocking"):
                await HandoffBuffer(8).read_available(a)
            with pytest.raises(ValueError, match="non-blocking"):
                WriteHandoff.spawn(a)


class Gizmo:
    """Neither registered nor protocol-shaped."""


class WriteOnlyHalf:
    """Has ``write_some`` but no ``shutdown``: not a complete writer."""

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        return 0


@pytest.mark.parametrize(
    ("convert", "obj", "message"),
    [
        (as_reader, Gizmo(), "cannot read from Gizmo"),
        (as_reader, 42, "cannot read from int"),
        (as_writer, Gizmo(), "cannot write to Gizmo"),
        (as_writer, WriteOnlyHalf(), "cannot write to WriteOnlyHalf"),
        (as_writer, b"bytes", "cannot write to bytes"),
    ],
)
def test_unsupported_type_is_a_type_error_naming_it(
    convert: Callable[[object], object], obj: object, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        convert(obj)


@pytest.mark.asyncio
async def test_buffer_and_handoff_reject_an_unsupported_type() -> None:
    async with asyncio.timeout(WAIT):
        with pytest.raises(TypeError, match="Gizmo"):
            await HandoffBuffer(8).read_available(Gizmo())
        with pytest.raises(TypeError, match="Gizmo"):
            WriteHandoff.spawn(Gizmo())


class ProtocolShaped:
    """Has ``read_into``, ``write_some`` and ``shutdown``: used as it is."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.shut = False

    async def read_into(self, view: memoryview) -> int:
        view[:3] = b"abc"
        return 3

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        for chunk in chunks:
            self.written += chunk
        return sum(memoryview(c).nbytes for c in chunks)

    async def shutdown(self) -> None:
        self.shut = True


def test_protocol_shaped_objects_are_used_as_they_are() -> None:
    obj = ProtocolShaped()
    assert isinstance(obj, ByteReader)
    assert isinstance(obj, ByteWriter)
    assert as_reader(obj) is obj
    assert as_writer(obj) is obj
    ours, _ = duplex_pair()
    assert as_reader(ours) is ours
    assert as_writer(ours) is ours


@pytest.mark.asyncio
async def test_protocol_shaped_objects_work_end_to_end() -> None:
    async with asyncio.timeout(WAIT):
        obj = ProtocolShaped()
        buf = HandoffBuffer(8)
        await buf.read_available(obj)
        async with WriteHandoff.spawn(obj) as handoff:
            await handoff.write(b"out")
        assert buf.freeze_all() == b"abc"
        assert (bytes(obj.written), obj.shut) == (b"out", True)


class Mailbox:
    """A custom transport with its own vocabulary: ``inbox`` to read, ``outbox`` to write."""

    def __init__(self, *incoming: bytes) -> None:
        self.inbox = list(incoming)
        self.outbox = bytearray()
        self.sealed = False


class SpecialMailbox(Mailbox):
    """Resolved through the MRO to :class:`Mailbox`'s adapters."""


class MailboxReader:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def read_into(self, view: memoryview) -> int:
        if not self.box.inbox:
            return 0
        data = self.box.inbox.pop(0)
        view[: len(data)] = data
        return len(data)


class MailboxWriter:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        first = bytes(chunks[0])  # one chunk per call, like a datagram-ish transport
        self.box.outbox += first
        return len(first)

    async def shutdown(self) -> None:
        self.box.sealed = True


register_reader(Mailbox, MailboxReader)
register_writer(Mailbox, MailboxWriter)


@pytest.mark.parametrize("cls", [Mailbox, SpecialMailbox])
@pytest.mark.asyncio
async def test_registered_custom_class_is_readable_and_writable(cls: type[Mailbox]) -> None:
    async with asyncio.timeout(WAIT):
        box = cls(b"hello ", b"mailbox")
        assert isinstance(as_reader(box), MailboxReader)
        assert isinstance(as_writer(box), MailboxWriter)
        assert await read_stream(box, read_reserve=64) == b"hello mailbox"
        async with WriteHandoff.spawn(box) as handoff:
            for part in (b"one,", b"two,", b"three"):
                handoff.try_write_fire_and_forget(part)
        assert (bytes(box.outbox), box.sealed) == (b"one,two,three", True)
