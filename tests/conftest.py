"""Shared test configuration for the library suite and the bench tests.

Every asyncio test (``@pytest.mark.asyncio``; the ini runs pytest-asyncio in
strict mode) runs twice: once on the standard library's event loop and once on
uvloop. The loop's name is part of the test id, e.g. ``test_x[asyncio]`` and
``test_x[uvloop]``. This uses pytest-asyncio's ``pytest_asyncio_loop_factories``
hook, the supported replacement for overriding ``event_loop_policy``.

The fixtures hand out connected endpoints that need no network beyond
127.0.0.1 and ephemeral ports: plain non-blocking socket pairs, TCP socket
pairs, and asyncio stream pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvloop

import net_support

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: Event loops every asyncio test runs on, by test-id name.
LOOP_FACTORIES: Mapping[str, LoopFactory] = {
    "asyncio": asyncio.SelectorEventLoop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """Parametrize every asyncio test over :data:`LOOP_FACTORIES`."""
    return LOOP_FACTORIES


SocketPair = tuple[socket.socket, socket.socket]


def _nonblocking(*socks: socket.socket) -> None:
    for sock in socks:
        sock.setblocking(False)


@pytest.fixture
def socket_pair() -> Iterator[SocketPair]:
    """Two connected non-blocking ``AF_UNIX`` stream sockets."""
    a, b = socket.socketpair()
    _nonblocking(a, b)
    with a, b:
        yield a, b


@pytest.fixture
def tcp_pair() -> Iterator[SocketPair]:
    """A connected non-blocking TCP (client, server) pair over 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    _nonblocking(client, server)
    with client, server:
        yield client, server


@pytest_asyncio.fixture
async def proxy_sockets() -> AsyncIterator[tuple[socket.socket, ...]]:
    """(client, proxy_in, proxy_out, sink): two connected non-blocking TCP pairs."""
    client, proxy_in = await net_support.tcp_pair()
    proxy_out, sink = await net_support.tcp_pair()
    yield client, proxy_in, proxy_out, sink
    for sock in (client, proxy_in, proxy_out, sink):
        sock.close()


@dataclass
class StreamPair:
    """Both ends of one TCP connection as asyncio streams."""

    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    server_reader: asyncio.StreamReader
    server_writer: asyncio.StreamWriter


@contextlib.asynccontextmanager
async def _open_stream_pair() -> AsyncIterator[StreamPair]:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client_reader, client_writer = await asyncio.open_connection("127.0.0.1", port)
        server_reader, server_writer = await accepted.get()
        try:
            yield StreamPair(client_reader, client_writer, server_reader, server_writer)
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def open_stream_pair() -> Callable[[], contextlib.AbstractAsyncContextManager[StreamPair]]:
    """``async with open_stream_pair() as streams:`` a connected asyncio stream pair."""
    return _open_stream_pair


async def _read_to_eof(source: socket.socket | Any) -> bytes:
    """Everything until end of stream from a non-blocking socket or anything with ``read(n)``."""
    loop = asyncio.get_running_loop()
    out = bytearray()
    while True:
        if isinstance(source, socket.socket):
            data = await loop.sock_recv(source, 65536)
        else:
            data = await source.read(65536)
        if not data:
            return bytes(out)
        out += data


@pytest.fixture
def read_to_eof() -> Callable[[Any], Any]:
    """``await read_to_eof(src)``: all bytes until EOF from a socket, StreamReader or duplex."""
    return _read_to_eof


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and 127.0.0.1, made now with openssl."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed to make a test certificate"
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def tls_contexts(tls_files: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(client, server) contexts for :func:`tls_files`' certificate, checked by the client."""
    cert, key = tls_files
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return client, server
