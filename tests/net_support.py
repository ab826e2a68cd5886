"""Socket helpers shared by the library tests (loopback only)."""

from __future__ import annotations

import asyncio
import socket

from bytes_handoff import HandoffBuffer, WriteHandoff, WriteHandoffConfig, tunnel


async def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of non-blocking TCP sockets on 127.0.0.1: (client, server)."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        connect = loop.create_task(loop.sock_connect(client, listener.getsockname()))
        server, _ = await loop.sock_accept(listener)
        await connect
    server.setblocking(False)
    return client, server


async def recv_all(sock: socket.socket) -> bytes:
    """Everything until end of stream from a non-blocking socket."""
    loop = asyncio.get_running_loop()
    out = bytearray()
    while chunk := await loop.sock_recv(sock, 65536):
        out += chunk
    return bytes(out)


async def route_then_tunnel(
    proxy_in: socket.socket, proxy_out: socket.socket, *, splice: bool = True
) -> int:
    """Route lines until ``TUNNEL``, then ``tunnel()`` the rest: the harness's handoff shape."""
    buf = HandoffBuffer(64 * 1024, read_reserve=4096)
    handoff = WriteHandoff.spawn(proxy_out, WriteHandoffConfig(64, 8192))
    routed = 0
    while True:
        assert await buf.read_available(proxy_in) > 0
        while (end := buf.find(b"\n")) >= 0:
            frame = buf.split_prefix(end + 1)
            routed += len(frame)
            await handoff.write_fire_and_forget(frame)
            if frame == b"TUNNEL\n":
                return routed + await tunnel(buf, proxy_in, handoff, splice=splice)
