"""The safety contract at its edges: nothing lost, owned means owned, every wait ends.

Each test here is one promise the README's "Safety contract" section makes,
tried the way a hostile or careless caller, or a faulty network, would try it.
"""

from __future__ import annotations

import array
import asyncio
import socket
import ssl
from collections.abc import Sequence

import pytest

from bytes_handoff import (
    BufferIOError,
    BytesLike,
    HandoffBuffer,
    HandoffBufferConfig,
    SplitOutOfBounds,
    WriteClosed,
    WriteError,
    WriteHandoff,
    WriteHandoffConfig,
    WriteIOError,
    duplex_pair,
    tunnel,
)
from net_support import recv_all

#: Bound on every wait inside a test: a hang fails fast instead of at the global timeout.
WAIT = 5.0
MiB = 1024 * 1024


def pattern(n: int, seed: int = 0) -> bytes:
    period = bytes((seed + i * 7) % 251 for i in range(251))  # made whole: off the loop's time
    return (period * (n // 251 + 1))[:n]


async def drain(end: object) -> bytes:
    out = bytearray()
    while chunk := await end.read(65536):  # type: ignore[attr-defined]
        out += chunk
    return bytes(out)


# -- 1, 2: tunnel() forwards every byte it took or read -------------------------------------


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.asyncio
async def test_tunnel_forwards_a_tail_larger_than_the_write_budget(
    proxy_sockets: tuple[socket.socket, ...], splice: bool
) -> None:
    client, proxy_in, proxy_out, sink = proxy_sockets
    tail = pattern(2 * MiB + 5, seed=1)
    rest = pattern(300_000, seed=2)
    buf = HandoffBuffer.from_tail(tail, HandoffBufferConfig(max_len=4 * MiB))
    handoff = WriteHandoff.spawn(proxy_out)  # default budget: 1 MiB
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(WAIT * 2):
        received = asyncio.create_task(recv_all(sink))
        await loop.sock_sendall(client, rest)
        client.shutdown(socket.SHUT_WR)
        forwarded = await tunnel(buf, proxy_in, handoff, splice=splice)
        assert await received == tail + rest
    assert forwarded == len(tail) + len(rest)


@pytest.mark.asyncio
async def test_tunnel_on_a_closed_handoff_fails_before_taking_the_tail() -> None:
    _client, proxy_in = duplex_pair(1024)
    proxy_out, _sink = duplex_pair(1024)
    handoff = WriteHandoff.spawn(proxy_out)
    handoff.close()
    buf = HandoffBuffer.from_tail(b"already read", HandoffBufferConfig(max_len=64))
    async with asyncio.timeout(WAIT):
        with pytest.raises(WriteClosed):
            await tunnel(buf, proxy_in, handoff)
    assert bytes(buf.peek()) == b"already read"


@pytest.mark.asyncio
async def test_tunnel_copy_path_forwards_reads_larger_than_the_write_budget() -> None:
    client, proxy_in = duplex_pair(64 * 1024)
    proxy_out, sink = duplex_pair(64 * 1024)
    stream = pattern(200_000, seed=3)
    buf = HandoffBuffer(64 * 1024, read_reserve=32 * 1024)
    handoff = WriteHandoff.spawn(proxy_out, WriteHandoffConfig(max_pending_bytes=1000))

    async def send() -> None:
        await client.write(stream)
        client.shutdown_write()

    async with asyncio.timeout(WAIT):
        sender = asyncio.create_task(send())
        received = asyncio.create_task(drain(sink))
        forwarded = await tunnel(buf, proxy_in, handoff)
        await sender
        assert await received == stream
    assert forwarded == len(stream)


# -- 3, 7, 10: what a write accepts, and that it is owned -----------------------------------


class Recorder:
    """A writer that keeps what it was given; ``gate`` holds every write until set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.received = bytearray()

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        await self.gate.wait()
        n = 0
        for chunk in chunks:
            flat = memoryview(chunk).cast("B")
            self.received += flat
            n += flat.nbytes
        return n

    async def shutdown(self) -> None:
        return None


WRITE_CALLS = ["try_write", "try_write_fire_and_forget", "write", "write_fire_and_forget"]


async def _call(handoff: WriteHandoff, how: str, data: object) -> None:
    result = getattr(handoff, how)(data)
    if asyncio.iscoroutine(result):
        await result


@pytest.mark.parametrize("how", WRITE_CALLS)
@pytest.mark.parametrize(
    "make", [bytearray, lambda b: memoryview(bytearray(b))], ids=["bytearray", "memoryview"]
)
@pytest.mark.asyncio
async def test_mutable_input_is_owned_by_the_queue(how: str, make: object) -> None:
    writer = Recorder()
    async with asyncio.timeout(WAIT):
        handoff = WriteHandoff.spawn(writer)
        source = make(b"original")  # type: ignore[operator]
        await _call(handoff, how, source)
        source[:] = b"MUTATED!"
        writer.gate.set()
        await handoff.aclose()
    assert bytes(writer.received) == b"original"


@pytest.mark.asyncio
async def test_bytes_are_queued_without_a_copy() -> None:
    seen: list[object] = []

    class Keep(Recorder):
        async def write_some(self, chunks: Sequence[BytesLike]) -> int:
            seen.extend(chunks)
            return await super().write_some(chunks)

    writer = Keep()
    writer.gate.set()
    data = b"x" * 1000
    async with asyncio.timeout(WAIT):
        async with WriteHandoff.spawn(writer) as handoff:
            await handoff.write_fire_and_forget(data)
    assert seen[0] is data


@pytest.mark.parametrize("how", WRITE_CALLS)
@pytest.mark.asyncio
async def test_budget_counts_bytes_not_items(how: str) -> None:
    writer = Recorder()
    data = array.array("i", range(300))  # 1200 bytes, 300 items
    async with asyncio.timeout(WAIT):
        handoff = WriteHandoff.spawn(writer, WriteHandoffConfig(max_pending_bytes=4096))
        await _call(handoff, how, data)
        assert handoff.pending_bytes == data.itemsize * len(data)
        writer.gate.set()
        await handoff.aclose()
    assert bytes(writer.received) == data.tobytes()


@pytest.mark.asyncio
async def test_non_contiguous_views_are_written_in_order() -> None:
    writer = Recorder()
    writer.gate.set()
    source = bytes(range(100))
    async with asyncio.timeout(WAIT):
        async with WriteHandoff.spawn(writer) as handoff:
            await handoff.write_fire_and_forget(memoryview(source)[::3])
    assert bytes(writer.received) == source[::3]


@pytest.mark.parametrize("how", WRITE_CALLS)
@pytest.mark.parametrize("bad", ["a str", 123, 1.5, None, [b"a"]], ids=repr)
@pytest.mark.asyncio
async def test_non_bytes_writes_are_refused_at_the_call(how: str, bad: object) -> None:
    writer = Recorder()
    writer.gate.set()
    async with asyncio.timeout(WAIT):
        handoff = WriteHandoff.spawn(writer)
        with pytest.raises(TypeError, match=type(bad).__name__):
            await _call(handoff, how, bad)
        assert handoff.pending_bytes == 0
        assert handoff.queued_items == 0
        await handoff.flush()  # nothing stuck in the queue
        await handoff.aclose()


# -- 4, 5, 6: counts, lying readers, independent tails --------------------------------------


def _filled(data: bytes) -> HandoffBuffer:
    return HandoffBuffer.from_tail(data, HandoffBufferConfig(max_len=64))


@pytest.mark.parametrize("call", ["advance", "split_prefix", "split_prefix_mut"])
@pytest.mark.parametrize("count", [2.0, 1.5, "2", None, b"\x02"], ids=repr)
def test_non_int_counts_raise_type_error_and_change_nothing(call: str, count: object) -> None:
    buf = _filled(b"hello world")
    with pytest.raises(TypeError, match=type(count).__name__):
        getattr(buf, call)(count)
    assert bytes(buf.peek()) == b"hello world"
    assert buf.split_prefix(5) == b"hello"


@pytest.mark.parametrize(("start", "end"), [(0.0, None), (1, 2.5), ("1", None)], ids=repr)
def test_find_offsets_must_be_ints(start: object, end: object) -> None:
    buf = _filled(b"abcabc")
    with pytest.raises(TypeError, match="must be an int"):
        buf.find(b"c", start, end)  # type: ignore[arg-type]
    assert buf.find(b"c") == 2


def test_reserve_read_capacity_refuses_a_float() -> None:
    buf = _filled(b"abc")
    with pytest.raises(TypeError, match="float"):
        buf.reserve_read_capacity(2.0)  # type: ignore[arg-type]
    assert bytes(buf.peek()) == b"abc"


def test_int_like_counts_are_accepted() -> None:
    buf = _filled(b"hello")
    assert buf.split_prefix(True) == b"h"  # bool is an int

    class Two:
        def __index__(self) -> int:
            return 2

    assert buf.split_prefix(Two()) == b"el"  # type: ignore[arg-type]


class LyingReader:
    """Writes ``fill`` into the view and reports ``count`` (whatever that is)."""

    def __init__(self, count: object, fill: bytes = b"") -> None:
        self.count = count
        self.fill = fill

    async def read_into(self, view: memoryview) -> int:
        view[: len(self.fill)] = self.fill
        return self.count  # type: ignore[return-value]


class LyingNowaitReader(LyingReader):
    def read_into_nowait(self, view: memoryview) -> int | None:
        view[: len(self.fill)] = self.fill
        return self.count  # type: ignore[return-value]


@pytest.mark.parametrize("kind", [LyingReader, LyingNowaitReader], ids=["async", "nowait"])
@pytest.mark.parametrize("count", [5000, 17, -1, 2.0, "3", None], ids=repr)
@pytest.mark.asyncio
async def test_a_reader_that_lies_about_its_count_changes_nothing(
    kind: type[LyingReader], count: object
) -> None:
    buf = HandoffBuffer(64, read_reserve=16)
    assert await buf.read_available(LyingReader(3, b"abc")) == 3
    async with asyncio.timeout(WAIT):
        with pytest.raises(BufferIOError, match="reader"):
            await buf.read_available(kind(count, b"xyz"))
    assert len(buf) == 3
    assert bytes(buf.peek()) == b"abc"
    assert await buf.read_available(LyingReader(2, b"de")) == 2
    assert buf.freeze_all() == b"abcde"


@pytest.mark.parametrize("consumed", [0, 3])
@pytest.mark.parametrize("full", [True, False], ids=["full", "spare"])
def test_take_tail_with_a_held_peek_view_is_independent_and_growable(
    consumed: int, full: bool
) -> None:
    buf = HandoffBuffer(16, read_reserve=16)
    data = b"0123456789abcdef" if full else b"0123456789"
    _append(buf, data)
    assert (buf.capacity == len(data)) is full
    buf.advance(consumed)
    view = buf.peek()
    tail = buf.take_tail()
    assert bytes(tail) == data[consumed:]
    tail += b"more"  # must not raise BufferError: the tail is the caller's
    tail[0:1] = b"!"
    assert bytes(view) == data[consumed:]  # the view never sees the tail's changes
    view.release()


# -- 8: TLS sockets are never treated as plain sockets --------------------------------------


def _tls_socket() -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    raw = socket.socket()
    return ctx.wrap_socket(raw, server_hostname="example.invalid", do_handshake_on_connect=False)


@pytest.mark.asyncio
async def test_tls_sockets_are_refused_by_the_socket_adapters() -> None:
    tls = _tls_socket()
    with tls:
        tls.setblocking(False)
        with pytest.raises(TypeError, match="TLS"):
            await HandoffBuffer(64).read_available(tls)
        with pytest.raises(TypeError, match="TLS"):
            WriteHandoff.spawn(tls)


@pytest.mark.asyncio
async def test_tunnel_refuses_a_tls_source_before_taking_anything() -> None:
    tls = _tls_socket()
    proxy_out, _sink = duplex_pair(1024)
    with tls:
        tls.setblocking(False)
        buf = HandoffBuffer.from_tail(b"tail", HandoffBufferConfig(max_len=64))
        handoff = WriteHandoff.spawn(proxy_out)
        async with asyncio.timeout(WAIT):
            with pytest.raises(TypeError, match="TLS"):
                await tunnel(buf, tls, handoff)
        assert bytes(buf.peek()) == b"tail"


# -- 9, 14: leaving a handoff ends promptly; flush after close ------------------------------


@pytest.mark.asyncio
async def test_a_timeout_around_the_block_ends_even_if_the_peer_never_reads() -> None:
    stuck = Recorder()  # gate never opens: a peer that never reads
    # The outer bound turns a block that never ends into a failure: its expiry escapes
    # pytest.raises as a cancellation and fails the test out here.
    async with asyncio.timeout(WAIT):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                async with WriteHandoff.spawn(stuck) as handoff:
                    ticket = await handoff.write(b"never read")
                    await asyncio.sleep(10)
    assert handoff.closed
    with pytest.raises(WriteClosed):
        await ticket


@pytest.mark.asyncio
async def test_an_exception_in_the_block_aborts_instead_of_flushing() -> None:
    stuck = Recorder()
    async with asyncio.timeout(WAIT):
        with pytest.raises(ZeroDivisionError):
            async with WriteHandoff.spawn(stuck) as handoff:
                ticket = await handoff.write(b"queued")
                raise ZeroDivisionError
        with pytest.raises(WriteClosed):
            await ticket


@pytest.mark.asyncio
async def test_a_cancelled_aclose_aborts_the_writer() -> None:
    stuck = Recorder()
    handoff = WriteHandoff.spawn(stuck)
    ticket = await handoff.write(b"queued")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await handoff.aclose()
    async with asyncio.timeout(WAIT):
        with pytest.raises(WriteClosed):
            await ticket


@pytest.mark.asyncio
async def test_flush_after_close_waits_for_the_queued_data() -> None:
    writer = Recorder()
    handoff = WriteHandoff.spawn(writer)
    await handoff.write_fire_and_forget(b"queued before close")
    handoff.close()
    async with asyncio.timeout(WAIT):
        flushed = asyncio.create_task(handoff.flush())
        await asyncio.sleep(0.01)
        assert not flushed.done()
        writer.gate.set()
        await flushed
        assert bytes(writer.received) == b"queued before close"
        await handoff.aclose()


@pytest.mark.asyncio
async def test_flush_after_abort_raises_write_closed() -> None:
    writer = Recorder()
    handoff = WriteHandoff.spawn(writer)
    await handoff.write_fire_and_forget(b"dropped")
    handoff.abort()
    async with asyncio.timeout(WAIT):
        with pytest.raises(WriteClosed):
            await handoff.flush()


# -- 11: writers that lie or raise odd exceptions -------------------------------------------


class OddWriter:
    """``write_some`` (and ``write_nowait`` if ``nowait``) report ``result`` or raise it."""

    def __init__(self, result: object) -> None:
        self.result = result

    def _answer(self) -> int:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result  # type: ignore[return-value]

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        await asyncio.sleep(0)
        return self._answer()

    async def shutdown(self) -> None:
        return None


class OddNowaitWriter(OddWriter):
    def write_nowait(self, chunks: Sequence[BytesLike]) -> int:
        return self._answer()


ODD_RESULTS = [-1, -5, 10_000, 2.0, "3", None, RuntimeError("boom"), ValueError("odd")]


@pytest.mark.parametrize("kind", [OddWriter, OddNowaitWriter], ids=["async", "nowait"])
@pytest.mark.parametrize("result", ODD_RESULTS, ids=repr)
@pytest.mark.asyncio
async def test_a_lying_or_crashing_writer_fails_the_tickets_promptly(
    kind: type[OddWriter], result: object
) -> None:
    async with asyncio.timeout(WAIT):
        handoff = WriteHandoff.spawn(kind(result))
        for _ in range(3):
            await asyncio.sleep(0)  # the writer task parks: the next write takes the nowait path
        first = await handoff.write(b"first")
        second = await handoff.write(b"second")
        with pytest.raises(WriteIOError) as info:
            await first
        assert info.value.__cause__ is info.value.error
        with pytest.raises(WriteError):
            await second
        assert handoff.pending_bytes == 0
        assert handoff.closed
        with pytest.raises(WriteIOError):
            await handoff.aclose()


# -- 12, 13, 15, 16: sockets and readers at their edges -------------------------------------


@pytest.mark.asyncio
async def test_closing_a_socket_wakes_a_waiting_read(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _b = socket_pair
    buf = HandoffBuffer(1024)
    async with asyncio.timeout(WAIT):
        reading = asyncio.create_task(buf.read_available(a))
        await asyncio.sleep(0.05)
        a.close()
        with pytest.raises(BufferIOError):
            await reading
    assert len(buf) == 0


@pytest.mark.asyncio
async def test_a_socket_switched_to_blocking_mode_is_refused_not_read(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = socket_pair
    buf = HandoffBuffer(1024)
    b.send(b"first")
    async with asyncio.timeout(WAIT):
        assert await buf.read_available(a) == 5
        a.setblocking(True)  # no data is waiting: a blocking recv would freeze the loop
        with pytest.raises(ValueError, match="non-blocking"):
            await buf.read_available(a)
    assert buf.freeze_all() == b"first"


@pytest.mark.asyncio
async def test_a_writer_socket_switched_to_blocking_mode_fails_the_handoff(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _b = socket_pair
    handoff = WriteHandoff.spawn(a)
    a.setblocking(True)
    async with asyncio.timeout(WAIT):
        ticket = await handoff.write(b"x" * (4 * MiB // 4))
        with pytest.raises(WriteIOError, match="non-blocking"):
            await ticket


@pytest.mark.asyncio
async def test_tunnel_splice_refuses_a_blocking_source_at_once(
    proxy_sockets: tuple[socket.socket, ...],
) -> None:
    _client, proxy_in, proxy_out, _sink = proxy_sockets
    proxy_in.setblocking(True)
    handoff = WriteHandoff.spawn(proxy_out)
    async with asyncio.timeout(WAIT):
        with pytest.raises(ValueError, match="non-blocking"):
            await tunnel(HandoffBuffer(1024), proxy_in, handoff)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.asyncio
async def test_tunnel_into_a_reset_destination_raises_write_io_error(
    proxy_sockets: tuple[socket.socket, ...], splice: bool
) -> None:
    client, proxy_in, proxy_out, sink = proxy_sockets
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sink.close()  # RST
    await asyncio.sleep(0.01)
    handoff = WriteHandoff.spawn(proxy_out)
    loop = asyncio.get_running_loop()

    async def send() -> None:
        try:
            for _ in range(64):
                await loop.sock_sendall(client, b"z" * 65536)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    async with asyncio.timeout(WAIT * 2):
        sender = asyncio.create_task(send())
        with pytest.raises(WriteIOError) as info:
            await tunnel(HandoffBuffer(64 * 1024), proxy_in, handoff, splice=splice)
        sender.cancel()
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("reader", [None, 42, "sock"], ids=repr)
@pytest.mark.asyncio
async def test_read_available_from_a_non_reader_names_its_type(reader: object) -> None:
    buf = HandoffBuffer(64)
    with pytest.raises(TypeError, match=type(reader).__name__):
        await buf.read_available(reader)
    assert len(buf) == 0


# -- 17: a trickling peer costs linear search work -------------------------------------------


def test_searching_a_trickling_stream_resumes_where_the_last_search_stopped() -> None:
    buf = HandoffBuffer(64 * 1024, read_reserve=64)
    fed = 0
    scanned = 0
    while len(buf) + 64 + 2 <= buf.max_len:
        _append(buf, b"x" * 64)
        fed += 64
        # Where the search starts, relative to the front (the buffer's remembered offset).
        before = max(buf._scan_at - buf._start, 0)  # type: ignore[attr-defined]
        assert buf.split_through(b"\r\n") is None
        scanned += len(buf) - before
    assert scanned <= fed + 2 * (fed // 64)  # each byte searched about once, not len/64 times
    _append(buf, b"\r\n")
    assert buf.split_through(b"\r\n") == b"x" * fed + b"\r\n"


def _append(buf: HandoffBuffer, data: bytes) -> None:
    """Read ``data`` into ``buf`` synchronously through the nowait path."""

    class Once:
        def read_into_nowait(self, view: memoryview) -> int:
            view[: len(data)] = data
            return len(data)

        async def read_into(self, view: memoryview) -> int:
            raise AssertionError("nowait path expected")

    coro = buf.read_available(Once())
    try:
        coro.send(None)
    except StopIteration as done:
        assert done.value == len(data)
    else:
        raise AssertionError("read_available suspended")


def test_find_resumes_and_still_finds_a_separator_split_across_reads() -> None:
    buf = HandoffBuffer(1024, read_reserve=64)
    _append(buf, b"abc\r")
    assert buf.find(b"\r\n") == -1
    _append(buf, b"\ndef")
    assert buf.find(b"\r\n") == 3
    assert buf.split_through(b"\r\n") == b"abc\r\n"
    assert buf.find(b"\r\n") == -1
    _append(buf, b"\r\n")
    assert buf.split_through(b"\r\n") == b"def\r\n"


def test_split_out_of_bounds_names_the_numbers() -> None:
    buf = _filled(b"abc")
    with pytest.raises(SplitOutOfBounds, match="4 bytes requested, 3 available"):
        buf.advance(4)


# -- closing a socket right after abort() ----------------------------------------------------

ABORT_THEN_CLOSE = """
import asyncio, socket, sys, uvloop
from bytes_handoff import HandoffBuffer, WriteHandoff, WriteHandoffConfig, stop_waiting

async def main():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # a slow sink: the writer waits
    h = WriteHandoff.spawn(a, WriteHandoffConfig(max_pending_bytes=1 << 20))
    h.try_write_fire_and_forget(b"y" * 300_000)
    reading = asyncio.create_task(HandoffBuffer(1024).read_available(a))
    await asyncio.sleep(0)

    async def proxy_fails():
        h.abort()  # the writer's watch goes now, not on the cancelled task's next step
        reading.cancel()
        stop_waiting(a)  # the same for a read a cancelled task still waits in
        a.close()

    asyncio.create_task(proxy_fails())
    await asyncio.sleep(0.3)
    b.close()

(uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
print("survived")
"""


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_closing_a_socket_right_after_abort_is_safe(loop_name: str) -> None:
    """uvloop aborts the process if a watched descriptor is closed before its watch goes."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ABORT_THEN_CLOSE, loop_name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "survived"


# -- bounds are ints, checked at construction ------------------------------------------------

BOUNDS = {
    "HandoffBufferConfig.max_len": lambda v: HandoffBufferConfig(max_len=v),
    "HandoffBufferConfig.read_reserve": lambda v: HandoffBufferConfig(64, read_reserve=v),
    "HandoffBuffer(max_len)": lambda v: HandoffBuffer(v),
    "HandoffBuffer(read_reserve)": lambda v: HandoffBuffer(64, v),
    "WriteHandoffConfig.max_items": lambda v: WriteHandoffConfig(max_items=v),
    "WriteHandoffConfig.max_pending_bytes": lambda v: WriteHandoffConfig(max_pending_bytes=v),
    "duplex_pair(capacity)": lambda v: duplex_pair(v),
}


@pytest.mark.parametrize("bound", sorted(BOUNDS))
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (1.5, TypeError),
        (float("nan"), TypeError),
        (float("inf"), TypeError),
        ("64k", TypeError),
        (True, TypeError),
        (None, TypeError),
        (0, ValueError),
        (-1, ValueError),
        (2**64, ValueError),
    ],
    ids=["float", "nan", "inf", "str", "bool", "none", "zero", "negative", "huge"],
)
def test_every_bound_refuses_what_is_not_a_positive_int_and_names_itself(
    bound: str, value: object, error: type[Exception]
) -> None:
    field = bound.split("(")[-1].rstrip(")").split(".")[-1]
    field = "duplex capacity" if field == "capacity" else field
    with pytest.raises(error, match=field):
        BOUNDS[bound](value)


class Index:
    """An integer type of someone else's (numpy's int64, say): it has ``__index__``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __index__(self) -> int:
        return self.n


def test_a_bound_given_as_an_index_type_is_stored_as_an_int() -> None:
    cfg = HandoffBufferConfig(max_len=Index(4096), read_reserve=Index(512))  # type: ignore[arg-type]
    assert (type(cfg.max_len), cfg.max_len, type(cfg.read_reserve)) == (int, 4096, int)
