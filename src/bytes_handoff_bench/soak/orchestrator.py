"""The soak's orchestrator: starts the services and the driver, injects the kills.

It starts them (pinned with ``taskset`` when asked), kills and restarts
services, samples each service's ``VmRSS`` once a second, classifies every
stream the driver could not (:meth:`Orchestrator.classify_pending`), kills and
reaps every child at the end (also on SIGINT/SIGTERM and on errors), checks that
none is left and, through :mod:`.summary`, prints the verdict. Its children are
this package run again (``python -m bytes_handoff_bench.soak --child ...``),
each with the run's token in its command line.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import stat
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..harness.metrics import rss_bytes
from ..ports import reserve_ports
from ..processes import Child, RunError, last_line, taskset_prefix
from .config import SoakConfig, write_json

#: What the orchestrator runs for each child: this package's ``__main__``.
CHILD_MODULE = "bytes_handoff_bench.soak"


@dataclass
class Incarnation:
    """One service process; a killed slot gets a new incarnation."""

    slot: int
    index: int
    stem: Path
    child: Child
    rss: list[tuple[float, int]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.stem.with_suffix(".ready").exists()


def exit_text(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"died of {signal.Signals(-status).name}"
    return f"exited with status {status}"


def processes_with(token: str) -> list[int]:
    """Pids (other than ours) whose command line contains ``token``."""
    found = []
    needle = token.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Orchestrator:
    def __init__(self, cfg: SoakConfig, out: Path) -> None:
        self.cfg = cfg
        self.out = out
        self.token = f"soak-{uuid.uuid4().hex}"
        self.rng = random.Random(f"{cfg.seed}-faults")
        self.spec_path = out / "soak.json"
        self.live: dict[int, Incarnation] = {}
        self.incarnations: list[Incarnation] = []
        self.driver: Child | None = None
        #: pid -> (monotonic time just before its SIGKILL, time it was reaped): in between
        #: the kernel still routes new connections to its listener, then resets them.
        self.kills: dict[int, tuple[float, float]] = {}
        #: pid -> when the orchestrator saw it dead without having killed it (within 50 ms).
        self.crashed: dict[int, float] = {}
        self.failures: list[str] = []
        self.t0 = time.monotonic()

    def child_argv(self, cores: str | None, role: str, *extra: str) -> list[str]:
        return [
            *taskset_prefix(cores),
            sys.executable,
            "-m",
            CHILD_MODULE,
            "--child",
            role,
            "--spec",
            str(self.spec_path),
            "--run-token",
            self.token,
            *extra,
        ]

    def start_service(self, slot: int) -> Incarnation:
        index = sum(1 for i in self.incarnations if i.slot == slot) + 1
        stem = self.out / f"service-{slot}-{index}"
        with contextlib.suppress(FileNotFoundError):
            # One left in a reused --out-dir would say "ready" before this one is.
            if stat.S_ISREG(stem.with_suffix(".ready").lstat().st_mode):
                stem.with_suffix(".ready").unlink()
        argv = self.child_argv(self.cfg.service_cores, "service", "--stem", str(stem))
        # A fatal signal (SIGSEGV, SIGABRT) leaves the Python stack in the service's log.
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        child = Child(stem.name, argv, None, stem.with_suffix(".err"), env=env)
        inc = Incarnation(slot, index, stem, child)
        self.incarnations.append(inc)
        self.live[slot] = inc
        return inc

    def wait_ready(self, inc: Incarnation, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not inc.ready:
            rc = inc.child.poll()
            if rc is not None:
                raise RunError(
                    f"{inc.stem.name} exited with status {rc} before it was ready:"
                    f" {last_line(inc.child.stderr_path) or 'no message'}"
                )
            if time.monotonic() > deadline:
                raise RunError(f"{inc.stem.name} not ready within {timeout:g} s")
            time.sleep(0.02)

    def run(self) -> None:
        cfg = self.cfg
        reservations = reserve_ports(2)
        try:
            service_addr, sink_addr = (r.addr for r in reservations)
            write_json(
                self.spec_path,
                {"cfg": asdict(cfg), "service_addr": service_addr, "sink_addr": sink_addr},
            )
            for slot in range(cfg.services):
                self.start_service(slot)
            for inc in list(self.live.values()):
                self.wait_ready(inc)
            self.t0 = time.monotonic()
            self.driver = Child(
                "driver",
                self.child_argv(cfg.driver_cores, "driver"),
                None,
                self.out / "driver.err",
            )
            self.supervise(self.driver)
        finally:
            for r in reservations:
                r.release()

    def supervise(self, driver: Child) -> None:
        """Until the driver exits: kill and restart services, restart crashed ones, sample RSS."""
        cfg = self.cfg
        limit = self.t0 + cfg.duration_seconds + cfg.hang_seconds + 30.0
        next_kill = self.t0 + self.kill_gap()
        next_sample = self.t0
        while (rc := driver.poll()) is None:
            now = time.monotonic()
            if now >= next_sample:
                for inc in self.live.values():
                    rss = rss_bytes(inc.child.pid)
                    if rss:
                        inc.rss.append((now - self.t0, rss))
                next_sample += 1.0
            for slot, inc in list(self.live.items()):
                status = inc.child.poll()
                if status is not None:
                    self.crashed[inc.child.pid] = now
                    self.failures.append(
                        f"{inc.stem.name} (pid {inc.child.pid}) {exit_text(status)} without being"
                        f" killed (log: {inc.child.stderr_path})"
                    )
                    self.start_service(slot)
            if now >= next_kill and now - self.t0 < cfg.duration_seconds:
                self.kill_one()
                next_kill = now + self.kill_gap()
            if now > limit:
                self.failures.append(f"driver still running {limit - self.t0:.0f} s after start")
                return
            time.sleep(0.05)
        if rc != 0:
            self.failures.append(
                f"driver exited with status {rc}: {last_line(driver.stderr_path) or 'no message'}"
            )

    def kill_gap(self) -> float:
        if self.cfg.kill_interval_seconds <= 0:
            return float("inf")
        return self.cfg.kill_interval_seconds * self.rng.uniform(0.5, 1.5)

    def kill_one(self) -> None:
        """SIGKILL a random ready service other than service 0 and start its successor."""
        victims = [i for s, i in sorted(self.live.items()) if s > 0 and i.ready]
        if not victims:
            return
        inc = self.rng.choice(victims)
        killed_at = time.monotonic()
        inc.child.signal_group(signal.SIGKILL)
        inc.child.wait(5.0)
        self.kills[inc.child.pid] = (killed_at, time.monotonic())
        self.start_service(inc.slot)

    def stop_all(self) -> None:
        """Stop the driver, SIGTERM every live service (it must exit 0), kill and reap all."""
        if self.driver is not None:
            self.driver.kill_group(grace=2.0)  # first: no wave of refused connects at the end
        for inc in self.live.values():
            with contextlib.suppress(RunError):
                self.wait_ready(inc, 30.0)  # before its SIGTERM handler exists, SIGTERM kills it
        for inc in self.live.values():
            inc.child.signal_group(signal.SIGTERM)
        for inc in self.live.values():
            status = inc.child.wait(10.0)
            if status != 0:
                self.failures.append(
                    f"{inc.stem.name} did not exit cleanly on SIGTERM (status {status}):"
                    f" {last_line(inc.child.stderr_path) or 'no message'}"
                )
        children = [i.child for i in self.incarnations]
        if self.driver is not None:
            children.append(self.driver)
        for child in children:
            child.kill_group(grace=2.0)

    # -- results ---------------------------------------------------------------------------

    def accepts(self) -> dict[int, list[tuple[float, int]]]:
        """Client port -> [(accept time, service pid)] from every service's accept log."""
        out: dict[int, list[tuple[float, int]]] = {}
        for inc in self.incarnations:
            path = inc.stem.with_suffix(".accepts")
            with contextlib.suppress(OSError):
                for line in path.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2:
                        out.setdefault(int(parts[1]), []).append((float(parts[0]), inc.child.pid))
        return out

    def classify_pending(
        self, rec: dict[str, Any], accepts: dict[int, list[tuple[float, int]]]
    ) -> tuple[str, str]:
        """``proxy_killed`` only when the proxy that owned the stream died before it ended."""
        lo, hi = rec["t_start"], rec["t_end"]
        owners = [pid for t, pid in accepts.get(rec["client_port"], []) if lo <= t <= hi]
        if owners:
            pid = owners[0]
            killed = self.kills.get(pid)
            if killed is not None and killed[0] <= hi:
                return "proxy_killed", f"its proxy (pid {pid}) was killed"
            if pid in self.crashed:
                return "proxy_crashed", f"its proxy (pid {pid}) died without being killed"
            return "unexplained", f"served by pid {pid}, which was not killed before it ended"
        if any(killed <= hi and lo <= reaped for killed, reaped in self.kills.values()):
            return "proxy_killed", "never accepted: queued on a listener that was killed"
        if any(lo <= seen <= hi + 0.5 for seen in self.crashed.values()):
            return "proxy_crashed", "never accepted: queued on a listener whose service died"
        return "unexplained", "never accepted by any service, and none was dying meanwhile"
