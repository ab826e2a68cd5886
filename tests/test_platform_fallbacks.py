"""The library on platforms without Linux's extras, simulated on Linux.

* No ``os.splice`` (macOS, Windows): ``tunnel()`` takes the copy path and
  still forwards every byte, in order.
* No ``socket.sendmsg`` (Windows): the socket writer sends the first non-empty
  chunk with ``send``; ``WriteHandoff`` resumes partial sends, so every byte
  still arrives, in order.
* No POSIX-only modules (``fcntl``, ``termios``, ``resource``...): importing
  ``bytes_handoff`` still works.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

import bytes_handoff.raw_tunnel as tunnel_module
from bytes_handoff import (
    WriteHandoff,
    WriteHandoffConfig,
    as_writer,
    splice_supported,
)
from bytes_handoff.adapters import SocketSendWriter, SocketWriter
from net_support import recv_all, route_then_tunnel, tcp_pair

PAYLOAD = bytes((i * 13 + 5) % 251 for i in range(1024 * 1024 + 31))
HEAD = b"GET /a\nGET /b\nTUNNEL\n"

#: The most one simulated ``send`` takes: every chunk larger than this is a partial send.
SEND_CAP = 3000


class NoSendmsgSocket(socket.socket):
    """A socket as on Windows: no ``sendmsg``; ``send`` takes at most ``SEND_CAP`` bytes."""

    sends = 0

    @property
    def sendmsg(self) -> None:  # type: ignore[override]
        raise AttributeError("sendmsg")

    def send(self, data: object, flags: int = 0) -> int:
        type(self).sends += 1
        with memoryview(data) as view:  # type: ignore[arg-type]
            return super().send(view.cast("B")[:SEND_CAP], flags)


def _without_sendmsg(sock: socket.socket) -> NoSendmsgSocket:
    """The same connection as ``sock``, as a :class:`NoSendmsgSocket` (``sock`` is detached)."""
    family, kind, proto = sock.family, sock.type, sock.proto
    wrapped = NoSendmsgSocket(family, kind, proto, fileno=sock.detach())
    wrapped.setblocking(False)
    return wrapped


@pytest.fixture
def no_splice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``os.splice`` gone, as on macOS and Windows; the splice path must not be entered."""
    monkeypatch.delattr(os, "splice", raising=False)

    async def no_splice_path(*args: object) -> int:
        raise AssertionError("splice path used where os.splice does not exist")

    monkeypatch.setattr(tunnel_module, "_splice", no_splice_path)
    yield


def test_the_writer_is_chosen_once_at_construction() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        assert type(SocketWriter(a)) is SocketWriter
        assert type(as_writer(a)) is SocketWriter
        plain = _without_sendmsg(a)
        with plain:
            assert not hasattr(plain, "sendmsg")
            assert type(SocketWriter(plain)) is SocketSendWriter
            assert type(as_writer(plain)) is SocketSendWriter
            assert isinstance(as_writer(plain), SocketWriter)


@pytest.mark.asyncio
async def test_write_handoff_without_sendmsg_delivers_every_byte_in_order() -> None:
    client, server = await tcp_pair()
    sender = _without_sendmsg(client)
    # Empty chunks, memoryviews, bytearrays, chunks above SEND_CAP (partial sends)
    # and more than the socket buffer holds (waits for a writable socket).
    pieces: list[bytes | bytearray | memoryview] = []
    expected = bytearray()
    offset = 0
    sizes = [0, 1, SEND_CAP - 1, SEND_CAP, SEND_CAP + 1, 0, 70_000, 5, 200_000]
    i = 0
    while offset < len(PAYLOAD):
        size = min(sizes[i % len(sizes)], len(PAYLOAD) - offset)
        data = PAYLOAD[offset : offset + size]
        piece: bytes | bytearray | memoryview = (
            memoryview(data) if i % 3 == 0 else bytearray(data) if i % 3 == 1 else data
        )
        pieces.append(piece)
        expected += data
        offset += size
        i += 1
    NoSendmsgSocket.sends = 0
    with sender, server:
        async with asyncio.timeout(30):
            received = asyncio.create_task(recv_all(server))
            handoff = WriteHandoff.spawn(sender, WriteHandoffConfig(16, 256 * 1024))
            assert type(handoff.writer) is SocketSendWriter
            tickets = [await handoff.write(piece) for piece in pieces[:10]]
            for piece in pieces[10:]:
                await handoff.write_fire_and_forget(piece)
            await handoff.aclose()
            for ticket in tickets:
                await ticket
            data = await received
    assert data == expected
    assert NoSendmsgSocket.sends >= len(PAYLOAD) // SEND_CAP


@pytest.mark.parametrize("sink", ["sendmsg", "send"])
@pytest.mark.asyncio
async def test_tunnel_without_splice_copies_every_byte_in_order(
    no_splice: None, proxy_sockets: tuple[socket.socket, ...], sink: str
) -> None:
    assert not splice_supported()
    client, proxy_in, proxy_out, receiver = proxy_sockets
    if sink == "send":  # Windows: neither splice nor sendmsg
        proxy_out = _without_sendmsg(proxy_out)
    stream = HEAD + PAYLOAD
    loop = asyncio.get_running_loop()

    async def send_all() -> None:
        for i in range(0, len(stream), 10_000):
            await loop.sock_sendall(client, stream[i : i + 10_000])
        client.shutdown(socket.SHUT_WR)

    with proxy_out:
        async with asyncio.timeout(30):
            sender = asyncio.create_task(send_all())
            received = asyncio.create_task(recv_all(receiver))
            forwarded = await route_then_tunnel(proxy_in, proxy_out)
            await sender
            data = await received
    assert forwarded == len(stream)
    assert data == stream


def test_import_works_without_posix_only_modules() -> None:
    """Every POSIX-only module made unimportable, ``os.splice`` gone: the package imports."""
    code = "\n".join(
        [
            "import os, sys",
            "for name in ('fcntl', 'termios', 'tty', 'pty', 'resource', 'pwd', 'grp', 'syslog'):",
            "    sys.modules[name] = None",
            "if hasattr(os, 'splice'):",
            "    del os.splice",
            "import bytes_handoff",
            "from bytes_handoff import *",
            "assert not bytes_handoff.splice_supported()",
            "print(bytes_handoff.__version__)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    import bytes_handoff

    assert result.stdout.strip() == bytes_handoff.__version__
