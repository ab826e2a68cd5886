"""``HandoffBuffer``: every row of the README's read-side API table, its errors, and ownership."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

import pytest

from bytes_handoff import (
    BufferIOError,
    HandoffBuffer,
    HandoffBufferConfig,
    LimitExceeded,
    SplitOutOfBounds,
    duplex_pair,
)

#: Bound on every wait inside a test: a hang fails fast instead of at the global timeout.
WAIT = 5.0


class ScriptedReader:
    """A reader that hands out scripted fragments and records how much room each read offered.

    An ``OSError`` in the script is raised by the read that reaches it.
    """

    def __init__(self, *script: bytes | OSError) -> None:
        self.script = list(script)
        self.offered: list[int] = []

    async def read_into(self, view: memoryview) -> int:
        self.offered.append(len(view))
        await asyncio.sleep(0)
        if not self.script:
            return 0
        item = self.script[0]
        if isinstance(item, OSError):
            raise item
        n = min(len(view), len(item))
        view[:n] = item[:n]
        if n == len(item):
            self.script.pop(0)
        else:
            self.script[0] = item[n:]
        return n


def filled(data: bytes, max_len: int = 64, read_reserve: int = 16) -> HandoffBuffer:
    """A buffer holding ``data`` (adopted through ``from_tail``)."""
    return HandoffBuffer.from_tail(data, HandoffBufferConfig(max_len, read_reserve))


async def read_all(buf: HandoffBuffer, reader: object) -> None:
    """Read until end of stream."""
    while await buf.read_available(reader):
        pass


# -- construction ---------------------------------------------------------------------


def test_config_defaults_read_reserve_to_16_kib() -> None:
    assert HandoffBufferConfig(100) == HandoffBufferConfig(max_len=100, read_reserve=16 * 1024)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_len": 0}, "max_len must be at least 1, got 0"),
        ({"max_len": 8, "read_reserve": 0}, "read_reserve must be at least 1, got 0"),
    ],
)
def test_config_rejects_zero_bounds(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HandoffBufferConfig(**kwargs)
    with pytest.raises(ValueError, match=message):
        HandoffBuffer(**kwargs)


def test_new_buffer_is_empty() -> None:
    buf = HandoffBuffer(10)
    assert len(buf) == 0
    assert not buf
    assert bytes(buf.peek()) == b""
    assert (buf.max_len, buf.read_reserve) == (10, 16 * 1024)


def test_with_config_takes_both_bounds() -> None:
    buf = HandoffBuffer.with_config(HandoffBufferConfig(max_len=7, read_reserve=3))
    assert (buf.max_len, buf.read_reserve, len(buf)) == (7, 3, 0)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_from_tail_starts_with_the_tail(kind: Callable[[bytes], object]) -> None:
    buf = HandoffBuffer.from_tail(kind(b"already read"), HandoffBufferConfig(12))  # type: ignore[arg-type]
    assert len(buf) == 12
    assert buf
    assert bytes(buf.peek()) == b"already read"


def test_from_tail_over_max_len_raises_limit_exceeded() -> None:
    with pytest.raises(LimitExceeded) as info:
        HandoffBuffer.from_tail(b"123456", HandoffBufferConfig(max_len=5))
    assert (info.value.attempted, info.value.limit) == (6, 5)
    assert str(info.value) == "buffer limit exceeded: 6 bytes attempted, limit is 5"


# -- peek, find, startswith -------------------------------------------------------------


def test_peek_is_read_only_and_does_not_consume() -> None:
    buf = filled(b"hello")
    view = buf.peek()
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 0
    assert bytes(view) == b"hello"
    assert len(buf) == 5


def test_peek_shows_only_the_unconsumed_bytes() -> None:
    buf = filled(b"header:body")
    buf.advance(7)
    assert bytes(buf.peek()) == b"body"


def test_peek_is_a_view_of_the_buffer_storage_not_a_copy() -> None:
    buf = filled(b"abc", max_len=64)
    buf.reserve_read_capacity(20)
    first, second = buf.peek(), buf.peek()
    # Both views look at the same object, and it is the whole storage (capacity), not a copy.
    assert first.obj is second.obj
    assert memoryview(first.obj).nbytes == buf.capacity > len(buf)
    assert bytes(first) == b"abc"


def test_peek_view_works_as_a_context_manager() -> None:
    buf = filled(b"abc")
    with buf.peek() as view:
        assert bytes(view[:2]) == b"ab"
    assert buf.freeze_all() == b"abc"


@pytest.mark.asyncio
async def test_holding_a_peek_view_does_not_block_reads_that_move_or_grow_storage() -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(64, read_reserve=4)
        await buf.read_available(ScriptedReader(b"abcd"))
        held = buf.peek()
        buf.advance(2)  # the next read must slide "cd" to the front or grow
        await read_all(buf, ScriptedReader(b"efghijklmnop"))
        assert bytes(buf.peek()) == b"cdefghijklmnop"
        assert held.readonly  # still a valid object; its contents are not promised


def test_holding_a_peek_view_does_not_block_take_tail() -> None:
    buf = filled(b"tail bytes")
    buf.reserve_read_capacity(30)  # spare room after the bytes: take_tail must trim or copy
    held = buf.peek()
    assert buf.take_tail() == bytearray(b"tail bytes")
    assert len(buf) == 0
    held.release()


def test_find_is_relative_to_the_front_and_ignores_consumed_bytes() -> None:
    buf = filled(b"a\nbb\nccc")
    buf.advance(2)
    assert buf.find(b"\n") == 2
    assert buf.find(b"\n", 3) == -1
    assert buf.find(b"a") == -1
    assert buf.find(b"cc", 0, 5) == 3
    assert buf.find(b"cc", 0, 4) == -1


@pytest.mark.parametrize(("start", "end"), [(-3, None), (-20, None), (0, -1), (-4, -2), (9, None)])
def test_find_takes_negative_offsets_like_bytes_find(start: int, end: int | None) -> None:
    buf = filled(b"xxbd\nbd")
    buf.advance(2)  # consumed bytes: "xx"
    assert buf.find(b"bd", start, end) == b"bd\nbd".find(b"bd", start, end)
    assert buf.find(b"xb", start, end) == -1


def test_startswith_looks_at_the_front_only() -> None:
    buf = filled(b"GET /x\nPOST /y\n")
    assert buf.startswith(b"GET ")
    buf.advance(7)
    assert buf.startswith(b"POST")
    assert not buf.startswith(b"GET")
    assert not buf.startswith(b"POST /y\n and more")


# -- reserve_read_capacity ------------------------------------------------------------------


def test_reserve_read_capacity_makes_room_after_the_bytes() -> None:
    buf = filled(b"abc", max_len=100)
    buf.reserve_read_capacity(50)
    assert buf.capacity >= 53
    assert bytes(buf.peek()) == b"abc"


def test_reserve_read_capacity_up_to_max_len_is_allowed() -> None:
    buf = filled(b"abc", max_len=10)
    buf.reserve_read_capacity(7)
    assert buf.capacity >= 10


def test_reserve_read_capacity_over_the_limit_raises_and_changes_nothing() -> None:
    buf = filled(b"abc", max_len=10)
    capacity = buf.capacity
    with pytest.raises(LimitExceeded) as info:
        buf.reserve_read_capacity(8)
    assert (info.value.attempted, info.value.limit) == (11, 10)
    assert "11 bytes attempted, limit is 10" in str(info.value)
    assert (buf.capacity, bytes(buf.peek())) == (capacity, b"abc")


def test_reserve_read_capacity_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError, match="additional must be >= 0, got -1"):
        HandoffBuffer(10).reserve_read_capacity(-1)


# -- read_available ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_read_available_appends_and_returns_the_count() -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(64)
        reader = ScriptedReader(b"abc", b"de")
        assert await buf.read_available(reader) == 3
        assert await buf.read_available(reader) == 2
        assert bytes(buf.peek()) == b"abcde"


@pytest.mark.asyncio
async def test_read_available_returns_zero_at_end_of_stream_and_keeps_the_bytes() -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(64)
        reader = ScriptedReader(b"last")
        await read_all(buf, reader)
        assert await buf.read_available(reader) == 0
        assert buf.freeze_all() == b"last"


@pytest.mark.asyncio
async def test_read_available_offers_at_most_read_reserve() -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(max_len=100, read_reserve=4)
        reader = ScriptedReader(b"0123456789")
        await read_all(buf, reader)
        assert bytes(buf.peek()) == b"0123456789"
        assert set(reader.offered) == {4}


@pytest.mark.asyncio
async def test_read_available_offers_at_most_the_room_left_under_max_len() -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(max_len=10, read_reserve=8)
        reader = ScriptedReader(b"0123456789")
        assert await buf.read_available(reader) == 8
        assert await buf.read_available(reader) == 2
        assert reader.offered == [8, 2]


@pytest.mark.asyncio
async def test_reads_land_in_the_buffer_storage() -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(max_len=64, read_reserve=8)
        storages: list[object] = []

        class Recorder(ScriptedReader):
            async def read_into(self, view: memoryview) -> int:
                storages.append(view.obj)
                return await super().read_into(view)

        await buf.read_available(Recorder(b"xyz"))
        assert storages == [buf.peek().obj]


@pytest.mark.asyncio
async def test_full_buffer_raises_before_reading_and_leaves_bytes_in_the_reader(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = socket_pair
        peer.sendall(b"abcdefgh")
        buf = HandoffBuffer(max_len=4)
        while len(buf) < 4:
            await buf.read_available(ours)
        with pytest.raises(LimitExceeded) as info:
            await buf.read_available(ours)
        assert (info.value.attempted, info.value.limit) == (5, 4)
        assert str(info.value) == "buffer limit exceeded: 5 bytes attempted, limit is 4"
        assert buf.freeze_all() == b"abcd"
        while len(buf) < 4:
            await buf.read_available(ours)
        assert buf.freeze_all() == b"efgh"


@pytest.mark.asyncio
async def test_full_buffer_does_not_call_the_reader() -> None:
    async with asyncio.timeout(WAIT):
        buf = filled(b"1234", max_len=4)
        reader = ScriptedReader(b"5")
        with pytest.raises(LimitExceeded):
            await buf.read_available(reader)
        assert reader.offered == []
        assert reader.script == [b"5"]


@pytest.mark.asyncio
async def test_reader_os_error_becomes_buffer_io_error_chaining_it() -> None:
    async with asyncio.timeout(WAIT):
        failure = ConnectionResetError(104, "peer reset")
        buf = HandoffBuffer(64)
        with pytest.raises(BufferIOError) as info:
            await read_all(buf, ScriptedReader(b"ok", failure))
        assert info.value.__cause__ is failure
        assert info.value.error is failure
        assert repr(failure) in str(info.value)
        assert bytes(buf.peek()) == b"ok"


@pytest.mark.asyncio
async def test_reading_a_socket_reset_by_the_peer_raises_buffer_io_error(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = tcp_pair
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # linger 0: the close sends RST
        with pytest.raises(BufferIOError) as info:
            await read_all(HandoffBuffer(64), ours)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        assert info.value.error is info.value.__cause__


@pytest.mark.asyncio
async def test_read_available_switches_between_readers() -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(64)
        first, second = ScriptedReader(b"a", b"c"), ScriptedReader(b"b")
        for reader in (first, second, first):
            await buf.read_available(reader)
        assert buf.freeze_all() == b"abc"


@pytest.mark.asyncio
async def test_cancelled_read_leaves_the_buffer_intact_and_usable() -> None:
    async with asyncio.timeout(WAIT):
        ours, peer = duplex_pair(16)
        buf = filled(b"kept")
        task = asyncio.create_task(buf.read_available(ours))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert bytes(buf.peek()) == b"kept"
        await peer.write(b"+more")
        assert await buf.read_available(ours) == 5
        assert buf.freeze_all() == b"kept+more"


@pytest.mark.asyncio
async def test_storage_never_grows_past_max_len() -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(max_len=100, read_reserve=7)
        reader = ScriptedReader(bytes(range(100)))
        while len(buf) < 100:
            await buf.read_available(reader)
        assert len(buf) == 100
        assert buf.capacity <= 100
        assert bytes(buf.peek()) == bytes(range(100))


# -- taking bytes out -----------------------------------------------------------------------


def test_split_prefix_returns_immutable_bytes_and_keeps_the_rest() -> None:
    buf = filled(b"frame1rest")
    prefix = buf.split_prefix(6)
    assert type(prefix) is bytes
    assert prefix == b"frame1"
    assert bytes(buf.peek()) == b"rest"


def test_split_prefix_mut_returns_an_owned_bytearray() -> None:
    buf = filled(b"frame1rest")
    prefix = buf.split_prefix_mut(6)
    assert type(prefix) is bytearray
    prefix[:] = b"XXXXXX"
    assert bytes(buf.peek()) == b"rest"
    assert buf.split_prefix(4) == b"rest"


def test_split_of_zero_bytes_is_empty() -> None:
    buf = filled(b"ab")
    assert buf.split_prefix(0) == b""
    assert buf.split_prefix_mut(0) == bytearray()
    assert len(buf) == 2


def test_advance_discards_bytes() -> None:
    buf = filled(b"skipkeep")
    buf.advance(4)
    assert buf.freeze_all() == b"keep"


def test_freeze_all_empties_the_buffer() -> None:
    buf = filled(b"everything")
    frozen = buf.freeze_all()
    assert (type(frozen), frozen) == (bytes, b"everything")
    assert len(buf) == 0
    assert buf.freeze_all() == b""


@pytest.mark.parametrize(
    "take",
    [HandoffBuffer.split_prefix, HandoffBuffer.split_prefix_mut, HandoffBuffer.advance],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("requested", [4, 100, -1])
def test_split_out_of_bounds_carries_the_numbers_and_changes_nothing(
    take: Callable[[HandoffBuffer, int], object], requested: int
) -> None:
    buf = filled(b"abcdef")
    buf.advance(3)
    with pytest.raises(SplitOutOfBounds) as info:
        take(buf, requested)
    assert (info.value.requested, info.value.available) == (requested, 3)
    assert str(info.value) == (f"split out of bounds: {requested} bytes requested, 3 available")
    assert bytes(buf.peek()) == b"def"


@pytest.mark.parametrize("consumed", [0, 3], ids=["at-front", "after-split"])
def test_take_tail_and_from_tail_round_trip(consumed: int) -> None:
    cfg = HandoffBufferConfig(max_len=32)
    buf = filled(b"GET TUNNEL\nraw", max_len=32)
    buf.advance(consumed)
    tail = buf.take_tail()
    assert type(tail) is bytearray
    assert tail == b"GET TUNNEL\nraw"[consumed:]
    assert len(buf) == 0
    adopted = HandoffBuffer.from_tail(tail, cfg)
    assert adopted.freeze_all() == b"GET TUNNEL\nraw"[consumed:]


def test_from_tail_adopts_a_bytearray_without_copying() -> None:
    tail = bytearray(b"handed over")
    buf = HandoffBuffer.from_tail(tail, HandoffBufferConfig(32))
    assert buf.peek().obj is tail


def test_take_tail_of_an_empty_buffer_is_empty() -> None:
    assert HandoffBuffer(8).take_tail() == bytearray()


@pytest.mark.asyncio
async def test_buffer_is_reusable_after_take_tail() -> None:
    async with asyncio.timeout(WAIT):
        buf = filled(b"old")
        tail = buf.take_tail()
        await read_all(buf, ScriptedReader(b"new bytes"))
        assert buf.freeze_all() == b"new bytes"
        assert tail == b"old"


# -- ownership: returned prefixes never change ----------------------------------------------

TAKERS: dict[str, Callable[[HandoffBuffer], bytes | bytearray]] = {
    "split_prefix": lambda buf: buf.split_prefix(6),
    "split_prefix_mut": lambda buf: buf.split_prefix_mut(6),
    "freeze_all": HandoffBuffer.freeze_all,
    "take_tail": HandoffBuffer.take_tail,
}


@pytest.mark.parametrize("take", TAKERS.values(), ids=TAKERS.keys())
@pytest.mark.asyncio
async def test_taken_bytes_never_change_when_the_buffer_moves_on(
    take: Callable[[HandoffBuffer], bytes | bytearray],
) -> None:
    async with asyncio.timeout(WAIT):
        buf = HandoffBuffer(max_len=64, read_reserve=8)
        await read_all(buf, ScriptedReader(b"frame1frame2"))
        taken = take(buf)
        snapshot = bytes(taken)
        # Read more, split, compact (slide to the front) and grow the storage.
        reader = ScriptedReader(b"A" * 8, b"B" * 8, b"C" * 40)
        await buf.read_available(reader)
        buf.split_prefix(3)
        await buf.read_available(reader)
        buf.advance(len(buf) - 1)
        await read_all(buf, reader)
        buf.reserve_read_capacity(buf.max_len - len(buf))
        assert bytes(buf.peek()) == b"B" + b"C" * 40
        assert bytes(taken) == snapshot


# -- cost: splitting a frame does not move the rest ----------------------------------------


def test_split_prefix_does_not_move_or_reallocate_the_remaining_bytes() -> None:
    frames = [b"%015d\n" % i for i in range(4096)]
    buf = filled(b"".join(frames), max_len=len(frames) * 16)
    before = buf.peek()  # a view of the storage positions as they are now
    capacity = buf.capacity
    for i, frame in enumerate(frames[:-1]):
        assert buf.split_prefix(len(frame)) == frame
        now = buf.peek()
        # Same storage object, same size, and the bytes still sit where they were:
        # had the rest been moved to the front, ``before`` would show it.
        assert now.obj is before.obj
        assert buf.capacity == capacity
        assert before[16 * i : 16 * (i + 1)] == frame
        assert now[:16] == frames[i + 1]
    assert bytes(before) == b"".join(frames)


def test_split_through_takes_each_complete_frame_and_leaves_the_partial_one() -> None:
    buf = HandoffBuffer.from_tail(bytearray(b"GET /a\r\nGET /b\r\nGE"), HandoffBufferConfig(64))
    assert buf.split_through(b"\r\n") == b"GET /a\r\n"
    assert buf.split_through(b"\r\n") == b"GET /b\r\n"
    assert buf.split_through(b"\r\n") is None
    assert bytes(buf.peek()) == b"GE"  # the partial frame waits for the rest
    frame = buf.split_prefix(2)
    assert frame == b"GE" and len(buf) == 0 and buf.split_through(b"\n") is None


def test_split_through_returns_owned_bytes_and_refuses_an_empty_separator() -> None:
    buf = HandoffBuffer.from_tail(bytearray(b"ab\ncd\n"), HandoffBufferConfig(64))
    first = buf.split_through(b"\n")
    assert type(first) is bytes
    buf.reserve_read_capacity(50)  # may move or grow the storage
    assert first == b"ab\n"
    for call in (buf.split_through, buf.find):
        with pytest.raises(ValueError, match="must not be empty"):
            call(b"")  # as find(b"") would be 0 and split_through(b"") b"": agree by refusing
    assert len(buf) == 3
