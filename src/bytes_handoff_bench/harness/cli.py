"""``bytes-handoff-bench`` / ``python -m bytes_handoff_bench``: parse flags, run, print.

Exit codes (as every program here, ``cli_common.EXIT_STATUSES``): 0 success,
1 the run failed (a stream errored, verification failed, a wait timed out),
2 bad usage (unknown flag, bad value, an address in use, a service that
cannot be reached, a package of the bench extra missing: checked once the
flags are parsed, so ``--help`` and ``--version`` answer without it; see
``extras``), 130 interrupted (SIGINT or SIGTERM, also while the modules load).
Every error is one line on stderr.
"""

from __future__ import annotations

import sys

# A Ctrl-C while the modules below load ends like one during a run: one line, 130.
try:
    import argparse
    import json
    from collections.abc import Sequence
    from typing import Any

    from bytes_handoff import HandoffError

    from .. import defaults
    from ..cli_common import (
        HelpFormatter,
        OneLineParser,
        UsageError,
        finite_number,
        run_main,
        version_text,
    )
    from ..extras import default_loop, require_loop
    from ..limits import (
        MAX_CONNECTIONS,
        MAX_DRIVERS,
        MAX_ITERATIONS,
        MAX_ROUTE_FRAMES,
        MAX_RUN_MEMORY,
        MAX_WORKER_THREADS,
    )
    from ..names import TLS_MODES, Completion, Loop, Role, Scenario, TlsMode, Transport
    from .config import BenchConfig, parse_addr
except KeyboardInterrupt:
    sys.stderr.write("bytes-handoff-bench: error: interrupted\n")
    raise SystemExit(130) from None

__all__ = ["HelpFormatter", "build_parser", "config_from_args", "main", "version_text"]

PROG = "bytes-handoff-bench"


class _Preflight(argparse.Action):
    """``--preflight`` (not in ``--help``): what the run tools ask before they start any run.

    The tools never import the harness; they start it as a program. Before a
    set of runs they start it once with ``--preflight`` and a JSON list of
    argument lists on stdin, and it prints one JSON object: ``flags`` (every
    long flag it has) and ``errors`` (per argument list, ``null`` or the
    one-line error that run would stop with). Its own parser and validation
    answer, so the tools learn exactly what this harness accepts: no copy of
    its flags or bounds to keep in step, no scraping of ``--help``.
    """

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        try:
            arg_lists = json.loads(sys.stdin.read() or "[]")
        except ValueError as exc:
            raise UsageError(
                f"--preflight: expected a JSON list of argument lists: {exc}"
            ) from None
        if not isinstance(arg_lists, list) or not all(
            isinstance(args, list) and all(isinstance(a, str) for a in args) for args in arg_lists
        ):
            raise UsageError("--preflight: expected a JSON list of argument lists")
        errors: list[str | None] = []
        for args in arg_lists:
            try:
                config_from_args(args)
                errors.append(None)
            except UsageError as exc:
                errors.append(str(exc))
        flags = sorted({s for a in parser._actions for s in a.option_strings if s[:2] == "--"})
        print(json.dumps({"flags": flags, "errors": errors}))
        parser.exit()


EXAMPLES = """\
Examples:
  # the default workload: in-memory duplex, the library path, 64-byte client writes
  python -m bytes_handoff_bench
  # localhost TCP, the hand-written asyncio-streams baseline, large client writes
  python -m bytes_handoff_bench --transport tcp --implementation manual_vec --scenario coalesced
  # 2 event-loop worker processes, 64 connections, on the asyncio loop
  python -m bytes_handoff_bench --transport tcp --worker-threads 2 --connections 64 --loop asyncio
  # a 30-second sustained run with RSS samples
  python -m bytes_handoff_bench --duration-seconds 30 --rss-samples rss.csv
  # open loop: 200 streams/s for 10 s on a clock, latency from each scheduled start
  python -m bytes_handoff_bench --transport tcp --rate 200 --duration-seconds 10
  # several drivers, one service: one --service-addr/--sink-addr pair per driver ...
  python -m bytes_handoff_bench --transport tcp --role tcp-service --worker-threads 4 \\
      --service-addr 10.0.0.1:7001 --sink-addr 10.0.0.2:7002 \\
      --service-addr 10.0.0.1:7003 --sink-addr 10.0.0.3:7002
  # ... each driver against its own pair, at its share of the total --rate
  python -m bytes_handoff_bench --transport tcp --role tcp-driver --drivers 2 \\
      --driver-index 0 --service-addr 10.0.0.1:7001 --sink-addr 10.0.0.2:7002 --rate 2000
  # ... then one summary: ./bench/merge-drivers.sh driver-0.txt driver-1.txt
  # both legs TLS (a certificate made with openssl for the run): what TLS costs
  python -m bytes_handoff_bench --transport tcp --implementation handoff_protocol --tls
  # ... upgraded after a plaintext line by the library's start_tls() instead of ssl=
  python -m bytes_handoff_bench --transport tcp --implementation handoff_protocol --tls \\
      --tls-mode starttls
  # repeated runs with artifacts (runs.csv, summary.csv): use the wrapper
  ./bench/run-stream-harness.sh --scenario all --runs 5
"""


def build_parser() -> argparse.ArgumentParser:
    from .implementations import IMPLEMENTATIONS

    p = OneLineParser(
        prog=PROG,
        description="End-to-end client -> proxy -> sink stream benchmark for bytes_handoff.",
        epilog=(
            EXAMPLES
            + "\nEvery number is bounded, and checked before anything is allocated: a run may"
            f" hold\nat most {MAX_RUN_MEMORY // 2**30} GiB (connections x their buffers and"
            " route frames + workers x the\ntunnel pattern). A run needs the bench extra"
            " (pip install 'bytes-handoff[bench]');\n--help and --version do not."
        ),
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    integer = finite_number(int)
    number = finite_number(float)
    add = p.add_argument
    add("--preflight", action=_Preflight)
    add(
        "--transport",
        choices=[m.value for m in Transport],
        default=defaults.TRANSPORT,
        help="duplex: in-memory pipes in one process; tcp: localhost or --service-addr sockets",
    )
    add(
        "--role",
        choices=[m.value for m in Role],
        default=Role.INTEGRATED,
        help="integrated: client, proxy and sink here; tcp-service: the proxy;"
        " tcp-driver: clients and sink",
    )
    add(
        "--implementation",
        choices=[str(name) for name in IMPLEMENTATIONS],  # the names, and any registered beside
        default=defaults.IMPLEMENTATION,
        help="the proxy: the library path or a hand-written baseline",
    )
    add(
        "--scenario",
        choices=[m.value for m in Scenario],
        default=defaults.SCENARIO,
        help="fragmented: 64-byte client writes; coalesced: --read-reserve-sized writes",
    )
    add(
        "--completion",
        choices=[m.value for m in Completion],
        default=defaults.COMPLETION,
        help="await a completion ticket per frame, or fire and forget",
    )
    add(
        "--worker-threads",
        type=integer,
        default=defaults.WORKER_THREADS,
        help=f"starts this many worker processes (1-{MAX_WORKER_THREADS}), one event loop per"
        " process: the GIL keeps threads from running Python in parallel",
    )
    add(
        "--connections",
        type=integer,
        default=defaults.CONNECTIONS,
        help=f"concurrent streams per wave (1-{MAX_CONNECTIONS})",
    )
    add(
        "--route-frames",
        type=integer,
        default=defaults.ROUTE_FRAMES,
        help=f"routed frames per stream before the tunnel marker (1-{MAX_ROUTE_FRAMES})",
    )
    add(
        "--frame-len",
        type=integer,
        default=defaults.FRAME_LEN,
        help="route frame length without newline (16 to 1 MiB)",
    )
    add(
        "--tunnel-bytes",
        type=integer,
        default=defaults.TUNNEL_BYTES,
        help="opaque bytes per stream after the marker (0 to 1 GiB)",
    )
    add(
        "--input-fragment",
        type=integer,
        default=None,
        help="client write size (default: 64 fragmented, --read-reserve coalesced; <= 64 MiB)",
    )
    add(
        "--read-reserve",
        type=integer,
        default=defaults.READ_RESERVE,
        help="most bytes one proxy read may fill (1 to 64 MiB)",
    )
    add(
        "--write-pending-bytes",
        type=integer,
        default=defaults.WRITE_PENDING_BYTES,
        help="write budget; 0 = 2 * read_reserve, else >= read_reserve (<= 128 MiB)",
    )
    add(
        "--duplex-capacity",
        type=integer,
        default=defaults.DUPLEX_CAPACITY,
        help="in-memory pipe capacity, duplex transport (1 to 64 MiB)",
    )
    add(
        "--iterations",
        type=integer,
        default=defaults.ITERATIONS,
        help=f"connection waves (1-{MAX_ITERATIONS})",
    )
    add(
        "--duration-seconds",
        type=number,
        default=defaults.DURATION_SECONDS,
        help="repeat waves until this many seconds passed (0 = use --iterations; <= 24 h)",
    )
    add(
        "--service-addr",
        metavar="HOST:PORT",
        action="append",
        help="tcp: where the proxy listens (default: a free localhost port); tcp-service: once"
        " per driver, the i-th paired with the i-th --sink-addr (several drivers, one service)",
    )
    add(
        "--sink-addr",
        metavar="HOST:PORT",
        action="append",
        help="tcp: where the sink listens (default: a free localhost port); tcp-service: once"
        " per driver: the streams that arrive on the i-th --service-addr go to the i-th sink",
    )
    add(
        "--drivers",
        type=integer,
        default=1,
        help=f"tcp-driver: this driver is one of this many (1-{MAX_DRIVERS}) that drive one"
        " service together: --rate/--rate-mib is their total and each offers 1/N of it"
        " (closed loop: each drives its own --connections); merge their reports with"
        " bench/merge-drivers.sh",
    )
    add(
        "--driver-index",
        type=integer,
        default=0,
        help="tcp-driver: which of the --drivers this is (0 to N-1): its stream ids are"
        " INDEX x --connections onwards, so no two drivers share one, and its sink refuses"
        " any other id",
    )
    add(
        "--ready-file",
        metavar="PATH",
        help="tcp-service: written (key=value) once listening; a device or FIFO is written"
        " through, a symlink or a folder refused (default: none)",
    )
    add(
        "--idle-timeout-millis",
        type=integer,
        default=defaults.IDLE_TIMEOUT_MILLIS,
        help="tcp-service: end after this long without an active stream (<= 1 h)",
    )
    add(
        "--loop",
        choices=[m.value for m in Loop],
        default=None,
        help="event loop (default: uvloop if installed, else asyncio)",
    )
    add(
        "--startup-timeout-seconds",
        type=number,
        default=defaults.STARTUP_TIMEOUT_SECONDS,
        help="wait for the first connection / for the service; also the no-progress limit (<= 1 h)",
    )
    add(
        "--rss-samples",
        metavar="PATH",
        help="write RSS samples (CSV, about 1/s) here, as --ready-file (default: none)",
    )
    add(
        "--rate",
        type=number,
        metavar="STREAMS_PER_SEC",
        help="open loop (integrated, tcp-driver): start this many streams per second in all,"
        " on a clock: stream i is due at i/RATE s, on connection i mod --connections, which"
        " starts it when due or, if still busy, as soon as it is free; each stream's latency"
        " counts from when it was due (wrk2's method: no coordinated omission). The schedule"
        " lasts --duration-seconds, else holds --iterations x --connections streams. Reports"
        " offered_* and achieved_* rates and fell_behind (default: none, closed loop: each"
        " connection starts its next stream when its last one ends)",
    )
    add(
        "--rate-mib",
        type=number,
        metavar="MIB_PER_SEC",
        help="--rate given in MiB/s instead: streams per second = this x 2^20 /"
        " bytes_per_connection (default: none)",
    )
    add(
        "--rate-tolerance",
        type=number,
        metavar="FRACTION",
        help="open loop: fell_behind=true when the achieved streams/s is more than this"
        f" fraction below the offered rate (default: {defaults.RATE_TOLERANCE:g})",
    )
    add(
        "--max-lag-millis",
        type=integer,
        help="open loop: a stream that cannot start within this long of its due time is not"
        " started; the driver stops starting streams (streams_unsent=) and the run fell behind"
        f" (default: {defaults.MAX_LAG_MILLIS})",
    )
    add(
        "--tls",
        action="store_true",
        help="tcp: the client -> proxy and the proxy -> sink legs run TLS (the clients connect"
        " with TLS, the proxy ends and starts TLS, the sink accepts TLS and verifies the"
        " plaintext): what TLS costs each implementation. Runs with"
        f" {', '.join(TLS_MODES)}; handoff (raw sockets) and handoff_splice (splice) have no"
        " TLS form. Reports tls_version and tls_cipher (default: off)",
    )
    add(
        "--tls-mode",
        choices=[m.value for m in TlsMode],
        default=None,
        help="--tls: accept: TLS from the first byte (ssl= at accept and connect; asyncio"
        " streams with ssl= for manual_vec and raw_copy); starttls: plain TCP, a STARTTLS line"
        " with the ClientHello pipelined behind it, then the library's"
        " HandoffProtocol.start_tls() on both legs (handoff_protocol only) (default:"
        f" {TlsMode.ACCEPT})",
    )
    add(
        "--tls-cert",
        metavar="PATH",
        help="--tls: the PEM certificate (chain) the proxy and the sink present and every"
        " client trusts, with --tls-key; needed by --role tcp-service and tcp-driver, which"
        " must share one (default: a self-signed one made with openssl for the run, removed"
        " after it)",
    )
    add(
        "--tls-key",
        metavar="PATH",
        help="--tls: the PEM private key of --tls-cert (default: made with the certificate)",
    )
    return p


def config_from_args(argv: Sequence[str] | None = None) -> BenchConfig:
    """Parse and validate; ``UsageError`` (one line) on anything wrong."""
    ns = build_parser().parse_args(argv)
    require_loop(ns.loop)
    service_addrs = [parse_addr(a, "--service-addr") for a in ns.service_addr or ()]
    sink_addrs = [parse_addr(a, "--sink-addr") for a in ns.sink_addr or ()]
    if max(len(service_addrs), len(sink_addrs)) > 1 and len(service_addrs) != len(sink_addrs):
        raise UsageError(
            f"--service-addr given {len(service_addrs)} times and --sink-addr"
            f" {len(sink_addrs)}: give them in pairs, one pair per driver (--role tcp-service)"
        )
    cfg = BenchConfig(
        transport=Transport(ns.transport),
        role=Role(ns.role),
        implementation=ns.implementation,
        scenario=Scenario(ns.scenario),
        completion=Completion(ns.completion),
        worker_threads=ns.worker_threads,
        connections=ns.connections,
        route_frames=ns.route_frames,
        frame_len=ns.frame_len,
        tunnel_bytes=ns.tunnel_bytes,
        input_fragment_flag=ns.input_fragment,
        read_reserve=ns.read_reserve,
        write_pending_bytes_flag=ns.write_pending_bytes,
        duplex_capacity=ns.duplex_capacity,
        iterations=ns.iterations,
        duration_seconds=ns.duration_seconds,
        service_addr=service_addrs[0] if service_addrs else None,
        sink_addr=sink_addrs[0] if sink_addrs else None,
        extra_routes=tuple(zip(service_addrs[1:], sink_addrs[1:], strict=True)),
        drivers=ns.drivers,
        driver_index=ns.driver_index,
        ready_file=ns.ready_file,
        idle_timeout_millis=ns.idle_timeout_millis,
        loop=Loop(ns.loop) if ns.loop else default_loop(),
        startup_timeout_seconds=ns.startup_timeout_seconds,
        rss_samples=ns.rss_samples,
        rate_flag=ns.rate,
        rate_mib_flag=ns.rate_mib,
        rate_tolerance_flag=ns.rate_tolerance,
        max_lag_millis_flag=ns.max_lag_millis,
        tls=ns.tls,
        tls_mode_flag=TlsMode(ns.tls_mode) if ns.tls_mode else None,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
    )
    return cfg.validate()


def run(argv: Sequence[str] | None = None) -> int:
    """Parse, run, print the report; raise ``BenchError`` on failure."""
    from .output import report_lines
    from .roles import run_bench

    cfg = config_from_args(argv)
    outcome = run_bench(cfg)
    lines = list(report_lines(cfg, outcome))
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()
    for line in lines:
        if line.startswith("fell_behind_reason="):
            # Not an error (the run ran and verified), but never a normal result either.
            sys.stderr.write(f"{PROG}: warning: fell behind the offered load: {line[19:]}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: never a traceback, one ``bytes-handoff-bench: error:`` line."""
    return run_main(
        PROG,
        lambda: run(argv),
        bench_extra=("hdrh",),  # before anything, --help included
        crashes=(HandoffError, OSError, ValueError),
        interrupted="error: interrupted",
    )


if __name__ == "__main__":
    sys.exit(main())
