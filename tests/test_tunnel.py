"""tunnel(): the preserved tail first, then the rest, spliced or copied, nothing lost."""

from __future__ import annotations

import asyncio
import socket

import pytest

import bytes_handoff.raw_tunnel as tunnel_module
from bytes_handoff import (
    HandoffBuffer,
    WriteHandoff,
    duplex_pair,
    splice_supported,
    tunnel,
)
from bytes_handoff.adapters import SocketWriter
from net_support import recv_all, route_then_tunnel

PAYLOAD = bytes((i * 7 + 3) % 251 for i in range(3 * 1024 * 1024 + 17))
HEAD = b"GET /a\nGET /b\nTUNNEL\n"


async def _send_all(sock: socket.socket, data: bytes, piece: int) -> None:
    loop = asyncio.get_running_loop()
    for i in range(0, len(data), piece):
        await loop.sock_sendall(sock, data[i : i + piece])
    sock.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.asyncio
async def test_tcp_tunnel_forwards_every_byte_in_order(
    proxy_sockets: tuple[socket.socket, ...], splice: bool
) -> None:
    client, proxy_in, proxy_out, sink = proxy_sockets
    stream = HEAD + PAYLOAD
    async with asyncio.timeout(30):
        sender = asyncio.create_task(_send_all(client, stream, 10_000))
        received = asyncio.create_task(recv_all(sink))
        forwarded = await route_then_tunnel(proxy_in, proxy_out, splice=splice)
        await sender
        data = await received
    assert forwarded == len(stream)
    assert data == stream


@pytest.mark.asyncio
async def test_tunnel_splice_path_is_taken_for_socket_pairs(
    proxy_sockets: tuple[socket.socket, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two sockets on Linux the bytes after the tail never pass through Python."""
    assert splice_supported()
    client, proxy_in, proxy_out, sink = proxy_sockets

    async def no_copy(*args: object) -> int:
        raise AssertionError("buffered copy path used where splice was possible")

    monkeypatch.setattr(tunnel_module, "_copy", no_copy)
    async with asyncio.timeout(30):
        sender = asyncio.create_task(_send_all(client, HEAD + PAYLOAD, 65536))
        received = asyncio.create_task(recv_all(sink))
        await route_then_tunnel(proxy_in, proxy_out, splice=True)
        await sender
        assert await received == HEAD + PAYLOAD


@pytest.mark.asyncio
async def test_duplex_tunnel_falls_back_to_copy_and_keeps_tail() -> None:
    client, proxy_in = duplex_pair(4096)
    proxy_out, sink = duplex_pair(4096)
    stream = HEAD + PAYLOAD[:200_000]

    async def send() -> None:
        await client.write(stream)
        client.shutdown_write()

    async def drain() -> bytes:
        out = bytearray()
        while chunk := await sink.read(8192):
            out += chunk
        return bytes(out)

    async with asyncio.timeout(30):
        sender = asyncio.create_task(send())
        received = asyncio.create_task(drain())
        buf = HandoffBuffer(8192, read_reserve=1000)
        handoff = WriteHandoff.spawn(proxy_out)
        while buf.find(b"TUNNEL\n") < 0:
            await buf.read_available(proxy_in)
        head = buf.split_prefix(buf.find(b"TUNNEL\n") + 7)
        await handoff.write(head)
        assert isinstance(handoff.writer, SocketWriter) is False
        forwarded = await tunnel(buf, proxy_in, handoff)
        await sender
        assert await received == stream
    assert len(head) + forwarded == len(stream)
    assert handoff.closed


@pytest.mark.asyncio
async def test_tunnel_idle_timeout_ends_the_wait_and_closes_the_handoff() -> None:
    _client, proxy_in = duplex_pair(1024)
    proxy_out, _sink = duplex_pair(1024)
    handoff = WriteHandoff.spawn(proxy_out)
    async with asyncio.timeout(10):
        with pytest.raises(TimeoutError):
            await tunnel(HandoffBuffer(1024), proxy_in, handoff, idle_timeout=0.05)
    assert handoff.closed


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.asyncio
async def test_tunnel_idle_timeout_also_ends_a_wait_on_a_destination_that_stopped_reading(
    proxy_sockets: tuple[socket.socket, ...], splice: bool
) -> None:
    """A peer that never reads must not hold the tunnel open: the wait for room times out."""
    client, proxy_in, proxy_out, sink = proxy_sockets
    for sock, option in ((proxy_out, socket.SO_SNDBUF), (sink, socket.SO_RCVBUF)):
        sock.setsockopt(socket.SOL_SOCKET, option, 4096)
    handoff = WriteHandoff.spawn(proxy_out)
    buf = HandoffBuffer(64 * 1024)
    loop = asyncio.get_running_loop()
    sender = asyncio.create_task(loop.sock_sendall(client, PAYLOAD))  # far more than fits
    started = loop.time()
    try:
        async with asyncio.timeout(10):
            with pytest.raises(TimeoutError):
                await tunnel(buf, proxy_in, handoff, splice=splice, idle_timeout=0.2)
    finally:
        sender.cancel()
    assert loop.time() - started < 5
    assert handoff.closed
