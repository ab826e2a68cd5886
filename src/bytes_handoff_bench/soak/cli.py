"""The soak's command line: flags, the output folder, and the entry of every process.

Everything goes into ``--out-dir`` (a folder, or a new one in an existing
folder; in one that exists, the run's fixed files must be absent, regular files,
character devices or FIFOs: ``output_paths``), checked before any process
starts; by default a new ``soak_<timestamp>`` folder in ``bench/results`` of the
clone (else of the current folder).

With the hidden ``--child service|driver`` the same program is one of the
orchestrator's children (:mod:`.service`, :mod:`.driver`), on the harness's
event loop of ``--loop`` (``workers.run_loop``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from ..cli_common import OneLineParser, prog_and_args, run_main
from ..errors import BenchError, UsageError
from ..extras import default_loop, require_loop
from ..harness.workers import run_loop
from ..limits import MAX_DURATION_SECONDS, MAX_TIMEOUT_SECONDS, MAX_WORKER_THREADS
from ..names import Loop
from ..output_paths import (
    check_output_dir,
    check_output_file,
    choose_results_dir,
    make_output_dir,
    output_dir_arg,
    write_output,
)
from ..ports import PortError
from ..processes import RunError, raise_on_termination, taskset_prefix
from . import __doc__ as OVERVIEW
from .config import (
    LIBRARY_PATHS,
    MAX_CONNECTIONS,
    MAX_HEAP_LIMIT_BYTES_PER_STREAM,
    MAX_OBJECTS_LIMIT_PER_STREAM,
    MAX_RSS_SLOPE_MIB_PER_MIN,
    MIB,
    SoakConfig,
)
from .driver import Driver
from .orchestrator import Orchestrator
from .service import Service
from .summary import summarize


def build_parser(prog: str) -> argparse.ArgumentParser:
    d = SoakConfig()
    p = OneLineParser(prog=prog, description=OVERVIEW.split("\n\n")[0] if OVERVIEW else None)
    p.add_argument("--duration-seconds", type=float, default=d.duration_seconds)
    p.add_argument("--connections", type=int, default=d.connections, help="streams per wave")
    p.add_argument("--services", type=int, default=d.services, help="proxy processes (>= 2)")
    p.add_argument("--seed", type=int, help="fault RNG seed (default: random, printed)")
    p.add_argument(
        "--kill-interval-seconds",
        type=float,
        default=d.kill_interval_seconds,
        help="mean time between proxy kills (uniform 0.5x-1.5x); 0: no kills",
    )
    p.add_argument("--client-reset-rate", type=float, default=d.client_reset_rate)
    p.add_argument("--sink-reset-rate", type=float, default=d.sink_reset_rate)
    p.add_argument(
        "--sink-stall-reset-rate",
        type=float,
        default=d.sink_stall_reset_rate,
        help="streams whose sink stops reading for --stall-seconds (the proxy's writes"
        " pause), then resets",
    )
    p.add_argument("--stall-seconds", type=float, default=d.stall_seconds)
    p.add_argument(
        "--library-path",
        choices=(*LIBRARY_PATHS, "both"),
        default=d.library_path,
        help="the library path the proxies use: raw sockets, the protocol path, or both"
        " (drawn per stream)",
    )
    p.add_argument("--hang-seconds", type=float, default=d.hang_seconds)
    p.add_argument(
        "--heap-limit-bytes-per-stream",
        type=float,
        default=d.heap_limit_bytes_per_stream,
        help="leak gate: most growth of service 0's malloc'd bytes in use, idle after a full"
        " collection, per stream it served",
    )
    p.add_argument(
        "--py-blocks-limit-per-stream",
        type=float,
        default=d.py_blocks_limit_per_stream,
        help="leak gate: most growth of service 0's Python allocator blocks"
        " (sys.getallocatedblocks), idle after a full collection, per stream it served",
    )
    p.add_argument(
        "--gc-objects-limit-per-stream",
        type=float,
        default=d.gc_objects_limit_per_stream,
        help="leak gate: most growth of service 0's gc-tracked objects, idle after a full"
        " collection, per stream it served",
    )
    p.add_argument(
        "--rss-limit-mib-per-min",
        type=float,
        help="also gate on service 0's RSS slope (default: reported only; RSS holds the"
        " allocator's high-water mark)",
    )
    p.add_argument("--inject-leak-bytes-per-stream", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--route-frames", type=int, default=d.route_frames)
    p.add_argument("--frame-len", type=int, default=d.frame_len)
    p.add_argument("--tunnel-bytes", type=int, default=d.tunnel_bytes)
    p.add_argument("--read-reserve", type=int, default=d.read_reserve)
    p.add_argument("--loop", choices=[m.value for m in Loop], default=default_loop())
    p.add_argument("--service-cores", help="taskset -c list for the services")
    p.add_argument("--driver-cores", help="taskset -c list for the driver")
    p.add_argument(
        "--out-dir",
        type=output_dir_arg,
        help="a folder, or a new one in an existing folder (default: a new"
        " bench/results/soak_<timestamp> of the clone, else of the current folder)",
    )
    # Internal: how the orchestrator starts its children.
    p.add_argument("--child", choices=("service", "driver"), help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--stem", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--run-token", help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> SoakConfig:
    """Validate the flags; ``UsageError`` naming the first bad one."""
    rss_limit = args.rss_limit_mib_per_min
    optional = (
        []
        if rss_limit is None
        else [("--rss-limit-mib-per-min", rss_limit, 0.0, MAX_RSS_SLOPE_MIB_PER_MIN)]
    )
    for flag, value, low, high in (
        *optional,
        ("--duration-seconds", args.duration_seconds, 0.001, MAX_DURATION_SECONDS),
        ("--hang-seconds", args.hang_seconds, 0.001, MAX_TIMEOUT_SECONDS),
        (
            "--heap-limit-bytes-per-stream",
            args.heap_limit_bytes_per_stream,
            0.0,
            MAX_HEAP_LIMIT_BYTES_PER_STREAM,
        ),
        (
            "--py-blocks-limit-per-stream",
            args.py_blocks_limit_per_stream,
            0.0,
            MAX_OBJECTS_LIMIT_PER_STREAM,
        ),
        (
            "--gc-objects-limit-per-stream",
            args.gc_objects_limit_per_stream,
            0.0,
            MAX_OBJECTS_LIMIT_PER_STREAM,
        ),
        ("--inject-leak-bytes-per-stream", args.inject_leak_bytes_per_stream, 0, MIB),
        ("--kill-interval-seconds", args.kill_interval_seconds, 0.0, MAX_DURATION_SECONDS),
        ("--services", args.services, 2, MAX_WORKER_THREADS),
        ("--connections", args.connections, 1, MAX_CONNECTIONS),
        ("--stall-seconds", args.stall_seconds, 0.001, args.hang_seconds),
    ):
        if not value >= low:  # also rejects nan
            raise UsageError(f"{flag} must be at least {low:g}, got {value}")
        if value > high:  # inf too: every soak and every wait in it ends
            raise UsageError(f"{flag} must be at most {high:g}, got {value}")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise UsageError(f"--seed must be from 0 to 2**64 - 1, got {args.seed}")
    rates = (
        ("--client-reset-rate", args.client_reset_rate),
        ("--sink-reset-rate", args.sink_reset_rate),
        ("--sink-stall-reset-rate", args.sink_stall_reset_rate),
    )
    for flag, rate in rates:
        if not 0.0 <= rate <= 1.0:
            raise UsageError(f"{flag} must be between 0 and 1, got {rate}")
    if sum(rate for _, rate in rates) > 1.0:
        raise UsageError(f"{', '.join(flag for flag, _ in rates)} must add up to at most 1")
    if (args.service_cores is None) != (args.driver_cores is None):
        raise UsageError("--service-cores and --driver-cores go together")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    cfg = SoakConfig(
        duration_seconds=args.duration_seconds,
        connections=args.connections,
        services=args.services,
        seed=seed,
        kill_interval_seconds=args.kill_interval_seconds,
        client_reset_rate=args.client_reset_rate,
        sink_reset_rate=args.sink_reset_rate,
        sink_stall_reset_rate=args.sink_stall_reset_rate,
        stall_seconds=args.stall_seconds,
        library_path=args.library_path,
        hang_seconds=args.hang_seconds,
        heap_limit_bytes_per_stream=args.heap_limit_bytes_per_stream,
        py_blocks_limit_per_stream=args.py_blocks_limit_per_stream,
        gc_objects_limit_per_stream=args.gc_objects_limit_per_stream,
        rss_limit_mib_per_min=rss_limit,
        inject_leak_bytes=args.inject_leak_bytes_per_stream,
        route_frames=args.route_frames,
        frame_len=args.frame_len,
        tunnel_bytes=args.tunnel_bytes,
        read_reserve=args.read_reserve,
        loop=args.loop,
        service_cores=args.service_cores,
        driver_cores=args.driver_cores,
    )
    for implementation, completion in cfg.variants:
        cfg.bench_config(implementation, completion)  # the harness's own size checks
    try:
        taskset_prefix(cfg.service_cores)
    except RunError as exc:
        raise UsageError(str(exc)) from exc
    return cfg


#: The files the orchestrator writes into its folder under fixed names (the services'
#: files are named per incarnation, and written never through a symlink).
FIXED_OUTPUTS = ("soak.json", "driver.json", "driver.err", "kills.csv", "rss.csv", "summary.txt")


def check_out_dir(given: Path | None) -> Path | None:
    """Refuse (``UsageError``), before anything starts, an ``--out-dir`` the soak could not
    write (``output_paths``); the default folder's parent is checked: the folder is new."""
    if given is None:
        choose_results_dir(None, "--out-dir")
        return None
    check_output_dir(given, "--out-dir")
    if given.is_dir():
        for name in FIXED_OUTPUTS:
            check_output_file(given / name, f"--out-dir: {name}")
    return given


def new_out_dir(given: Path | None) -> Path:
    """The checked ``--out-dir`` (made without parents), or a new ``soak_<timestamp>``."""
    if given is not None:
        return make_output_dir(given, "--out-dir")
    results, _default = choose_results_dir(None, "--out-dir")
    make_output_dir(results, "the default results folder", parents=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for n in range(100):
        path = results / f"soak_{stamp}{'' if n == 0 else f'_{n}'}"
        with contextlib.suppress(FileExistsError):
            path.mkdir()
            return path
    raise UsageError(f"cannot create a run folder under {results}")


def die_with_parent() -> None:
    """``PR_SET_PDEATHSIG``: a child goes too when its orchestrator is SIGKILLed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def child_main(args: argparse.Namespace) -> int:
    """A service or the driver: started by the orchestrator, never by hand."""
    die_with_parent()
    spec = json.loads(args.spec.read_text())
    cfg = SoakConfig(**spec["cfg"])
    if args.child == "service":
        assert args.stem is not None
        return run_loop(cfg.bench_config(), Service(cfg, spec, args.stem).run)
    return run_loop(cfg.bench_config(), Driver(cfg, spec, args.spec.parent).run)


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, "run-fault-soak.sh")
    return run_main(prog, lambda: soak(prog, args), bench_extra=("hdrh",))


def soak(prog: str, argv: Sequence[str]) -> int:
    """Parse, then run the soak (or, with ``--child``, one of its processes)."""
    args = build_parser(prog).parse_args(argv)
    require_loop(args.loop)
    if args.child is not None:
        return child_main(args)
    cfg = config_from_args(args)
    out = new_out_dir(check_out_dir(args.out_dir))
    raise_on_termination()  # SIGTERM/SIGHUP -> KeyboardInterrupt: the cleanup below runs
    print(f"soak: seed={cfg.seed} out_dir={out}", flush=True)
    print(
        f"soak: {cfg.duration_seconds:g} s, {cfg.connections} connections per wave,"
        f" {cfg.services} services, kill every ~{cfg.kill_interval_seconds:g} s,"
        f" reset rates client {cfg.client_reset_rate:g} / sink {cfg.sink_reset_rate:g}"
        f" / sink stalled {cfg.stall_seconds:g} s then reset {cfg.sink_stall_reset_rate:g},"
        f" library path {cfg.library_path}",
        flush=True,
    )
    started = time.monotonic()
    orch = Orchestrator(cfg, out)
    interrupted = False
    try:
        orch.run()
    except KeyboardInterrupt:
        interrupted = True
    except (RunError, PortError, BenchError, OSError) as exc:
        orch.failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        # A second signal during cleanup must not cut it short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        orch.stop_all()
    lines, summary = summarize(orch, cfg, interrupted, started)
    text = "\n".join([*lines, *(f"{k}={v}" for k, v in summary.items())]) + "\n"
    print(text, end="", flush=True)
    write_output(out / "summary.txt", text, "summary.txt")
    return 0 if summary["verdict"] == "pass" else 1
