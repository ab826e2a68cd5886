"""The parts of ``WriteHandoff`` on their own: the batch in flight and admission.

``WriteBatch`` is pure bookkeeping (no I/O, no event loop), so it is driven
here by hand: take chunks off a queue, advance by the counts a writer would
report, fail. ``WriteAdmission`` is checked for its bounds, its refusals and
how it parks and wakes producers.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import deque
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bytes_handoff import (
    BackpressureReason,
    BytesLike,
    WriteClosed,
    WriteIOError,
    WriteTicket,
)
from bytes_handoff._write_admission import WriteAdmission
from bytes_handoff._write_batch import WriteBatch

MiB = 1024 * 1024


def queue_of(
    chunks: list[BytesLike], ticketed: bool = True
) -> tuple[deque[BytesLike], deque[WriteTicket | None], list[WriteTicket | None]]:
    """A queue holding ``chunks``, each with a fresh ticket (or none)."""
    tickets: list[WriteTicket | None] = [WriteTicket() if ticketed else None for _ in chunks]
    return deque(chunks), deque(tickets), tickets


def take(
    chunks: deque[BytesLike],
    tickets: deque[WriteTicket | None],
    max_items: int = 64,
    max_bytes: int = MiB,
) -> WriteBatch[WriteTicket]:
    """``WriteBatch.take`` with the queue's totals counted here."""
    return WriteBatch.take(
        chunks,
        tickets,
        queued_bytes=sum(len(c) for c in chunks),
        queued_tickets=sum(t is not None for t in tickets),
        max_items=max_items,
        max_bytes=max_bytes,
    )


def joined(chunks: list[BytesLike]) -> bytes:
    return b"".join(bytes(c) for c in chunks)


def states(tickets: list[WriteTicket | None]) -> list[str]:
    return [
        "-" if t is None else "pending" if not t.done() else "failed" if t.error() else "written"
        for t in tickets
    ]


# -- take --------------------------------------------------------------------------------------


def test_take_moves_the_whole_queue_when_it_fits() -> None:
    chunks, tickets, made = queue_of([b"ab", b"", b"cde"])
    batch = take(chunks, tickets)
    assert batch.chunks == [b"ab", b"", b"cde"]
    assert batch.tickets == made
    assert (batch.left, batch.ticketed, batch.first) == (5, 3, 0)
    assert not chunks and not tickets


@pytest.mark.parametrize(
    ("sizes", "max_items", "max_bytes", "taken"),
    [
        ([1] * 10, 4, MiB, 4),  # the item bound
        ([4] * 10, 64, 10, 3),  # the byte bound: the chunk that reaches it still goes in
        ([4] * 10, 64, 12, 3),  # ... and exactly reaching it stops the batch
        ([30, 1, 1], 64, 10, 1),  # a batch always takes at least one chunk
        ([5, 5, 0], 64, 10, 3),  # the whole queue fits: trailing empty chunks come too
        ([5, 5, 0, 1], 64, 10, 2),  # it does not: the batch stops at the byte bound
    ],
)
def test_take_stops_at_the_item_or_byte_bound(
    sizes: list[int], max_items: int, max_bytes: int, taken: int
) -> None:
    data: list[BytesLike] = [bytes([i]) * size for i, size in enumerate(sizes)]
    chunks, tickets, made = queue_of(data)
    batch = take(chunks, tickets, max_items=max_items, max_bytes=max_bytes)
    assert batch.chunks == data[:taken]
    assert batch.tickets == made[:taken]
    assert batch.left == sum(sizes[:taken])
    assert batch.ticketed == taken
    assert list(chunks) == data[taken:]  # the rest stays queued, in order
    assert list(tickets) == made[taken:]


def test_take_counts_only_the_tickets_it_takes() -> None:
    data: list[BytesLike] = [b"a", b"b", b"c", b"d"]
    chunks: deque[BytesLike] = deque(data)
    tickets: deque[WriteTicket | None] = deque([WriteTicket(), None, WriteTicket(), None])
    batch = take(chunks, tickets, max_items=2)
    assert batch.ticketed == 1
    assert batch.tickets[1] is None


def test_take_from_an_empty_queue_is_an_empty_batch() -> None:
    batch = take(deque(), deque())
    assert (batch.chunks, batch.left, batch.ticketed) == ([], 0, 0)


# -- advance and unwritten ---------------------------------------------------------------------


def test_a_whole_write_completes_every_chunk() -> None:
    chunks, tickets, made = queue_of([b"abc", b"de", b"f"])
    batch = take(chunks, tickets)
    assert batch.unwritten() == [b"abc", b"de", b"f"]
    assert batch.advance(6) == 3
    assert batch.left == 0
    assert batch.unwritten() == []
    assert states(made) == ["written"] * 3


def test_advance_crosses_chunk_boundaries_and_resumes_inside_a_chunk() -> None:
    chunks, tickets, made = queue_of([b"abc", b"de", b"fgh"])
    batch = take(chunks, tickets)
    assert batch.advance(4) == 1  # "abc" and the "d" of "de"
    todo = batch.unwritten()
    assert type(todo[0]) is memoryview  # the unwritten end of "de", not a copy
    assert joined(todo) == b"efgh"
    assert states(made) == ["written", "pending", "pending"]
    assert batch.advance(2) == 1  # "e" and "f"
    assert joined(batch.unwritten()) == b"gh"
    assert batch.advance(1) == 0  # "g": nothing completes
    assert joined(batch.unwritten()) == b"h"
    assert states(made) == ["written", "written", "pending"]
    assert batch.advance(1) == 1
    assert batch.left == 0
    assert states(made) == ["written"] * 3


def test_a_partial_write_never_changes_the_callers_chunk() -> None:
    original = bytearray(b"0123456789")
    frozen = memoryview(bytes(original))
    chunks, tickets, _ = queue_of([frozen])
    batch = take(chunks, tickets)
    batch.advance(3)
    assert bytes(batch.unwritten()[0]) == b"3456789"
    assert bytes(frozen) == b"0123456789"


@pytest.mark.parametrize(
    ("data", "n", "completed"),
    [
        ([b"", b"", b""], 0, 3),  # only empty chunks: advancing by 0 completes them
        ([b"", b"a"], 0, 1),  # leading empty chunks complete before any byte
        ([b"a", b"", b"b"], 1, 2),  # an empty chunk completes with the one before it
        ([b"a", b"b", b""], 2, 3),  # ... and trailing ones with the batch
    ],
)
def test_empty_chunks_complete_in_order(data: list[BytesLike], n: int, completed: int) -> None:
    chunks, tickets, made = queue_of(data)
    batch = take(chunks, tickets)
    assert batch.advance(n) == completed
    assert states(made) == ["written"] * completed + ["pending"] * (len(data) - completed)


def test_advancing_a_batch_without_tickets_resolves_nothing() -> None:
    chunks, tickets, _ = queue_of([b"ab", b"cd"], ticketed=False)
    batch = take(chunks, tickets)
    assert batch.ticketed == 0
    assert batch.advance(3) == 1
    assert batch.advance(1) == 1
    assert batch.left == 0


@given(
    sizes=st.lists(st.integers(0, 12), max_size=12),
    cuts=st.lists(st.integers(0, 1000), max_size=40),
)
def test_any_sequence_of_advances_consumes_exactly_the_bytes_in_order(
    sizes: list[int], cuts: list[int]
) -> None:
    counter = itertools.count()
    data: list[BytesLike] = [bytes(next(counter) % 256 for _ in range(size)) for size in sizes]
    stream = b"".join(data)
    ends = list(itertools.accumulate(len(c) for c in data))
    chunks, tickets, made = queue_of(data)
    batch = take(chunks, tickets, max_items=len(data) or 1, max_bytes=len(stream) or 1)
    written = completed = 0
    for cut in [*cuts, None]:  # a last write takes whatever is left
        assert joined(batch.unwritten()) == stream[written:]
        n = batch.left if cut is None else cut % (batch.left + 1)
        completed += batch.advance(n)
        written += n
        assert batch.left == len(stream) - written
        # Completed: exactly the chunks that end at or before the written offset.
        assert completed == bisect.bisect_right(ends, written)
        done = [t is not None and t.done() and t.error() is None for t in made]
        assert done == [i < completed for i in range(len(data))]
    assert written == len(stream) and batch.unwritten() == []
    assert completed == len(data)


# -- fail --------------------------------------------------------------------------------------


def test_fail_gives_the_chunk_being_written_the_io_error_and_the_rest_write_closed() -> None:
    chunks, tickets, made = queue_of([b"ab", b"cd", b"ef", b"gh"])
    batch = take(chunks, tickets)
    batch.advance(3)  # "ab" written, "cd" half written
    io_error = WriteIOError(BrokenPipeError(32, "broken pipe"))
    closed = WriteClosed()
    batch.fail(io_error, closed)
    assert [t.error() if t else None for t in made] == [None, io_error, closed, closed]
    assert states(made) == ["written", "failed", "failed", "failed"]
    assert batch.left == 0
    assert batch.unwritten() == []


def test_fail_without_an_io_error_closes_every_unfinished_chunk() -> None:
    chunks, tickets, made = queue_of([b"ab", b"cd"])
    batch = take(chunks, tickets)
    closed = WriteClosed("write handoff aborted")
    batch.fail(None, closed)
    assert [t.error() if t else None for t in made] == [closed, closed]


def test_fail_gives_the_io_error_only_to_the_chunk_being_written() -> None:
    data: list[BytesLike] = [b"ab", b"cd", b"ef"]
    chunks: deque[BytesLike] = deque(data)
    later = WriteTicket()
    tickets: deque[WriteTicket | None] = deque([None, later, None])
    batch = take(chunks, tickets)
    closed = WriteClosed()
    batch.fail(WriteIOError(OSError("x")), closed)  # "ab" has no ticket to take the error
    assert later.error() is closed


def test_fail_leaves_written_chunks_written() -> None:
    chunks, tickets, made = queue_of([b"ab", b"cd"])
    batch = take(chunks, tickets)
    batch.advance(4)
    batch.fail(WriteIOError(OSError("late")), WriteClosed())
    assert states(made) == ["written", "written"]


# -- admission ---------------------------------------------------------------------------------


@pytest.fixture
def admission() -> Iterator[Callable[..., WriteAdmission]]:
    """Admissions for checks that never park a producer (their loop never runs)."""
    loop = asyncio.new_event_loop()
    yield lambda max_items=2, max_bytes=10: WriteAdmission(max_items, max_bytes, loop)
    loop.close()


def test_fits_checks_the_item_count_and_the_byte_budget(
    admission: Callable[..., WriteAdmission],
) -> None:
    adm = admission()
    adm.pending = 6
    assert adm.fits(queued=1, size=4)  # exactly reaching the budget fits
    assert not adm.fits(queued=1, size=5)
    assert not adm.fits(queued=2, size=0)  # the queue is full


def test_refusal_names_the_first_bound_that_fails(admission: Callable[..., WriteAdmission]) -> None:
    adm = admission(max_items=2, max_bytes=10)
    adm.pending = 8
    data = b"xyz"
    assert adm.refusal(data, 2, queued=1, closed=False) is None
    closed = adm.refusal(data, 3, queued=5, closed=True)
    assert closed is not None and closed.reason is BackpressureReason.CLOSED
    assert closed.into_bytes() is data
    full = adm.refusal(data, 3, queued=2, closed=False)
    assert full is not None and full.reason is BackpressureReason.QUEUE_FULL
    assert (full.attempted, full.limit) == (3, 2)
    over = adm.refusal(data, 3, queued=1, closed=False)
    assert over is not None and over.reason is BackpressureReason.BYTE_BUDGET_EXCEEDED
    assert (over.attempted, over.limit) == (11, 10)


@pytest.mark.asyncio
async def test_parked_producers_wake_in_the_order_they_parked() -> None:
    adm = WriteAdmission(1, 10, asyncio.get_running_loop())
    adm.pending = 10
    woken: list[int] = []

    async def producer(i: int) -> None:
        await adm.wait()
        woken.append(i)

    tasks = [asyncio.create_task(producer(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert woken == []
    adm.release(4)
    await asyncio.gather(*tasks)
    assert woken == [0, 1, 2]
    assert adm.pending == 6


@pytest.mark.asyncio
async def test_a_cancelled_producer_loses_and_counts_no_room() -> None:
    adm = WriteAdmission(1, 10, asyncio.get_running_loop())
    adm.pending = 10
    tasks = [asyncio.create_task(adm.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    await asyncio.sleep(0)
    assert tasks[1].cancelled()
    assert adm.pending == 10  # parking reserved nothing, so cancelling gives nothing back
    adm.release(10)
    await asyncio.gather(tasks[0], tasks[2])
    assert adm.pending == 0
    assert adm.fits(queued=0, size=10)
    # The cancelled producer left no stale entry: the next one parks and wakes as usual.
    again = asyncio.create_task(adm.wait())
    await asyncio.sleep(0)
    adm.wake()
    await asyncio.wait_for(again, 1.0)


@pytest.mark.asyncio
async def test_clear_drops_the_budget_in_use_and_releases_every_producer() -> None:
    adm = WriteAdmission(1, 10, asyncio.get_running_loop())
    adm.pending = 7
    tasks = [asyncio.create_task(adm.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    adm.clear()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert adm.pending == 0


def test_release_without_parked_producers_only_gives_budget_back(
    admission: Callable[..., WriteAdmission],
) -> None:
    adm = admission()
    adm.pending = 9
    adm.release(9)
    assert adm.pending == 0
