"""The soak's driver: clients and the verifying sink (``--child driver``).

The driver runs waves of ``--connections`` streams until
``--duration-seconds`` pass: clients send the workload in a per-stream write
size and a verifying sink checks every byte (``StreamVerifier``). Some client
and sink sockets are reset (``SO_LINGER`` 0, then close) at random offsets;
some sinks first stop reading for ``--stall-seconds``, so that the proxy's
writes pause, and reset while they are paused.

Each stream's record (:class:`StreamRecord`) says how both ends saw it; what the
driver alone cannot classify (a break with no injected cause) goes to the
orchestrator, which knows which proxies it killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import signal
import socket
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import VerificationError
from ..harness.config import SINK_BUFFER, parse_addr
from ..harness.transports import bind_listener, tune, wait_connected
from ..harness.workload import StreamVerifier, Workload
from .config import (
    FAILURE_CATEGORIES,
    FRAGMENTS,
    SINK_QUIET_SECONDS,
    SOCKET_BUFFER,
    SoakConfig,
    error_name,
    write_json,
)


def reset_close(sock: socket.socket) -> None:
    """Close with ``SO_LINGER`` 0: the kernel sends RST instead of FIN (a peer reset)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class StreamRecord:
    """One stream of a wave, as both ends of the driver saw it."""

    wave: int
    conn: int
    fragment: int
    client_reset_at: int | None
    sink_reset_at: int | None
    sink_stall_at: int | None = None
    client: str = "pending"  # ok | reset_injected | connect_refused | error_<ERRNO> | hang | ...
    sink: str = "none"  # verified | reset_injected | short | error_<ERRNO> | corrupted | hang
    detail: str = ""
    client_port: int = 0
    t_start: float = 0.0
    t_end: float = 0.0

    def classify(self) -> str:
        """The category if the driver alone can tell, else ``pending`` (the orchestrator's)."""
        if self.sink in ("corrupted", "duplicate") or self.client == "unexpected_reply":
            return "corrupted"
        if "hang" in (self.client, self.sink):
            return "hang"
        if self.sink == "verified":
            return "verified"
        if self.client == "reset_injected":
            return "client_reset"
        if self.sink == "reset_injected":
            return "sink_reset"
        if self.sink == "stall_reset_injected":
            return "sink_stall_reset"
        if self.client == "connect_refused":
            return "connect_refused"
        return "pending"


class Driver:
    """Clients and the verifying sink; waves of streams until the duration has passed."""

    def __init__(self, cfg: SoakConfig, spec: dict[str, Any], out: Path) -> None:
        self.cfg = cfg
        self.bench = cfg.bench_config()
        self.service_addr = parse_addr(spec["service_addr"], "service_addr")
        self.sink_addr = parse_addr(spec["sink_addr"], "sink_addr")
        self.out = out
        self.rng = random.Random(f"{cfg.seed}-driver")
        self.wl = Workload(self.bench)
        self.records: dict[int, StreamRecord] = {}
        self.outcomes: Counter[str] = Counter()
        self.pending: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.sink_tasks: set[asyncio.Task[None]] = set()
        self.sink_accepts = 0
        self.client_resets = 0
        self.sink_resets = 0
        self.sink_stall_resets = 0
        self.late_sink = 0
        self.next_id = 0
        self.streams_started = 0
        self.stop = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        listener = bind_listener(self.sink_addr)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)  # inherited
        acceptor = loop.create_task(self.sink_accept_loop(listener))
        began = time.monotonic()
        waves = 0
        try:
            while not self.stop and time.monotonic() - began < self.cfg.duration_seconds:
                await self.wave(waves)
                waves += 1
        finally:
            acceptor.cancel()
            listener.close()
        write_json(
            self.out / "driver.json",
            {
                "waves": waves,
                "seconds": time.monotonic() - began,
                "streams_started": self.streams_started,
                "outcomes": dict(self.outcomes),
                "pending": self.pending,
                "failures": self.failures,
                "client_resets": self.client_resets,
                "sink_resets": self.sink_resets,
                "sink_stall_resets": self.sink_stall_resets,
                "late_sink_connections": self.late_sink,
                "interrupted": self.stop,
            },
        )
        return 0

    def request_stop(self) -> None:
        self.stop = True

    def plan(self, wave: int) -> StreamRecord:
        conn = self.next_id
        self.next_id = (self.next_id + 1) % 10_000
        self.streams_started += 1
        client_reset = sink_reset = sink_stall = None
        draw = self.rng.random()  # one draw: at most one injected fault per stream
        cfg = self.cfg
        if draw < cfg.client_reset_rate:
            client_reset = self.reset_offset()
        elif draw < cfg.client_reset_rate + cfg.sink_reset_rate:
            sink_reset = self.reset_offset()
        elif draw < cfg.client_reset_rate + cfg.sink_reset_rate + cfg.sink_stall_reset_rate:
            sink_stall = self.reset_offset()
        fragment = self.rng.choice(FRAGMENTS)
        return StreamRecord(wave, conn, fragment, client_reset, sink_reset, sink_stall)

    def reset_offset(self) -> int:
        """Half the resets land in routing mode or just past the switch, half anywhere.

        Uniform offsets alone would almost never hit the parser's state: the
        route frames are a few KiB of a stream that is mostly tunnel bytes.
        """
        total = self.bench.bytes_per_connection
        head = min(total, self.bench.prefix_len + 16 * 1024)
        return self.rng.randrange(head if self.rng.random() < 0.5 else total)

    async def wave(self, wave: int) -> None:
        """Start every stream of the wave, then wait (bounded) until both ends of each are done."""
        recs = [self.plan(wave) for _ in range(self.cfg.connections)]
        self.records = {r.conn: r for r in recs}
        self.wl = Workload(self.bench)  # one per wave: its prefix cache stays small
        deadline = time.monotonic() + self.cfg.hang_seconds
        loop = asyncio.get_running_loop()
        clients = [loop.create_task(self.client(r)) for r in recs]
        _, late = await asyncio.wait(clients, timeout=self.cfg.hang_seconds)
        for task in late:
            task.cancel()  # the client records "hang"
        if late:
            await asyncio.wait(late)
        await self.settle_sink(deadline)
        for r in recs:
            category = r.classify()
            if category == "pending":
                self.pending.append(asdict(r))
                continue
            self.outcomes[category] += 1
            if category in FAILURE_CATEGORIES:
                self.failures.append(
                    f"{category}: stream {r.conn:04} (wave {wave}, write size {r.fragment}):"
                    f" client {r.client}, sink {r.sink} {r.detail}".strip()
                )

    async def settle_sink(self, deadline: float) -> None:
        """Until no sink connection is open or waiting to be accepted; past the deadline: hangs."""
        quiet_since, seen = time.monotonic(), self.sink_accepts
        while True:
            now = time.monotonic()
            if self.sink_tasks or self.sink_accepts != seen:
                quiet_since, seen = now, self.sink_accepts
            elif now - quiet_since >= SINK_QUIET_SECONDS:
                return
            if now > deadline:
                open_tasks = set(self.sink_tasks)
                for task in open_tasks:
                    task.cancel()  # each records "hang"
                if open_tasks:  # none: connections kept arriving until the deadline
                    await asyncio.wait(open_tasks)
                return
            await asyncio.sleep(0.01)

    async def client(self, r: StreamRecord) -> None:
        loop = asyncio.get_running_loop()
        r.t_start = time.monotonic()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tune(sock)
            err = sock.connect_ex(self.service_addr)
            r.client_port = sock.getsockname()[1]  # bound by connect, also when it fails later
            err = await wait_connected(sock, err)
            if err:
                r.client = (
                    "connect_refused"
                    if err == errno.ECONNREFUSED
                    else f"error_{errno.errorcode.get(err, err)}"
                )
                return
            data = memoryview(self.wl.stream_bytes(r.conn))
            pos = 0
            while pos < len(data):
                end = min(pos + r.fragment, len(data))
                if r.client_reset_at is not None and end >= r.client_reset_at:
                    await loop.sock_sendall(sock, data[pos : r.client_reset_at])
                    reset_close(sock)
                    self.client_resets += 1
                    r.client = "reset_injected"
                    return
                await loop.sock_sendall(sock, data[pos:end])
                pos = end
            sock.shutdown(socket.SHUT_WR)
            reply = await loop.sock_recv(sock, 1)  # the proxy closes its side when done
            r.client = "unexpected_reply" if reply else "ok"
        except OSError as exc:
            r.client = f"error_{error_name(exc)}"
        except asyncio.CancelledError:
            r.client = "hang"
            raise
        finally:
            r.t_end = max(r.t_end, time.monotonic())
            sock.close()

    async def sink_accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            self.sink_accepts += 1
            task = loop.create_task(self.sink_conn(tune(sock)))
            self.sink_tasks.add(task)
            task.add_done_callback(self.sink_tasks.discard)

    async def sink_conn(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        verifier = StreamVerifier(self.wl)
        buf = bytearray(SINK_BUFFER)
        outcome, detail = "none", ""
        try:
            while True:
                n = await loop.sock_recv_into(sock, buf)
                if n == 0:
                    try:
                        verifier.finish()
                    except VerificationError as exc:
                        outcome, detail = "short", str(exc)
                    else:
                        outcome = "verified"
                    break
                verifier.feed(buf, n)  # VerificationError: wrong bytes
                r = self.records.get(verifier.conn)
                if (
                    r is not None
                    and r.sink_reset_at is not None
                    and verifier.pos >= r.sink_reset_at
                ):
                    reset_close(sock)
                    self.sink_resets += 1
                    outcome = "reset_injected"
                    break
                if (
                    r is not None
                    and r.sink_stall_at is not None
                    and verifier.pos >= r.sink_stall_at
                ):
                    # Stop reading: the proxy fills our window and its own buffers, and
                    # its writes pause; then reset while they are paused.
                    await asyncio.sleep(self.cfg.stall_seconds)
                    reset_close(sock)
                    self.sink_stall_resets += 1
                    outcome = "stall_reset_injected"
                    break
        except VerificationError as exc:
            outcome, detail = "corrupted", str(exc)
        except OSError as exc:
            outcome, detail = f"error_{error_name(exc)}", f"at offset {verifier.pos}"
        except asyncio.CancelledError:
            outcome, detail = "hang", f"sink connection open at offset {verifier.pos}"
            raise
        finally:
            sock.close()
            self.record_sink(verifier, outcome, detail)

    def record_sink(self, verifier: StreamVerifier, outcome: str, detail: str) -> None:
        r = self.records.get(verifier.conn)
        if r is None:
            # Unidentified (fewer than 16 bytes: a proxy broke early) or from an earlier wave.
            if verifier.conn >= 0:
                self.late_sink += 1
            if outcome in ("corrupted", "hang"):
                self.outcomes[outcome] += 1
                self.failures.append(f"{outcome}: {verifier.name} at the sink: {detail}")
            return
        if r.sink != "none":
            outcome, detail = "duplicate", f"a second sink connection ({outcome}) for this stream"
        r.sink, r.detail = outcome, detail
        r.t_end = max(r.t_end, time.monotonic())
