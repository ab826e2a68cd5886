"""``duplex_pair``: a bounded in-memory pipe with backpressure, EOF and broken pipes."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bytes_handoff import DuplexStream, duplex_pair

#: Bound on every wait inside a test: a hang fails fast instead of at the global timeout.
WAIT = 5.0

pytestmark = pytest.mark.asyncio


async def settle(rounds: int = 10) -> None:
    """Let every ready task run a few steps."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def started(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a task until it blocks; it must not have finished."""
    task = asyncio.ensure_future(coro)
    await settle()
    assert not task.done()
    return task


@pytest.mark.parametrize("capacity", [0, -1])
async def test_duplex_pair_needs_a_positive_capacity(capacity: int) -> None:
    async with asyncio.timeout(WAIT):
        with pytest.raises(ValueError, match=f"duplex capacity must be at least 1, got {capacity}"):
            duplex_pair(capacity)


async def test_both_directions_carry_bytes() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(16)
        assert (a.capacity, b.capacity) == (16, 16)
        await a.write(b"to b")
        await b.write(b"to a")
        assert await b.read() == b"to b"
        assert await a.read() == b"to a"


async def test_writer_waits_when_the_pipe_is_full() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(4)
        writing = await started(a.write(b"abcdefgh"))
        assert b.buffered_incoming == 4
        assert await b.read(100) == b"abcd"
        await writing
        assert await b.read(100) == b"efgh"


async def test_write_some_takes_only_what_fits() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(5)
        assert await a.write_some([b"abc", memoryview(b"defg")]) == 5
        assert await b.read() == b"abcde"
        assert await a.write_some([b"", b""]) == 0


async def read_exactly(stream: DuplexStream, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += await stream.read(n - len(out))
    return out


async def test_directions_apply_backpressure_independently() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(2)
        a_blocked = await started(a.write(b"full+"))
        b_blocked = await started(b.write(b"also+"))
        assert await b.read(100) == b"fu"  # drains a->b only
        await settle()
        assert not b_blocked.done()  # b->a is still full
        assert a.buffered_incoming == 2
        got_b = b"fu" + await read_exactly(b, 3)
        got_a = await read_exactly(a, 5)
        await asyncio.gather(a_blocked, b_blocked)
        assert (got_b, got_a) == (b"full+", b"also+")


async def test_reader_waits_for_data() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(8)
        reading = await started(b.read())
        await a.write(b"x")
        assert await reading == b"x"


async def test_shutdown_write_gives_eof_after_the_buffered_bytes() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(8)
        await a.write(b"last")
        a.shutdown_write()
        assert await b.read() == b"last"
        assert await b.read() == b""
        assert await b.read_into(memoryview(bytearray(4))) == 0
        await b.write(b"reply")  # the other direction stays open
        assert await a.read() == b"reply"


async def test_shutdown_write_wakes_a_waiting_reader() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(8)
        reading = await started(b.read())
        await a.shutdown()  # the writer-protocol spelling
        assert await reading == b""


async def test_write_after_shutdown_write_is_a_broken_pipe() -> None:
    async with asyncio.timeout(WAIT):
        a, _ = duplex_pair(8)
        a.shutdown_write()
        with pytest.raises(BrokenPipeError, match="write after shutdown_write") as info:
            await a.write(b"x")
        assert info.value.errno == errno.EPIPE  # a named errno, as the socket's own


@pytest.mark.parametrize("wait_first", [False, True], ids=["idle", "waiting-writer"])
async def test_writing_to_a_closed_peer_is_a_broken_pipe(wait_first: bool) -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(2)
        if wait_first:
            writing = await started(a.write(b"more than fits"))
            b.close()
            with pytest.raises(BrokenPipeError, match="peer closed its end"):
                await writing
        else:
            b.close()
            with pytest.raises(BrokenPipeError, match="peer closed its end") as info:
                await a.write(b"x")
            assert info.value.errno == errno.EPIPE


async def test_closing_an_endpoint_gives_the_peer_eof() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(8)
        await a.write(b"bye")
        a.close()
        assert await b.read() == b"bye"
        assert await b.read() == b""


@pytest.mark.parametrize("method", ["read", "read_into"])
async def test_a_read_waiting_on_an_end_closed_here_fails_like_a_closed_socket(
    method: str,
) -> None:
    async with asyncio.timeout(WAIT):
        a, _b = duplex_pair(8)
        read = a.read(8) if method == "read" else a.read_into(memoryview(bytearray(8)))
        reading = await started(read)
        a.close()
        with pytest.raises(OSError) as info:
            await reading
        assert info.value.errno == errno.EBADF
        with pytest.raises(OSError):  # and every later read
            await a.read(8)


async def test_zero_sized_reads_return_at_once() -> None:
    async with asyncio.timeout(WAIT):
        _, b = duplex_pair(8)
        assert await b.read(0) == b""
        assert await b.read_into(memoryview(bytearray())) == 0


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelled_reader_does_not_break_the_pipe() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(8)
        await cancel(await started(b.read()))
        waiting = await started(b.read())  # a second reader still gets woken
        await a.write(b"after")
        assert await waiting == b"after"


async def test_cancelled_writer_does_not_break_the_pipe() -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(4)
        await cancel(await started(a.write(b"0123456789")))  # wrote "0123", then waited
        assert await b.read() == b"0123"
        await a.write(b"next")
        assert await b.read() == b"next"


async def pump(src: DuplexStream, data: bytes) -> None:
    await src.write(data)
    src.shutdown_write()


async def test_large_transfer_through_a_tiny_pipe_is_exact(
    read_to_eof: Callable[[Any], Awaitable[bytes]],
) -> None:
    async with asyncio.timeout(WAIT):
        a, b = duplex_pair(3)
        data = bytes(range(256)) * 64
        received, _ = await asyncio.gather(read_to_eof(b), pump(a, data))
        assert received == data
