"""``WriteHandoff``: queueing, backpressure, tickets, batching, closing and writer failures."""

from __future__ import annotations

import array
import asyncio
import itertools
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import pytest

from bytes_handoff import (
    BackpressureReason,
    ByteBudgetExceeded,
    BytesLike,
    WriteBackpressure,
    WriteClosed,
    WriteError,
    WriteHandoff,
    WriteHandoffConfig,
    WriteIOError,
    WriteTicket,
    duplex_pair,
)

#: Bound on every wait inside a test: a hang fails fast instead of at the global timeout.
WAIT = 5.0
MiB = 1024 * 1024


class ScriptedWriter:
    """An in-memory writer that records what it was given.

    ``gate`` (set by default) holds every ``write_some`` until it is set;
    ``max_per_call`` caps what one call accepts; ``rng`` makes each call accept
    a random 1..total bytes; ``fail_after`` accepts that many bytes in total and
    then raises ``BrokenPipeError``; ``observe`` is called at the start of every
    call and its results are kept in ``observed``.
    """

    def __init__(
        self,
        *,
        max_per_call: int | None = None,
        rng: random.Random | None = None,
        fail_after: int | None = None,
        shutdown_error: OSError | None = None,
        observe: Callable[[], object] | None = None,
    ) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.max_per_call = max_per_call
        self.rng = rng
        self.fail_after = fail_after
        self.shutdown_error = shutdown_error
        self.received = bytearray()
        self.calls: list[tuple[int, bytes]] = []  # (stream offset, joined chunks offered)
        self.batches: list[list[bytes]] = []
        self.shutdowns = 0
        self.observe = observe
        self.observed: list[object] = []

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        if self.observe is not None:
            self.observed.append(self.observe())
        await self.gate.wait()
        await asyncio.sleep(0)
        offered = [bytes(memoryview(c).cast("B")) for c in chunks]
        joined = b"".join(offered)
        self.batches.append(offered)
        self.calls.append((len(self.received), joined))
        n = len(joined)
        if self.rng is not None:
            n = self.rng.randint(1, n)
        if self.max_per_call is not None:
            n = min(n, self.max_per_call)
        if self.fail_after is not None:
            n = min(n, self.fail_after - len(self.received))
            if n <= 0:
                raise BrokenPipeError(32, "scripted writer failure")
        self.received += joined[:n]
        return n

    async def shutdown(self) -> None:
        self.shutdowns += 1
        if self.shutdown_error is not None:
            raise self.shutdown_error


async def settle(rounds: int = 10) -> None:
    """Let every ready task run a few steps."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def spawn(
    writer: ScriptedWriter | None = None, max_items: int = 1024, max_pending_bytes: int = MiB
) -> tuple[WriteHandoff, ScriptedWriter]:
    writer = writer or ScriptedWriter()
    return WriteHandoff.spawn(writer, WriteHandoffConfig(max_items, max_pending_bytes)), writer


async def expect_error(ticket: WriteTicket) -> WriteError:
    """The error the ticket fails with (fails the test if it is written)."""
    with pytest.raises(WriteError) as info:
        await ticket
    return info.value


# -- configuration ------------------------------------------------------------------------


def test_config_defaults() -> None:
    assert WriteHandoffConfig() == WriteHandoffConfig(max_items=1024, max_pending_bytes=MiB)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_items": 0}, "max_items must be at least 1, got 0"),
        ({"max_pending_bytes": 0}, "max_pending_bytes must be at least 1, got 0"),
    ],
)
def test_config_rejects_zero_bounds(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WriteHandoffConfig(**kwargs)


@pytest.mark.asyncio
async def test_spawn_without_config_uses_the_defaults() -> None:
    async with asyncio.timeout(WAIT):
        handoff = WriteHandoff.spawn(ScriptedWriter())
        assert handoff.config == WriteHandoffConfig()
        await handoff.aclose()


# -- try_write, tickets, pending bytes -------------------------------------------------------


@pytest.mark.asyncio
async def test_ticket_resolves_once_the_chunk_is_written() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        writer.gate.clear()
        ticket = handoff.try_write(b"abc")
        await settle()
        assert not ticket.done()
        assert repr(ticket) == "<WriteTicket pending>"
        writer.gate.set()
        await ticket
        assert ticket.done()
        assert ticket.error() is None
        assert repr(ticket) == "<WriteTicket written>"
        assert writer.received == b"abc"


@pytest.mark.asyncio
async def test_ticket_wait_and_await_are_equivalent() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        first, second = handoff.try_write(b"1"), handoff.try_write(b"2")
        await first.wait()
        await second
        await first  # awaiting a resolved ticket again is fine
        assert writer.received == b"12"


@pytest.mark.asyncio
async def test_cancelling_one_ticket_waiter_does_not_disturb_another() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        writer.gate.clear()
        ticket = handoff.try_write(b"x")
        cancelled = asyncio.create_task(ticket.wait())
        patient = asyncio.create_task(ticket.wait())
        await settle()
        cancelled.cancel()
        writer.gate.set()
        await patient
        assert cancelled.cancelled()


@pytest.mark.asyncio
async def test_pending_bytes_counts_accepted_unwritten_bytes() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        writer.gate.clear()
        ints = memoryview(array.array("i", [1, 2, 3]))
        handoff.try_write(b"abc")
        handoff.try_write_fire_and_forget(bytearray(b"de"))
        ticket = handoff.try_write(ints)
        assert handoff.pending_bytes == 5 + ints.nbytes
        assert handoff.queued_items == 3
        writer.gate.set()
        await ticket
        assert handoff.pending_bytes == 0
        assert writer.received == b"abcde" + ints.tobytes()


@pytest.mark.asyncio
async def test_pending_bytes_drop_as_partial_writes_land() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(ScriptedWriter(max_per_call=4))
        writer.gate.clear()
        handoff.try_write(b"0123456789")
        await settle()
        seen = []
        for _ in range(3):
            writer.gate.set()
            await asyncio.sleep(0)
            writer.gate.clear()
            await settle()
            seen.append(handoff.pending_bytes)
        assert seen == [6, 2, 0]


# -- backpressure --------------------------------------------------------------------------

TRY_WRITES = {
    "try_write": WriteHandoff.try_write,
    "try_write_fire_and_forget": WriteHandoff.try_write_fire_and_forget,
}
try_write_variants = pytest.mark.parametrize("try_write", TRY_WRITES.values(), ids=TRY_WRITES)


def refused(
    try_write: Callable[[WriteHandoff, BytesLike], object], handoff: WriteHandoff, data: BytesLike
) -> WriteBackpressure:
    pending, items = handoff.pending_bytes, handoff.queued_items
    with pytest.raises(WriteBackpressure) as info:
        try_write(handoff, data)
    assert info.value.into_bytes() is data
    assert (handoff.pending_bytes, handoff.queued_items) == (pending, items)
    return info.value


@try_write_variants
@pytest.mark.asyncio
async def test_try_write_refuses_a_full_queue(try_write: Callable[..., object]) -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_items=2)
        try_write(handoff, b"a")
        try_write(handoff, b"b")
        error = refused(try_write, handoff, bytearray(b"c"))
        assert (error.reason, error.attempted, error.limit) == (BackpressureReason.QUEUE_FULL, 3, 2)
        assert str(error) == "write refused: queue full (3 items attempted, limit 2)"
        await handoff.aclose()
        assert writer.received == b"ab"


@try_write_variants
@pytest.mark.asyncio
async def test_try_write_refuses_past_the_byte_budget(try_write: Callable[..., object]) -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_pending_bytes=10)
        try_write(handoff, b"12345678")
        error = refused(try_write, handoff, memoryview(b"abc"))
        assert (error.reason, error.attempted, error.limit) == (
            BackpressureReason.BYTE_BUDGET_EXCEEDED,
            11,
            10,
        )
        assert str(error) == (
            "write refused: byte budget exceeded (11 pending bytes attempted, limit 10)"
        )
        await handoff.aclose()
        assert writer.received == b"12345678"


@try_write_variants
@pytest.mark.asyncio
async def test_try_write_refuses_a_chunk_larger_than_the_budget(
    try_write: Callable[..., object],
) -> None:
    async with asyncio.timeout(WAIT):
        handoff, _ = spawn(max_pending_bytes=10)
        error = refused(try_write, handoff, b"x" * 11)
        assert (error.reason, error.attempted, error.limit) == (
            BackpressureReason.BYTE_BUDGET_EXCEEDED,
            11,
            10,
        )
        await handoff.aclose()


@try_write_variants
@pytest.mark.asyncio
async def test_try_write_refuses_after_close(try_write: Callable[..., object]) -> None:
    async with asyncio.timeout(WAIT):
        handoff, _ = spawn()
        handoff.close()
        error = refused(try_write, handoff, b"late")
        assert (error.reason, error.attempted, error.limit) == (
            BackpressureReason.CLOSED,
            None,
            None,
        )
        assert str(error) == "write refused: handoff is closed"
        await handoff.aclose()


# -- waiting writes --------------------------------------------------------------------------

WRITES = {
    "write": WriteHandoff.write,
    "write_fire_and_forget": WriteHandoff.write_fire_and_forget,
}
write_variants = pytest.mark.parametrize("write", WRITES.values(), ids=WRITES)
Write = Callable[[WriteHandoff, BytesLike], Coroutine[Any, Any, object]]


@write_variants
@pytest.mark.asyncio
async def test_write_waits_for_byte_budget(write: Write) -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_pending_bytes=10)
        writer.gate.clear()
        await write(handoff, b"12345678")
        waiting = asyncio.create_task(write(handoff, b"abcde"))
        await settle()
        assert not waiting.done()
        assert handoff.pending_bytes == 8
        writer.gate.set()
        await waiting
        await handoff.aclose()
        assert writer.received == b"12345678abcde"


@write_variants
@pytest.mark.asyncio
async def test_write_waits_for_queue_room(write: Write) -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_items=1)
        writer.gate.clear()
        await write(handoff, b"a")
        await settle()  # the writer took "a" and waits inside write_some
        await write(handoff, b"b")
        waiting = asyncio.create_task(write(handoff, b"c"))
        await settle()
        assert not waiting.done()
        writer.gate.set()
        await waiting
        await handoff.aclose()
        assert writer.received == b"abc"


@write_variants
@pytest.mark.asyncio
async def test_write_of_a_chunk_over_the_budget_raises_at_once(write: Write) -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_items=1, max_pending_bytes=10)
        writer.gate.clear()  # nothing will ever make room: the write must not wait
        await write(handoff, b"queued")
        await write(handoff, b"full")
        with pytest.raises(ByteBudgetExceeded) as info:
            await write(handoff, b"x" * 11)
        assert (info.value.attempted, info.value.limit) == (11, 10)
        assert str(info.value) == "chunk of 11 bytes exceeds the write budget of 10 pending bytes"
        handoff.abort()


@write_variants
@pytest.mark.asyncio
async def test_write_after_close_raises_write_closed(write: Write) -> None:
    async with asyncio.timeout(WAIT):
        handoff, _ = spawn()
        handoff.close()
        with pytest.raises(WriteClosed, match="write handoff is closed"):
            await write(handoff, b"late")
        await handoff.aclose()


@write_variants
@pytest.mark.asyncio
async def test_close_releases_producers_waiting_for_room(write: Write) -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_pending_bytes=4)
        writer.gate.clear()
        await write(handoff, b"full")
        waiting = asyncio.create_task(write(handoff, b"more"))
        await settle()
        handoff.close()
        with pytest.raises(WriteClosed):
            await waiting
        writer.gate.set()
        await handoff.aclose()
        assert writer.received == b"full"


@pytest.mark.asyncio
async def test_cancelled_producer_waiting_for_budget_leaks_no_budget() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_pending_bytes=10)
        writer.gate.clear()
        first = await handoff.write(b"0123456789")
        waiting = asyncio.create_task(handoff.write(b"never"))
        await settle()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert handoff.pending_bytes == 10
        writer.gate.set()
        await first
        assert handoff.pending_bytes == 0
        # The whole budget is usable again, at once and by waiting writes.
        handoff.try_write(b"A" * 10)
        last = await handoff.write(b"B" * 10)
        await last
        assert writer.received == b"0123456789" + b"A" * 10 + b"B" * 10


# -- closing ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_close_still_writes_what_is_queued() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        tickets = [handoff.try_write(b"%d," % i) for i in range(5)]
        handoff.close()
        assert handoff.closed
        for ticket in tickets:
            await ticket
        await handoff.aclose()
        assert writer.received == b"0,1,2,3,4,"


async def close_by_aclose(handoff: WriteHandoff, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await handoff.write_fire_and_forget(chunk)
    await handoff.aclose()


async def close_by_async_with(handoff: WriteHandoff, chunks: list[bytes]) -> None:
    async with handoff as entered:
        assert entered is handoff
        for chunk in chunks:
            await entered.write_fire_and_forget(chunk)


@pytest.mark.parametrize("close", [close_by_aclose, close_by_async_with])
@pytest.mark.asyncio
async def test_closing_flushes_and_shuts_the_write_side(
    close: Callable[[WriteHandoff, list[bytes]], Awaitable[None]],
    read_to_eof: Callable[[object], Awaitable[bytes]],
) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = duplex_pair(8)
        handoff = WriteHandoff.spawn(ours, WriteHandoffConfig(max_items=4, max_pending_bytes=16))
        chunks = [b"chunk-%02d;" % i for i in range(20)]
        received, _ = await asyncio.gather(read_to_eof(peer), close(handoff, chunks))
        assert received == b"".join(chunks)  # EOF came after every queued byte
        assert handoff.pending_bytes == 0


@pytest.mark.asyncio
async def test_aclose_calls_shutdown_once_after_the_last_write() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        handoff.try_write(b"data")
        await handoff.aclose()
        assert writer.shutdowns == 1
        assert writer.received == b"data"


@pytest.mark.asyncio
async def test_aclose_raises_the_first_write_error_every_time() -> None:
    async with asyncio.timeout(WAIT):
        handoff, _ = spawn(ScriptedWriter(fail_after=0))
        handoff.try_write_fire_and_forget(b"doomed")
        with pytest.raises(WriteIOError) as first:
            await handoff.aclose()
        with pytest.raises(WriteIOError) as again:
            await handoff.aclose()
        assert isinstance(first.value.__cause__, BrokenPipeError)
        assert again.value is first.value


@pytest.mark.asyncio
async def test_aclose_surfaces_a_failing_shutdown() -> None:
    async with asyncio.timeout(WAIT):
        failure = OSError(5, "shutdown failed")
        handoff, _ = spawn(ScriptedWriter(shutdown_error=failure))
        handoff.try_write(b"written")
        with pytest.raises(WriteIOError) as info:
            await handoff.aclose()
        assert info.value.error is failure
        assert info.value.__cause__ is failure


@pytest.mark.asyncio
async def test_cancelling_aclose_aborts_so_a_stuck_writer_cannot_hold_it_open() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        writer.gate.clear()
        ticket = handoff.try_write(b"never written")
        closing = asyncio.create_task(handoff.aclose())
        await settle()
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        with pytest.raises(WriteClosed, match="aborted"):
            await ticket
        writer.gate.set()
        await handoff.aclose()  # already aborted: returns, no I/O error to report
        assert writer.received == b""
        assert writer.shutdowns == 0


# -- abort -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_abort_fails_in_flight_and_queued_tickets_with_write_closed() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_pending_bytes=8)
        writer.gate.clear()
        in_flight = handoff.try_write(b"abc")
        await settle()
        queued = handoff.try_write(b"defgh")
        producer = asyncio.create_task(handoff.write(b"blocked"))
        await settle()
        handoff.abort()
        for ticket in (in_flight, queued):
            error = await expect_error(ticket)
            assert type(error) is WriteClosed
            assert str(error) == "write handoff aborted"
        with pytest.raises(WriteClosed):
            await producer
        await handoff.aclose()  # returns: aborting is not a write error
        assert handoff.closed
        assert handoff.pending_bytes == 0
        assert writer.received == b""


@pytest.mark.asyncio
async def test_abort_before_the_writer_task_ever_ran_fails_queued_tickets() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        ticket = handoff.try_write(b"never written")
        handoff.abort()
        assert type(await expect_error(ticket)) is WriteClosed
        await handoff.aclose()
        assert writer.received == b""


@pytest.mark.asyncio
async def test_abort_inside_async_with_does_not_look_like_cancellation() -> None:
    async with asyncio.timeout(WAIT):
        handoff, _ = spawn()
        async with handoff:
            handoff.try_write_fire_and_forget(b"x")
            handoff.abort()
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0


# -- batching and partial writes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "size", "expected_batches"),
    [
        (200, 10, [64, 64, 64, 8]),  # the item bound
        (40, 64 * 1024, [16, 16, 8]),  # the byte bound: 16 x 64 KiB = 1 MiB
        (3, 3 * MiB, [1, 1, 1]),  # a batch always takes at least one chunk
    ],
)
@pytest.mark.asyncio
async def test_batches_hold_at_most_64_chunks_or_1_mib(
    count: int, size: int, expected_batches: list[int]
) -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_items=count, max_pending_bytes=count * size)
        chunks = [bytes([i % 251]) * size for i in range(count)]
        for chunk in chunks:  # all queued before the writer task runs once
            handoff.try_write_fire_and_forget(chunk)
        await handoff.aclose()
        assert [len(batch) for batch in writer.batches] == expected_batches
        assert [c for batch in writer.batches for c in batch] == chunks


@pytest.mark.asyncio
async def test_a_batch_stops_at_the_first_chunk_that_reaches_1_mib() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(max_pending_bytes=4 * MiB)
        sizes = [MiB - 10, 5, 20, 7]  # 1 MiB - 5 before the third chunk: it still goes in
        for size in sizes:
            handoff.try_write_fire_and_forget(b"z" * size)
        await handoff.aclose()
        assert [[len(c) for c in batch] for batch in writer.batches] == [sizes[:3], sizes[3:]]


@pytest.mark.asyncio
async def test_empty_chunks_complete_without_reaching_the_writer() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn()
        tickets = [handoff.try_write(b""), handoff.try_write(b"")]
        for ticket in tickets:
            await ticket
        mixed = [handoff.try_write(b""), handoff.try_write(b"a"), handoff.try_write(b"")]
        for ticket in mixed:
            await ticket
        await handoff.aclose()
        assert writer.received == b"a"
        assert [b"".join(batch) for batch in writer.batches] == [b"a"]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.asyncio
async def test_partial_writes_resume_at_the_exact_byte(seed: int) -> None:
    async with asyncio.timeout(WAIT):
        rng = random.Random(seed)
        chunks: list[BytesLike] = []
        for i in range(60):
            data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
            variants: list[BytesLike] = [data, bytearray(data), memoryview(data)]
            chunks.append(variants[i % 3])
        chunks.append(memoryview(array.array("i", range(10))))  # a multi-byte item format
        stream = b"".join(memoryview(c).cast("B") for c in chunks)
        ends = list(itertools.accumulate(memoryview(c).nbytes for c in chunks))

        tickets: list[WriteTicket] = []
        writer = ScriptedWriter(
            rng=random.Random(seed), observe=lambda: [t.done() for t in tickets]
        )
        handoff, _ = spawn(writer)
        tickets += [handoff.try_write(chunk) for chunk in chunks]
        for ticket in tickets:
            await ticket
        await handoff.aclose()

        assert writer.received == stream
        for offset, offered in writer.calls:
            assert stream[offset : offset + len(offered)] == offered  # resumes at the exact byte
        for (offset, _), done in zip(writer.calls, writer.observed, strict=True):
            assert done == [end <= offset for end in ends]  # done exactly when fully written


# -- writer failures -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_writer_failure_fails_the_chunk_being_written_and_closes_the_rest() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(ScriptedWriter(fail_after=5))
        ok, failing, later = handoff.try_write(b"abc"), handoff.try_write(b"defg"), []
        handoff.try_write_fire_and_forget(b"hij")
        later.append(handoff.try_write(b"klm"))
        await ok
        io_error = await expect_error(failing)
        assert isinstance(io_error, WriteIOError)
        assert isinstance(io_error.__cause__, BrokenPipeError)
        assert io_error.error is io_error.__cause__
        assert str(io_error) == f"write failed: {io_error.error!r}"
        assert type(await expect_error(later[0])) is WriteClosed
        with pytest.raises(WriteIOError) as closing:
            await handoff.aclose()
        assert closing.value is io_error
        assert writer.received == b"abcde"
        assert handoff.closed
        assert handoff.pending_bytes == 0
        with pytest.raises(WriteClosed):
            await handoff.write(b"after")
        assert (
            refused(WriteHandoff.try_write, handoff, b"after").reason is BackpressureReason.CLOSED
        )


@pytest.mark.asyncio
async def test_writer_failure_releases_producers_waiting_for_budget() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(ScriptedWriter(fail_after=3), max_pending_bytes=8)
        writer.gate.clear()
        first = await handoff.write(b"12345678")
        producers = [asyncio.create_task(handoff.write(b"more %d" % i)) for i in range(3)]
        await settle()
        assert not any(p.done() for p in producers)
        writer.gate.set()
        assert isinstance(await expect_error(first), WriteIOError)
        results = await asyncio.gather(*producers, return_exceptions=True)
        assert [type(r) for r in results] == [WriteClosed] * 3
        with pytest.raises(WriteIOError):
            await handoff.aclose()


@pytest.mark.asyncio
async def test_slow_writer_with_many_producers_keeps_each_producers_order() -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn(ScriptedWriter(max_per_call=5), max_items=4, max_pending_bytes=64)

        async def producer(p: int) -> None:
            for i in range(10):
                chunk = b"%02d:%02d;" % (p, i)
                if p % 2:
                    await handoff.write_fire_and_forget(chunk)
                else:
                    await (await handoff.write(chunk))

        await asyncio.gather(*(producer(p) for p in range(20)))
        await handoff.aclose()
        records = [tuple(map(int, r.split(b":"))) for r in writer.received.split(b";")[:-1]]
        assert len(records) == 200
        for p in range(20):
            assert [i for q, i in records if q == p] == list(range(10))


@pytest.mark.asyncio
async def test_peer_reset_mid_stream_fails_tickets_instead_of_hanging(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = tcp_pair
        handoff = WriteHandoff.spawn(ours, WriteHandoffConfig(max_items=8, max_pending_bytes=MiB))
        tickets: list[WriteTicket] = []

        async def produce() -> None:
            chunk = b"x" * (64 * 1024)
            for _ in range(4096):  # far more than the socket buffers hold
                try:
                    tickets.append(await handoff.write(chunk))
                except WriteClosed:
                    return

        producing = asyncio.create_task(produce())
        assert await asyncio.get_running_loop().sock_recv(peer, 1024)  # mid-stream now
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # linger 0: RST
        await producing
        outcomes = await asyncio.gather(*tickets, return_exceptions=True)
        with pytest.raises(WriteIOError) as closing:
            await handoff.aclose()
        kinds = [type(o).__name__ for o in outcomes]
        failed_at = kinds.index("WriteIOError")
        assert kinds == ["NoneType"] * failed_at + ["WriteIOError"] + ["WriteClosed"] * (
            len(kinds) - failed_at - 1
        )
        assert outcomes[failed_at] is closing.value
        assert isinstance(closing.value.__cause__, ConnectionResetError | BrokenPipeError)


# -- write-through: a large chunk to an idle writer leaves in the producer's own call ------------


class NowaitWriter:
    """A writer that can write without waiting; takes at most ``take`` bytes per call."""

    def __init__(self, take: int | None = None, fail: bool = False) -> None:
        self.take = take
        self.fail = fail
        self.received = bytearray()
        self.calls = 0

    def write_nowait(self, chunks: Sequence[BytesLike]) -> int:
        self.calls += 1
        if self.fail:
            raise ConnectionResetError("reset while idle")
        data = b"".join(bytes(memoryview(c).cast("B")) for c in chunks)
        if self.take is not None:
            data = data[: self.take]
        self.received += data
        return len(data)

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        return self.write_nowait(chunks)

    async def shutdown(self) -> None:
        pass


@pytest.mark.asyncio
async def test_a_large_chunk_to_an_idle_writer_is_written_in_the_call_small_ones_are_batched() -> (
    None
):
    writer = NowaitWriter()
    handoff = WriteHandoff(writer, WriteHandoffConfig())
    await asyncio.sleep(0)  # the writer task parks
    big = bytes(range(256)) * 32  # 8 KiB
    handoff.try_write_fire_and_forget(big)
    assert writer.received == big and handoff.pending_bytes == 0  # no loop turn needed
    ticket = handoff.try_write(big)
    assert ticket.done() and ticket.error() is None
    handoff.try_write_fire_and_forget(b"small 1\n")
    handoff.try_write_fire_and_forget(b"small 2\n")
    assert handoff.pending_bytes == 16  # small chunks wait for one batched write
    calls = writer.calls
    async with asyncio.timeout(WAIT):
        await handoff.flush()
    assert writer.calls == calls + 1
    await handoff.write_fire_and_forget(big)
    assert writer.received == big + big + b"small 1\nsmall 2\n" + big
    async with asyncio.timeout(WAIT):
        await handoff.aclose()


@pytest.mark.asyncio
async def test_what_an_idle_writer_does_not_take_at_once_is_queued_first_in_order() -> None:
    writer = NowaitWriter(take=1000)
    handoff = WriteHandoff(writer, WriteHandoffConfig())
    await asyncio.sleep(0)
    big = bytes(range(256)) * 32
    handoff.try_write_fire_and_forget(big)
    assert writer.received == big[:1000]
    assert handoff.pending_bytes == len(big) - 1000
    handoff.try_write_fire_and_forget(b"after")
    async with asyncio.timeout(WAIT):
        await handoff.aclose()
    assert writer.received == big + b"after"


@pytest.mark.parametrize("ticketed", [False, True])
@pytest.mark.asyncio
async def test_a_writer_failing_a_write_through_fails_the_handoff_and_every_wait_ends(
    ticketed: bool,
) -> None:
    handoff = WriteHandoff(NowaitWriter(fail=True), WriteHandoffConfig())
    await asyncio.sleep(0)
    big = b"x" * 8192
    async with asyncio.timeout(WAIT):
        if ticketed:
            ticket = await handoff.write(big)
            with pytest.raises(WriteIOError):
                await ticket
        else:
            handoff.try_write_fire_and_forget(big)  # fails later calls, as a queued write does
        assert handoff.closed
        with pytest.raises(WriteBackpressure) as refused:
            handoff.try_write_fire_and_forget(big)
        assert refused.value.reason is BackpressureReason.CLOSED
        with pytest.raises(WriteIOError):
            await handoff.flush()
        with pytest.raises(WriteIOError):
            await handoff.aclose()  # the parked writer task was woken: this ends
