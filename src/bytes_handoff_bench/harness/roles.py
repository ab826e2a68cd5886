"""The three roles: ``integrated``, ``tcp-service`` and ``tcp-driver``.

* integrated: client, proxy and sink of every stream in one worker (duplex
  pairs, or TCP listeners on 127.0.0.1 port 0).
* tcp-service: the proxy alone; accepts on ``--service-addr``, connects each
  stream to ``--sink-addr``; ends after ``--idle-timeout-millis`` without an
  active stream, and measures only its active window.
* tcp-driver: clients (to ``--service-addr``) and the sink (on ``--sink-addr``).

Integrated and driver run connection waves: ``connections`` streams at once
(split across workers), repeated ``--iterations`` times or until
``--duration-seconds``. A wave ends when every stream of it is verified by a
sink (of any worker: the counters are shared).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bytes_handoff import DuplexStream, duplex_pair

from ..errors import BenchError
from .config import SINK_BUFFER, BenchConfig
from .implementations import IMPLEMENTATIONS
from .metrics import CpuSnapshot, RssSampler, Summary, WorkerResult, combine, new_histogram
from .transports import (
    BufferPool,
    TcpClient,
    TcpSink,
    bind_listener,
    connect_tcp,
    duplex_client,
    duplex_sink,
    fmt_addr,
    tune,
)
from .workers import (
    Shared,
    WorkerSpec,
    early_stop,
    first_error,
    install_early_stop,
    note_early_stop,
    run_loop,
    run_workers,
)
from .workload import StreamVerifier, Workload

__all__ = ["RunOutcome", "Worker", "run_bench"]

_MAX_LATENCY_US = 60_000_000
_ANOTHER = "aborted: another worker failed"


def as_bench_error(exc: BaseException, label: str) -> BaseException:
    """``exc`` itself if it is the harness's own, else a ``BenchError`` naming ``label``."""
    if isinstance(exc, BenchError):
        return exc
    return BenchError(f"{label}: {type(exc).__name__}: {exc}")


class Worker:
    """One event loop's share of a run."""

    def __init__(self, cfg: BenchConfig, spec: WorkerSpec) -> None:
        self.cfg = cfg
        self.spec = spec
        self.shared = spec.shared
        self.proxy = IMPLEMENTATIONS[cfg.implementation].proxy
        self.wl = Workload(cfg, max_chunk=max(SINK_BUFFER, cfg.read_reserve))
        self.hist = new_histogram()
        self.result = WorkerResult()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.background: set[asyncio.Task[Any]] = set()
        self.clients: set[TcpClient] = set()
        self.sink: TcpSink | None = None
        self.sink_progress = [0]  # bytes seen by coroutine (duplex) sinks
        self.stop_requested = False
        # Until a first connect succeeds, connect_tcp's own deadline bounds the wait.
        self.connected_once = cfg.transport == "duplex"
        self.pool = BufferPool(max(SINK_BUFFER, cfg.read_reserve))
        self.own_listeners: list[socket.socket] = []
        self.target: tuple[str, int] = ("127.0.0.1", 0)
        self.target_what = "proxy"
        # Service accounting (this worker's own active window).
        self.local_active = 0
        self.window_start: CpuSnapshot | None = None
        self.window_end: CpuSnapshot | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def run(self) -> WorkerResult:
        loop = asyncio.get_running_loop()
        self.failure: asyncio.Future[BaseException] = loop.create_future()
        self.wake = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        if early_stop[0] or self.shared.get(Shared.STOP):
            self.request_stop()
        try:
            if self.cfg.role == "tcp-service":
                await self.run_service()
            elif self.cfg.transport == "duplex":
                await self.run_waves(self.duplex_stream)
            else:
                await self.run_tcp_clients()
        except BenchError as exc:
            self.result.error = str(exc)
            self.result.error_exit_code = exc.exit_code
        except Exception as exc:  # HandoffError, OSError, ...: one line, no traceback
            self.result.error = f"{type(exc).__name__}: {exc}"
        finally:
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
                signal.signal(sig, note_early_stop)  # a late signal must not kill the report
        if self.result.error is None and self.failure.done():
            # A proxy that failed after its sink had verified everything still fails the run.
            late = self.failure.result()
            self.result.error = str(late)
            self.result.error_exit_code = getattr(late, "exit_code", 1)
        return self.result.finish(self.hist)

    def request_stop(self) -> None:
        self.stop_requested = True
        self.wake.set()

    def fail(self, exc: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_result(exc)
            self.shared.set(Shared.FAILED, 1)
        self.wake.set()

    def spawn(
        self, coro: Coroutine[Any, Any, Any], label: str, background: bool = False
    ) -> asyncio.Task[Any]:
        """Run ``coro``; its failure fails the run. Background tasks are cancelled at the end."""
        task = asyncio.get_running_loop().create_task(coro)
        (self.background if background else self.tasks).add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            self.background.discard(t)
            self.wake.set()  # a wave may be waiting for this task
            if t.cancelled():
                return
            exc = t.exception()
            if exc is None:
                return
            self.fail(as_bench_error(exc, label))

        task.add_done_callback(done)
        return task

    def check(self) -> None:
        """Raise if the run failed here or elsewhere, or a signal asked us to stop."""
        if self.failure.done():
            raise self.failure.result()
        if self.shared.get(Shared.FAILED):
            raise BenchError(_ANOTHER)

    async def nap(self, seconds: float) -> None:
        """Sleep until woken (a stream finished, a failure, a signal) or ``seconds`` pass."""
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            pass

    async def shutdown(self) -> None:
        cancelled = set(self.background)
        for task in cancelled:
            task.cancel()
        if self.tasks:
            # After success only a proxy's last step may still be running: give it a moment.
            # After a failure or a signal, stop everything at once.
            ended = self.failure.done() or self.stop_requested or self.shared.get(Shared.FAILED)
            still = set(self.tasks)
            if not ended:
                _, still = await asyncio.wait(still, timeout=1.0)
            for task in still:
                task.cancel()
            cancelled |= still
        if cancelled:
            await asyncio.wait(cancelled, timeout=1.0)
        for client in list(self.clients):
            client.close()
        if self.sink is not None:
            self.sink.close()
        for listener in self.own_listeners:
            listener.close()
        if self.spec.listener is not None:
            self.spec.listener.close()
        self.wl.close()

    def record_latency(self, seconds: float) -> None:
        self.hist.record_value(max(1, min(int(seconds * 1e6), _MAX_LATENCY_US)))

    def on_stream_verified(self, verifier: StreamVerifier) -> None:
        self.record_latency(time.monotonic() - self.shared.start_times[verifier.conn])
        self.result.streams += 1
        self.result.bytes += verifier.pos
        self.shared.stream_verified(self.cfg.connections)
        self.wake.set()

    # -- waves (integrated, driver) ------------------------------------------------------------

    async def run_waves(self, launch: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        cfg = self.cfg
        start = CpuSnapshot.now()
        self.shared.mark_start()
        wave = 0
        while True:
            clients = [self.spawn(launch(c), f"client of stream {c:04}") for c in self.spec.conns]
            await self.wait_wave(clients, (wave + 1) * cfg.connections)
            wave += 1
            if cfg.duration_seconds > 0:
                elapsed = self.shared.get(Shared.WAVE_DONE_AT) - self.shared.get(Shared.T0)
                if elapsed >= cfg.duration_seconds:
                    break
            elif wave >= cfg.iterations:
                break
        self.result.waves = wave
        self.result.set_window(start, CpuSnapshot.now())

    def progress(self) -> tuple[float, int, int, int]:
        sink_bytes = self.sink.bytes_seen if self.sink is not None else 0
        sent = sum(c.pos for c in self.clients)
        return (self.shared.get(Shared.VERIFIED), sink_bytes, self.sink_progress[0], sent)

    async def wait_wave(self, clients: list[asyncio.Task[Any]], target: int) -> None:
        """Wait until this worker's clients are done and ``target`` streams are verified.

        Fails after ``--startup-timeout-seconds`` without any progress.
        """
        # One worker is woken by its own sinks; several also poll the shared counter.
        poll = 0.25 if self.cfg.worker_threads == 1 else 0.002
        stall = self.cfg.startup_timeout_seconds
        last = self.progress()
        last_change = time.monotonic()
        while True:
            self.check()
            if self.stop_requested:
                raise BenchError("interrupted by a signal")
            if self.shared.get(Shared.VERIFIED) >= target and all(t.done() for t in clients):
                return
            await self.nap(poll)
            now = time.monotonic()
            progress = self.progress()
            if progress != last or not self.connected_once:
                last, last_change = progress, now
            elif now - last_change > stall:
                verified = int(self.shared.get(Shared.VERIFIED))
                raise BenchError(
                    f"no progress for {stall:g} s: {verified} of {target} streams verified"
                )

    # -- duplex ---------------------------------------------------------------------------------

    async def duplex_stream(self, conn: int) -> None:
        cap = self.cfg.duplex_capacity
        client_end, proxy_in = duplex_pair(cap)
        proxy_out, sink_end = duplex_pair(cap)
        self.shared.start_times[conn] = time.monotonic()
        self.spawn(self.duplex_verify(sink_end, conn), f"sink of stream {conn:04}")
        self.spawn(self.duplex_proxy(proxy_in, proxy_out), f"proxy of stream {conn:04}")
        await duplex_client(client_end, self.wl, conn, self.cfg.input_fragment)

    async def duplex_verify(self, end: DuplexStream, conn: int) -> None:
        self.on_stream_verified(
            await duplex_sink(end, self.wl, conn, self.pool, self.sink_progress)
        )

    async def duplex_proxy(self, inbound: DuplexStream, outbound: DuplexStream) -> None:
        try:
            await self.proxy(inbound, outbound, self.cfg)
        finally:
            inbound.close()
            outbound.close()

    # -- TCP ------------------------------------------------------------------------------------

    async def proxy_tcp(self, inbound: socket.socket, sink_addr: tuple[str, int]) -> int:
        """Connect to the sink and run the proxy implementation; close both sockets after."""
        try:
            outbound = await connect_tcp(sink_addr, "sink")
            try:
                return await self.proxy(inbound, outbound, self.cfg)
            except Exception as exc:
                # Report the cause before closing makes the sink see a short stream.
                self.fail(as_bench_error(exc, "proxy"))
                raise
            finally:
                outbound.close()
        finally:
            inbound.close()

    async def accept_loop(
        self, listener: socket.socket, handle: Callable[[socket.socket], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            handle(tune(sock))

    async def run_tcp_clients(self) -> None:
        """Integrated TCP (own proxy listener and sink) or the driver (remote service)."""
        cfg = self.cfg
        if cfg.role == "integrated":
            sink_listener = bind_listener(("127.0.0.1", 0))
            proxy_listener = bind_listener(("127.0.0.1", 0))
            sink_addr = sink_listener.getsockname()[:2]
            self.target = proxy_listener.getsockname()[:2]
            self.own_listeners.append(proxy_listener)  # closed by shutdown()

            def handle(sock: socket.socket) -> None:
                self.spawn(self.proxy_tcp(sock, sink_addr), "proxy")

            self.spawn(self.accept_loop(proxy_listener, handle), "proxy accept", True)
        else:
            assert self.spec.listener is not None and cfg.service_addr is not None
            sink_listener = self.spec.listener  # TcpSink.close() closes it
            self.target = cfg.service_addr
            self.target_what = "service"
        self.sink = TcpSink(
            sink_listener,
            self.wl,
            self.on_stream_verified,
            self.fail,
            max(SINK_BUFFER, cfg.read_reserve),
        )
        self.sink.start()
        await self.run_waves(self.tcp_stream)

    async def tcp_stream(self, conn: int) -> None:
        cfg = self.cfg
        self.shared.start_times[conn] = time.monotonic()
        # Until the first connection succeeds, a refused connect is retried (the
        # service may still be starting) up to --startup-timeout-seconds.
        retry_until = None
        if not self.connected_once:
            retry_until = time.monotonic() + cfg.startup_timeout_seconds
        sock = await connect_tcp(self.target, self.target_what, retry_until)
        self.connected_once = True
        client = TcpClient(
            sock, self.wl, conn, cfg.input_fragment, sendfile=cfg.scenario == "coalesced"
        )
        self.clients.add(client)
        try:
            await client.start()
        finally:
            self.clients.discard(client)
            client.close()

    # -- service --------------------------------------------------------------------------------

    async def run_service(self) -> None:
        cfg = self.cfg
        assert self.spec.listener is not None and cfg.sink_addr is not None
        listener = self.spec.listener
        sink_addr = cfg.sink_addr
        addr = fmt_addr(listener.getsockname()[:2])
        shared = self.shared

        def handle(sock: socket.socket) -> None:
            shared.add(Shared.ACCEPTED, 1)
            shared.add(Shared.ACTIVE, 1)
            self.local_active += 1
            if self.window_start is None:
                self.window_start = CpuSnapshot.now()
            self.spawn(self.serve(sock, sink_addr, time.monotonic()), "proxy")

        self.spawn(self.accept_loop(listener, handle), "service accept", True)
        began = time.monotonic()
        stall = cfg.startup_timeout_seconds
        last = io_progress()
        last_change = began
        while True:
            await self.nap(0.05)
            self.check()
            if self.stop_requested:
                break
            now = time.monotonic()
            if self.local_active:
                # The run guard: streams are open but no byte moved for too long.
                progress = io_progress()
                if progress != last:
                    last, last_change = progress, now
                elif now - last_change > stall:
                    raise BenchError(
                        f"no progress for {stall:g} s with {self.local_active} streams active"
                        " (--startup-timeout-seconds)"
                    )
            else:
                last_change = now
            if shared.get(Shared.ACCEPTED) == 0:
                if now - began > cfg.startup_timeout_seconds:
                    raise BenchError(
                        f"no connection on {addr} within {cfg.startup_timeout_seconds:g} s"
                        " (--startup-timeout-seconds)"
                    )
            elif (
                shared.get(Shared.ACTIVE) == 0
                and now - shared.get(Shared.LAST_IDLE) >= cfg.idle_timeout_seconds
            ):
                break
        if self.local_active > 0:  # stopped by a signal mid-stream: report up to now
            self.window_end = CpuSnapshot.now()
        if self.window_start is not None and self.window_end is not None:
            self.result.set_window(self.window_start, self.window_end)

    async def serve(self, inbound: socket.socket, sink_addr: tuple[str, int], t0: float) -> None:
        forwarded = 0
        try:
            forwarded = await self.proxy_tcp(inbound, sink_addr)
        finally:
            self.local_active -= 1
            self.shared.add(Shared.ACTIVE, -1, stamp_zero=Shared.LAST_IDLE)
            if self.local_active == 0:
                # The active window ends each time this worker goes idle; the last one counts.
                self.window_end = CpuSnapshot.now()
        if forwarded != self.wl.total:
            raise BenchError(
                f"proxy forwarded {forwarded} bytes, expected {self.wl.total} per stream"
            )
        self.record_latency(time.monotonic() - t0)
        self.result.streams += 1
        self.result.bytes += forwarded
        self.wake.set()


_IO_SELF_READS = [0]


def io_progress() -> int:
    """Bytes this process moved through read/write syscalls (``/proc/self/io``).

    Reading the file is itself a read that ``rchar`` counts afterwards; those
    bytes are subtracted so an idle process reads the same value each time.
    """
    try:
        with open("/proc/self/io", "rb") as f:
            data = f.read()
        fields = dict(line.split(b":", 1) for line in data.splitlines())
        value = int(fields[b"rchar"]) + int(fields[b"wchar"]) - _IO_SELF_READS[0]
    except (OSError, KeyError, ValueError):
        return 0
    _IO_SELF_READS[0] += len(data)
    return value


# -- the whole run ------------------------------------------------------------------------------


class RunOutcome:
    """A finished run: the combined summary and what the output needs besides."""

    def __init__(
        self,
        summary: Summary,
        results: list[WorkerResult],
        rss_samples: list[tuple[float, int]] | None,
        service_addr: str | None,
    ) -> None:
        self.summary = summary
        self.results = results
        self.rss_samples = rss_samples
        self.service_addr = service_addr


def bind_role_listeners(cfg: BenchConfig) -> list[socket.socket]:
    """The service's (or the driver's sink) listeners, one per worker, all on one port."""
    if cfg.role == "tcp-service":
        addr = cfg.service_addr
    elif cfg.role == "tcp-driver":
        addr = cfg.sink_addr
    else:
        return []
    assert addr is not None
    reuseport = cfg.worker_threads > 1
    first = bind_listener(addr, reuseport)
    port = first.getsockname()[1]
    listeners = [first]
    try:
        for _ in range(cfg.worker_threads - 1):
            listeners.append(bind_listener((addr[0], port), reuseport))
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def write_ready_file(path: str, lines: dict[str, object]) -> None:
    """``key=value`` lines, written atomically (tmp + rename) so a reader never sees half."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in lines.items())
    os.replace(tmp, path)


def run_bench(cfg: BenchConfig, on_ready: Callable[[str], None] | None = None) -> RunOutcome:
    """Run one configured benchmark and return its outcome; ``BenchError`` on failure."""
    restore_signals = install_early_stop()
    try:
        return _run_bench(cfg, on_ready)
    finally:
        restore_signals()


def _run_bench(cfg: BenchConfig, on_ready: Callable[[str], None] | None) -> RunOutcome:
    listeners = bind_role_listeners(cfg)
    bound = fmt_addr(listeners[0].getsockname()[:2]) if listeners else None
    if cfg.ready_file is not None:
        ready: dict[str, object] = {"role": cfg.role, "pid": os.getpid()}
        if bound is not None:
            ready["service_addr" if cfg.role == "tcp-service" else "sink_addr"] = bound
        ready["worker_threads"] = cfg.worker_threads
        ready["loop"] = cfg.loop
        write_ready_file(cfg.ready_file, ready)
    if on_ready is not None and bound is not None:
        on_ready(bound)

    def work(spec: WorkerSpec) -> WorkerResult:
        result: WorkerResult = run_loop(cfg, lambda: Worker(cfg, spec).run())
        return result

    sampler = RssSampler() if cfg.rss_samples else None
    try:
        results = run_workers(cfg, listeners, work, sampler)
    finally:
        samples = sampler.stop() if sampler is not None else None
    if sampler is not None and cfg.rss_samples:
        sampler.write_csv(cfg.rss_samples)
    err = first_error(results)
    if err is not None:
        raise err
    summary = combine(results)
    if cfg.role != "tcp-service":
        expected = summary.waves * cfg.connections
        if summary.streams != expected or summary.bytes != expected * cfg.bytes_per_connection:
            raise BenchError(
                f"verified {summary.streams} streams / {summary.bytes} bytes, expected"
                f" {expected} / {expected * cfg.bytes_per_connection}"
            )
    service_addr = bound if cfg.role == "tcp-service" else None
    return RunOutcome(summary, results, samples, service_addr)
