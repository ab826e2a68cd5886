"""A soak service: one proxy process on the shared port (``--child service``).

The services (``--services``, default 2) share one port with ``SO_REUSEPORT``.
Each proxies every accepted stream with the library: ``HandoffBuffer``
routing of the workload's frames into a ``WriteHandoff`` to the sink, then
tunnel mode at ``TUNNEL\\n`` keeping the already-read tail, on raw sockets
(``handoff``: the buffered tunnel loop; ``handoff_splice``: ``tunnel()``) or
on the protocol path (``handoff_protocol``: ``HandoffProtocol`` transports),
with completion tickets or fire-and-forget, chosen per stream
(``--library-path`` narrows the choice to one path): the harness's own proxy
functions (``implementations.IMPLEMENTATIONS``). Each stream's error is caught
and counted by category; an error type the library does not promise is a
failure. Service 0 is never killed: its memory over the whole run is the
leak check (:mod:`.memory`). Each service logs ``<time> <client port>``
per accepted connection, which tells which streams a killed proxy owned.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import signal
import socket
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from bytes_handoff import BufferIOError, WriteClosed, WriteIOError

from ..errors import BenchError, ProtocolError
from ..harness.config import parse_addr
from ..harness.implementations import IMPLEMENTATIONS
from ..harness.transports import bind_listener, connect_tcp, tune
from .config import SOCKET_BUFFER, SoakConfig, error_name, write_json
from .memory import HEAP_CSV_HEADER, HEAP_POLL_SECONDS, HeapSample


def proxy_error_category(exc: BaseException) -> str | None:
    """The category of a proxy's per-stream error, or ``None`` for a type nobody promised.

    The library wraps reader failures in ``BufferIOError`` and writer failures in
    ``WriteIOError`` (later chunks: ``WriteClosed``); the harness's parser raises
    ``ProtocolError`` on a stream that ends before the marker.
    """
    if isinstance(exc, BufferIOError | WriteIOError):
        if not isinstance(exc.error, OSError):
            return None  # a reader or writer broke its contract: not a peer's doing
        side = "read" if isinstance(exc, BufferIOError) else "write"
        return f"{side}_{error_name(exc.error)}"
    if isinstance(exc, WriteClosed):
        return "write_closed"
    if isinstance(exc, ProtocolError):
        return "eof_before_marker"
    return None


def open_log(path: Path) -> int:
    """A new append-only log, written with unbuffered ``os.write`` calls (each line survives
    a SIGKILL right after it); never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags, 0o644)


class Service:
    """One proxy process: accepts on the shared port, proxies each stream, counts outcomes."""

    def __init__(self, cfg: SoakConfig, spec: dict[str, Any], stem: Path) -> None:
        self.cfg = cfg
        self.service_addr = parse_addr(spec["service_addr"], "service_addr")
        self.sink_addr = parse_addr(spec["sink_addr"], "sink_addr")
        self.stem = stem
        self.rng = random.Random(f"{cfg.seed}-{stem.name}")
        self.variants = [
            (IMPLEMENTATIONS[i].proxy, cfg.bench_config(i, c)) for i, c in cfg.variants
        ]
        self.total = cfg.bench_config().bytes_per_connection
        self.counts: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.leaked: list[bytes] = []  # --inject-leak-bytes-per-stream (calibration)

    def write_stats(self) -> None:
        write_json(
            self.stem.with_suffix(".stats.json"),
            {"pid": os.getpid(), "counts": dict(self.counts), "unexpected": self.unexpected[:20]},
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listener = bind_listener(self.service_addr, reuseport=True)
        accept_log = open_log(self.stem.with_suffix(".accepts"))
        heap_log = open_log(self.stem.with_suffix(".heap.csv"))
        os.write(heap_log, HEAP_CSV_HEADER.encode())
        write_json(self.stem.with_suffix(".ready"), {"pid": os.getpid()})
        acceptor = loop.create_task(self.accept_loop(listener, accept_log))
        sampler = loop.create_task(self.sample_heap(heap_log))
        while not stop.is_set() and not acceptor.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            self.write_stats()  # a SIGKILLed service loses at most half a second of counts
        acceptor.cancel()
        sampler.cancel()
        listener.close()
        for task in self.tasks:
            task.cancel()
        stuck = 0
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=5.0)
            stuck = len(pending)
        if stuck:
            self.counts["unexpected_stuck_on_cancel"] += stuck
            self.unexpected.append(f"{stuck} streams did not end within 5 s of cancellation")
        self.write_stats()
        os.close(accept_log)
        os.close(heap_log)
        for task in (acceptor, sampler):
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error  # the accept loop or the heap sampler died: exit 1
        return 0

    async def accept_loop(self, listener: socket.socket, accept_log: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, peer = await loop.sock_accept(listener)
            # Written before serving, one unbuffered write: survives a SIGKILL right after.
            os.write(accept_log, f"{time.monotonic():.6f} {peer[1]}\n".encode())
            self.counts["accepted"] += 1
            task = loop.create_task(self.serve(tune(sock)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def sample_heap(self, heap_log: int) -> None:
        """One ``HeapSample`` line each time the service has been idle (no stream open, none
        accepted) for ``HEAP_POLL_SECONDS``, once per batch of streams: between the
        driver's waves. A full collection first: cyclic garbage is not a leak."""
        last_sampled = -1
        was_idle_at = -1  # the accept count at the previous poll, if no stream was open
        while True:
            await asyncio.sleep(HEAP_POLL_SECONDS)
            accepted = self.counts["accepted"]
            idle = not self.tasks
            if idle and was_idle_at == accepted != last_sampled:
                gc.collect()
                sample = HeapSample.now(accepted, len(gc.get_objects()))
                os.write(heap_log, sample.csv_line().encode())  # one write: survives a kill
                last_sampled = accepted
            was_idle_at = accepted if idle else -1

    async def serve(self, inbound: socket.socket) -> None:
        proxy, pcfg = self.rng.choice(self.variants)
        if self.cfg.inject_leak_bytes:
            self.leaked.append(bytes(self.cfg.inject_leak_bytes))
        self.counts[f"path_{pcfg.implementation}"] += 1
        try:
            try:
                outbound = await connect_tcp(self.sink_addr, "sink")
            except BenchError:
                self.counts["sink_connect_failed"] += 1
                return
            outbound.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            try:
                forwarded = await proxy(inbound, outbound, pcfg)
            finally:
                outbound.close()
            if forwarded == self.total:
                self.counts["completed"] += 1
            else:
                self.counts["unexpected_short_forward"] += 1
                self.unexpected.append(f"forwarded {forwarded} of {self.total} bytes")
        except Exception as exc:
            category = proxy_error_category(exc)
            if category is not None:
                self.counts[category] += 1
            else:
                self.counts[f"unexpected_{type(exc).__name__}"] += 1
                self.unexpected.append(f"{type(exc).__name__}: {exc}")
                traceback.print_exc()
                self.write_stats()
        finally:
            inbound.close()
