"""tunnel(): the preserved tail first, then the rest, spliced or copied, nothing lost."""

from __future__ import annotations

import asyncio
import socket

import pytest

import bytes_handoff.raw_tunnel as tunnel_module
from bytes_handoff import (
    BufferIOError,
    HandoffBuffer,
    HandoffProtocol,
    WriteHandoff,
    WriteIOError,
    duplex_pair,
    open_handoff_connection,
    splice_supported,
    start_handoff_server,
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
    try:
        # The outer bound only turns a hang into a failure: its expiry would not be the
        # TimeoutError expected inside (it cancels the tunnel, then raises out here).
        async with asyncio.timeout(10):
            with pytest.raises(TimeoutError):
                await tunnel(buf, proxy_in, handoff, splice=splice, idle_timeout=0.2)
    finally:
        sender.cancel()
    assert handoff.closed


# -- a transport closed under a tunnel -------------------------------------------------------


async def _peer_sees_the_close(sock: socket.socket) -> None:
    """Read until end of stream or a reset: what a peer sees of a connection really closed."""
    loop = asyncio.get_running_loop()
    try:
        while await loop.sock_recv(sock, 65536):
            pass
    except ConnectionResetError:
        pass


@pytest.mark.parametrize("how", ["close", "abort"])
@pytest.mark.parametrize("side", ["source", "destination"])
@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.asyncio
async def test_closing_either_tunnelled_transport_closes_its_connection_and_ends_the_tunnel(
    splice: bool, side: str, how: str
) -> None:
    """A server that closes its transports at shutdown must really close tunnelled ones.

    The splice path works on duplicated descriptors: closing the transport alone
    left the kernel socket open, the peer never saw the close and ``tunnel()``
    never returned. The copy path took a local close of the source for a clean end.
    """
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[BaseException | None] = loop.create_future()
    protos: dict[str, HandoffProtocol] = {}
    with socket.create_server(("127.0.0.1", 0)) as sink_listener:
        sink_listener.setblocking(False)

        async def handler(proto: HandoffProtocol) -> None:
            dst = await open_handoff_connection("127.0.0.1", sink_listener.getsockname()[1])
            protos["source"], protos["destination"] = proto, dst
            try:
                await tunnel(proto.buffer, proto, WriteHandoff.spawn(dst), splice=splice)
                ended.set_result(None)
            except Exception as exc:
                ended.set_result(exc)
            finally:
                assert dst.transport is not None
                dst.transport.close()

        server = await start_handoff_server(handler, "127.0.0.1", 0)
        async with server, asyncio.timeout(10):
            client = socket.create_connection(server.sockets[0].getsockname())
            client.setblocking(False)
            sink, _ = await loop.sock_accept(sink_listener)
            with client, sink:
                await loop.sock_sendall(client, b"through the tunnel")
                assert await loop.sock_recv(sink, 100) == b"through the tunnel"
                transport = protos[side].transport
                assert transport is not None
                getattr(transport, how)()
                error = await ended
                expected = BufferIOError if side == "source" else WriteIOError
                assert isinstance(error, expected), error
                await _peer_sees_the_close(client if side == "source" else sink)
