"""One split-process TCP run: a ``tcp-service`` and a ``tcp-driver`` process.

The service starts first (optionally under a command prefix, and pinned with
``taskset -c`` to the service cores), the run waits for its ready file, then
optional profilers attach to the service's processes, then the driver starts
(optionally under its own command prefix) pinned to the driver cores. Both must
exit 0 within their timeouts. Every child runs in its own process group; on any
failure, timeout or interrupt every group still alive is terminated (SIGTERM,
then SIGKILL), so nothing leaks or hangs.

A prefix such as ``ip netns exec NAME`` runs a role elsewhere (``taskset`` and
the harness run inside it). Only the addresses left out are reserved here (a
free port on ``host``, locked and checked bindable); given ones are passed on
as they are and never bound here, so an address that exists only where a
prefix puts its role works.

Files written into the run's folder (``N`` is the run index):

* ``handoff-run-N.txt`` driver stdout (``key=value``), ``handoff-run-N.err``
  its stderr (removed when empty);
* ``service-run-N.txt`` / ``service-run-N.err`` the same for the service;
* ``service-run-N.ready`` the service's ready file.

(:func:`run_files`; a tool that runs into a folder it was given checks them
first with ``output_paths.check_output_file``.)

Several drivers, one service (``SplitConfig.driver_slots``, one slot per driver):
the service gets one ``--service-addr``/``--sink-addr`` pair per driver, driver
``K`` runs with ``--drivers N --driver-index K`` against its own pair (under its
own prefix, if any) and writes ``handoff-driver-K-run-N.txt`` (``.err``); once
all of them and the service are done, their reports are merged
(``tools/merge_drivers``) into ``handoff-run-N.txt``, the run's driver report.

As a program (``python -m bytes_handoff_bench.tools.split``) it runs one split run
and prints the two files' paths; harness flags after ``--`` go to both roles.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bytes_handoff_bench.cli_common import OneLineParser, run_main, whole_number
from bytes_handoff_bench.errors import BenchError, UsageError
from bytes_handoff_bench.limits import MAX_DRIVERS
from bytes_handoff_bench.names import Role, Transport
from bytes_handoff_bench.output_paths import (
    check_output_dir,
    check_output_file,
    make_output_dir,
    output_dir_arg,
    write_output,
)
from bytes_handoff_bench.ports import PortError, reserve_ports
from bytes_handoff_bench.processes import (
    Child,
    RunError,
    last_line,
    raise_on_termination,
    taskset_prefix,
)
from bytes_handoff_bench.tools.artifacts import parse_kv_file, parse_kv_text
from bytes_handoff_bench.tools.merge_drivers import merge_reports, read_report, report_text

POLL_SECONDS = 0.02


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux ``/proc``), parents first."""
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop(0)
        out.append(current)
        task_dir = Path(f"/proc/{current}/task")
        try:
            tids = list(task_dir.iterdir())
        except OSError:
            continue
        for tid in tids:
            try:
                children = (tid / "children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children if c.isdigit())
    return out


@dataclass
class Attacher:
    """A profiler that attaches to the running service (after it is ready).

    ``argv(pids)`` builds its command line from the service's process ids. It is
    considered attached when ``ready_marker`` shows up in its stderr (or after
    ``settle_seconds`` when there is no marker). After the service exits it gets
    ``exit_timeout`` seconds to finish writing, then SIGINT, then is killed.
    """

    name: str
    argv: Callable[[list[int]], list[str]]
    stdout_path: Path | None
    stderr_path: Path
    ready_marker: str | None = None
    settle_seconds: float = 0.5
    attach_timeout: float = 30.0
    exit_timeout: float = 60.0
    ok_returncodes: tuple[int, ...] = (0,)
    child: Child | None = field(default=None, init=False)

    def start(self, pids: list[int]) -> None:
        self.child = Child(self.name, self.argv(pids), self.stdout_path, self.stderr_path)
        deadline = time.monotonic() + self.attach_timeout
        if self.ready_marker is None:
            time.sleep(self.settle_seconds)
            if self.child.poll() not in (None, *self.ok_returncodes):
                raise RunError(
                    f"{self.name} failed to attach: {last_line(self.stderr_path)}"
                    f" (log: {self.stderr_path})"
                )
            return
        while True:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
            if self.ready_marker in text:
                return
            if self.child.poll() is not None:
                raise RunError(
                    f"{self.name} failed to attach (exit {self.child.poll()}): "
                    f"{last_line(self.stderr_path)} (log: {self.stderr_path})"
                )
            if time.monotonic() > deadline:
                raise RunError(
                    f"{self.name} did not attach within {self.attach_timeout:.0f}s"
                    f" (log: {self.stderr_path})"
                )
            time.sleep(POLL_SECONDS)

    def finish(self) -> int:
        assert self.child is not None
        rc = self.child.wait(self.exit_timeout)
        if rc is None:
            self.child.signal_group(signal.SIGINT)
            rc = self.child.wait(15.0)
        if rc is None:
            self.child.kill_group()
            raise RunError(
                f"{self.name} did not finish within {self.exit_timeout:.0f}s after the service"
                f" exited (log: {self.stderr_path})"
            )
        return rc


@dataclass
class DriverSlot:
    """One of several drivers of one service: its addresses (``None``: a free port on the
    run's host, reserved here), the command it runs under, and flags for it alone."""

    service_addr: str | None = None
    sink_addr: str | None = None
    prefix: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)


@dataclass
class SplitConfig:
    """One split run. ``harness_args`` are the shape flags given to both roles.

    ``driver_slots``: several drivers (two or more slots; ``service_addr``, ``sink_addr``
    and ``driver_prefix`` are then unused), each run with ``driver_extra_args`` and
    its slot's own; empty: one driver.
    """

    harness_args: list[str]
    out_dir: Path
    run_index: int = 1
    python: str = sys.executable
    service_cores: str | None = None
    driver_cores: str | None = None
    host: str = "127.0.0.1"
    service_addr: str | None = None
    sink_addr: str | None = None
    idle_timeout_millis: int = 1000
    startup_timeout_seconds: float = 60.0
    run_timeout_seconds: float = 600.0
    service_prefix: list[str] = field(default_factory=list)
    driver_prefix: list[str] = field(default_factory=list)
    service_extra_args: list[str] = field(default_factory=list)
    driver_extra_args: list[str] = field(default_factory=list)
    attachers: list[Attacher] = field(default_factory=list)
    label: str = ""
    driver_file_stem: str = "handoff"
    service_file_stem: str = "service"
    driver_slots: list[DriverSlot] = field(default_factory=list)

    def slots(self) -> list[DriverSlot]:
        """Every driver's slot (one from the single-driver fields when none was given)."""
        if self.driver_slots:
            return self.driver_slots
        return [DriverSlot(self.service_addr, self.sink_addr, self.driver_prefix)]


@dataclass
class SplitResult:
    driver_path: Path
    service_path: Path
    driver: dict[str, str]
    service: dict[str, str]
    attacher_returncodes: dict[str, int]


def harness_command(python: str) -> list[str]:
    return [python, "-m", "bytes_handoff_bench"]


def run_files(
    out_dir: Path, n: int, driver_stem: str, service_stem: str, drivers: int = 1
) -> dict[str, Path]:
    """The files one split run writes into ``out_dir``, by role (``driver_K_txt`` and
    ``driver_K_err`` too with several drivers, whose merge is ``driver_txt``)."""
    files = {
        "driver_txt": out_dir / f"{driver_stem}-run-{n}.txt",
        "driver_err": out_dir / f"{driver_stem}-run-{n}.err",
        "service_txt": out_dir / f"{service_stem}-run-{n}.txt",
        "service_err": out_dir / f"{service_stem}-run-{n}.err",
        "ready": out_dir / f"{service_stem}-run-{n}.ready",
    }
    if drivers > 1:
        for k in range(drivers):
            files[f"driver_{k}_txt"] = out_dir / f"{driver_stem}-driver-{k}-run-{n}.txt"
            files[f"driver_{k}_err"] = out_dir / f"{driver_stem}-driver-{k}-run-{n}.err"
    return files


def _regular_or_link(path: Path) -> bool:
    """``path`` is a regular file or a symlink (``FileNotFoundError`` if it is not there)."""
    mode = path.lstat().st_mode
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def check_run_files(cfg: SplitConfig, name: str) -> None:
    """Refuse (``UsageError``) what ``run_split(cfg)`` could not write in its folder."""
    if not cfg.out_dir.is_dir():
        return  # made new
    files = run_files(
        cfg.out_dir,
        cfg.run_index,
        cfg.driver_file_stem,
        cfg.service_file_stem,
        len(cfg.slots()),
    )
    for path in files.values():
        check_output_file(path, f"{name}: {path.name}")
    with contextlib.suppress(FileNotFoundError):
        if not _regular_or_link(files["ready"]):
            raise UsageError(
                f"{name}: {files['ready'].name} {str(files['ready'])!r} must be a regular file:"
                " the run waits for it to appear"
            )


def _wait_ready(cfg: SplitConfig, service: Child, ready: Path, what: str) -> dict[str, str]:
    deadline = time.monotonic() + cfg.startup_timeout_seconds
    while True:
        if ready.exists():
            info = parse_kv_text(ready.read_text(encoding="utf-8", errors="replace"))
            if info:
                return info
        rc = service.poll()
        if rc is not None:
            raise RunError(
                f"{what}: service exited with status {rc} before it was ready: "
                f"{last_line(service.stderr_path) or 'no message'} (log: {service.stderr_path})"
            )
        if time.monotonic() > deadline:
            raise RunError(
                f"{what}: service not ready within {cfg.startup_timeout_seconds:g}s"
                f" (log: {service.stderr_path})"
            )
        time.sleep(POLL_SECONDS)


def run_split(cfg: SplitConfig) -> SplitResult:
    """Run one split-process TCP run; raise :class:`RunError` on any failure."""
    n = cfg.run_index
    what = cfg.label or f"run {n}"
    try:
        # A subfolder of a folder the caller checked (or made): its parents may be new.
        make_output_dir(cfg.out_dir, what, parents=True)
    except BenchError as exc:
        raise RunError(str(exc)) from None
    slots = cfg.slots()
    several = len(slots) > 1
    files = run_files(cfg.out_dir, n, cfg.driver_file_stem, cfg.service_file_stem, len(slots))
    service_txt, service_err = files["service_txt"], files["service_err"]
    ready = files["ready"]
    with contextlib.suppress(FileNotFoundError):
        if not _regular_or_link(ready):
            raise RunError(f"{what}: {ready} must be a regular file: the run waits for it")
        ready.unlink()  # a stale one: the service writes it anew
    # One driver writes the run's driver files; several write their own, merged into them.
    outputs = [
        (files[f"driver_{k}_txt"], files[f"driver_{k}_err"]) if several else
        (files["driver_txt"], files["driver_err"])
        for k in range(len(slots))
    ]  # fmt: skip

    service_pin = taskset_prefix(cfg.service_cores)
    driver_pin = taskset_prefix(cfg.driver_cores)
    wanted = sum([slot.service_addr is None, slot.sink_addr is None].count(True) for slot in slots)
    try:
        reservations = reserve_ports(wanted, cfg.host)
    except PortError as exc:
        raise RunError(f"{what}: {exc}") from exc
    free = [r.addr for r in reservations]
    routes = [(slot.service_addr or free.pop(0), slot.sink_addr or free.pop(0)) for slot in slots]

    children: list[Child] = []
    try:
        service = Child(
            "service",
            [
                *cfg.service_prefix,
                *service_pin,
                *harness_command(cfg.python),
                *cfg.harness_args,
                "--role",
                Role.TCP_SERVICE,
                *[
                    word
                    for pair in routes
                    for word in ("--service-addr", pair[0], "--sink-addr", pair[1])
                ],
                "--ready-file",
                str(ready),
                "--idle-timeout-millis",
                str(cfg.idle_timeout_millis),
                *cfg.service_extra_args,
            ],
            service_txt,
            service_err,
        )
        children.append(service)
        info = _wait_ready(cfg, service, ready, what)
        service_pid = int(info["pid"]) if info.get("pid", "").isdigit() else service.pid
        bound = info.get("service_addrs", "").split(",") if several else []
        if len(bound) != len(routes):
            bound = [info.get("service_addr", routes[0][0]), *(a for a, _ in routes[1:])]

        for attacher in cfg.attachers:
            attacher.start(process_tree(service_pid))
            if attacher.child is not None:
                children.append(attacher.child)

        drivers: list[Child] = []
        for k, (slot, service_addr, (_, sink_addr), (txt, err)) in enumerate(
            zip(slots, bound, routes, outputs, strict=True)
        ):
            share = ["--drivers", str(len(slots)), "--driver-index", str(k)] if several else []
            driver = Child(
                f"driver {k}" if several else "driver",
                [
                    *slot.prefix,
                    *driver_pin,
                    *harness_command(cfg.python),
                    *cfg.harness_args,
                    "--role",
                    Role.TCP_DRIVER,
                    "--service-addr",
                    service_addr,
                    "--sink-addr",
                    sink_addr,
                    *share,
                    *cfg.driver_extra_args,
                    *slot.extra_args,
                ],
                txt,
                err,
            )
            children.append(driver)
            drivers.append(driver)
        _wait_drivers(cfg, what, service, drivers)

        grace = cfg.idle_timeout_millis / 1000.0 + 30.0
        service_rc = service.wait(grace)
        if service_rc is None:
            raise RunError(
                f"{what}: service did not exit within {grace:g}s after the driver finished"
                f" (idle timeout {cfg.idle_timeout_millis} ms; log: {service_err})"
            )
        if service_rc != 0:
            raise RunError(
                f"{what}: service exited with status {service_rc}: "
                f"{last_line(service_err) or 'no message'} (log: {service_err})"
            )
        attacher_rcs = {a.name: a.finish() for a in cfg.attachers}
    finally:
        for child in reversed(children):
            child.kill_group()
        for reservation in reservations:
            reservation.release()

    for driver, (txt, _err) in zip(drivers, outputs, strict=True):
        if not parse_kv_file(txt):
            raise RunError(f"{what}: {driver.name} printed no key=value lines (see {txt})")
    service_kv = parse_kv_file(service_txt)
    if not service_kv:
        raise RunError(f"{what}: service printed no key=value lines (see {service_txt})")
    for child in (*drivers, service):
        child.drop_empty_stderr()
    driver_txt = files["driver_txt"]
    if several:
        driver_kv = merge_driver_reports([txt for txt, _err in outputs], driver_txt, what)
    else:
        driver_kv = parse_kv_file(driver_txt)
    return SplitResult(driver_txt, service_txt, driver_kv, service_kv, attacher_rcs)


def _wait_drivers(cfg: SplitConfig, what: str, service: Child, drivers: list[Child]) -> None:
    """Until every driver exited 0; ``RunError`` on a failure, a timeout, or a service that
    fails meanwhile."""
    deadline = time.monotonic() + cfg.run_timeout_seconds
    service_err = service.stderr_path
    pending = list(drivers)
    while pending:
        driver = pending[0]
        rc = driver.wait(0.2)
        if rc is None:
            service_rc = service.poll()
            if service_rc is not None and service_rc != 0:
                raise RunError(
                    f"{what}: service exited with status {service_rc} while the"
                    f" {driver.name} ran: {last_line(service_err) or 'no message'}"
                    f" (log: {service_err})"
                )
            if time.monotonic() > deadline:
                raise RunError(
                    f"{what}: {driver.name} still running after {cfg.run_timeout_seconds:g}s"
                    f" (log: {driver.stderr_path})"
                )
            continue
        if rc != 0:
            # A failing proxy often shows up first as a reset in the driver: when the
            # service failed too, its message is the cause worth reading.
            service_rc = service.wait(2.0)
            if service_rc not in (None, 0):
                raise RunError(
                    f"{what}: service exited with status {service_rc}: "
                    f"{last_line(service_err) or 'no message'} (log: {service_err}); "
                    f"{driver.name} exited with status {rc} (log: {driver.stderr_path})"
                )
            raise RunError(
                f"{what}: {driver.name} exited with status {rc}: "
                f"{last_line(driver.stderr_path) or 'no message'} (log: {driver.stderr_path})"
            )
        pending.pop(0)


def merge_driver_reports(reports: list[Path], out: Path, what: str) -> dict[str, str]:
    """Merge several drivers' reports (``tools/merge_drivers``) into ``out``; its keys."""
    try:
        merged = merge_reports([read_report(str(path)) for path in reports])
        write_output(out, report_text(merged), "the merged driver report")
    except BenchError as exc:
        raise RunError(f"{what}: the drivers' reports do not merge: {exc}") from None
    return merged


def _main(argv: Sequence[str] | None = None) -> int:
    return run_main("split", lambda: _split(argv), bench_extra=None)


def _split(argv: Sequence[str] | None) -> int:
    parser = OneLineParser(
        prog="python -m bytes_handoff_bench.tools.split",
        description="One split-process TCP run; harness flags go after --.",
    )
    parser.add_argument("--out-dir", type=output_dir_arg, required=True)
    parser.add_argument("--run-index", type=int, default=1)
    parser.add_argument("--service-cores")
    parser.add_argument("--driver-cores")
    parser.add_argument("--idle-timeout-millis", type=int, default=1000)
    parser.add_argument("--startup-timeout-seconds", type=float, default=60.0)
    parser.add_argument("--run-timeout-seconds", type=float, default=600.0)
    parser.add_argument(
        "--drivers",
        type=whole_number(1, MAX_DRIVERS),
        default=1,
        help="driver processes against the one service, each with its own pair of ports",
    )
    parser.add_argument("harness_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    check_output_dir(args.out_dir, "--out-dir")
    raise_on_termination()
    harness_args = list(args.harness_args)
    if harness_args[:1] == ["--"]:
        harness_args = harness_args[1:]
    cfg = SplitConfig(
        harness_args=["--transport", Transport.TCP, *harness_args],
        out_dir=args.out_dir,
        run_index=args.run_index,
        python=os.environ.get("PYTHON") or sys.executable,
        service_cores=args.service_cores,
        driver_cores=args.driver_cores,
        idle_timeout_millis=args.idle_timeout_millis,
        startup_timeout_seconds=args.startup_timeout_seconds,
        run_timeout_seconds=args.run_timeout_seconds,
        driver_slots=[DriverSlot() for _ in range(args.drivers)] if args.drivers > 1 else [],
    )
    check_run_files(cfg, "--out-dir")
    result = run_split(cfg)
    print(f"driver={result.driver_path}")
    print(f"service={result.service_path}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
