"""The logic behind ``bench/run-stream-harness.sh``.

Runs the harness ``--runs`` times per (implementation, scenario) cell, either
integrated (one process) or split-process TCP (``--service-cores`` and
``--driver-cores``: service and driver pinned with ``taskset``), and writes::

    <results-dir>/stream_<transport>_<implementation>_<scenario>_<completion>_<timestamp>/
        handoff-run-N.txt   driver (split) or integrated stdout, key=value
        service-run-N.txt   split-mode service stdout, key=value
        runs.csv            one row per run (service keys prefixed service_)
        summary.csv         metric,mean,stdev (sample stdev) per numeric key

``--rate`` (or ``--rate-mib``) drives the load open loop, at that offered rate
(the harness's flag, given to the integrated run or to the driver alone); a run
that fell behind the offered load says so in its log line, in the summary line
(``FELL_BEHIND=k/n``) and in the comparison.

``--drivers N`` (split mode) runs N driver processes against the one service,
each with its own pair of the service's ports and its own sink, at an equal share
of ``--rate``; their reports (``handoff-driver-K-run-N.txt``) are merged
(``tools/merge_drivers``) into the run's ``handoff-run-N.txt``, what ``runs.csv``
is made of.

``--scenario all`` puts each scenario in its own subfolder; ``--implementation
all`` runs every implementation that runs on the transport (``names``' run
order: handoff first; on TCP also handoff_splice and the protocol baselines)
interleaved per run index (run 1 of each, then run 2 of each, ...) so host
noise hits all of them alike, puts each implementation in its own subfolder of
one parent folder and writes ``comparison.md`` and ``comparison.png`` there.

``--implementation`` also takes a comma list (``handoff_protocol,manual_protocol``):
those, in the run order, interleaved as ``all`` is.

``--tls`` makes both legs TLS (the harness's ``--tls``; ``--tls-mode`` passed on),
in split mode for the service and the driver alike: the run folder gets one
self-signed certificate (made with ``openssl``, removed after the runs) whose
paths both processes are given (``--tls-cert``/``--tls-key``), unless those were
given here. ``--implementation all`` then runs those with a TLS form in the mode
asked (``names.TLS_MODES``). ``--tls-mode both`` runs each implementation in every
mode it has, interleaved per run index like implementations, as cells named
``<implementation>+<mode>`` (``handoff_protocol+accept``,
``handoff_protocol+starttls``): what ``start_tls()`` costs next to ``ssl=`` at
connect time, in one comparison. A TLS run's folder name ends in
``_tls-<mode>`` before its timestamp.

Before any run the harness is asked, once, whether it accepts every cell
(:func:`preflight`); a refused cell is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bytes_handoff_bench import defaults
from bytes_handoff_bench.certs import CERT_NAME, KEY_NAME, make_certificate, openssl_command
from bytes_handoff_bench.cli_common import (
    HelpFormatter,
    OneLineParser,
    UsageError,
    cpuset,
    non_negative_int,
    non_negative_number,
    positive_float,
    positive_int,
    prog_and_args,
    run_main,
    whole_number,
)
from bytes_handoff_bench.limits import MAX_DRIVERS, MAX_RUNS, MAX_WORKER_THREADS
from bytes_handoff_bench.names import (
    Completion,
    Implementation,
    Loop,
    Role,
    Scenario,
    TlsMode,
    Transport,
    implementations_for,
    tls_refusal,
)
from bytes_handoff_bench.output_paths import choose_results_dir, make_output_dir, output_dir_arg
from bytes_handoff_bench.processes import Child, RunError, last_line, raise_on_termination
from bytes_handoff_bench.tools.artifacts import (
    Stat,
    merge_run,
    parse_kv_file,
    summary_line,
    write_cell_artifacts,
)
from bytes_handoff_bench.tools.split import DriverSlot, SplitConfig, harness_command, run_split

EXAMPLES = """\
Examples:
  PROG                                   # defaults: duplex, handoff, fragmented, 3 runs
  PROG --scenario all --runs 5           # both scenarios, one subfolder each
  PROG --transport tcp --implementation all --scenario all --runs 3
  PROG --service-cores 0 --driver-cores 1 --connections 16   # split-process TCP
  PROG --service-cores 0 --driver-cores 1 --service-prefix 'ip netns exec ns1' \\
       --driver-prefix 'ip netns exec ns2' --service-addr 10.203.0.1:7001 \\
       --sink-addr 10.203.0.2:7002   # each role in its own network namespace
  PROG --duration-seconds 60 --runs 1    # sustained: RSS samples beside the run
  PROG --service-cores 0 --driver-cores 1 --implementation all --scenario coalesced \
       --rate 300 --duration-seconds 5   # every implementation at one offered load
  PROG --service-cores 0-1 --driver-cores 2-3 --drivers 2 --rate 400 --duration-seconds 5
                                         # two driver processes, one service, merged
  PROG --service-cores 0 --driver-cores 1 --implementation all --scenario coalesced --tls
                                         # what TLS costs each implementation that has it
  PROG --service-cores 0 --driver-cores 1 --scenario coalesced --tls --tls-mode both \
       --implementation handoff_protocol,manual_protocol   # start_tls() against ssl=
"""


def cpu_count(cores: str) -> int:
    """How many CPUs a validated CPU list names."""
    total = 0
    for part in cores.split(","):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


def command_prefix(text: str) -> list[str]:
    """Shell words (``shlex``) to run a split role under; the command must exist."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot parse {text!r}: {exc}") from None
    if not words:
        raise argparse.ArgumentTypeError(
            f"expected a command like 'ip netns exec NAME', got {text!r}"
        )
    if shutil.which(words[0]) is None:
        raise argparse.ArgumentTypeError(f"command not found: {words[0]!r}")
    return words


def host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


# Harness flags forwarded as they are: (flag, type, help). ``None`` means not passed: the
# harness's own default (``defaults``, which the harness reads too) applies.
SHAPE_FLAGS: list[tuple[str, Callable[[str], object], str]] = [
    (
        "--worker-threads",
        positive_int,
        "starts this many worker processes, one event loop per process (the GIL keeps"
        f" threads from running Python in parallel) (default: {defaults.WORKER_THREADS}, the"
        " harness's; split: one per CPU of --service-cores, so that the pinned service uses"
        " every core it was given)",
    ),
    ("--connections", positive_int, f"connections per wave (default: {defaults.CONNECTIONS})"),
    (
        "--route-frames",
        positive_int,
        f"route frames per connection (default: {defaults.ROUTE_FRAMES})",
    ),
    ("--frame-len", positive_int, f"frame length, >= 16 (default: {defaults.FRAME_LEN})"),
    (
        "--tunnel-bytes",
        non_negative_int,
        f"tunnel payload per connection (default: {defaults.TUNNEL_BYTES})",
    ),
    ("--input-fragment", positive_int, "client write size (default: by scenario)"),
    ("--read-reserve", positive_int, f"proxy read size (default: {defaults.READ_RESERVE})"),
    (
        "--write-pending-bytes",
        non_negative_int,
        f"write budget; 0 = 2 * read reserve (default: {defaults.WRITE_PENDING_BYTES})",
    ),
    (
        "--duplex-capacity",
        positive_int,
        f"in-memory pipe capacity (default: {defaults.DUPLEX_CAPACITY})",
    ),
    ("--iterations", positive_int, f"connection waves per run (default: {defaults.ITERATIONS})"),
    (
        "--duration-seconds",
        non_negative_number,
        f"repeat waves this long: a sustained run (default: {defaults.DURATION_SECONDS:g},"
        " use --iterations)",
    ),
    (
        "--handoff-flush-bytes",
        positive_int,
        "seed flag; passed on only if the harness has it (default: not passed)",
    ),
    (
        "--startup-timeout-seconds",
        positive_int,
        f"harness startup timeout (default: {defaults.STARTUP_TIMEOUT_SECONDS:g})",
    ),
]


def positive_number(text: str) -> str:
    """A finite number above 0, kept as written: it is passed on as a flag value."""
    positive_float(text)  # refuses 0, negatives, nan and inf in one line
    return text.strip()


# Open-loop flags: (flag, type, help), passed to the integrated run or to the driver only
# (the service serves what arrives). ``None``: not passed.
LOAD_FLAGS: list[tuple[str, Callable[[str], object], str]] = [
    (
        "--rate",
        positive_number,
        "open loop: offered streams per second, on a clock, latency from each stream's"
        " scheduled start (the harness's --rate; default: none, closed loop)",
    ),
    ("--rate-mib", positive_number, "--rate in MiB/s instead (default: none)"),
    (
        "--rate-tolerance",
        non_negative_number,
        "open loop: fell behind when the achieved rate is more than this fraction below the"
        f" offered one (default: {defaults.RATE_TOLERANCE:g}, the harness's)",
    ),
    (
        "--max-lag-millis",
        positive_int,
        "open loop: a stream that cannot start within this long of its scheduled time is"
        f" not started; the run fell behind (default: {defaults.MAX_LAG_MILLIS}, the harness's)",
    ),
]


def build_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        formatter_class=HelpFormatter,
        description=(
            "Run the bytes-handoff stream harness --runs times and write run files, runs.csv,\n"
            "summary.csv (metric,mean,stdev; stdev is the sample stdev) and a one-line summary."
        ),
        epilog=(
            f"{EXAMPLES.replace('PROG', prog)}\n"
            "defaults: the workload of bytes-handoff-bench (one set, in\n"
            "  bytes_handoff_bench.defaults): a flag not given here is not passed on.\n"
            "  Only --runs (3) is the wrapper's own; in split mode --worker-threads is one\n"
            "  per CPU of --service-cores, so that the pinned service uses every core.\n"
            "split-process TCP: give both --service-cores and --driver-cores (implies\n"
            "  --transport tcp); the service and the driver are pinned with taskset.\n"
            "  On two hosts or network namespaces: --service-prefix/--driver-prefix run a\n"
            "  role under a command (taskset inside it), with --service-addr (where the\n"
            "  service binds) and --sink-addr (where the driver's sink binds) given.\n"
            "--scenario all: one subfolder per scenario. --implementation all: every\n"
            "  implementation that runs on the transport, handoff first, interleaved per\n"
            f"  run index (duplex: {' '.join(implementations_for(Transport.DUPLEX))};\n"
            f"  tcp: {' '.join(implementations_for(Transport.TCP))}),\n"
            "  one subfolder each, plus comparison.md and comparison.png.\n"
            "results: <results-dir>/stream_<transport>_<implementation>_<scenario>_"
            "<completion>_<timestamp>/"
        ),
    )
    parser.add_argument(
        "--transport",
        choices=[m.value for m in Transport],
        help=f"in-memory duplex or localhost TCP (default: {defaults.TRANSPORT}; tcp with the"
        " core flags)",
    )
    parser.add_argument(
        "--implementation",
        default=defaults.IMPLEMENTATION,
        help="the proxy, a comma list of them, or all: each that runs on the transport (with"
        " --tls: that has a TLS form), interleaved per run; one of"
        f" {', '.join(m.value for m in Implementation)}",
    )
    parser.add_argument(
        "--scenario",
        choices=[*(m.value for m in Scenario), "all"],
        default=defaults.SCENARIO,
        help="client write pattern; all: both, one subfolder each",
    )
    parser.add_argument(
        "--completion",
        choices=[m.value for m in Completion],
        default=defaults.COMPLETION,
        help="await a completion ticket per frame, or fire and forget",
    )
    parser.add_argument(
        "--loop",
        choices=[m.value for m in Loop],
        help="event loop (default: uvloop if installed, else asyncio)",
    )
    parser.add_argument("--runs", type=whole_number(1, MAX_RUNS), default=3, help="runs per cell")
    for flag, kind, text in SHAPE_FLAGS:
        parser.add_argument(flag, type=kind, help=text)
    for flag, kind, text in LOAD_FLAGS:
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument(
        "--idle-timeout-millis",
        type=positive_int,
        help=f"split service: exit after this long idle (default: {defaults.IDLE_TIMEOUT_MILLIS};"
        " with --rate at least 3 gaps between streams plus 0.5 s)",
    )
    parser.add_argument(
        "--service-cores",
        type=cpuset,
        help="split TCP: service CPU list, e.g. 0 (default: none, an integrated run)",
    )
    parser.add_argument(
        "--driver-cores",
        type=cpuset,
        help="split TCP: driver CPU list, e.g. 1 (default: none, an integrated run)",
    )
    parser.add_argument(
        "--service-addr",
        type=host_port,
        action="append",
        help="HOST:PORT (default: free port); with --drivers N: none, or once per driver",
    )
    parser.add_argument(
        "--sink-addr",
        type=host_port,
        action="append",
        help="HOST:PORT (default: free port); with --drivers N: none, or once per driver",
    )
    parser.add_argument(
        "--drivers",
        type=whole_number(1, MAX_DRIVERS),
        default=1,
        help="split TCP: driver processes against the one service, each with its own pair"
        " of the service's ports and its own sink; --rate is their total, each offers an"
        " equal share; their reports are merged into handoff-run-N.txt (merge-drivers.sh)",
    )
    parser.add_argument(
        "--service-prefix",
        type=command_prefix,
        metavar="COMMAND",
        help="split TCP: run the service under this command, e.g. 'ip netns exec ns1'"
        " (shell words; taskset and the harness run inside it); needs --service-addr and"
        " --sink-addr, addresses where the roles run (given addresses are never bound here)",
    )
    parser.add_argument(
        "--driver-prefix",
        type=command_prefix,
        metavar="COMMAND",
        action="append",
        help="split TCP: run the driver (clients and sink) under this command, e.g."
        " 'ip netns exec ns2' (as --service-prefix); with --drivers N: once for all of"
        " them, or once per driver",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="TCP: both legs run TLS, for every role (the harness's --tls): what TLS costs"
        " each implementation; handoff and handoff_splice have no TLS form (default: off)",
    )
    parser.add_argument(
        "--tls-mode",
        choices=[*(m.value for m in TlsMode), "both"],
        help="--tls: accept (ssl= at connect time) or starttls (a plaintext line, then the"
        " library's start_tls(): handoff_protocol only); both: each implementation in each"
        " mode it has, interleaved, as cells <implementation>+<mode> (default: accept)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PATH",
        help="--tls: the PEM certificate every role presents and trusts, with --tls-key"
        " (default: a self-signed one made with openssl in the run folder, removed after"
        " the runs)",
    )
    parser.add_argument(
        "--tls-key",
        type=Path,
        metavar="PATH",
        help="--tls: the PEM key of --tls-cert (default: made with the certificate)",
    )
    parser.add_argument(
        "--results-dir",
        type=output_dir_arg,
        help="where run folders go: a folder, or a new one in an existing folder (default:"
        " bench/results of the clone run from, else of the current folder)",
    )
    parser.add_argument(
        "--run-timeout-seconds",
        type=positive_float,
        help="limit per harness process (default 600, more for long --duration-seconds)",
    )
    return parser


@dataclass(frozen=True)
class Variant:
    """One implementation as a cell runs it: in a TLS mode, or without TLS (``None``).
    ``label`` names the cell (its folder, its row): the implementation, ``+mode`` with
    ``--tls-mode both``."""

    label: str
    implementation: Implementation
    tls_mode: TlsMode | None = None


@dataclass
class Plan:
    """Everything a set of runs needs, validated."""

    transport: Transport
    implementations: list[Implementation]
    scenarios: list[Scenario]
    completion: Completion
    runs: int
    shape: dict[str, str]
    loop: Loop | None
    split: bool
    service_cores: str | None
    driver_cores: str | None
    service_addr: str | None
    sink_addr: str | None
    idle_timeout_millis: int
    run_timeout_seconds: float
    results_dir: Path
    python: str
    supported_flags: frozenset[str] = frozenset()
    service_prefix: list[str] = field(default_factory=list)
    driver_prefix: list[str] = field(default_factory=list)
    #: Open-loop flags (``LOAD_FLAGS``) given: for the integrated run or the driver only.
    load: dict[str, str] = field(default_factory=dict)
    #: Driver processes against the one service (split mode). With more than one, each
    #: driver's addresses and prefix are in the lists below (empty: free ports, no prefix;
    #: one prefix: the same for all), and ``service_addr``/``sink_addr``/``driver_prefix``
    #: are unused.
    drivers: int = 1
    service_addrs: list[str] = field(default_factory=list)
    sink_addrs: list[str] = field(default_factory=list)
    driver_prefixes: list[list[str]] = field(default_factory=list)
    #: ``--tls``: the cells' implementations and TLS modes; empty: without TLS (each of
    #: :attr:`implementations` as it is).
    tls_variants: list[Variant] = field(default_factory=list)
    #: ``--tls``: the certificate and key every role gets; ``None``: made in the run folder.
    tls_files: tuple[Path, Path] | None = None

    @property
    def variants(self) -> list[Variant]:
        """Every cell's implementation (and TLS mode), in run order."""
        return self.tls_variants or [Variant(str(i), i) for i in self.implementations]

    @property
    def tls_label(self) -> str:
        """``accept``, ``starttls`` or ``both``; ``""`` without TLS."""
        modes = sorted({v.tls_mode for v in self.tls_variants if v.tls_mode is not None})
        return "both" if len(modes) > 1 else (modes[0] if modes else "")

    def tls_args(self, tls_mode: TlsMode | None) -> list[str]:
        """The harness's TLS flags for a cell (before the run folder exists, the paths the
        certificate will have there: only their presence is checked before a run)."""
        if tls_mode is None:
            return []
        cert, key = self.tls_files or (Path(CERT_NAME), Path(KEY_NAME))
        return ["--tls", "--tls-mode", tls_mode, "--tls-cert", str(cert), "--tls-key", str(key)]

    def driver_slots(self, out_dir: Path, n: int) -> list[DriverSlot]:
        """With several drivers, one slot each (its addresses, prefix, RSS samples)."""
        if self.drivers == 1:
            return []
        slots = []
        for k in range(self.drivers):
            prefixes = self.driver_prefixes
            extra: list[str] = []
            if self.sustained and "--rss-samples" in self.supported_flags:
                extra = ["--rss-samples", str(out_dir / f"handoff-driver-{k}-rss-{n}.csv")]
            slots.append(
                DriverSlot(
                    service_addr=self.service_addrs[k] if self.service_addrs else None,
                    sink_addr=self.sink_addrs[k] if self.sink_addrs else None,
                    prefix=prefixes[k if len(prefixes) > 1 else 0] if prefixes else [],
                    extra_args=extra,
                )
            )
        return slots

    def load_args(self) -> list[str]:
        return [word for flag, value in self.load.items() for word in (flag, value)]

    def harness_args(
        self, implementation: str, scenario: str, tls_mode: TlsMode | None = None
    ) -> list[str]:
        args = [
            "--transport",
            self.transport,
            "--implementation",
            implementation,
            "--scenario",
            scenario,
            "--completion",
            self.completion,
        ]
        for flag, value in self.shape.items():
            args += [flag, value]
        if self.loop is not None:
            args += ["--loop", self.loop]
        return args + self.tls_args(tls_mode)

    @property
    def sustained(self) -> bool:
        return float(self.shape.get("--duration-seconds", "0")) > 0


@dataclass(frozen=True)
class Preflight:
    """The harness's answer to ``--preflight``."""

    #: Every long flag the harness has.
    flags: frozenset[str]
    #: Per argument list asked about: ``None``, or the one-line error that run would stop with.
    errors: list[str | None]


def preflight(arg_lists: Sequence[Sequence[str]] = ()) -> Preflight:
    """Ask the harness, through its command line, which flags it has and what it says of each
    argument list (its ``--preflight``: JSON in, JSON out, one start for any number of lists).

    Exact and cheap: the harness's own parser and validation answer (every bound, the write
    budget, which implementation runs on which transport), so the tools neither import the
    harness nor keep a copy of its flags, and a whole matrix is checked before its first run.
    The harness of this interpreter answers: the tools and the harness are one package, and
    the bench scripts run the tools with the interpreter they hand on as ``PYTHON``.
    """
    python = sys.executable
    try:
        proc = subprocess.run(
            [*harness_command(python), "--preflight"],
            input=json.dumps([list(args) for args in arg_lists]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RunError(f"cannot run the harness with {python}: {exc}") from exc
    if proc.returncode != 0:
        line = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RunError(f"the harness does not start ({python} -m bytes_handoff_bench): {line}")
    try:
        answer = json.loads(proc.stdout)
        return Preflight(frozenset(answer["flags"]), list(answer["errors"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"the harness gave no preflight answer ({python}): {exc}") from exc


def make_plan(args: argparse.Namespace, python: str) -> Plan:
    if (args.service_cores is None) != (args.driver_cores is None):
        given = "--service-cores" if args.service_cores is not None else "--driver-cores"
        raise UsageError(f"{given} needs its partner: pass both --service-cores and --driver-cores")
    split = args.service_cores is not None
    transport = Transport(args.transport) if args.transport else None
    if split:
        if transport == Transport.DUPLEX:
            raise UsageError("--service-cores/--driver-cores need --transport tcp (split-process)")
        transport = Transport.TCP
    transport = transport or Transport.DUPLEX
    if (args.service_addr or args.sink_addr) and transport != Transport.TCP:
        raise UsageError("--service-addr/--sink-addr need --transport tcp")
    drivers = args.drivers
    if drivers > 1 and not split:
        raise UsageError("--drivers needs split mode: pass --service-cores and --driver-cores")
    for flag, given in (
        ("--service-addr", args.service_addr),
        ("--sink-addr", args.sink_addr),
        ("--driver-prefix", args.driver_prefix),
    ):
        allowed = {1, drivers} if flag == "--driver-prefix" else {drivers}
        if given and len(given) not in allowed:
            if drivers == 1:
                per = "once"
            elif flag == "--driver-prefix":
                per = f"once for all drivers or once per driver (--drivers {drivers})"
            else:
                per = f"once per driver (--drivers {drivers})"
            raise UsageError(f"{flag} given {len(given)} times: give it {per}")
    if args.service_prefix or args.driver_prefix:
        if not split:
            raise UsageError(
                "--service-prefix/--driver-prefix need split mode:"
                " pass --service-cores and --driver-cores"
            )
        if not (args.service_addr and args.sink_addr):
            # A prefixed role may run in another network (a namespace, a host), where
            # no port picked and checked here means anything, and 127.0.0.1 is its own.
            raise UsageError(
                "--service-prefix/--driver-prefix need --service-addr and --sink-addr"
                " (HOST:PORT where the service and the driver's sink can bind)"
            )
    frame_len = args.frame_len
    if frame_len is not None and frame_len < 16:
        raise UsageError(f"--frame-len must be >= 16, got {frame_len}")

    # Only what was given is passed on: the harness's defaults are the defaults. In split
    # mode the service gets one worker per CPU it is pinned to.
    shape: dict[str, str] = {}
    if split:
        shape["--worker-threads"] = str(min(cpu_count(args.service_cores), MAX_WORKER_THREADS))
    for flag, _kind, _text in SHAPE_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            shape[flag] = str(value)
    load: dict[str, str] = {}
    for flag, _kind, _text in LOAD_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            load[flag] = str(value)
    idle_timeout = args.idle_timeout_millis or defaults.IDLE_TIMEOUT_MILLIS
    if split and args.idle_timeout_millis is None and load:
        idle_timeout = max(idle_timeout, open_loop_idle_millis(shape, load))
    if not split and args.idle_timeout_millis is not None:
        shape["--idle-timeout-millis"] = str(args.idle_timeout_millis)
    if not split:
        for flag in ("--service-addr", "--sink-addr"):
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None:
                shape[flag] = value[0]

    duration = float(shape.get("--duration-seconds", "0"))
    run_timeout = args.run_timeout_seconds or max(600.0, 3.0 * duration + 300.0)
    implementations = implementation_list(args.implementation, transport)
    tls_variants, tls_files = plan_tls(args, transport, implementations)
    scenarios = list(Scenario) if args.scenario == "all" else [Scenario(args.scenario)]
    results_dir, _default = choose_results_dir(args.results_dir, "--results-dir")
    return Plan(
        transport=transport,
        implementations=implementations,
        scenarios=scenarios,
        completion=Completion(args.completion),
        runs=args.runs,
        shape=shape,
        loop=Loop(args.loop) if args.loop else None,
        split=split,
        service_cores=args.service_cores,
        driver_cores=args.driver_cores,
        service_addr=args.service_addr[0] if args.service_addr and drivers == 1 else None,
        sink_addr=args.sink_addr[0] if args.sink_addr and drivers == 1 else None,
        idle_timeout_millis=idle_timeout,
        run_timeout_seconds=run_timeout,
        results_dir=results_dir,
        python=python,
        service_prefix=args.service_prefix or [],
        driver_prefix=args.driver_prefix[0] if args.driver_prefix and drivers == 1 else [],
        load=load,
        drivers=drivers,
        service_addrs=(args.service_addr or []) if drivers > 1 else [],
        sink_addrs=(args.sink_addr or []) if drivers > 1 else [],
        driver_prefixes=(args.driver_prefix or []) if drivers > 1 else [],
        tls_variants=tls_variants,
        tls_files=tls_files,
    )


def implementation_list(text: str, transport: Transport) -> list[Implementation]:
    """``--implementation``: one name, a comma list (run order, each once), or ``all``."""
    if text.strip() == "all":
        return implementations_for(transport)
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = [m.value for m in Implementation]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise UsageError(
            f"--implementation: {unknown[0] if unknown else text!r} is not one of all,"
            f" {', '.join(known)} (or a comma list of them)"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"--implementation names one twice: {text!r}")
    return sorted((Implementation(name) for name in names), key=known.index)


def plan_tls(
    args: argparse.Namespace, transport: Transport, implementations: list[Implementation]
) -> tuple[list[Variant], tuple[Path, Path] | None]:
    """``--tls``: the cells (implementation, mode) and the given certificate, checked."""
    if not args.tls:
        for flag in ("--tls-mode", "--tls-cert", "--tls-key"):
            if getattr(args, flag[2:].replace("-", "_")) is not None:
                raise UsageError(f"{flag} needs --tls")
        return [], None
    if transport != Transport.TCP:
        raise UsageError("--tls needs --transport tcp (or split mode: TLS runs on sockets)")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together: give both, or neither")
    files: tuple[Path, Path] | None = None
    if args.tls_cert is not None:
        for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
            if not path.is_file():
                raise UsageError(f"{flag}: no such file: {str(path)!r}")
        files = (args.tls_cert.resolve(), args.tls_key.resolve())
    else:
        openssl_command()  # before any run: without it there is no certificate to make
    both = args.tls_mode == "both"
    modes = list(TlsMode) if both else [TlsMode(args.tls_mode or TlsMode.ACCEPT)]
    every = args.implementation.strip() == "all"
    variants: list[Variant] = []
    for impl in implementations:
        fits = [mode for mode in modes if tls_refusal(impl, mode) is None]
        if not fits and not every:
            fits = modes[:1]  # named: the harness refuses it, in its own words
        for mode in fits:
            variants.append(Variant(f"{impl}+{mode}" if both else str(impl), impl, mode))
    return variants, files


def open_loop_idle_millis(shape: dict[str, str], load: dict[str, str]) -> int:
    """An idle timeout the split service will not reach between open-loop streams: three
    gaps between streams (``1 / rate``) plus half a second."""
    rate = float(load["--rate"]) if "--rate" in load else 0.0
    if "--rate-mib" in load:
        frames = int(shape.get("--route-frames", defaults.ROUTE_FRAMES))
        frame_len = int(shape.get("--frame-len", defaults.FRAME_LEN))
        tunnel = int(shape.get("--tunnel-bytes", defaults.TUNNEL_BYTES))
        rate = float(load["--rate-mib"]) * 2**20 / (frames * (frame_len + 1) + 7 + tunnel)
    if rate <= 0:
        return defaults.IDLE_TIMEOUT_MILLIS
    return min(int(3000 / rate) + 500, 3_600_000)


def check_cells(plan: Plan, cells: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Refuse, before any run, flags the harness lacks and what it would refuse of each cell.

    ``cells``: (label for its error, harness arguments). Sets ``plan.supported_flags``.
    """
    answer = preflight([args for _label, args in cells])
    plan.supported_flags = answer.flags
    for flag in [*plan.shape, *plan.load, "--loop" if plan.loop else ""]:
        if flag and flag not in answer.flags:
            raise UsageError(
                f"{flag} is not supported by this harness (python -m bytes_handoff_bench)"
            )
    for (label, _args), error in zip(cells, answer.errors, strict=True):
        if error is not None:
            raise UsageError(f"{label}{error}")


def check_supported(plan: Plan) -> None:
    """Refuse, before any run, what the harness would refuse of any cell of ``plan``."""
    several: list[str] = []
    if plan.drivers > 1:
        # As the last of several drivers runs (the highest stream ids, a share of the rate);
        # the addresses stand in for the ones the run reserves.
        several = [
            "--role", Role.TCP_DRIVER,
            "--service-addr", "127.0.0.1:1",
            "--sink-addr", "127.0.0.1:0",
            "--drivers", str(plan.drivers),
            "--driver-index", str(plan.drivers - 1),
        ]  # fmt: skip
    check_cells(
        plan,
        [
            (
                f"{v.label}: " if plan.tls_variants else "",
                [
                    *plan.harness_args(v.implementation, scenario, v.tls_mode),
                    *plan.load_args(),
                    *several,
                ],
            )
            for v in plan.variants
            for scenario in plan.scenarios
        ],
    )


def run_integrated(
    plan: Plan, args: list[str], out_dir: Path, n: int, label: str
) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    txt = out_dir / f"handoff-run-{n}.txt"
    err = out_dir / f"handoff-run-{n}.err"
    extra: list[str] = []
    if plan.sustained and "--rss-samples" in plan.supported_flags:
        extra = ["--rss-samples", str(out_dir / f"handoff-rss-{n}.csv")]
    child = Child("harness", [*harness_command(plan.python), *args, *extra], txt, err)
    try:
        rc = child.wait(plan.run_timeout_seconds)
        if rc is None:
            raise RunError(
                f"{label}: still running after {plan.run_timeout_seconds:g}s (log: {err})"
            )
        if rc != 0:
            message = _last(err)
            raise RunError(f"{label}: harness exited with status {rc}: {message} (log: {err})")
    finally:
        child.kill_group()
    kv = parse_kv_file(txt)
    if not kv:
        raise RunError(f"{label}: harness printed no key=value lines (see {txt})")
    child.drop_empty_stderr()
    return kv


def _last(path: Path) -> str:
    return last_line(path) or "no message"


def run_cell_once(
    plan: Plan,
    implementation: str,
    scenario: str,
    out_dir: Path,
    n: int,
    tls_mode: TlsMode | None = None,
) -> dict[str, str]:
    """One run of one cell; returns its ``runs.csv`` row."""
    tls = f" tls={tls_mode}" if tls_mode is not None else ""
    label = f"run {n} ({implementation} {scenario}{tls})"
    args = plan.harness_args(implementation, scenario, tls_mode)
    if not plan.split:
        return merge_run(run_integrated(plan, [*args, *plan.load_args()], out_dir, n, label), None)
    service_extra: list[str] = []
    driver_extra: list[str] = []
    if plan.sustained and "--rss-samples" in plan.supported_flags:
        service_extra = ["--rss-samples", str(out_dir / f"service-rss-{n}.csv")]
        if plan.drivers == 1:  # several: each driver's own (Plan.driver_slots)
            driver_extra = ["--rss-samples", str(out_dir / f"handoff-rss-{n}.csv")]
    result = run_split(
        SplitConfig(
            harness_args=args,
            out_dir=out_dir,
            run_index=n,
            python=plan.python,
            service_cores=plan.service_cores,
            driver_cores=plan.driver_cores,
            service_addr=plan.service_addr,
            sink_addr=plan.sink_addr,
            idle_timeout_millis=plan.idle_timeout_millis,
            startup_timeout_seconds=float(
                plan.shape.get("--startup-timeout-seconds", defaults.STARTUP_TIMEOUT_SECONDS)
            ),
            run_timeout_seconds=plan.run_timeout_seconds,
            service_prefix=plan.service_prefix,
            driver_prefix=plan.driver_prefix,
            driver_slots=plan.driver_slots(out_dir, n),
            service_extra_args=service_extra,
            driver_extra_args=[*driver_extra, *plan.load_args()],
            label=label,
        )
    )
    return merge_run(result.driver, result.service)


def new_run_dir(results_dir: Path, name: str) -> Path:
    """A new ``<name>_<timestamp>`` folder in ``results_dir``, which was checked
    (``output_paths.choose_results_dir``): made here if missing, the default with its parents.
    What is written into the new folder is new too."""
    make_output_dir(results_dir, "results folder", parents=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt + 1}"
        path = results_dir / f"{name}_{stamp}{suffix}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RunError(f"cannot create a run folder under {results_dir}")


@dataclass
class CellResult:
    implementation: str
    scenario: str
    path: Path
    rows: list[dict[str, str]]
    stats: dict[str, Stat] = field(default_factory=dict)


def cell_dir(base: Path, plan: Plan, implementation: str, scenario: str) -> Path:
    """A cell's folder: ``implementation`` is its label (:class:`Variant`)."""
    path = base
    if len(plan.variants) > 1:
        path = path / implementation
    if len(plan.scenarios) > 1:
        path = path / scenario
    return path


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def execute(plan: Plan, log: Callable[[str], None]) -> tuple[Path, list[CellResult]]:
    variants = plan.variants
    impl_label = variants[0].label if len(variants) == 1 else "all"
    scenario_label = plan.scenarios[0] if len(plan.scenarios) == 1 else "all"
    tls_part = f"_tls-{plan.tls_label}" if plan.tls_label else ""
    base = new_run_dir(
        plan.results_dir,
        f"stream_{plan.transport}_{impl_label}_{scenario_label}_{plan.completion}{tls_part}",
    )
    made: list[Path] = []
    if plan.tls_variants and plan.tls_files is None:
        # One certificate for every role and run, removed after the runs (a private key
        # does not belong among results).
        plan.tls_files = make_certificate(base)
        made = list(plan.tls_files)
    try:
        return base, _execute(plan, base, log)
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def _execute(plan: Plan, base: Path, log: Callable[[str], None]) -> list[CellResult]:
    cells = {
        (v.label, scenario): CellResult(
            v.label, scenario, cell_dir(base, plan, v.label, scenario), []
        )
        for scenario in plan.scenarios
        for v in plan.variants
    }
    mode = (
        f"split service_cores={plan.service_cores} driver_cores={plan.driver_cores}"
        if plan.split
        else Role.INTEGRATED
    )
    if plan.drivers > 1:
        mode += f" drivers={plan.drivers}"
    prefixes = [("service", plan.service_prefix), ("driver", plan.driver_prefix)]
    if len(plan.driver_prefixes) == 1:
        prefixes.append(("driver", plan.driver_prefixes[0]))
    else:
        prefixes += [(f"driver_{k}", p) for k, p in enumerate(plan.driver_prefixes)]
    for name, prefix in prefixes:
        if prefix:
            mode += f" {name}_prefix={shlex.quote(shlex.join(prefix))}"
    if plan.tls_label:
        mode += f" tls={plan.tls_label}"
    log(f"results={display_path(base)} transport={plan.transport} mode={mode} runs={plan.runs}")
    for n in range(1, plan.runs + 1):
        for scenario in plan.scenarios:
            for v in plan.variants:
                cell = cells[(v.label, scenario)]
                row = run_cell_once(plan, v.implementation, scenario, cell.path, n, v.tls_mode)
                cell.rows.append(row)
                key = "service_cpu_ns_per_byte" if plan.split else "cpu_ns_per_byte"
                log(
                    f"[run {n}/{plan.runs}] {v.label} {scenario}: "
                    f"mib_per_sec={row.get('mib_per_sec', '?')} {key}={row.get(key, '?')}"
                    + load_note(row)
                )
    for cell in cells.values():
        cell.stats = write_cell_artifacts(cell.path, cell.rows)
    return list(cells.values())


def load_note(row: dict[str, str]) -> str:
    """An open-loop run's offered and achieved rate for its log line, and FELL BEHIND."""
    if "offered_streams_per_sec" not in row:
        return ""
    note = (
        f" offered_streams_per_sec={row['offered_streams_per_sec']}"
        f" achieved_streams_per_sec={row.get('achieved_streams_per_sec', '?')}"
    )
    if row.get("fell_behind") == "true":
        note += f" FELL BEHIND: {row.get('fell_behind_reason', 'no reason given')}"
    return note


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, "run-stream-harness.sh")
    # rich: before --help and before any run.
    return run_main(prog, lambda: run(prog, args), bench_extra=("rich",))


def run(prog: str, argv: Sequence[str]) -> int:
    """Check everything, then run every cell; ``UsageError``/``RunError`` on failure."""
    args = build_parser(prog).parse_args(argv)
    plan = make_plan(args, os.environ.get("PYTHON") or sys.executable)
    check_supported(plan)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    raise_on_termination()
    base, cells = execute(plan, log)
    for cell in cells:
        print(
            summary_line(
                transport=plan.transport,
                implementation=cell.implementation,
                scenario=cell.scenario,
                completion=plan.completion,
                runs=len(cell.rows),
                stats=cell.stats,
                location=display_path(cell.path),
                rows=cell.rows,
            ),
            flush=True,
        )
    if len(plan.variants) > 1:
        from bytes_handoff_bench.tools.report import CellSummary, print_table, write_comparison

        summaries = [
            CellSummary(c.implementation, c.scenario, c.stats, c.path, c.rows) for c in cells
        ]
        md, png = write_comparison(base, summaries, title=base.name)
        print_table(summaries, title=base.name)
        print(f"comparison={display_path(md)}" + (f" chart={display_path(png)}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
