"""``floor``: the bare ``create_server`` copy every report measures against.

End to end (integrated TCP on both loops, the split service with several
workers): the sink verifies every byte as for every implementation. In
process: flow control against a slow sink, a sink that refuses, a service
closed mid-stream, and nothing but the copy on its hot path.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import socket
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from harness_support import SMALL, assert_ok, run_cli, run_split

from bytes_handoff_bench.errors import BenchError, UsageError
from bytes_handoff_bench.harness import floor
from bytes_handoff_bench.harness.config import BenchConfig
from bytes_handoff_bench.harness.implementations import IMPLEMENTATIONS, StreamHooks
from bytes_handoff_bench.harness.transports import bind_listener
from bytes_handoff_bench.harness.workload import StreamVerifier, Workload
from bytes_handoff_bench.names import FLOOR, REPORT_ORDER, TCP_ONLY, implementations_for

LOOPS = ["uvloop", "asyncio"]


# -- registered like every implementation ------------------------------------------------------


def test_registered_last_tcp_only_with_a_serve_function() -> None:
    impl = IMPLEMENTATIONS[FLOOR]
    assert list(IMPLEMENTATIONS)[-1] == FLOOR == REPORT_ORDER[-1] == "floor"
    assert impl.serve is floor.serve_floor and impl.transports == ("tcp",)
    assert FLOOR in TCP_ONLY and FLOOR in implementations_for("tcp")
    assert FLOOR not in implementations_for("duplex")
    assert all(IMPLEMENTATIONS[name].serve is None for name in IMPLEMENTATIONS if name != FLOOR)
    with pytest.raises(UsageError, match="runs on --transport tcp"):
        BenchConfig(transport="duplex", implementation=FLOOR).validate()


def test_no_harness_code_on_its_hot_path() -> None:
    # buffer_updated is the copy and the write, and the module leans on no harness machinery.
    source = textwrap.dedent(inspect.getsource(floor.FloorStream.buffer_updated))
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.FunctionDef)
    assert [ast.unparse(s) for s in body.body] == [
        "self.forwarded += nbytes",
        "self.out.write(self.view[:nbytes].tobytes())",
    ]
    tree = ast.parse(Path(floor.__file__).read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level and node.module
    }
    # tls: the run's TLS contexts (--tls), taken once when the service starts.
    assert imported <= {"errors", "names", "config", "tls"}, imported


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("scenario", ["fragmented", "coalesced"])
def test_integrated_tcp_verifies(scenario: str, loop: str) -> None:
    run = run_cli(
        *SMALL, "--transport", "tcp", "--implementation", FLOOR, "--scenario", scenario,
        "--loop", loop, "--iterations", "2",
    )  # fmt: skip
    assert_ok(run, iterations=2)  # every byte verified by the sink, exact byte count
    assert run.out["implementation"] == FLOOR and run.out["loop"] == loop


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_split_service_counts_and_the_sink_verifies(tmp_path: Path, workers: str) -> None:
    shape = [*SMALL, "--implementation", FLOOR, "--scenario", "coalesced"]
    driver, svc, err, rc, _addr = run_split(tmp_path, [*shape, "--worker-threads", workers])
    assert_ok(driver, iterations=2)
    assert rc == 0, err
    assert svc["implementation"] == FLOOR and svc["worker_threads"] == workers
    # The service's hooks: every stream counted, the forwarded bytes checked, a window.
    assert svc["total_bytes"] == driver.out["total_bytes"]
    assert svc["total_streams"] == driver.out["total_streams"] == "6"
    assert float(svc["total_seconds"]) > 0 and float(svc["cpu_ns_per_byte"]) > 0


# -- in process --------------------------------------------------------------------------------


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(main(), 30))


class Recorder:
    """StreamHooks that remember what they were told."""

    def __init__(self) -> None:
        self.opened = 0
        self.finished: list[tuple[int, BaseException | None]] = []
        self.done = asyncio.Event()

    def hooks(self) -> StreamHooks:
        def opened() -> None:
            self.opened += 1

        def finished(began: float, forwarded: int, error: BaseException | None) -> None:
            self.finished.append((forwarded, error))
            self.done.set()

        return StreamHooks(opened, finished)


async def one_stream(
    cfg: BenchConfig, stream: bytes, sink_gate: asyncio.Event | None = None, sink_up: bool = True
) -> tuple[Recorder, StreamVerifier]:
    """Client -> floor -> verifying sink for one stream; the sink reads nothing until
    ``sink_gate`` is set (or 10 s passed)."""
    loop = asyncio.get_running_loop()
    verifier = StreamVerifier(Workload(cfg), expected_conn=0)
    sink_listener = bind_listener(("127.0.0.1", 0))
    sink_addr = sink_listener.getsockname()[:2]
    if not sink_up:
        sink_listener.close()
    if sink_gate is not None:
        sink_listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener = bind_listener(("127.0.0.1", 0))
    recorder = Recorder()
    service = await floor.serve_floor(listener, sink_addr, cfg, recorder.hooks())

    async def sink() -> None:
        conn, _ = await loop.sock_accept(sink_listener)
        if sink_gate is not None:
            await asyncio.wait_for(sink_gate.wait(), 10)
        buf = bytearray(16384)
        while n := await loop.sock_recv_into(conn, buf):
            verifier.feed(buf, n)
        conn.close()

    async def client() -> None:
        sock = socket.create_connection(listener.getsockname()[:2])
        sock.setblocking(False)
        await loop.sock_sendall(sock, stream)
        sock.shutdown(socket.SHUT_WR)
        while await loop.sock_recv(sock, 4096):
            pass
        sock.close()

    tasks = [asyncio.ensure_future(client())]
    if sink_up:
        tasks.append(asyncio.ensure_future(sink()))
    try:
        await recorder.done.wait()
        await asyncio.wait(tasks, timeout=5)
    finally:
        for task in tasks:
            task.cancel()
        service.close()
        if sink_up:
            sink_listener.close()
    return recorder, verifier


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_sink_pauses_the_reads_and_every_byte_arrives(
    monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    # A sink that reads nothing at first: the kernel's buffers fill, then the floor's
    # transport buffer, which pauses the inbound reads; then the sink drains it all.
    cfg = BenchConfig(transport="tcp", route_frames=16, tunnel_bytes=16 * 1024 * 1024)
    stream = Workload(cfg).stream_bytes(0)
    pauses: list[bool] = []
    original = floor._Outbound.pause_writing

    async def main() -> tuple[Recorder, StreamVerifier]:
        gate = asyncio.Event()

        def pause_writing(self: floor._Outbound) -> None:
            original(self)
            pauses.append(self.stream.inbound.is_reading())
            gate.set()

        monkeypatch.setattr(floor._Outbound, "pause_writing", pause_writing)
        return await one_stream(cfg, stream, sink_gate=gate)

    recorder, verifier = run_on(loop, main)
    verifier.finish()  # every byte, in order
    assert recorder.opened == 1 and recorder.finished == [(len(stream), None)]
    assert pauses and not any(pauses), "the slow sink never paused the inbound reads"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_sink_that_is_not_there_is_the_streams_error(loop: str) -> None:
    cfg = BenchConfig(transport="tcp", route_frames=2, tunnel_bytes=4096)
    stream = Workload(cfg).stream_bytes(0)
    recorder, _ = run_on(loop, lambda: one_stream(cfg, stream, sink_up=False))
    [(_forwarded, error)] = recorder.finished
    assert isinstance(error, BenchError) and "cannot connect to sink" in str(error)


@pytest.mark.parametrize("loop", LOOPS)
def test_closing_the_service_aborts_its_streams_silently(loop: str) -> None:
    # A signal stops the service mid-stream: its streams go, and no error is reported.
    cfg = BenchConfig(transport="tcp")

    async def main() -> tuple[Recorder, bool]:
        loop_ = asyncio.get_running_loop()
        sink_listener = bind_listener(("127.0.0.1", 0))
        listener = bind_listener(("127.0.0.1", 0))
        recorder = Recorder()
        service = await floor.serve_floor(
            listener, sink_listener.getsockname()[:2], cfg, recorder.hooks()
        )
        client = socket.create_connection(listener.getsockname()[:2])
        client.setblocking(False)
        await loop_.sock_sendall(client, b"GET /tenant/0000/object/00000000xxxx\n")
        while recorder.opened == 0:
            await asyncio.sleep(0.01)
        service.close()
        try:  # the client's connection went: an end of stream, or a reset (an abort)
            ended = await loop_.sock_recv(client, 16) == b""
        except ConnectionResetError:
            ended = True
        await asyncio.sleep(0.05)
        client.close()
        sink_listener.close()
        return recorder, ended

    recorder, ended = run_on(loop, main)
    assert ended and recorder.opened == 1 and recorder.finished == []
