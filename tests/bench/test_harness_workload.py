"""The workload generator and the sink's incremental verifier, without any I/O."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytes_handoff_bench.errors import VerificationError
from bytes_handoff_bench.harness.config import BenchConfig
from bytes_handoff_bench.harness.transports import send_plan
from bytes_handoff_bench.harness.workload import MARKER, StreamVerifier, Workload

CFG = BenchConfig(route_frames=5, frame_len=40, tunnel_bytes=3000, read_reserve=1024)


def test_stream_layout() -> None:
    wl = Workload(CFG, max_chunk=4096)
    data = wl.stream_bytes(7)
    assert len(data) == CFG.bytes_per_connection == 5 * 41 + 7 + 3000
    frames = data[: 5 * 41]
    for i in range(5):
        frame = frames[i * 41 : (i + 1) * 41]
        assert frame.startswith(f"GET /tenant/0007/object/{i:08}".encode())
        assert frame.endswith(b"x\n") and len(frame) == 41
    assert data[5 * 41 : 5 * 41 + 7] == MARKER
    tunnel = data[5 * 41 + 7 :]
    assert tunnel == bytes((7 + i) % 251 for i in range(3000))


def test_shortest_frame_still_carries_the_stream_id() -> None:
    wl = Workload(BenchConfig(frame_len=16, route_frames=1, tunnel_bytes=0))
    assert wl.frame(42, 3) == b"GET /tenant/0042\n"


def _feed(verifier: StreamVerifier, data: bytes, cuts: list[int]) -> None:
    buf = bytearray(4096)
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        while pos < cut:
            n = min(cut - pos, len(buf))
            buf[:n] = data[pos : pos + n]
            verifier.feed(buf, n)
            pos += n


@settings(max_examples=60, deadline=None)
@given(
    conn=st.integers(0, 9999),
    cuts=st.lists(st.integers(0, CFG.bytes_per_connection), max_size=30),
)
def test_verifier_accepts_any_chunking(conn: int, cuts: list[int]) -> None:
    wl = Workload(CFG, max_chunk=4096)
    verifier = StreamVerifier(wl)
    _feed(verifier, wl.stream_bytes(conn), cuts)
    verifier.finish()
    assert verifier.conn == conn and verifier.done


@settings(max_examples=60, deadline=None)
@given(
    flip=st.integers(0, CFG.bytes_per_connection - 1),
    cuts=st.lists(st.integers(0, CFG.bytes_per_connection), max_size=10),
)
def test_verifier_names_the_first_wrong_byte(flip: int, cuts: list[int]) -> None:
    wl = Workload(CFG, max_chunk=4096)
    data = bytearray(wl.stream_bytes(3))
    data[flip] ^= 0x55
    verifier = StreamVerifier(wl)
    with pytest.raises(VerificationError) as info:
        _feed(verifier, bytes(data), cuts)
        verifier.finish()
    message = str(info.value)
    if flip < 16:  # the stream id itself is damaged
        assert "stream" in message
    else:
        assert re.match(rf"stream 0003: wrong byte at offset {flip}:", message), message


def test_verifier_rejects_short_long_and_foreign_streams() -> None:
    wl = Workload(CFG, max_chunk=4096)
    data = wl.stream_bytes(1)
    short = StreamVerifier(wl)
    _feed(short, data[:-1], [])
    with pytest.raises(VerificationError, match=r"stream 0001: ended after 3211 of 3212 bytes"):
        short.finish()
    long = StreamVerifier(wl)
    with pytest.raises(VerificationError, match=r"stream 0001: 1 bytes beyond the expected 3212"):
        _feed(long, data + b"\x00", [])
    foreign = StreamVerifier(wl, expected_conn=2)
    with pytest.raises(VerificationError, match=r"stream 0002: received the bytes of stream 0001"):
        _feed(foreign, data, [])
    junk = StreamVerifier(wl)
    with pytest.raises(VerificationError, match=r"unidentified stream: first bytes"):
        _feed(junk, b"POST /x" + bytes(20), [])


@given(
    total=st.integers(1, 5000),
    plen=st.integers(0, 5000),
    fragment=st.integers(1, 700),
)
def test_send_plan_covers_the_stream_in_fragments(total: int, plen: int, fragment: int) -> None:
    plen = min(plen, total)
    pos = 0
    while pos < total:
        end = send_plan(pos, total, plen, fragment)
        assert pos < end <= total
        assert end - pos <= fragment
        assert not (pos < plen < end)  # never crosses from prefix into tunnel
        pos = end
