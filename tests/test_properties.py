"""Property tests: any stream, cut any way, consumed any way, comes back exact.

Small ``max_len``, ``read_reserve`` and budgets make compaction, growth,
``LimitExceeded`` and backpressure happen in most examples.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytes_handoff import (
    BufferIOError,
    BytesLike,
    DuplexStream,
    HandoffBuffer,
    HandoffBufferConfig,
    LimitExceeded,
    WriteClosed,
    WriteError,
    WriteHandoff,
    WriteHandoffConfig,
    WriteIOError,
    WriteTicket,
    duplex_pair,
)

#: Bound on every wait inside a test: a hang fails fast instead of at the global timeout.
WAIT = 10.0

#: Async examples on two busy cores: no per-example deadline, a moderate count.
ASYNC_SETTINGS = settings(max_examples=200, deadline=None, database=None)


def cut(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    """``data`` in fragments whose sizes cycle through ``sizes``."""
    pieces, pos, i = [], 0, 0
    while pos < len(data):
        pieces.append(data[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return pieces


async def feed(pipe: DuplexStream, pieces: list[bytes]) -> None:
    for piece in pieces:
        await pipe.write(piece)
    pipe.shutdown_write()


# -- read side ------------------------------------------------------------------------------

READ_OPS = [
    "split_prefix",
    "split_prefix_mut",
    "split_through",
    "advance",
    "freeze_all",
    "tail_mode",
    "hold_peek",
]


class Consumer:
    """Applies read-side operations to a buffer and checks it against the input stream.

    Everything taken out is kept with a snapshot made when it was taken, so a
    later change to it (the buffer writing into storage it handed out) shows.
    """

    def __init__(self, data: bytes, cfg: HandoffBufferConfig) -> None:
        self.data = data
        self.cfg = cfg
        self.buf = HandoffBuffer.with_config(cfg)
        self.read_pos = 0  # bytes read from the stream
        self.out_pos = 0  # bytes taken out of the buffer, in any way
        self.taken: list[tuple[bytes | bytearray, bytes]] = []
        self.stream: list[bytes] = []  # every byte taken out, in order, advanced ones included
        self.advanced = 0
        self.held: memoryview | None = None

    async def read(self, reader: DuplexStream) -> bool:
        """One read; ``False`` at end of stream. A full buffer is drained with ``freeze_all``."""
        try:
            n = await self.buf.read_available(reader)
        except LimitExceeded as full:
            assert (full.attempted, full.limit) == (self.cfg.max_len + 1, self.cfg.max_len)
            assert len(self.buf) == self.cfg.max_len
            self.keep(self.buf.freeze_all())
            return True
        self.read_pos += n
        return n > 0

    def keep(self, piece: bytes | bytearray) -> None:
        self.taken.append((piece, bytes(piece)))
        self.stream.append(bytes(piece))
        self.out_pos += len(piece)

    def apply(self, op: str, size: int) -> None:
        buf = self.buf
        n = min(size, len(buf))
        if op == "split_prefix":
            self.keep(buf.split_prefix(n))
        elif op == "split_prefix_mut":
            self.keep(buf.split_prefix_mut(n))
        elif op == "split_through":  # up to and with a byte value the stream contains
            sep = bytes([size % 7])
            frame = buf.split_through(sep)
            if frame is None:
                assert buf.find(sep) < 0
            else:
                assert frame.endswith(sep) and sep not in frame[:-1]
                self.keep(frame)
        elif op == "advance":
            self.stream.append(bytes(buf.peek()[:n]))
            self.advanced += n
            self.out_pos += n
            buf.advance(n)
        elif op == "freeze_all":
            self.keep(buf.freeze_all())
        elif op == "tail_mode":  # the next parser mode adopts the tail
            self.buf = HandoffBuffer.from_tail(buf.take_tail(), self.cfg)
            assert len(buf) == 0
        else:  # a view held across the next reads and splits must not break them
            self.held = buf.peek()

    def check(self) -> None:
        assert bytes(self.buf.peek()) == self.data[self.out_pos : self.read_pos]
        assert len(self.buf) <= self.cfg.max_len
        assert self.buf.capacity <= self.cfg.max_len

    def finish(self) -> None:
        self.keep(self.buf.freeze_all())
        assert self.out_pos == self.read_pos == len(self.data)
        assert b"".join(self.stream) == self.data
        assert sum(len(s) for _, s in self.taken) + self.advanced == len(self.data)
        for piece, snapshot in self.taken:
            assert bytes(piece) == snapshot  # owned: never changed afterwards


@pytest.mark.asyncio
@ASYNC_SETTINGS
@given(
    data=st.binary(max_size=400),
    fragments=st.lists(st.integers(1, 64), min_size=1, max_size=8),
    capacity=st.integers(1, 48),
    max_len=st.integers(1, 40),
    read_reserve=st.integers(1, 24),
    steps=st.lists(
        st.tuples(st.sampled_from(READ_OPS), st.integers(0, 48)), min_size=1, max_size=24
    ),
)
async def test_any_stream_consumed_any_way_gives_back_exactly_the_input(
    data: bytes,
    fragments: list[int],
    capacity: int,
    max_len: int,
    read_reserve: int,
    steps: list[tuple[str, int]],
) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = duplex_pair(capacity)
        feeding = asyncio.create_task(feed(peer, cut(data, fragments)))
        consumer = Consumer(data, HandoffBufferConfig(max_len, read_reserve))
        step = 0
        while await consumer.read(ours):
            consumer.check()
            consumer.apply(*steps[step % len(steps)])
            consumer.check()
            step += 1
        await feeding
        consumer.finish()


@settings(max_examples=300, database=None)
@given(
    consumed=st.binary(max_size=6),
    live=st.binary(max_size=12),
    sub=st.binary(min_size=1, max_size=3),  # an empty separator is refused (test_read_buffer)
    start=st.integers(-15, 15),
    end=st.none() | st.integers(-15, 15),
)
def test_find_and_startswith_behave_like_bytes_on_the_buffered_bytes(
    consumed: bytes, live: bytes, sub: bytes, start: int, end: int | None
) -> None:
    buf = HandoffBuffer.from_tail(consumed + live, HandoffBufferConfig(64))
    buf.advance(len(consumed))
    assert buf.find(sub, start, end) == live.find(sub, start, end)
    assert buf.find(sub, start) == live.find(sub, start)
    assert buf.startswith(sub) == live.startswith(sub)


# -- write side -----------------------------------------------------------------------------


class SamplingWriter:
    """Accepts a seeded random 1..n bytes per call and checks the handoff's bounds on each call.

    ``fail_after`` accepts that many bytes in total, then raises ``ConnectionResetError``.
    """

    def __init__(self, seed: int, cfg: WriteHandoffConfig, fail_after: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.fail_after = fail_after
        self.handoff: WriteHandoff | None = None
        self.received = bytearray()

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        assert self.handoff is not None
        offered = sum(memoryview(c).nbytes for c in chunks)
        # In-flight bytes are pending too; nothing ever passes the budget or the queue bound.
        assert offered <= self.handoff.pending_bytes <= self.cfg.max_pending_bytes
        assert self.handoff.queued_items <= self.cfg.max_items
        if self.rng.random() < 0.5:
            await asyncio.sleep(0)
        n = self.rng.randint(1, offered)
        if self.fail_after is not None:
            n = min(n, self.fail_after - len(self.received))
            if n <= 0:
                raise ConnectionResetError(104, "scripted reset")
        joined = b"".join(memoryview(c).cast("B") for c in chunks)
        self.received += joined[:n]
        return n

    async def shutdown(self) -> None:
        pass


def spawn_sampled(
    seed: int, max_items: int, max_pending_bytes: int, fail_after: int | None = None
) -> tuple[WriteHandoff, SamplingWriter]:
    cfg = WriteHandoffConfig(max_items, max_pending_bytes)
    writer = SamplingWriter(seed, cfg, fail_after)
    writer.handoff = WriteHandoff.spawn(writer, cfg)
    return writer.handoff, writer


CHUNKS = st.lists(st.binary(max_size=24), max_size=12)


@pytest.mark.asyncio
@ASYNC_SETTINGS
@given(
    producers=st.lists(st.tuples(CHUNKS, st.booleans()), min_size=1, max_size=6),
    max_items=st.integers(1, 4),
    slack=st.integers(0, 8),
    seed=st.integers(0, 2**32 - 1),
)
async def test_fan_in_under_tiny_budgets_delivers_every_chunk_whole_and_in_order(
    producers: list[tuple[list[bytes], bool]], max_items: int, slack: int, seed: int
) -> None:
    async with asyncio.timeout(WAIT):
        largest = max((len(c) for chunks, _ in producers for c in chunks), default=0)
        handoff, writer = spawn_sampled(seed, max_items, max(largest, 1) + slack)
        submitted: list[tuple[int, bytes]] = []  # enqueue order, across producers
        tickets: list[WriteTicket] = []

        async def produce(pid: int, chunks: list[bytes], with_tickets: bool) -> None:
            for chunk in chunks:
                if with_tickets:
                    tickets.append(await handoff.write(chunk))
                else:
                    await handoff.write_fire_and_forget(chunk)
                submitted.append((pid, chunk))  # no await since the enqueue: exact order

        await asyncio.gather(*(produce(pid, *p) for pid, p in enumerate(producers)))
        for ticket in tickets:
            await ticket
        await handoff.aclose()
        assert writer.received == b"".join(chunk for _, chunk in submitted)
        for pid, (chunks, _) in enumerate(producers):
            assert [c for p, c in submitted if p == pid] == chunks
        assert handoff.pending_bytes == 0


@pytest.mark.asyncio
@ASYNC_SETTINGS
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=16),
    fail_after=st.integers(0, 160),
    max_items=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
async def test_writer_failure_fails_exactly_the_chunk_it_hit_and_closes_the_rest(
    chunks: list[bytes], fail_after: int, max_items: int, seed: int
) -> None:
    async with asyncio.timeout(WAIT):
        handoff, writer = spawn_sampled(seed, max_items, 32, fail_after)
        tickets: list[WriteTicket] = []
        for chunk in chunks:
            try:
                tickets.append(await handoff.write(chunk))
            except WriteClosed:
                break
        outcomes = await asyncio.gather(*tickets, return_exceptions=True)
        stream = b"".join(chunks)
        if len(stream) <= fail_after:
            await handoff.aclose()
            assert outcomes == [None] * len(chunks)
            assert writer.received == stream
            return
        with pytest.raises(WriteIOError) as closing:
            await handoff.aclose()
        assert isinstance(closing.value.__cause__, ConnectionResetError)
        assert writer.received == stream[:fail_after]
        end = 0
        for chunk, outcome in zip(chunks, outcomes, strict=False):
            start, end = end, end + len(chunk)
            if end <= fail_after:
                assert outcome is None
            elif start <= fail_after:
                assert outcome is closing.value  # the chunk being written when it failed
            else:
                assert type(outcome) is WriteClosed


# -- hostile readers and writers ------------------------------------------------------------

#: What a hostile reader or writer may do on one call besides behaving.
FAULTS = ["reset", "odd_exception", "too_many", "negative", "not_an_int"]


class HostileBug(Exception):
    """The odd exception a hostile reader or writer raises (no library code raises it)."""


class HostileReader:
    """Reads ``data`` in seeded random pieces; on a ``fault_rate`` share of calls it misbehaves.

    A misbehaving call scribbles over the offered view and then raises a reset,
    raises an odd exception, or reports a count that is too large, negative or
    not an int. The stream itself is not advanced by such a call, so a retry
    continues it (a reset connection stands in for a new one on the same stream).
    """

    def __init__(self, data: bytes, seed: int, fault_rate: float) -> None:
        self.data = data
        self.pos = 0
        self.rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.faults = 0

    def _answer(self, view: memoryview) -> int | None:
        rng = self.rng
        if rng.random() < self.fault_rate:
            self.faults += 1
            view[:] = bytes(len(view)) if len(view) else b""
            fault = rng.choice(FAULTS)
            if fault == "reset":
                raise ConnectionResetError(104, "hostile reset")
            if fault == "odd_exception":
                raise HostileBug("hostile reader bug")
            bad: object = {"too_many": len(view) + 1, "negative": -1, "not_an_int": 1.0}[fault]
            return bad  # type: ignore[return-value]
        if rng.random() < 0.2:
            return None  # nothing yet: the async path waits
        n = min(rng.randint(1, max(len(view), 1)), len(view), len(self.data) - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n

    def read_into_nowait(self, view: memoryview) -> int | None:
        return self._answer(view)

    async def read_into(self, view: memoryview) -> int:
        while (n := self._answer(view)) is None:
            await asyncio.sleep(0)
        return n


@pytest.mark.asyncio
@ASYNC_SETTINGS
@given(
    data=st.binary(max_size=300),
    max_len=st.integers(1, 40),
    read_reserve=st.integers(1, 24),
    fault_rate=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**32 - 1),
    steps=st.lists(
        st.tuples(st.sampled_from(READ_OPS), st.integers(0, 48)), min_size=1, max_size=24
    ),
)
async def test_hostile_readers_never_lose_duplicate_or_reorder_a_byte(
    data: bytes,
    max_len: int,
    read_reserve: int,
    fault_rate: float,
    seed: int,
    steps: list[tuple[str, int]],
) -> None:
    async with asyncio.timeout(WAIT):
        reader = HostileReader(data, seed, fault_rate)
        consumer = Consumer(data, HandoffBufferConfig(max_len, read_reserve))
        step = 0
        while True:
            before = bytes(consumer.buf.peek())
            try:
                n = await consumer.buf.read_available(reader)
            except LimitExceeded:
                consumer.keep(consumer.buf.freeze_all())
                continue
            except (BufferIOError, HostileBug) as exc:
                if isinstance(exc, BufferIOError):
                    assert isinstance(exc.error, (ConnectionResetError, ValueError))
                # A failed read changes nothing: the same bytes, within the bound.
                assert bytes(consumer.buf.peek()) == before
                consumer.check()
                continue
            if n == 0:
                break
            consumer.read_pos += n
            consumer.check()
            consumer.apply(*steps[step % len(steps)])
            consumer.check()
            step += 1
        consumer.finish()


class HostileWriter:
    """Accepts a seeded random 1..n bytes per call; on a ``fault_rate`` share it misbehaves.

    With ``nowait`` it also has ``write_nowait``, which sometimes says "full"
    (``0``) so the writer task takes over. Each call checks that the
    handoff's accounting never goes negative or past its bounds.
    """

    def __init__(self, seed: int, cfg: WriteHandoffConfig, fault_rate: float) -> None:
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.fault_rate = fault_rate
        self.handoff: WriteHandoff | None = None
        self.received = bytearray()
        self.failed = False

    def _answer(self, chunks: Sequence[BytesLike], nowait: bool) -> int:
        assert self.handoff is not None
        assert not self.failed, "called again after a failure"
        offered = sum(memoryview(c).nbytes for c in chunks)
        assert 0 <= offered <= self.handoff.pending_bytes <= self.cfg.max_pending_bytes
        rng = self.rng
        if rng.random() < self.fault_rate:
            self.failed = True
            fault = rng.choice(FAULTS)
            if fault == "reset":
                raise ConnectionResetError(104, "hostile reset")
            if fault == "odd_exception":
                raise HostileBug("hostile writer bug")
            bad: object = {"too_many": offered + 1, "negative": -1, "not_an_int": 1.0}[fault]
            return bad  # type: ignore[return-value]
        if nowait and rng.random() < 0.3:
            return 0
        n = rng.randint(1, offered) if offered else 0
        joined = b"".join(memoryview(c).cast("B") for c in chunks)
        self.received += joined[:n]
        return n

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        if self.rng.random() < 0.5:
            await asyncio.sleep(0)
        return self._answer(chunks, nowait=False)

    async def shutdown(self) -> None:
        pass


class HostileNowaitWriter(HostileWriter):
    def write_nowait(self, chunks: Sequence[BytesLike]) -> int:
        return self._answer(chunks, nowait=True)


@pytest.mark.asyncio
@ASYNC_SETTINGS
@given(
    producers=st.lists(st.tuples(CHUNKS, st.booleans()), min_size=1, max_size=4),
    max_items=st.integers(1, 4),
    fault_rate=st.floats(0.0, 0.3),
    nowait=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
async def test_hostile_writers_end_every_ticket_and_deliver_an_exact_prefix(
    producers: list[tuple[list[bytes], bool]],
    max_items: int,
    fault_rate: float,
    nowait: bool,
    seed: int,
) -> None:
    async with asyncio.timeout(WAIT):
        cfg = WriteHandoffConfig(max_items, 32)
        writer = (HostileNowaitWriter if nowait else HostileWriter)(seed, cfg, fault_rate)
        handoff = writer.handoff = WriteHandoff.spawn(writer, cfg)
        submitted: list[bytes] = []
        tickets: list[tuple[int, WriteTicket]] = []  # (index in submitted, ticket)

        async def produce(chunks: list[bytes], with_tickets: bool) -> None:
            for chunk in chunks:
                try:
                    if with_tickets:
                        ticket = await handoff.write(chunk)
                        tickets.append((len(submitted), ticket))
                    else:
                        await handoff.write_fire_and_forget(chunk)
                except WriteClosed:
                    return
                submitted.append(chunk)
                assert handoff.pending_bytes >= 0

        await asyncio.gather(*(produce(*p) for p in producers))
        outcomes = await asyncio.gather(*(t for _, t in tickets), return_exceptions=True)
        try:
            await handoff.aclose()
        except WriteIOError as exc:
            assert writer.failed
            assert isinstance(exc.error, (ConnectionResetError, HostileBug, ValueError))
        else:
            assert not writer.failed
        assert handoff.pending_bytes == 0
        stream = b"".join(submitted)
        assert stream.startswith(bytes(writer.received))  # nothing lost, doubled or reordered
        if not writer.failed:
            assert writer.received == stream
        starts = [0]
        for chunk in submitted:
            starts.append(starts[-1] + len(chunk))
        for (index, _), outcome in zip(tickets, outcomes, strict=True):
            if outcome is None:  # a written chunk is all there
                assert starts[index + 1] <= len(writer.received)
            else:
                assert isinstance(outcome, WriteError)
