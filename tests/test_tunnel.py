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


# -- protocol-to-protocol tunnels under faults (found by a red-team pass) -----------------------


async def _server_side() -> tuple[socket.socket, HandoffProtocol]:
    """(its peer's raw socket, a server-side HandoffProtocol)."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[HandoffProtocol] = loop.create_future()

    async def handler(proto: HandoffProtocol) -> None:
        made.set_result(proto)
        await proto.wait_closed()

    server = await start_handoff_server(handler, "127.0.0.1", 0)
    peer = socket.socket()
    peer.setblocking(False)
    await loop.sock_connect(peer, server.sockets[0].getsockname())
    proto = await made
    server.close()
    return peer, proto


async def _client_side(rcvbuf: int = 4096) -> tuple[socket.socket, HandoffProtocol]:
    """(its peer's raw socket, with a small receive buffer; a connected HandoffProtocol)."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        listener.setblocking(False)
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        proto = await open_handoff_connection(*listener.getsockname())
        peer, _ = await accepting
    peer.setblocking(False)
    return peer, proto


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.asyncio
async def test_a_destination_closed_while_its_backlog_waits_ends_the_tunnel(splice: bool) -> None:
    """The destination's transport holds bytes its peer never reads; then it is closed.

    Spliced, the wait for that backlog looped on a wait that returned at once:
    the loop froze at 100 % CPU. Copied, the failed handoff went unnoticed while
    the source was quiet, and the tunnel waited for good.
    """
    src_peer, src = await _server_side()
    dst_peer, dst = await _client_side()
    assert dst.transport is not None and src.transport is not None
    with src_peer, dst_peer:
        if splice:
            dst.transport.write(b"x" * (8 << 20))  # written before the switch, never read
        tunnelling = asyncio.ensure_future(
            tunnel(src.buffer, src, WriteHandoff.spawn(dst), splice=splice)
        )
        if not splice:
            await asyncio.get_running_loop().sock_sendall(src_peer, b"y" * (4 << 20))
        await asyncio.sleep(0.2)
        assert not tunnelling.done()
        dst.transport.close()
        async with asyncio.timeout(5):
            with pytest.raises(WriteIOError):
                await tunnelling
        dst.transport.abort()
        src.transport.abort()


@pytest.mark.asyncio
async def test_a_destination_backlog_goes_first_and_its_limits_are_restored() -> None:
    """The splice waits for the destination transport's own buffer first; it used to restore
    the write-buffer limits swapped (ValueError, none of the source's bytes forwarded)."""
    loop = asyncio.get_running_loop()
    src_peer, src = await _server_side()
    dst_peer, dst = await _client_side(rcvbuf=65536)
    assert dst.transport is not None and src.transport is not None
    limits = dst.transport.get_write_buffer_limits()
    backlog = b"b" * (4 << 20)
    payload = bytes(range(256)) * 400
    with src_peer, dst_peer:
        dst.transport.write(backlog)

        async def late_reader() -> bytes:
            await asyncio.sleep(0.1)
            return await recv_all(dst_peer)

        async def sender() -> None:
            await asyncio.sleep(0.2)
            await loop.sock_sendall(src_peer, payload)
            src_peer.shutdown(socket.SHUT_WR)

        reading = asyncio.ensure_future(late_reader())
        sending = asyncio.ensure_future(sender())
        async with asyncio.timeout(20):
            assert await tunnel(src.buffer, src, WriteHandoff.spawn(dst)) == len(payload)
            assert dst.transport.get_write_buffer_limits() == limits
            await sending
            dst.transport.close()
            assert await reading == backlog + payload
        src.transport.abort()


@pytest.mark.parametrize("how", ["close", "abort"])
@pytest.mark.asyncio
async def test_a_source_closed_while_its_tail_is_forwarded_is_an_error_not_an_end(
    how: str,
) -> None:
    """The tunnel took the local close for the peer's end of stream: it reported success and
    the destination saw a clean end, though the source's peer had more to send."""
    loop = asyncio.get_running_loop()
    src_peer, src = await _server_side()
    dst_peer, dst = await _client_side()
    assert dst.transport is not None and src.transport is not None
    with src_peer, dst_peer:
        await loop.sock_sendall(src_peer, b"t" * 60_000)
        while len(src.buffer) < 60_000:
            await src.read_available()
        dst.transport.write(b"x" * (8 << 20))  # the tail waits behind this
        tunnelling = asyncio.ensure_future(tunnel(src.buffer, src, WriteHandoff.spawn(dst)))
        await asyncio.sleep(0.2)
        assert not tunnelling.done()
        getattr(src.transport, how)()
        async with asyncio.timeout(5):
            with pytest.raises(BufferIOError):
                await tunnelling
        dst.transport.abort()


@pytest.mark.asyncio
async def test_a_copy_tunnel_reads_a_source_its_user_had_paused() -> None:
    """The tunnel owns the source from the call on: a pause_reading() before it hung it."""
    loop = asyncio.get_running_loop()
    src_peer, src = await _server_side()
    dst_peer, dst = await _client_side(rcvbuf=65536)
    assert dst.transport is not None and src.transport is not None
    with src_peer, dst_peer:
        src.pause_reading()
        await loop.sock_sendall(src_peer, b"after the pause")
        src_peer.shutdown(socket.SHUT_WR)
        async with asyncio.timeout(5):
            n = await tunnel(src.buffer, src, WriteHandoff.spawn(dst), splice=False)
            assert n == len(b"after the pause")
            dst.transport.close()
            assert await recv_all(dst_peer) == b"after the pause"
        src.transport.abort()


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.asyncio
async def test_a_tunnel_from_a_callback_style_source_reads_it_past_a_full_buffer(
    splice: bool,
) -> None:
    """A parser's ``on_data`` left set took the wake-ups of the tunnel's reads: a copy
    tunnel stalled once the source's buffer filled (found by a red-team pass)."""
    loop = asyncio.get_running_loop()
    src_peer, src = await _server_side()
    dst_peer, dst = await _client_side(rcvbuf=65536)
    assert dst.transport is not None and src.transport is not None
    src.on_data = lambda proto: None  # the parser, done: it leaves every byte buffered
    payload = bytes(range(256)) * (4 * src.buffer.max_len // 256 + 1)
    with src_peer, dst_peer:
        tunnelling = asyncio.ensure_future(
            tunnel(src.buffer, src, WriteHandoff.spawn(dst), splice=splice)
        )
        async with asyncio.timeout(10):
            await loop.sock_sendall(src_peer, payload)
            src_peer.shutdown(socket.SHUT_WR)
            got = bytearray()
            while len(got) < len(payload):
                chunk = await loop.sock_recv(dst_peer, 1 << 20)
                assert chunk, f"the destination ended after {len(got)} of {len(payload)} bytes"
                got += chunk
            assert await tunnelling == len(payload)
        assert bytes(got) == payload
        assert src.on_data is None
        src.transport.abort()
        dst.transport.abort()


@pytest.mark.parametrize("how", ["idle_timeout", "cancel"])
@pytest.mark.asyncio
async def test_a_timeout_or_cancel_while_the_backlog_drains_is_itself_and_restores_limits(
    how: str,
) -> None:
    src_peer, src = await _server_side()
    dst_peer, dst = await _client_side()
    assert dst.transport is not None and src.transport is not None
    limits = dst.transport.get_write_buffer_limits()
    with src_peer, dst_peer:
        dst.transport.write(b"x" * (8 << 20))
        idle = 0.2 if how == "idle_timeout" else None
        tunnelling = asyncio.ensure_future(
            tunnel(src.buffer, src, WriteHandoff.spawn(dst), idle_timeout=idle)
        )
        async with asyncio.timeout(5):
            if how == "cancel":
                await asyncio.sleep(0.2)
                tunnelling.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await tunnelling
                assert tunnelling.cancelled()
            else:
                with pytest.raises(TimeoutError):
                    await tunnelling
        assert dst.transport.get_write_buffer_limits() == limits
        dst.transport.abort()
        src.transport.abort()
