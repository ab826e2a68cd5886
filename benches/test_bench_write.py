"""Write-side micro-benchmarks: direct writes vs ``WriteHandoff``, fan-in, budget rejection.

Families: ``write_large_chunks``, ``write_many_tasks``,
``write_byte_budget_backpressure``.

Every byte-moving case writes into the same sink: one end of the library's
in-memory ``duplex_pair`` (4 MiB per direction, like the crate's
``tokio::io::duplex``), with a drain task reading the other end into a 64 KiB
scratch buffer until it has seen every byte. A round ends when the drain task
has counted all bytes and the writer is shut; the count is checked.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from bytes_handoff import (
    BackpressureReason,
    ByteBudgetExceeded,
    DuplexStream,
    WriteBackpressure,
    WriteHandoff,
    WriteHandoffConfig,
    duplex_pair,
)

SMOKE = os.environ.get("BENCH_SMOKE", "") not in ("", "0")
Measure = Callable[..., Any]  # the `measure` fixture of conftest.py

DUPLEX_CAPACITY = 4 * 1024 * 1024
DRAIN_READ = 64 * 1024
KIB = 1024
MIB = 1024 * 1024

LARGE_CHUNK_SIZES = (64 * KIB, MIB)
LARGE_TOTAL = (2 if SMOKE else 16) * MIB  # bytes per round, the same for every chunk size
MANY_CHUNK_SIZE = 32 * KIB
MANY_CHUNKS = 16 if SMOKE else 256
TASK_COUNTS = (1, 4, 16, 64)
REJECTIONS = 100 if SMOKE else 2000


async def drain_expected(reader: DuplexStream, expected: int) -> int:
    """The sink: read until ``expected`` bytes arrived (or end of stream); return the count."""
    scratch = memoryview(bytearray(DRAIN_READ))
    total = 0
    while total < expected:
        n = await reader.read_into(scratch)
        if n == 0:
            break
        total += n
    return total


async def direct_write_all(chunk: bytes, chunks: int) -> tuple[int, int]:
    """Baseline: the producer writes each chunk itself and waits for the sink to take it."""
    expected = len(chunk) * chunks
    writer, reader = duplex_pair(DUPLEX_CAPACITY)
    drain = asyncio.ensure_future(drain_expected(reader, expected))
    for _ in range(chunks):
        await writer.write(chunk)
    writer.shutdown_write()
    return await drain, 0


async def _produce(handoff: WriteHandoff, chunk: bytes, count: int, ticket: bool) -> None:
    if ticket:
        tickets = [await handoff.write(chunk) for _ in range(count)]
        for t in tickets:
            await t
    else:
        for _ in range(count):
            handoff.try_write_fire_and_forget(chunk)


async def handoff_write(chunk: bytes, chunks: int, tasks: int, ticket: bool) -> tuple[int, int]:
    """Producers hand owned chunks to one ``WriteHandoff`` whose writer task feeds the sink.

    ``tasks == 0``: one producer awaited inline (no extra task); otherwise
    ``tasks`` producer tasks share the chunks. The queue and budget fit every
    chunk, as in the crate's bench: this measures queueing, not backpressure.
    Returns (bytes drained, pending bytes after close).
    """
    expected = len(chunk) * chunks
    writer, reader = duplex_pair(DUPLEX_CAPACITY)
    cfg = WriteHandoffConfig(max_items=chunks + tasks + 1, max_pending_bytes=expected + len(chunk))
    handoff = WriteHandoff.spawn(writer, cfg)
    drain = asyncio.ensure_future(drain_expected(reader, expected))
    if tasks == 0:
        await _produce(handoff, chunk, chunks, ticket)
    else:
        per_task, extra = divmod(chunks, tasks)
        await asyncio.gather(
            *(_produce(handoff, chunk, per_task + (i < extra), ticket) for i in range(tasks))
        )
    drained = await drain
    await handoff.aclose()
    return drained, handoff.pending_bytes


def _check_written(expected: int) -> Callable[[tuple[int, int]], None]:
    def check(result: tuple[int, int]) -> None:
        drained, pending = result
        assert drained == expected, f"sink got {drained} bytes, expected {expected}"
        assert pending == 0, f"{pending} bytes still pending after close"

    return check


LARGE_CASES = (
    "direct_write_all",
    "handoff_ticket_single_task",
    "handoff_fire_and_forget_single_task",
)


@pytest.mark.parametrize("chunk_size", LARGE_CHUNK_SIZES, ids=str)
@pytest.mark.parametrize("impl", LARGE_CASES)
def test_write_large_chunks(
    measure: Measure, loop: asyncio.AbstractEventLoop, impl: str, chunk_size: int
) -> None:
    chunk = bytes([7]) * chunk_size
    chunks = LARGE_TOTAL // chunk_size

    def round_() -> tuple[int, int]:
        if impl == "direct_write_all":
            coro = direct_write_all(chunk, chunks)
        else:
            coro = handoff_write(chunk, chunks, 0, ticket=impl.startswith("handoff_ticket"))
        return loop.run_until_complete(coro)

    measure(
        round_,
        family="write_large_chunks",
        case=f"{impl}/{chunk_size}",
        check=_check_written(chunk_size * chunks),
        nbytes=chunk_size * chunks,
    )


@pytest.mark.parametrize("tasks", TASK_COUNTS, ids=str)
@pytest.mark.parametrize("completion", ["ticket", "fire_and_forget"])
def test_write_many_tasks(
    measure: Measure, loop: asyncio.AbstractEventLoop, completion: str, tasks: int
) -> None:
    chunk = bytes([7]) * MANY_CHUNK_SIZE

    def round_() -> tuple[int, int]:
        coro = handoff_write(chunk, MANY_CHUNKS, tasks, ticket=completion == "ticket")
        return loop.run_until_complete(coro)

    measure(
        round_,
        family="write_many_tasks",
        case=f"{completion}/{tasks}",
        check=_check_written(MANY_CHUNK_SIZE * MANY_CHUNKS),
        nbytes=MANY_CHUNK_SIZE * MANY_CHUNKS,
    )


# -- rejection of a chunk larger than the whole byte budget ----------------------------------------

BUDGET = 63
OVER_BUDGET = bytes(64)


async def reject_try_write(handoff: WriteHandoff, n: int) -> int:
    rejected = 0
    for _ in range(n):
        try:
            handoff.try_write(OVER_BUDGET)
        except WriteBackpressure as exc:
            if exc.reason is BackpressureReason.BYTE_BUDGET_EXCEEDED and (
                exc.into_bytes() is OVER_BUDGET
            ):
                rejected += 1
    return rejected


async def reject_write(handoff: WriteHandoff, n: int) -> int:
    rejected = 0
    for _ in range(n):
        try:
            await handoff.write(OVER_BUDGET)
        except ByteBudgetExceeded as exc:
            if exc.attempted == len(OVER_BUDGET) and exc.limit == BUDGET:
                rejected += 1
    return rejected


@pytest.mark.parametrize("api", ["try_write", "write"])
def test_write_byte_budget_backpressure(
    measure: Measure, loop: asyncio.AbstractEventLoop, api: str
) -> None:
    """The fast refusal of a chunk over the budget: ``try_write`` raises ``WriteBackpressure``,
    ``write()`` raises ``ByteBudgetExceeded`` at once. One handoff per case; a round is
    ``REJECTIONS`` refusals and reports operations per second."""
    writer, _reader = duplex_pair(64)

    async def spawn() -> WriteHandoff:
        return WriteHandoff.spawn(writer, WriteHandoffConfig(max_items=1, max_pending_bytes=BUDGET))

    handoff = loop.run_until_complete(spawn())
    work = reject_try_write if api == "try_write" else reject_write

    def round_() -> int:
        return loop.run_until_complete(work(handoff, REJECTIONS))

    def check(rejected: int) -> None:
        assert rejected == REJECTIONS, f"{rejected} of {REJECTIONS} writes refused as expected"
        assert handoff.pending_bytes == 0 and handoff.queued_items == 0

    try:
        measure(
            round_,
            family="write_byte_budget_backpressure",
            case=api,
            check=check,
            ops=REJECTIONS,
        )
    finally:
        loop.run_until_complete(handoff.aclose())
