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
import functools
import inspect
import json
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvloop

import net_support
from bytes_handoff_bench.certs import make_certificate

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: Event loops every asyncio test runs on, by test-id name.
LOOP_FACTORIES: Mapping[str, LoopFactory] = {
    "asyncio": asyncio.SelectorEventLoop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """Parametrize every asyncio test over :data:`LOOP_FACTORIES`."""
    return LOOP_FACTORIES


# -- the loop is never blocked ----------------------------------------------------------------

#: The longest the event loop may go without running the heartbeat, in any asyncio test.
HEARTBEAT_LIMIT = 0.25
#: How often the heartbeat asks to run.
HEARTBEAT_PERIOD = 0.02


def _runqueue_seconds() -> float:
    """How long this thread has waited for a CPU in all (Linux schedstat; 0 elsewhere).

    On a loaded machine the kernel can keep a process off the CPU for a few hundred
    milliseconds: that is not the loop being blocked, and is taken out of each gap.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class _Heartbeat:
    """When the loop last ran the heartbeat, and the longest wait for it so far
    (module state: one test runs at a time)."""

    last = 0.0
    last_waited = 0.0
    longest = 0.0

    @classmethod
    def restart(cls) -> None:
        cls.last = time.monotonic()
        cls.last_waited = _runqueue_seconds()

    @classmethod
    def tick(cls) -> None:
        now, waited = time.monotonic(), _runqueue_seconds()
        gap = (now - cls.last) - (waited - cls.last_waited) - HEARTBEAT_PERIOD
        cls.longest = max(cls.longest, gap)
        cls.last, cls.last_waited = now, waited


def _beside_heartbeat(test: Callable[..., Any]) -> Callable[..., Any]:
    """``test`` timed from its first step to its last: only the test's own time counts
    (fixtures and, for Hypothesis, the engine between examples run outside the loop)."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        _Heartbeat.restart()
        try:
            return await test(*args, **kwargs)
        finally:
            _Heartbeat.tick()  # a block just before the end counts too

    run.beside_heartbeat = True  # type: ignore[attr-defined]
    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every asyncio test runs beside :func:`loop_heartbeat`."""
    for item in items:
        if item.get_closest_marker("asyncio") is None or not isinstance(item, pytest.Function):
            continue
        item.fixturenames.insert(0, "loop_heartbeat")
        hyp = getattr(item.obj, "hypothesis", None)
        if hyp is not None:  # Hypothesis runs each example in the loop: time each one
            if not hasattr(hyp.inner_test, "beside_heartbeat"):
                hyp.inner_test = _beside_heartbeat(hyp.inner_test)
        elif inspect.iscoroutinefunction(item.obj):
            item.obj = _beside_heartbeat(item.obj)


@pytest_asyncio.fixture
async def loop_heartbeat(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail the test if its event loop went more than :data:`HEARTBEAT_LIMIT` without a turn.

    A frozen loop (a spin that never yields, a blocking call) serves nobody:
    the library promises it never happens, whatever the peer does. Tests keep
    their own heavy work (making large payloads) off the loop too. Time the
    kernel kept the thread waiting for a CPU does not count (a loaded machine).
    """
    _Heartbeat.longest = 0.0

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_PERIOD)
            _Heartbeat.tick()

    task = asyncio.create_task(beat())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    longest = _Heartbeat.longest
    record = os.environ.get("HEARTBEAT_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as out:
            out.write(json.dumps([request.node.nodeid, round(longest, 4)]) + "\n")
    else:
        assert longest <= HEARTBEAT_LIMIT, (
            f"the event loop was blocked for {longest * 1000:.0f} ms"
            f" (limit {HEARTBEAT_LIMIT * 1000:.0f} ms)"
        )


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
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_contexts(tls_files: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(client, server) contexts for :func:`tls_files`' certificate, checked by the client."""
    cert, key = tls_files
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return client, server
