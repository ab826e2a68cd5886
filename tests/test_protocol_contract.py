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
import socket
import struct
from collections.abc import AsyncIterator

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
