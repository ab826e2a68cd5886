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
    BytesLike,
    DuplexStream,
    HandoffBuffer,
    HandoffBufferConfig,
    LimitExceeded,
    WriteClosed,
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
    sub=st.binary(max_size=3),
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
