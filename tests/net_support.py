"""Socket helpers shared by the library tests (loopback only)."""

from __future__ import annotations

import asyncio
import socket


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
