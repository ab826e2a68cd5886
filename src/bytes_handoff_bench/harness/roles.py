"""The three roles: ``integrated``, ``tcp-service`` and ``tcp-driver``, one function each.

* integrated: client, proxy and sink of every stream in one worker (duplex
  pairs, or TCP listeners on 127.0.0.1 port 0).
* tcp-service: the proxy alone; accepts on ``--service-addr``, connects each
  stream to ``--sink-addr``; ends after ``--idle-timeout-millis`` without an
  active stream, and measures only its active window.
* tcp-driver: clients (to ``--service-addr``) and the sink (on ``--sink-addr``).

Integrated and driver run connection waves: ``connections`` streams at once
(split across workers), repeated ``--iterations`` times or until
``--duration-seconds``. A wave ends when every stream of it is verified by a
sink (of any worker: the counters are shared). With ``--rate`` they run open
loop instead: each connection starts its streams on a clock (``open_loop``).

Each role runs in every worker under :func:`~.supervisor.supervise`;
:func:`run_bench` binds the listeners, starts the workers and combines them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from bytes_handoff import DuplexStream, duplex_pair

from ..certs import temporary_certificate
from ..errors import BenchError, Interrupted
from ..names import Role, Scenario, Transport
from ..output_paths import write_output
from .config import SINK_BUFFER, BenchConfig
from .implementations import IMPLEMENTATIONS, StreamHooks
from .metrics import CpuSnapshot, RssSampler, Summary, WorkerResult, combine
from .open_loop import Pacer
from .supervisor import Stall, Supervisor, Tally, as_bench_error, supervise
from .tls import Negotiated, TlsClient, TlsSetup, TlsSink, tls_setup
from .transports import (
    BufferPool,
    ByteCount,
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
    first_error,
    install_early_stop,
    run_loop,
    run_workers,
)
from .workload import StreamVerifier, Workload

__all__ = ["RunOutcome", "run_bench", "run_worker"]

Addr = tuple[str, int]
RoleFn = Callable[[BenchConfig, WorkerSpec, Supervisor, Tally], Coroutine[Any, Any, None]]

_LOCALHOST: Addr = ("127.0.0.1", 0)


# -- the roles ----------------------------------------------------------------------------------


async def integrated(cfg: BenchConfig, spec: WorkerSpec, sup: Supervisor, tally: Tally) -> None:
    """Client, proxy and sink of each of this worker's streams, over duplex pipes or localhost."""
    wl = sup.closing(new_workload(cfg))
    pacer = Pacer(cfg, spec, sup, tally) if cfg.open_loop else None
    verified = count_verified(cfg, spec.shared, sup, tally, pacer)
    negotiated = Negotiated()
    streams: WaveStreams
    if cfg.transport == Transport.DUPLEX:
        streams = DuplexStreams(cfg, wl, spec.shared, sup, verified)
    else:
        sink_listener = sup.closing(bind_listener(_LOCALHOST))
        proxy_listener = sup.closing(bind_listener(_LOCALHOST))
        sink_addr = local_addr(sink_listener)

        def accepted(sock: socket.socket) -> None:
            sup.spawn(proxy_tcp(cfg, sup, sock, sink_addr), "proxy")

        def finished(began: float, forwarded: int, error: BaseException | None) -> None:
            if error is not None:  # the sink verifies and counts the streams
                sup.fail(as_bench_error(error, "proxy"))

        hooks = StreamHooks(lambda: None, finished)
        if not await serve_whole(cfg, sup, proxy_listener, sink_addr, hooks):
            sup.spawn(accept_loop(proxy_listener, accepted), "proxy accept", background=True)
        sink = sup.closing(start_sink(cfg, wl, sink_listener, verified, sup, negotiated))
        target = local_addr(proxy_listener)
        streams = sup.closing(
            TcpStreams(cfg, wl, spec.shared, sink, target, "proxy", negotiated=negotiated)
        )
    await drive(cfg, spec, sup, tally, streams, pacer)
    note_tls(tally, negotiated)


async def tcp_driver(cfg: BenchConfig, spec: WorkerSpec, sup: Supervisor, tally: Tally) -> None:
    """Clients that connect to the service, and the sink its proxies connect to."""
    assert spec.listener is not None and cfg.service_addr is not None
    wl = sup.closing(new_workload(cfg))
    sink_listener = sup.closing(spec.listener)
    pacer = Pacer(cfg, spec, sup, tally) if cfg.open_loop else None
    verified = count_verified(cfg, spec.shared, sup, tally, pacer)
    negotiated = Negotiated()
    sink = sup.closing(start_sink(cfg, wl, sink_listener, verified, sup, negotiated))
    streams = sup.closing(
        TcpStreams(cfg, wl, spec.shared, sink, cfg.service_addr, "service", negotiated=negotiated)
    )
    await drive(cfg, spec, sup, tally, streams, pacer)
    note_tls(tally, negotiated)


def note_tls(tally: Tally, negotiated: Negotiated) -> None:
    """What this worker's TLS clients and sinks negotiated, for the report."""
    tally.result.tls_versions = sorted(negotiated.versions)
    tally.result.tls_ciphers = sorted(negotiated.ciphers)


async def drive(
    cfg: BenchConfig,
    spec: WorkerSpec,
    sup: Supervisor,
    tally: Tally,
    streams: WaveStreams,
    pacer: Pacer | None,
) -> None:
    """Run the clients, in waves or (``pacer``) on the open-loop schedule; measure the window."""
    began = CpuSnapshot.now()
    if pacer is None:
        tally.result.waves = await run_waves(cfg, spec, sup, streams)
    else:
        tally.result.waves = await pacer.run(streams)
    tally.result.set_window(began, CpuSnapshot.now())


async def tcp_service(cfg: BenchConfig, spec: WorkerSpec, sup: Supervisor, tally: Tally) -> None:
    """The proxy alone: forward each accepted stream to the sink until the service is idle.

    With several drivers it has one route per driver (``--service-addr``/``--sink-addr``
    pairs): what arrives on a route's listener goes to that route's sink.
    """
    assert len(spec.listeners) == len(cfg.routes)
    wl = sup.closing(new_workload(cfg))
    window = ActiveWindow(spec.shared)
    addrs = []
    for route, (listener, (_, sink_addr)) in enumerate(
        zip(spec.listeners, cfg.routes, strict=True)
    ):
        sup.closing(listener)
        addrs.append(fmt_addr(local_addr(listener)))
        await serve_route(cfg, sup, tally, wl, window, route, listener, sink_addr)
    await until_idle(cfg, spec.shared, sup, window, addrs)
    if window.active > 0:  # stopped by a signal mid-stream: report up to now
        window.end = CpuSnapshot.now()
    if window.start is not None and window.end is not None:
        tally.result.set_window(window.start, window.end)


async def serve_route(
    cfg: BenchConfig,
    sup: Supervisor,
    tally: Tally,
    wl: Workload,
    window: ActiveWindow,
    route: int,
    listener: socket.socket,
    sink_addr: Addr,
) -> None:
    """Start serving one route of the service: its listener's streams go to ``sink_addr``."""

    async def serve(inbound: socket.socket, began: float) -> None:
        try:
            forwarded = await proxy_tcp(cfg, sup, inbound, sink_addr)
        except BaseException:
            window.closed()
            raise
        finished(began, forwarded, None)

    def finished(began: float, forwarded: int, error: BaseException | None) -> None:
        # No wake-up: the idle watch looks every 50 ms, and the window ends in closed().
        window.closed()
        if error is None and forwarded != wl.total:
            error = BenchError(f"proxy forwarded {forwarded} bytes, expected {wl.total} per stream")
        if error is not None:
            sup.fail(as_bench_error(error, "proxy"))
        else:
            tally.stream_done(time.monotonic() - began, forwarded)
            tally.result.count_route(route)

    def opened() -> None:
        window.opened(route)

    def accepted(sock: socket.socket) -> None:
        window.opened(route)
        sup.spawn(serve(sock, time.monotonic()), "proxy", wake=False)

    if not await serve_whole(cfg, sup, listener, sink_addr, StreamHooks(opened, finished)):
        sup.spawn(accept_loop(listener, accepted), "service accept", background=True)


ROLES: dict[Role, RoleFn] = {
    Role.INTEGRATED: integrated,
    Role.TCP_SERVICE: tcp_service,
    Role.TCP_DRIVER: tcp_driver,
}


async def run_worker(cfg: BenchConfig, spec: WorkerSpec) -> WorkerResult:
    """This worker's share of the run: its role, supervised."""
    role = ROLES[cfg.role]
    return await supervise(spec.shared, lambda sup, tally: role(cfg, spec, sup, tally))


# -- what the roles share -----------------------------------------------------------------------


def new_workload(cfg: BenchConfig) -> Workload:
    return Workload(cfg, max_chunk=max(SINK_BUFFER, cfg.read_reserve), stream_ids=cfg.stream_ids)


def local_addr(sock: socket.socket) -> Addr:
    host, port = sock.getsockname()[:2]
    return host, port


async def serve_whole(
    cfg: BenchConfig, sup: Supervisor, listener: socket.socket, sink_addr: Addr, hooks: StreamHooks
) -> bool:
    """Start the implementation on ``listener`` if it is a whole service (``floor``: the loop
    accepts, no harness code per stream but ``hooks``) and return True; else False."""
    serve = IMPLEMENTATIONS[cfg.implementation].serve
    if serve is None:
        return False
    sup.closing(await serve(listener, sink_addr, cfg, hooks))
    return True


async def accept_loop(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """Hand each accepted connection to ``handle``: one wake-up per burst of connections
    (a wave's arrive together), then the non-blocking listener's backlog taken at once."""
    loop = asyncio.get_running_loop()
    while True:
        sock, _ = await loop.sock_accept(listener)
        handle(tune(sock))
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            handle(tune(sock))


async def proxy_tcp(
    cfg: BenchConfig, sup: Supervisor, inbound: socket.socket, sink_addr: Addr
) -> int:
    """Connect to the sink and run the proxy implementation; close both sockets after."""
    try:
        outbound = await connect_tcp(sink_addr, "sink")
        try:
            return await IMPLEMENTATIONS[cfg.implementation].proxy(inbound, outbound, cfg)
        except Exception as exc:
            # Report the cause before closing makes the sink see a short stream.
            sup.fail(as_bench_error(exc, "proxy"))
            raise
        finally:
            outbound.close()
    finally:
        inbound.close()


async def proxy_duplex(cfg: BenchConfig, inbound: DuplexStream, outbound: DuplexStream) -> None:
    try:
        await IMPLEMENTATIONS[cfg.implementation].proxy(inbound, outbound, cfg)
    finally:
        inbound.close()
        outbound.close()


def count_verified(
    cfg: BenchConfig, shared: Shared, sup: Supervisor, tally: Tally, pacer: Pacer | None = None
) -> Callable[[StreamVerifier], None]:
    """What a sink calls for each verified stream: its latency from the client's start
    (open loop: from when the stream was due)."""

    def verified(verifier: StreamVerifier) -> None:
        tally.stream_done(time.monotonic() - shared.start_times[verifier.conn], verifier.pos)
        shared.stream_verified(cfg.connections, verifier.conn)
        if pacer is not None:
            pacer.verified(verifier.conn)
        sup.wake()

    return verified


def start_sink(
    cfg: BenchConfig,
    wl: Workload,
    listener: socket.socket,
    verified: Callable[[StreamVerifier], None],
    sup: Supervisor,
    negotiated: Negotiated,
) -> TcpSink | TlsSink:
    """The sink on ``listener``: plain, or with ``--tls`` accepting TLS (``tls.py``)."""
    size = max(SINK_BUFFER, cfg.read_reserve)
    setup = tls_setup(cfg)
    sink: TcpSink | TlsSink
    if setup is None:
        sink = TcpSink(listener, wl, verified, sup.fail, size)
    else:
        sink = TlsSink(listener, wl, verified, sup.fail, size, setup, negotiated)
    sink.start()
    return sink


# -- waves (integrated, driver) -----------------------------------------------------------------


class WaveStreams(Protocol):
    """How a worker runs one stream of a wave, and what shows that streams move."""

    #: False until a first connection succeeds: no stall is counted before.
    connected: bool

    async def stream(self, conn: int, due: float | None = None) -> None:
        """Run stream ``conn``; its latency counts from ``due`` (open loop) or from now."""
        ...

    def progress(self) -> tuple[int, ...]: ...


async def run_waves(
    cfg: BenchConfig, spec: WorkerSpec, sup: Supervisor, streams: WaveStreams
) -> int:
    """Run this worker's streams, wave after wave, until the run's end; return the waves."""
    shared = spec.shared
    shared.mark_start()
    wave = 0
    while True:
        clients = [sup.spawn(streams.stream(c), f"client of stream {c:04}") for c in spec.conns]
        await wait_wave(cfg, shared, sup, streams, clients, (wave + 1) * cfg.connections)
        wave += 1
        if cfg.duration_seconds > 0:
            elapsed = shared.get(Shared.WAVE_DONE_AT) - shared.get(Shared.T0)
            if elapsed >= cfg.duration_seconds:
                return wave
        elif wave >= cfg.iterations:
            return wave


async def wait_wave(
    cfg: BenchConfig,
    shared: Shared,
    sup: Supervisor,
    streams: WaveStreams,
    clients: list[asyncio.Task[Any]],
    target: int,
) -> None:
    """Wait until ``clients`` are done and ``target`` streams are verified (by any worker).

    Fails after ``--startup-timeout-seconds`` without any progress.
    """
    # One worker is woken by its own sinks; several also poll the shared counter.
    poll = 0.25 if cfg.worker_threads == 1 else 0.002

    def progress() -> tuple[float, ...]:
        return (shared.get(Shared.VERIFIED), *streams.progress())

    stall = Stall(cfg.startup_timeout_seconds, progress(), time.monotonic())
    while True:
        sup.check()
        if sup.stop_requested:
            raise Interrupted("interrupted by a signal")
        if shared.get(Shared.VERIFIED) >= target and all(t.done() for t in clients):
            return
        await sup.nap(poll)
        now = time.monotonic()
        if not streams.connected:
            stall.moved(progress(), now)
        elif stall.stalled(progress(), now):
            verified = int(shared.get(Shared.VERIFIED))
            raise BenchError(
                f"no progress for {stall.limit:g} s: {verified} of {target} streams verified"
            )


@dataclass
class DuplexStreams:
    """Each stream in this worker: client, proxy and sink joined by two duplex pipes."""

    cfg: BenchConfig
    wl: Workload
    shared: Shared
    sup: Supervisor
    verified: Callable[[StreamVerifier], None]
    connected: bool = field(default=True, init=False)
    pool: BufferPool = field(init=False)
    #: Bytes the sinks have read.
    sink_bytes: ByteCount = field(default_factory=ByteCount, init=False)

    def __post_init__(self) -> None:
        self.pool = BufferPool(max(SINK_BUFFER, self.cfg.read_reserve))

    async def stream(self, conn: int, due: float | None = None) -> None:
        cap = self.cfg.duplex_capacity
        client_end, proxy_in = duplex_pair(cap)
        proxy_out, sink_end = duplex_pair(cap)
        self.shared.start_times[conn] = time.monotonic() if due is None else due
        self.sup.spawn(self.sink(sink_end, conn), f"sink of stream {conn:04}")
        self.sup.spawn(proxy_duplex(self.cfg, proxy_in, proxy_out), f"proxy of stream {conn:04}")
        await duplex_client(client_end, self.wl, conn, self.cfg.input_fragment)

    async def sink(self, end: DuplexStream, conn: int) -> None:
        self.verified(await duplex_sink(end, self.wl, conn, self.pool, self.sink_bytes))

    def progress(self) -> tuple[int, ...]:
        return (self.sink_bytes.bytes_seen,)


@dataclass
class TcpStreams:
    """Each stream's client connects to ``target`` (the proxy or the service); ``sink`` verifies."""

    cfg: BenchConfig
    wl: Workload
    shared: Shared
    sink: TcpSink | TlsSink
    target: Addr
    what: str  # names the target in a connect error
    #: Until a first connect succeeds, connect_tcp's own deadline bounds the wait.
    connected: bool = False
    clients: set[TcpClient | TlsClient] = field(default_factory=set)
    #: ``--tls``: what the clients negotiated goes here.
    negotiated: Negotiated = field(default_factory=Negotiated)
    tls: TlsSetup | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tls = tls_setup(self.cfg)

    async def stream(self, conn: int, due: float | None = None) -> None:
        cfg = self.cfg
        self.shared.start_times[conn] = time.monotonic() if due is None else due
        # Until the first connection succeeds, a refused connect is retried (the
        # service may still be starting) up to --startup-timeout-seconds.
        retry_until = None
        if not self.connected:
            retry_until = time.monotonic() + cfg.startup_timeout_seconds
        sock = await connect_tcp(self.target, self.what, retry_until)
        self.connected = True
        client: TcpClient | TlsClient
        if self.tls is not None:
            client = TlsClient(sock, self.wl, conn, cfg.input_fragment, self.tls, self.negotiated)
        else:
            sendfile = cfg.scenario == Scenario.COALESCED
            client = TcpClient(sock, self.wl, conn, cfg.input_fragment, sendfile=sendfile)
        self.clients.add(client)
        try:
            await client.start()
        finally:
            self.clients.discard(client)
            client.close()

    def progress(self) -> tuple[int, ...]:
        return (self.sink.bytes_seen, sum(c.pos for c in self.clients))

    def close(self) -> None:
        for client in list(self.clients):
            client.close()


# -- the service's window -----------------------------------------------------------------------


@dataclass
class ActiveWindow:
    """A service worker's active window: first accept to the last time it went idle.

    The shared counters let every worker see when the whole service is idle.
    """

    shared: Shared
    active: int = 0  # this worker's open streams
    start: CpuSnapshot | None = None
    end: CpuSnapshot | None = None

    def opened(self, route: int = 0) -> None:
        self.shared.route_opened(route)
        self.active += 1
        if self.start is None:
            self.start = CpuSnapshot.now()

    def closed(self) -> None:
        self.active -= 1
        self.shared.add(Shared.ACTIVE, -1, stamp_zero=Shared.LAST_IDLE)
        if self.active == 0:
            # The window ends each time this worker goes idle; the last one counts.
            self.end = CpuSnapshot.now()


async def until_idle(
    cfg: BenchConfig, shared: Shared, sup: Supervisor, window: ActiveWindow, addrs: list[str]
) -> None:
    """Wait until the service has been idle for ``--idle-timeout-millis`` or a signal came.

    Fails without a first connection, or with streams open and no byte moving,
    for ``--startup-timeout-seconds``. With several routes (one per driver) it is
    not idle before every route has had its first connection: a driver that
    starts later than another one ends does not find the service gone.
    """
    limit = cfg.startup_timeout_seconds
    io = ProcessIo()
    began = time.monotonic()
    stall = Stall(limit, io.moved(), began)
    # /proc/self/io is read at most once a second (the limit is whole seconds), not at every
    # nap: those reads were the idle watch's main cost inside the measured window.
    io_due = began
    while True:
        await sup.nap(0.05)
        sup.check()
        if sup.stop_requested:
            return
        now = time.monotonic()
        if not window.active:
            stall.since = now
        elif now >= io_due and stall.stalled(io.moved(), now):
            raise BenchError(
                f"no progress for {limit:g} s with {window.active} streams active"
                " (--startup-timeout-seconds)"
            )
        if now >= io_due:
            io_due = now + 1.0
        waiting = shared.routes_waiting()
        if waiting:
            if now - began > limit:
                others = ""
                if len(addrs) > 1:
                    others = f"; {len(addrs) - len(waiting)} of {len(addrs)} routes had one"
                raise BenchError(
                    f"no connection on {addrs[waiting[0]]} within {limit:g} s"
                    f" (--startup-timeout-seconds){others}"
                )
        elif (
            shared.get(Shared.ACTIVE) == 0
            and now - shared.get(Shared.LAST_IDLE) >= cfg.idle_timeout_seconds
        ):
            return


@dataclass
class ProcessIo:
    """Bytes this process moved through read/write syscalls (``/proc/self/io``).

    Reading the file is itself a read that ``rchar`` counts afterwards; those
    bytes are subtracted so an idle process reads the same value each time.
    """

    self_reads: int = 0

    def moved(self) -> int:
        try:
            with open("/proc/self/io", "rb") as f:
                data = f.read()
            fields = dict(line.split(b":", 1) for line in data.splitlines())
            value = int(fields[b"rchar"]) + int(fields[b"wchar"]) - self.self_reads
        except (OSError, KeyError, ValueError):
            return 0
        self.self_reads += len(data)
        return value


# -- the whole run ------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """A finished run: the combined summary and what the output needs besides."""

    summary: Summary
    results: list[WorkerResult]
    rss_samples: list[tuple[float, int]] | None
    service_addr: str | None
    #: tcp-service: every route's address, in the order of the flags.
    service_addrs: list[str] = field(default_factory=list)
    #: ``--tls``: ``given`` (``--tls-cert``/``--tls-key``) or ``generated`` for the run.
    tls_certificate: str = ""


def bind_role_listeners(cfg: BenchConfig) -> list[list[socket.socket]]:
    """Per worker, the service's listeners (one per route) or the driver's sink listener;
    each address's listeners, one per worker, share its port."""
    if cfg.role == Role.TCP_SERVICE:
        addrs = [service for service, _ in cfg.routes]
    elif cfg.role == Role.TCP_DRIVER:
        assert cfg.sink_addr is not None
        addrs = [cfg.sink_addr]
    else:
        return []
    reuseport = cfg.worker_threads > 1
    per_worker: list[list[socket.socket]] = [[] for _ in range(cfg.worker_threads)]
    try:
        for addr in addrs:
            first = bind_listener(addr, reuseport)
            per_worker[0].append(first)
            port = first.getsockname()[1]
            for own in per_worker[1:]:
                own.append(bind_listener((addr[0], port), reuseport))
    except BaseException:
        for own in per_worker:
            for sock in own:
                sock.close()
        raise
    return per_worker


def write_ready_file(path: str, lines: dict[str, object]) -> None:
    """``key=value`` lines, written atomically (a new file renamed over it) so a reader never
    sees half; a device or a FIFO is written through (``output_paths``)."""
    write_output(path, "".join(f"{k}={v}\n" for k, v in lines.items()), "--ready-file")


def run_bench(cfg: BenchConfig, on_ready: Callable[[str], None] | None = None) -> RunOutcome:
    """Run one configured benchmark and return its outcome; ``BenchError`` on failure."""
    restore_signals = install_early_stop()
    try:
        if cfg.tls and cfg.tls_cert is None:
            # One self-signed certificate for the run, removed with its folder afterwards.
            with temporary_certificate() as (cert, key):
                cfg = dataclasses.replace(cfg, tls_cert=str(cert), tls_key=str(key))
                outcome = _run_bench(cfg, on_ready)
            outcome.tls_certificate = "generated"
            return outcome
        outcome = _run_bench(cfg, on_ready)
        if cfg.tls:
            outcome.tls_certificate = "given"
        return outcome
    finally:
        restore_signals()


def _run_bench(cfg: BenchConfig, on_ready: Callable[[str], None] | None) -> RunOutcome:
    tls_setup(cfg)  # a certificate that does not load is a usage error before anything runs
    listeners = bind_role_listeners(cfg)
    bound_all = [fmt_addr(local_addr(sock)) for sock in listeners[0]] if listeners else []
    bound = bound_all[0] if bound_all else None
    if cfg.ready_file is not None:
        ready: dict[str, object] = {"role": cfg.role, "pid": os.getpid()}
        if bound is not None:
            ready["service_addr" if cfg.role == Role.TCP_SERVICE else "sink_addr"] = bound
        if cfg.role == Role.TCP_SERVICE:
            ready["service_addrs"] = ",".join(bound_all)
        ready["worker_threads"] = cfg.worker_threads
        ready["loop"] = cfg.loop
        write_ready_file(cfg.ready_file, ready)
    if on_ready is not None and bound is not None:
        on_ready(bound)

    def work(spec: WorkerSpec) -> WorkerResult:
        return run_loop(cfg, lambda: run_worker(cfg, spec))

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
    if cfg.role != Role.TCP_SERVICE:
        expected = summary.started if cfg.open_loop else summary.waves * cfg.connections
        if summary.streams != expected or summary.bytes != expected * cfg.bytes_per_connection:
            raise BenchError(
                f"verified {summary.streams} streams / {summary.bytes} bytes, expected"
                f" {expected} / {expected * cfg.bytes_per_connection}"
            )
    if cfg.role == Role.TCP_SERVICE:
        return RunOutcome(summary, results, samples, bound, bound_all)
    return RunOutcome(summary, results, samples, None)
