"""The safety contract on the protocol path, at the states where faults arrive.

Each test is one way a hostile or careless peer, or a careless caller, broke a
promise of the README's safety contract on ``HandoffProtocol`` /
``start_handoff_server`` / ``TransportWriter``: a wait that never ended, a
frozen loop, bytes that never arrived. The conformance suite
(``tests/test_conformance.py``) crosses the same states with every fault on
every reader and writer kind; these are the cases as they were found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bytes_handoff import (
    HandoffBufferConfig,
    HandoffProtocol,
    WriteError,
    WriteHandoff,
    WriteHandoffConfig,
    WriteIOError,
    start_handoff_server,
)

WAIT = 10.0
#: SO_LINGER on, 0 seconds: close() sends a reset instead of a FIN.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    sock.close()


@contextlib.asynccontextmanager
async def serving(handler: object, config: HandoffBufferConfig | None = None) -> AsyncIterator[int]:
    server = await start_handoff_server(handler, "127.0.0.1", 0, config=config)  # type: ignore[arg-type]
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def slow_client(port: int) -> socket.socket:
    """A connected client with a tiny receive window that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


# -- 1: a reset while writing is paused -----------------------------------------------------


@pytest.mark.parametrize("fault", ["peer_reset", "local_abort"])
@pytest.mark.asyncio
async def test_a_reset_while_writing_is_paused_fails_the_tickets_and_frees_the_loop(
    fault: str,
) -> None:
    """The peer never reads until the transport pauses writing, then resets (or we abort)."""
    paused = asyncio.Event()
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def handler(conn: HandoffProtocol) -> None:
        assert conn.transport is not None
        conn.transport.set_write_buffer_limits(high=64 * 1024)
        out = WriteHandoff.spawn(conn, WriteHandoffConfig(max_pending_bytes=256 * 1024))
        tickets = []
        try:
            while not conn._write_paused:
                tickets.append(await out.write(b"r" * 65536))
                await asyncio.sleep(0)
            tickets.append(await out.write(b"last" * 1024))
            paused.set()
            if fault == "local_abort":
                conn.transport.abort()
            for ticket in tickets:
                await ticket
        except WriteError as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)
        finally:
            out.abort()

    async with serving(handler) as port:
        client = await slow_client(port)
        async with asyncio.timeout(WAIT):
            await paused.wait()
            if fault == "peer_reset":
                reset(client)
            else:
                client.close()
            error = await outcome
    assert isinstance(error, WriteIOError), error
    if fault == "peer_reset":
        assert isinstance(error.__cause__, ConnectionError), repr(error.__cause__)


# -- 12: a handler that raises ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_failing_handler_is_logged_in_one_line_and_only_its_connection_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The README's echo server given a line longer than ``max_len``: ``LimitExceeded``."""

    async def echo(conn: HandoffProtocol) -> None:
        async with WriteHandoff.spawn(conn) as out:
            while await conn.read_available():
                while (line := conn.buffer.split_through(b"\n")) is not None:
                    await out.write_fire_and_forget(b"echo " + line)

    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    caplog.set_level(logging.INFO, logger="bytes_handoff")
    async with serving(echo, HandoffBufferConfig(max_len=1024)) as port:
        async with asyncio.timeout(WAIT):
            bad_r, bad_w = await asyncio.open_connection("127.0.0.1", port)
            good_r, good_w = await asyncio.open_connection("127.0.0.1", port)
            bad_w.write(b"x" * 200_000)  # no newline: the buffer fills
            # Closed by the server (a reset: it closed with the client's bytes unread).
            with contextlib.suppress(ConnectionResetError):
                assert await bad_r.read() == b""
            good_w.write(b"still served\n")
            assert await good_r.readline() == b"echo still served\n"
            good_w.close()
            bad_w.close()
    records = [r for r in caplog.records if r.name == "bytes_handoff"]
    assert len(records) == 1, records
    message = records[0].getMessage()
    assert "\n" not in message
    assert "LimitExceeded" in message and "1024" in message and "127.0.0.1:" in message
    assert not records[0].exc_info  # the traceback only at DEBUG level
    assert not unhandled  # no "Task exception was never retrieved"


# -- 2: the callback style resumes once there is room ----------------------------------------


@pytest.mark.asyncio
async def test_a_callback_consumer_that_drains_later_gets_every_byte() -> None:
    """``on_data`` leaves the bytes buffered; the consumer drains and resumes later."""
    protos: list[HandoffProtocol] = []

    def factory() -> HandoffProtocol:
        proto = HandoffProtocol(HandoffBufferConfig(max_len=1024), on_data=lambda p: None)
        protos.append(proto)
        return proto

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    payload = bytes(i % 251 for i in range(20_000))
    received = bytearray()
    async with server, asyncio.timeout(WAIT):
        _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(payload)
        writer.write_eof()
        while not protos:
            await asyncio.sleep(0.001)
        proto = protos[0]
        while len(received) < len(payload):
            await asyncio.sleep(0.005)  # the consumer works elsewhere, then drains
            assert len(proto.buffer) <= 1024
            received += proto.buffer.freeze_all()
            proto.resume_reading()
        writer.close()
    assert bytes(received) == payload


# -- 3: read_until cannot wait past a full buffer ----------------------------------------------


@pytest.mark.asyncio
async def test_read_until_on_a_full_buffer_raises_at_once_and_keeps_the_bytes() -> None:
    filled = asyncio.Event()
    results: list[object] = []

    async def handler(conn: HandoffProtocol) -> None:
        while len(conn.buffer) < conn.buffer.max_len:
            await conn.read_available()
        filled.set()
        try:
            await conn.read_until(b"\n", max_bytes=4 * conn.buffer.max_len)
        except asyncio.LimitOverrunError as exc:
            results.append(exc)
        results.append(conn.buffer.freeze_all())

    async with serving(handler, HandoffBufferConfig(max_len=1024)) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"y" * 5000)
        async with asyncio.timeout(WAIT):
            await filled.wait()
            while len(results) < 2:
                await asyncio.sleep(0.001)
        writer.close()
    error, kept = results
    assert isinstance(error, asyncio.LimitOverrunError)
    assert "1024" in str(error) and error.consumed == 1024
    assert kept == b"y" * 1024


# -- 4: bytes left after read_until / read_exactly are reported ----------------------------------


@pytest.mark.parametrize("first", ["read_until", "read_exactly_5", "read_exactly_0"])
@pytest.mark.asyncio
async def test_read_available_reports_the_bytes_a_head_read_left(first: str) -> None:
    results: list[object] = []

    async def handler(conn: HandoffProtocol) -> None:
        while len(conn.buffer) < 15:  # the whole segment arrived; nothing reported yet
            await asyncio.sleep(0.001)
        if first == "read_until":
            results.append(await conn.read_until(b"\n"))
        elif first == "read_exactly_5":
            results.append(await conn.read_exactly(5))
        else:
            results.append(await conn.read_exactly(0))
        left = len(conn.buffer)
        results.append(await conn.read_available() == left)
        results.append(conn.buffer.freeze_all())

    async with serving(handler) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD\nbody-bytes")  # one segment; the peer then stays quiet
        async with asyncio.timeout(WAIT):
            while len(results) < 3:
                await asyncio.sleep(0.001)
        writer.close()
    head, reported_at_once, body = results
    assert head + body == b"HEAD\nbody-bytes"  # type: ignore[operator]
    assert reported_at_once


# -- 5: read_until is linear for every separator type ---------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.asyncio
async def test_read_until_resumes_its_search_whatever_the_separator_type(kind: type) -> None:
    """A trickled head: each read must resume the last search, not rescan the buffer."""
    searched_from: list[int] = []
    results: list[bytes] = []

    class Resumed(HandoffProtocol):
        def __init__(self) -> None:
            super().__init__(HandoffBufferConfig(max_len=8192, read_reserve=64))

        def buffer_updated(self, nbytes: int) -> None:
            super().buffer_updated(nbytes)
            buf = self.buffer
            # Where the next search for the separator will start (the remembered scan).
            searched_from.append(max(buf._scan_at, buf._start) if buf._scan_sep else 0)

    loop = asyncio.get_running_loop()
    protos: list[Resumed] = []
    server = await loop.create_server(
        lambda: protos.append(Resumed()) or protos[-1], "127.0.0.1", 0
    )
    head = b"h" * 3000 + b"\r\n\r\n"
    async with server, asyncio.timeout(WAIT):
        client = socket.create_connection(server.sockets[0].getsockname())
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not protos:
            await asyncio.sleep(0.001)
        reading = asyncio.create_task(protos[0].read_until(kind(b"\r\n\r\n")))
        for i in range(0, len(head), 100):
            client.send(head[i : i + 100])
            await asyncio.sleep(0.002)
        results.append(await reading)
        client.close()
    assert results == [head]
    # Linear: the search start follows the data, instead of staying at the front.
    assert max(searched_from) >= len(head) - 200, searched_from[-5:]


# -- 11: back-pressure in the callback style (the README's Router) ------------------------------


def readme_router() -> type[HandoffProtocol]:
    """The README's protocol-path example, run as written (its ``main`` is not called)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "class Router" in b)
    namespace: dict[str, object] = {"__name__": "readme_router"}
    exec(code, namespace)
    router = namespace["Router"]
    assert isinstance(router, type) and issubclass(router, HandoffProtocol)
    return router


#: Made at import, not on a test's loop: 300,000 lines take long enough to block it.
ROUTER_FIRST = b"".join(b"line %04d\n" % i for i in range(1500))
ROUTER_REST = b"".join(b"more %04d\n" % (i % 10_000) for i in range(300_000))  # 3 MB


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.asyncio
async def test_the_readme_router_applies_back_pressure_to_a_client_that_does_not_read(
    tls: bool, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """1,500 ten-byte lines in one write (and then far more) from a client that reads later."""
    client_ctx, server_ctx = tls_contexts
    routers: list[HandoffProtocol] = []

    class SmallSendBuffer(readme_router()):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # Small kernel buffers, so that a 3 MB stream cannot all hide in them.
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
            super().connection_made(transport)

    def factory() -> HandoffProtocol:
        routers.append(SmallSendBuffer())
        return routers[-1]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx if tls else None)
    first, rest = ROUTER_FIRST, ROUTER_REST
    async with server, asyncio.timeout(WAIT * 3):
        sock = await slow_client(server.sockets[0].getsockname()[1])
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=client_ctx if tls else None,
            server_hostname="localhost" if tls else None,
        )
        writer.write(first)
        await writer.drain()
        sending = asyncio.create_task(send_then_eof(writer, rest))
        while not routers or not routers[0]._paused_for_room:
            await asyncio.sleep(0.005)  # nobody reads: the write queue fills and reading stops
        proto = routers[0]
        assert len(proto.buffer) <= proto.buffer.max_len
        assert proto.out.pending_bytes <= proto.out.config.max_pending_bytes  # type: ignore[attr-defined]
        assert not proto.closed
        echoed = await reader.readexactly(len(first + rest))  # now read everything
        await sending
        writer.close()
    assert echoed == first + rest


async def send_then_eof(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    if writer.can_write_eof():  # TLS cannot half-close
        writer.write_eof()
