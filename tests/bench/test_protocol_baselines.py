"""The ``asyncio.BufferedProtocol`` baselines: ``manual_protocol`` and ``raw_protocol``.

End to end through the CLI (integrated TCP and the split service/driver), and
in-process: flow control against a slow sink, framing errors, clean detach.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from harness_support import (
    SMALL,
    assert_ok,
    run_cli,
    run_split,
)

from bytes_handoff_bench.errors import ProtocolError, UsageError
from bytes_handoff_bench.harness import protocols
from bytes_handoff_bench.harness.config import BenchConfig
from bytes_handoff_bench.harness.implementations import IMPLEMENTATIONS, names
from bytes_handoff_bench.harness.transports import tune
from bytes_handoff_bench.harness.workload import StreamVerifier, Workload
from bytes_handoff_bench.tools.artifacts import Stat
from bytes_handoff_bench.tools.report import CellSummary, table_rows
from bytes_handoff_bench.tools.wrapper import build_parser, check_supported, make_plan

PROTOCOLS = ["manual_protocol", "raw_protocol"]


# -- end to end -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("scenario", ["fragmented", "coalesced"])
@pytest.mark.parametrize("implementation", PROTOCOLS)
def test_integrated_tcp_verifies(implementation: str, scenario: str, loop: str) -> None:
    run = run_cli(
        *SMALL,
        "--transport",
        "tcp",
        "--implementation",
        implementation,
        "--scenario",
        scenario,
        "--loop",
        loop,
    )
    assert_ok(run, iterations=1)  # every byte verified by the sink, exact byte count
    assert run.out["implementation"] == implementation
    assert run.out["loop"] == loop


@pytest.mark.slow
def test_frames_split_across_tiny_reads() -> None:
    run = run_cli(
        *SMALL, "--transport", "tcp", "--implementation", "manual_protocol", "--input-fragment", "7"
    )
    assert_ok(run, iterations=1)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["fragmented", "coalesced"])
@pytest.mark.parametrize("implementation", PROTOCOLS)
def test_split_service_and_driver(tmp_path: Path, implementation: str, scenario: str) -> None:
    shape = [*SMALL, "--implementation", implementation, "--scenario", scenario]
    driver, svc, err, rc, _addr = run_split(tmp_path, shape)
    assert_ok(driver, iterations=2)
    assert rc == 0, err
    assert svc["implementation"] == implementation
    # The service checks each stream's forwarded count against the workload.
    assert svc["total_bytes"] == driver.out["total_bytes"]
    assert svc["total_streams"] == driver.out["total_streams"] == "6"


def test_tcp_only() -> None:
    for name in PROTOCOLS:
        assert IMPLEMENTATIONS[name].transports == ("tcp",)
        with pytest.raises(UsageError, match="runs on --transport tcp"):
            BenchConfig(transport="duplex", implementation=name).validate()


def test_implementation_all_includes_them(tmp_path: Path) -> None:
    def plan(*args: str) -> list[str]:
        parsed = build_parser("run-stream-harness.sh").parse_args(
            ["--implementation", "all", "--results-dir", str(tmp_path), *args]
        )
        p = make_plan(parsed, sys.executable)
        check_supported(p)
        return p.implementations

    tcp = plan("--transport", "tcp")
    assert tcp[0] == "handoff"
    assert tcp == names("tcp")
    assert {"manual_vec", "raw_copy", "handoff_splice", *PROTOCOLS} <= set(tcp)
    duplex = plan("--transport", "duplex")
    assert duplex == ["handoff", "manual_vec", "raw_copy"]


# -- in process -----------------------------------------------------------------------------


def tcp_pair(small_buffers: bool = False) -> tuple[socket.socket, socket.socket]:
    """A connected pair of tuned localhost TCP sockets (small kernel buffers on request)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        if small_buffers:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a = socket.socket()
        if small_buffers:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        a.connect(listener.getsockname())
        b, _ = listener.accept()
    return tune(a), tune(b)


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(main(), 30))


async def proxy_one(
    implementation: str, cfg: BenchConfig, stream: bytes, sink_delay: float = 0.0
) -> tuple[int, StreamVerifier, socket.socket, socket.socket]:
    """Client → proxy → verifying sink for one stream; returns the proxy's count and more."""
    loop = asyncio.get_running_loop()
    client, inbound = tcp_pair()
    outbound, sink = tcp_pair(small_buffers=sink_delay > 0)
    verifier = StreamVerifier(Workload(cfg), expected_conn=0)

    async def send() -> None:
        await loop.sock_sendall(client, stream)
        client.shutdown(socket.SHUT_WR)
        while await loop.sock_recv(client, 4096):
            pass

    async def drain() -> None:
        buf = bytearray(16384)
        while n := await loop.sock_recv_into(sink, buf):
            verifier.feed(buf, n)
            if sink_delay:
                await asyncio.sleep(sink_delay)

    tasks = [asyncio.ensure_future(send()), asyncio.ensure_future(drain())]
    try:
        forwarded = await IMPLEMENTATIONS[implementation].proxy(inbound, outbound, cfg)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        inbound.close()  # the caller's close: the proxy's transports already let go
        outbound.close()
        client.close()
        sink.close()
    return forwarded, verifier, inbound, outbound


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("implementation", PROTOCOLS)
def test_slow_sink_pauses_reading(
    monkeypatch: pytest.MonkeyPatch, implementation: str, loop: str
) -> None:
    cfg = BenchConfig(transport="tcp", route_frames=64, tunnel_bytes=2 * 1024 * 1024)
    stream = Workload(cfg).stream_bytes(0)
    pauses: list[int] = []
    original = protocols._Outbound.pause_writing

    def pause_writing(self: protocols._Outbound) -> None:
        original(self)
        inbound = self.link.inbound
        assert inbound is not None and not inbound.is_reading()
        outbound = self.link.outbound
        assert outbound is not None
        pauses.append(outbound.get_write_buffer_size())

    monkeypatch.setattr(protocols._Outbound, "pause_writing", pause_writing)
    forwarded, verifier, inbound, outbound = run_on(
        loop, lambda: proxy_one(implementation, cfg, stream, sink_delay=0.001)
    )
    verifier.finish()
    assert forwarded == len(stream) == cfg.bytes_per_connection
    assert pauses, "the slow sink never paused the inbound reads"
    # Paused at the loops' default high-water mark (64 KiB) plus at most one read's worth.
    assert max(pauses) <= 64 * 1024 + cfg.read_reserve + cfg.frame_len + 1
    assert inbound.fileno() == -1 and outbound.fileno() == -1


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (b"GET /tenant/0000/object/1\n" * 3, "ended before the TUNNEL marker"),
        (b"GET /tenant/0000/" + b"x" * 5000 + b"\nTUNNEL\n", "longer than the"),
    ],
)
def test_manual_protocol_framing_errors(loop: str, stream: bytes, match: str) -> None:
    cfg = BenchConfig(transport="tcp", route_frames=1, tunnel_bytes=0, read_reserve=1024)
    with pytest.raises(ProtocolError, match=match):
        run_on(loop, lambda: proxy_one("manual_protocol", cfg, stream))


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_tail_after_the_marker_in_one_read(loop: str) -> None:
    """Frames, marker and tunnel bytes arrive in one read: the tail is forwarded first."""
    cfg = BenchConfig(transport="tcp", route_frames=3, tunnel_bytes=5000, read_reserve=65536)
    stream = Workload(cfg).stream_bytes(0)
    forwarded, verifier, _, _ = run_on(loop, lambda: proxy_one("manual_protocol", cfg, stream))
    verifier.finish()
    assert forwarded == len(stream)


def test_comparison_keeps_handoff_first() -> None:
    cells = [
        CellSummary(impl, "coalesced", {"service_cpu_ns_per_byte": Stat(ns, 0.0, 1)}, Path(impl))
        for impl, ns in (("raw_protocol", 0.5), ("manual_protocol", 1.0), ("handoff", 2.0))
    ]
    headers, rows = table_rows(cells)
    assert headers[-1] == "ns/B vs handoff"
    assert [(row[1], row[-1]) for _, row in rows] == [
        ("handoff", "1.00x"),
        ("manual_protocol", "0.50x [n/a]"),  # one run: no interval
        ("raw_protocol", "0.25x [n/a]"),
    ]
