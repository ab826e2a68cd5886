"""Read-side micro-benchmarks: read buffering, line splitting, prefix splits, tail handoff.

Families: ``read_raw_discard_lower_bound``, ``read_owned_lines``,
``read_handoff_fragmentation_sweep``, ``split_freeze_prefixes``,
``split_prefix_mut``, ``take_tail_mode_switch``, ``search_trickle``.

Every read case drains the same input (64-byte lines: 63 bytes + ``\\n``)
through the same reader kind, :class:`SliceReader`: an in-memory reader with
``async read_into(view)`` that fills ``min(len(view), remaining)`` bytes and
never suspends, like reading a Rust ``&[u8]`` in the crate's benches. So the
read size is the caller's request size (``read_size`` / ``read_reserve``) and
the cases differ only in what they do with the bytes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from bytes_handoff import HandoffBuffer, HandoffBufferConfig

SMOKE = os.environ.get("BENCH_SMOKE", "") not in ("", "0")
Measure = Callable[..., Any]  # the `measure` fixture of conftest.py

LINE_LEN = 64  # bytes per line, the newline included
LINE_COUNT = 256 if SMOKE else 4096  # 256 KiB of lines keeps a 64-byte-read round near 10 ms
SPLIT_PAYLOAD_LEN = (16 if SMOKE else 512) * 1024
READ_SIZES = (64, 16 * 1024)
SWEEP_RESERVES = (64, 256, 1024, 4096, 16 * 1024)
SPLIT_PREFIX_LENS = (16, 64, 512)
TAIL_PAYLOAD_LEN = (64 if SMOKE else 2048) * 1024
TAIL_PREFIX_LEN = 512
TRICKLE_PIECE = 64
TRICKLE_LEN = (16 if SMOKE else 256) * 1024  # bytes before the delimiter finally arrives


def line_payload(count: int, line_len: int) -> bytes:
    out = bytearray()
    for i in range(count):
        label = f"line-{i:08}".encode()
        out += label + b"x" * (line_len - 1 - len(label)) + b"\n"
    return bytes(out)


def binary_payload(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


LINES = line_payload(LINE_COUNT, LINE_LEN)
LAST_LINE = LINES[-LINE_LEN:]


class SliceReader:
    """Serves ``data`` front to back: each ``read_into`` fills as much of ``view`` as is left."""

    __slots__ = ("_data", "_len", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._len = len(data)
        self._pos = 0

    async def read_into(self, view: memoryview) -> int:
        pos = self._pos
        n = min(len(view), self._len - pos)
        view[:n] = self._data[pos : pos + n]
        self._pos = pos + n
        return n


# A result of a line-splitting case: frames, bytes in frames, last frame, bytes left unsplit.
Lines = tuple[int, int, bytes, int]


def check_lines(result: Lines) -> None:
    frames, nbytes, last, leftover = result
    assert frames == LINE_COUNT, f"{frames} frames, expected {LINE_COUNT}"
    assert nbytes == len(LINES), f"{nbytes} bytes in frames, expected {len(LINES)}"
    assert last == LAST_LINE, f"last frame {last!r}, expected {LAST_LINE!r}"
    assert leftover == 0, f"{leftover} bytes left unsplit"


# -- the workloads ------------------------------------------------------------------------------


async def raw_discard(reader: SliceReader, read_size: int) -> int:
    """Lower bound: read into one scratch buffer and drop the bytes."""
    scratch = memoryview(bytearray(read_size))
    total = 0
    while True:
        n = await reader.read_into(scratch)
        if n == 0:
            return total
        total += n


async def manual_bytearray_copy(reader: SliceReader, read_size: int) -> Lines:
    """What one writes by hand: append each read to a bytearray, copy each frame out, ``del`` it."""
    scratch = bytearray(read_size)
    sv = memoryview(scratch)
    buf = bytearray()
    frames = nbytes = 0
    last = b""
    while True:
        n = await reader.read_into(sv)
        if n == 0:
            break
        buf += sv[:n]
        while (i := buf.find(b"\n")) >= 0:
            frame = bytes(buf[: i + 1])
            del buf[: i + 1]
            frames += 1
            nbytes += len(frame)
            last = frame
    return frames, nbytes, last, len(buf)


async def bytearray_split(reader: SliceReader, read_size: int) -> Lines:
    """The same reads, but frames are sliced out at an offset (one copy each) and the
    consumed front is dropped once per read instead of once per frame."""
    scratch = bytearray(read_size)
    sv = memoryview(scratch)
    buf = bytearray()
    start = 0
    frames = nbytes = 0
    last = b""
    while True:
        n = await reader.read_into(sv)
        if n == 0:
            break
        if start:
            del buf[:start]
            start = 0
        buf += sv[:n]
        with memoryview(buf) as mv:
            while (i := buf.find(b"\n", start)) >= 0:
                frame = bytes(mv[start : i + 1])
                start = i + 1
                frames += 1
                nbytes += len(frame)
                last = frame
    return frames, nbytes, last, len(buf) - start


async def handoff_lines(reader: SliceReader, read_reserve: int) -> Lines:
    """The library path: ``read_available`` into spare room, ``find``, ``split_prefix``."""
    buf = HandoffBuffer.with_config(
        HandoffBufferConfig(max_len=len(LINES) + read_reserve, read_reserve=read_reserve)
    )
    frames = nbytes = 0
    last = b""
    while True:
        n = await buf.read_available(reader)
        if n == 0:
            break
        while (i := buf.find(b"\n")) >= 0:
            frame = buf.split_prefix(i + 1)
            frames += 1
            nbytes += len(frame)
            last = frame
    return frames, nbytes, last, len(buf)


LINE_CASES = {
    "manual_bytearray_copy": manual_bytearray_copy,
    "bytearray_split": bytearray_split,
    "handoff_buffer": handoff_lines,
}


# -- read families -------------------------------------------------------------------------------


@pytest.mark.parametrize("read_size", READ_SIZES, ids=str)
def test_read_raw_discard_lower_bound(
    measure: Measure, loop: asyncio.AbstractEventLoop, read_size: int
) -> None:
    def round_() -> int:
        return loop.run_until_complete(raw_discard(SliceReader(LINES), read_size))

    def check(total: int) -> None:
        assert total == len(LINES), f"read {total} bytes, expected {len(LINES)}"

    measure(
        round_,
        family="read_raw_discard_lower_bound",
        case=str(read_size),
        check=check,
        nbytes=len(LINES),
    )


@pytest.mark.parametrize("read_size", READ_SIZES, ids=str)
@pytest.mark.parametrize("impl", list(LINE_CASES))
def test_read_owned_lines(
    measure: Measure, loop: asyncio.AbstractEventLoop, impl: str, read_size: int
) -> None:
    work = LINE_CASES[impl]

    def round_() -> Lines:
        return loop.run_until_complete(work(SliceReader(LINES), read_size))

    measure(
        round_,
        family="read_owned_lines",
        case=f"{impl}/{read_size}",
        check=check_lines,
        nbytes=len(LINES),
    )


@pytest.mark.parametrize("reserve", SWEEP_RESERVES, ids=str)
def test_read_handoff_fragmentation_sweep(
    measure: Measure, loop: asyncio.AbstractEventLoop, reserve: int
) -> None:
    def round_() -> Lines:
        return loop.run_until_complete(handoff_lines(SliceReader(LINES), reserve))

    measure(
        round_,
        family="read_handoff_fragmentation_sweep",
        case=str(reserve),
        check=check_lines,
        nbytes=len(LINES),
    )


# -- split and tail families ---------------------------------------------------------------------

SPLIT_PAYLOAD = binary_payload(SPLIT_PAYLOAD_LEN)
TAIL_PAYLOAD = binary_payload(TAIL_PAYLOAD_LEN)


def _split_all(prefix_len: int, mutable: bool) -> tuple[int, int, Any]:
    # One copy of the payload into a fresh buffer per round, adopted without a copy.
    buf = HandoffBuffer.from_tail(bytearray(SPLIT_PAYLOAD), HandoffBufferConfig(SPLIT_PAYLOAD_LEN))
    split = buf.split_prefix_mut if mutable else buf.split_prefix
    prefixes = 0
    last: Any = b""
    while len(buf) >= prefix_len:
        last = split(prefix_len)
        prefixes += 1
    return prefixes, len(buf), last


def _check_split(prefix_len: int, mutable: bool) -> Any:
    expected = SPLIT_PAYLOAD_LEN // prefix_len
    start = (expected - 1) * prefix_len
    want_last = SPLIT_PAYLOAD[start : start + prefix_len]

    def check(result: tuple[int, int, Any]) -> None:
        prefixes, left, last = result
        assert prefixes == expected, f"{prefixes} prefixes, expected {expected}"
        assert left == SPLIT_PAYLOAD_LEN - expected * prefix_len
        assert type(last) is (bytearray if mutable else bytes), type(last)
        assert last == want_last

    return check


@pytest.mark.parametrize("prefix_len", SPLIT_PREFIX_LENS, ids=str)
def test_split_freeze_prefixes(measure: Measure, prefix_len: int) -> None:
    measure(
        lambda: _split_all(prefix_len, mutable=False),
        family="split_freeze_prefixes",
        case=str(prefix_len),
        check=_check_split(prefix_len, mutable=False),
        nbytes=SPLIT_PAYLOAD_LEN,
    )


@pytest.mark.parametrize("prefix_len", SPLIT_PREFIX_LENS, ids=str)
def test_split_prefix_mut(measure: Measure, prefix_len: int) -> None:
    measure(
        lambda: _split_all(prefix_len, mutable=True),
        family="split_prefix_mut",
        case=str(prefix_len),
        check=_check_split(prefix_len, mutable=True),
        nbytes=SPLIT_PAYLOAD_LEN,
    )


def test_take_tail_mode_switch(measure: Measure) -> None:
    """Route one prefix, then hand the rest to the next parser mode.

    ``split_prefix`` + ``take_tail`` + ``from_tail``: what a proxy does when it
    switches from parsing to a raw tunnel.
    """
    cfg = HandoffBufferConfig(TAIL_PAYLOAD_LEN)

    def round_() -> tuple[bytes, HandoffBuffer]:
        buf = HandoffBuffer.from_tail(bytearray(TAIL_PAYLOAD), cfg)
        prefix = buf.split_prefix(TAIL_PREFIX_LEN)
        tail = buf.take_tail()
        return prefix, HandoffBuffer.from_tail(tail, cfg)

    def check(result: tuple[bytes, HandoffBuffer]) -> None:
        prefix, next_mode = result
        assert prefix == TAIL_PAYLOAD[:TAIL_PREFIX_LEN]
        assert len(next_mode) == TAIL_PAYLOAD_LEN - TAIL_PREFIX_LEN
        with next_mode.peek() as view:
            assert view[:16] == TAIL_PAYLOAD[TAIL_PREFIX_LEN : TAIL_PREFIX_LEN + 16]
            assert view[-16:] == TAIL_PAYLOAD[-16:]

    measure(
        round_,
        family="take_tail_mode_switch",
        case=f"prefix_{TAIL_PREFIX_LEN}",
        check=check,
        nbytes=TAIL_PAYLOAD_LEN,
    )


# -- a slow peer ---------------------------------------------------------------------------------

TRICKLE_FRAME = b"x" * TRICKLE_LEN + b"\r\n"


def _trickle_pieces() -> list[bytes]:
    return [
        TRICKLE_FRAME[i : i + TRICKLE_PIECE] for i in range(0, len(TRICKLE_FRAME), TRICKLE_PIECE)
    ]


TRICKLE_PIECES = _trickle_pieces()


class PieceReader:
    """Serves ``pieces`` one per read, like a peer that sends 64 bytes at a time."""

    __slots__ = ("_next", "_pieces")

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces
        self._next = 0

    async def read_into(self, view: memoryview) -> int:
        if self._next == len(self._pieces):
            return 0
        piece = self._pieces[self._next]
        self._next += 1
        view[: len(piece)] = piece
        return len(piece)


async def trickle_handoff(reader: PieceReader) -> bytes | None:
    """``split_through`` after every read: the buffer resumes its last search."""
    buf = HandoffBuffer(len(TRICKLE_FRAME), read_reserve=TRICKLE_PIECE)
    while await buf.read_available(reader):
        if (frame := buf.split_through(b"\r\n")) is not None:
            return frame
    return None


async def trickle_rescan(reader: PieceReader) -> bytes | None:
    """What a hand-written ``bytearray`` parser does: search from the front after every read."""
    buf = bytearray()
    view = bytearray(TRICKLE_PIECE)
    while n := await reader.read_into(memoryview(view)):
        buf += view[:n]
        if (i := buf.find(b"\r\n")) >= 0:
            return bytes(buf[: i + 2])
    return None


async def trickle_resume(reader: PieceReader) -> bytes | None:
    """A hand-written parser that remembers where its search stopped (the expert's version)."""
    buf = bytearray()
    view = bytearray(TRICKLE_PIECE)
    scanned = 0
    while n := await reader.read_into(memoryview(view)):
        buf += view[:n]
        if (i := buf.find(b"\r\n", scanned)) >= 0:
            return bytes(buf[: i + 2])
        scanned = max(len(buf) - 1, 0)
    return None


TRICKLE_CASES = {
    "handoff_split_through": trickle_handoff,
    "manual_rescan": trickle_rescan,
    "manual_resume": trickle_resume,
}


@pytest.mark.parametrize("impl", list(TRICKLE_CASES))
def test_search_trickle(measure: Measure, loop: asyncio.AbstractEventLoop, impl: str) -> None:
    """A peer trickles one long frame in 64-byte pieces; the parser looks for CRLF after each.

    Searching from the front every time costs O(frame^2 / piece); resuming costs O(frame).
    """
    work = TRICKLE_CASES[impl]

    def round_() -> bytes | None:
        return loop.run_until_complete(work(PieceReader(TRICKLE_PIECES)))

    def check(frame: bytes | None) -> None:
        assert frame == TRICKLE_FRAME, "the one frame, whole"

    measure(
        round_,
        family="search_trickle",
        case=f"{impl}/{TRICKLE_LEN}",
        check=check,
        nbytes=len(TRICKLE_FRAME),
    )
