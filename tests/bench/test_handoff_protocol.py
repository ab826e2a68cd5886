"""``handoff_protocol``: the workload on the library's protocol path, end to end."""

from __future__ import annotations

import asyncio
import socket

import pytest
from harness_support import SMALL, assert_ok, run_cli

from bytes_handoff_bench.harness.config import BenchConfig
from bytes_handoff_bench.harness.handoff_protocol import proxy_handoff_protocol
from bytes_handoff_bench.harness.workload import MARKER
from bytes_handoff_bench.names import Completion, Implementation, Transport


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("completion", ["fire_and_forget", "ticket"])
@pytest.mark.parametrize("scenario", ["fragmented", "coalesced"])
def test_integrated_tcp_verifies(scenario: str, completion: str, loop: str) -> None:
    run = run_cli(
        *SMALL,
        "--transport", "tcp",
        "--implementation", "handoff_protocol",
        "--scenario", scenario,
        "--completion", completion,
        "--loop", loop,
    )  # fmt: skip
    assert_ok(run, iterations=1)  # every byte verified by the sink, exact byte count
    assert run.out["implementation"] == "handoff_protocol"


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_full_write_budget_pauses_the_client_side_and_loses_nothing(loop: str) -> None:
    """A write budget of one read against 1 MiB per stream: refusals and pauses, no loss."""
    run = run_cli(
        "--connections", "4",
        "--route-frames", "64",
        "--tunnel-bytes", str(1024 * 1024),
        "--read-reserve", "1024",
        "--write-pending-bytes", "1024",
        "--input-fragment", "7000",
        "--transport", "tcp",
        "--implementation", "handoff_protocol",
        "--completion", "fire_and_forget",
        "--loop", loop,
    )  # fmt: skip
    assert_ok(run, iterations=1)


def test_the_protocol_path_runs_on_tcp_only() -> None:
    run = run_cli(*SMALL, "--transport", "duplex", "--implementation", "handoff_protocol")
    assert run.rc == 2
    assert "runs on --transport tcp" in run.stderr


async def _tcp_pair(small: bool) -> tuple[socket.socket, socket.socket]:
    """(connecting end, accepted end), non-blocking; small kernel buffers if asked."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        if small:
            for sock in (listener, client):  # before connect: the window is agreed then
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        listener.setblocking(False)
        client.setblocking(False)
        connecting = asyncio.ensure_future(loop.sock_connect(client, listener.getsockname()))
        accepted, _ = await loop.sock_accept(listener)
        await connecting
    accepted.setblocking(False)
    return client, accepted


async def _one_stream(cfg: BenchConfig, stream: bytes, pause: float) -> bytes:
    """``stream`` through one ``proxy_handoff_protocol`` to a sink that reads in bursts."""
    loop = asyncio.get_running_loop()
    client, inbound = await _tcp_pair(small=False)
    outbound, sink = await _tcp_pair(small=True)

    async def send() -> None:
        for i in range(0, len(stream), 16384):
            await loop.sock_sendall(client, stream[i : i + 16384])
        client.shutdown(socket.SHUT_WR)

    async def bursty_sink() -> bytes:
        got = bytearray()
        await asyncio.sleep(pause)  # everything between fills up: the write budget too
        while chunk := await loop.sock_recv(sink, 65536):
            got += chunk
            await asyncio.sleep(0)
        return bytes(got)

    with client, inbound, outbound, sink:
        sending = asyncio.ensure_future(send())
        received = asyncio.ensure_future(bursty_sink())
        forwarded = await proxy_handoff_protocol(inbound, outbound, cfg)
        await sending
        got = await received
    assert forwarded == len(stream)
    return got


@pytest.mark.parametrize("completion", [Completion.FIRE_AND_FORGET, Completion.TICKET])
@pytest.mark.asyncio
async def test_sinks_whose_transports_pause_and_resume_get_every_byte_in_order(
    completion: Completion,
) -> None:
    """Sinks that start late fill every buffer and the write budget; their transports
    then pause and resume many times while 16 streams share the loop: every byte
    arrives, in order. (The fault soak's protocol-path run is what found the callback
    style reordering under such pauses: ``tests/bench/test_soak.py``.)"""
    cfg = BenchConfig(
        transport=Transport.TCP,
        implementation=Implementation.HANDOFF_PROTOCOL,
        completion=completion,
        read_reserve=16 * 1024,
        write_pending_bytes_flag=32 * 1024,
    ).validate()
    period = bytes(i * 7 % 251 for i in range(251))
    streams = [
        b"".join(b"%04d route %04d\n" % (n, i) for i in range(64)) + MARKER + period * 1100
        for n in range(16)
    ]
    async with asyncio.timeout(60):
        got = await asyncio.gather(
            *(_one_stream(cfg, s, pause=0.05 + 0.01 * (n % 4)) for n, s in enumerate(streams))
        )
    for sent, received in zip(streams, got, strict=True):
        assert len(received) == len(sent)
        assert received == sent
