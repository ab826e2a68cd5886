"""The logic behind ``bench/run-two-hosts.sh``: the split roles on two hosts, for real.

Two network namespaces stand in for the two hosts: ``NAME-svc`` and ``NAME-drv``,
joined by a veth pair with their own private addresses (``10.203.0.1/24`` and
``10.203.0.2/24``; ``lo`` up in each). ``bench/run-stream-harness.sh`` runs the
``tcp-service`` in the first (``--service-prefix 'ip netns exec NAME-svc'``,
bound to ``10.203.0.1``) and the ``tcp-driver`` in the second (its sink bound to
``10.203.0.2``), each pinned with ``taskset`` inside its namespace; the service
reaches the sink across the veth. Neither address exists outside the namespaces.

With ``--drivers N`` (several drivers, one service) each driver has a namespace of
its own, ``NAME-drv`` for the first and ``NAME-drvK`` for driver ``K``, joined to
``NAME-svc`` by a veth pair of its own on ``10.203.K.0/24`` (the service at
``.1``, the driver at ``.2``); the service listens on each pair's address and
forwards what arrives there to that driver's sink (``--drivers N`` of the
wrapper), and the drivers' reports are merged into the run's report.

Then the files the wrapper wrote are checked: every driver report says its sink
verified the content of every byte (``verified=true``, ``verification=content``)
and its stream and byte counts are what the workload implies; every service
report forwarded exactly those bytes, from its own address; ``runs.csv`` and
``summary.csv`` agree. With several drivers also: each driver sent only its own
stream ids, the merged report's counts are the drivers' sums and its histogram
holds one latency per stream, and the service carried each driver's streams
on that driver's route. The namespaces (and anything still running in them) are
removed however the run ends: success, failure, timeout, Ctrl-C, SIGTERM or SIGHUP.

It needs root and ``ip netns``. Without them it prints one line
(``<prog>: error: needs root and 'ip netns' (network namespaces): <reason>``) and
exits 2: it never reports success without having run. Exit status: 0 run and
checked, 1 a failed run or check, 2 no privilege or bad flags, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bytes_handoff_bench.cli_common import (
    HelpFormatter,
    OneLineParser,
    UsageError,
    non_negative_number,
    prog_and_args,
    run_main,
    seconds,
    whole_number,
)
from bytes_handoff_bench.limits import (
    MAX_CONNECTIONS,
    MAX_DURATION_SECONDS,
    MAX_RUNS,
    MAX_TIMEOUT_SECONDS,
)
from bytes_handoff_bench.names import Implementation, Scenario, Transport, implementations_for
from bytes_handoff_bench.output_paths import choose_results_dir, output_dir_arg
from bytes_handoff_bench.processes import RunError, raise_on_termination
from bytes_handoff_bench.tools.artifacts import parse_kv_file, read_runs_csv, read_summary_csv
from bytes_handoff_bench.tools.wrapper import new_run_dir

ROOT = Path(__file__).resolve().parents[3]
WRAPPER = ROOT / "bench" / "run-stream-harness.sh"
#: Where ``ip netns add`` keeps its names.
NETNS_DIR = Path("/run/netns")

NEEDS = "needs root and 'ip netns' (network namespaces)"

SERVICE_IP = "10.203.0.1"
DRIVER_IP = "10.203.0.2"
PREFIX_LEN = 24
SERVICE_PORT = 7001
SINK_PORT = 7002
SERVICE_ADDR = f"{SERVICE_IP}:{SERVICE_PORT}"
SINK_ADDR = f"{DRIVER_IP}:{SINK_PORT}"
#: ``--drivers``: one namespace and one /24 (10.203.K.0) each.
MAX_NETNS_DRIVERS = 8


def service_ip(driver: int) -> str:
    """The service's address on driver ``driver``'s veth pair."""
    return f"10.203.{driver}.1"


def driver_ip(driver: int) -> str:
    return f"10.203.{driver}.2"


def service_addr(driver: int) -> str:
    """Where driver ``driver`` reaches the service."""
    return f"{service_ip(driver)}:{SERVICE_PORT}"


def sink_addr(driver: int) -> str:
    """Where driver ``driver``'s sink listens."""
    return f"{driver_ip(driver)}:{SINK_PORT}"


#: The workload (small: a run takes about a second). Per connection:
#: ROUTE_FRAMES frames of FRAME_LEN bytes plus a newline, ``TUNNEL\n``, TUNNEL_BYTES.
ROUTE_FRAMES = 16
FRAME_LEN = 63
TUNNEL_BYTES = 65536
BYTES_PER_CONNECTION = ROUTE_FRAMES * (FRAME_LEN + 1) + len(b"TUNNEL\n") + TUNNEL_BYTES

IP_TIMEOUT_SECONDS = 15.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


def non_negative_seconds(text: str) -> str:
    """Seconds from 0 (one wave) to a day, kept as written: it is passed on as a flag value."""
    value = non_negative_number(text)
    if float(value) > MAX_DURATION_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_DURATION_SECONDS} seconds, got {value!r}"
        )
    return value


def netns_name(text: str) -> str:
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"expected up to 40 letters, digits, '_', '.', '-', got {text!r}"
        )
    return text


def default_name() -> str:
    """Unique per run (pid and a random part), so concurrent runs never collide."""
    return f"bh2h-{os.getpid()}-{secrets.token_hex(2)}"


def find_ip() -> str:
    """The ``ip`` program (iproute2), also where a user's PATH lacks the sbin folders."""
    found = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise UsageError(f"{NEEDS}: 'ip' (iproute2) is not installed")
    return found


def check_privilege() -> str:
    """The ``ip`` program, or :class:`UsageError` (exit 2) saying what is missing."""
    uid = os.geteuid()
    if uid != 0:
        try:
            who = f"{pwd.getpwuid(uid).pw_name}, uid {uid}"
        except KeyError:
            who = f"uid {uid}"
        raise UsageError(f"{NEEDS}: running as {who}, not root")
    return find_ip()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends (then they act as usual).

    Around namespace set-up and removal: a signal in the middle must not leave a
    namespace behind that nothing knows about.
    """
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _ip(ip: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [ip, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            [ip, *args], 124, "", f"timed out after {IP_TIMEOUT_SECONDS:g}s"
        )
    except OSError as exc:
        return subprocess.CompletedProcess([ip, *args], 127, "", str(exc.strerror or exc))


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


@dataclass
class Namespaces:
    """The namespaces of one run (the service's and one per driver) and the veth pairs
    between the service's and each driver's."""

    ip: str
    name: str
    drivers: int = 1
    created: list[str] = field(default_factory=list)

    @property
    def service(self) -> str:
        return f"{self.name}-svc"

    @property
    def driver(self) -> str:
        return self.driver_ns(0)

    def driver_ns(self, driver: int) -> str:
        """Driver ``driver``'s namespace: ``NAME-drv``, then ``NAME-drv1``, ..."""
        return f"{self.name}-drv" + (str(driver) if driver else "")

    @property
    def all(self) -> list[str]:
        return [self.service, *(self.driver_ns(k) for k in range(self.drivers))]

    def prefix(self, namespace: str) -> str:
        return shlex.join([self.ip, "netns", "exec", namespace])

    def create(self) -> None:
        """The namespaces, the veth pairs, addresses, links up; raise on the first failure.

        A failing ``ip netns add`` (no privilege) or veth (no kernel support) is a
        :class:`UsageError` (exit 2); anything after is a :class:`RunError`.
        """
        for namespace in self.all:
            if (NETNS_DIR / namespace).exists():
                # Someone else's: never used, never removed.
                raise RunError(f"network namespace {namespace} exists already (another run's?)")
            proc = _ip(self.ip, "netns", "add", namespace)
            if proc.returncode != 0:
                if (NETNS_DIR / namespace).exists():  # made, then the command failed: ours
                    self.created.append(namespace)
                raise UsageError(f"{NEEDS}: 'ip netns add {namespace}' failed: {_why(proc)}")
            self.created.append(namespace)
        lo_up = set()
        for k in range(self.drivers):
            # veth-svc/veth-drv for the first driver, veth-svcK/veth-drvK for driver K.
            suffix = str(k) if k else ""
            svc_link, drv_link = f"veth-svc{suffix}", f"veth-drv{suffix}"
            # Each end is made inside its namespace: the pair never exists (or collides) here.
            proc = _ip(
                self.ip,
                "link", "add", svc_link, "netns", self.service,
                "type", "veth", "peer", "name", drv_link, "netns", self.driver_ns(k),
            )  # fmt: skip
            if proc.returncode != 0:
                raise UsageError(f"{NEEDS}: cannot make a veth pair: {_why(proc)}")
            for namespace, link, address in (
                (self.service, svc_link, service_ip(k)),
                (self.driver_ns(k), drv_link, driver_ip(k)),
            ):
                steps = [["addr", "add", f"{address}/{PREFIX_LEN}", "dev", link]]
                if namespace not in lo_up:
                    steps.append(["link", "set", "lo", "up"])
                    lo_up.add(namespace)
                steps.append(["link", "set", link, "up"])
                for step in steps:
                    proc = _ip(self.ip, "-n", namespace, *step)
                    if proc.returncode != 0:
                        raise RunError(f"ip -n {namespace} {' '.join(step)} failed: {_why(proc)}")

    def remove(self) -> list[str]:
        """Stop what still runs in the ones this run made and delete them; the failures,
        one line each."""
        return remove_namespaces(self.ip, self.created)


def remove_namespaces(ip: str, names: Sequence[str]) -> list[str]:
    """Kill every process in each named namespace (this run's own), then delete it.

    Names that do not exist are skipped; returns one line per failure.
    """
    failures: list[str] = []
    for namespace in dict.fromkeys(names):
        if not (NETNS_DIR / namespace).exists():
            continue
        pids = _ip(ip, "netns", "pids", namespace)
        for word in pids.stdout.split():
            if word.isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(word), signal.SIGKILL)
        proc = _ip(ip, "netns", "del", namespace)
        if proc.returncode != 0 and (NETNS_DIR / namespace).exists():
            failures.append(f"cannot delete network namespace {namespace}: {_why(proc)}")
    return failures


@dataclass
class Options:
    implementation: Implementation
    scenario: Scenario
    runs: int
    connections: int
    duration_seconds: str
    timeout_seconds: float
    cores: tuple[str, str]
    drivers: int = 1


def pick_cores() -> tuple[str, str]:
    """Service and driver CPUs: the lowest and the highest available (one CPU: both on it)."""
    cpus = sorted(os.sched_getaffinity(0))
    return str(cpus[0]), str(cpus[-1])


def wrapper_args(opts: Options, ns: Namespaces, results: Path) -> list[str]:
    args = [
        "--transport", str(Transport.TCP),
        "--implementation", str(opts.implementation),
        "--scenario", str(opts.scenario),
        "--runs", str(opts.runs),
        "--connections", str(opts.connections),
        "--route-frames", str(ROUTE_FRAMES),
        "--frame-len", str(FRAME_LEN),
        "--tunnel-bytes", str(TUNNEL_BYTES),
        "--worker-threads", "1",
        "--service-cores", opts.cores[0],
        "--driver-cores", opts.cores[1],
        "--service-prefix", ns.prefix(ns.service),
        "--idle-timeout-millis", "300",
        "--startup-timeout-seconds", "30",
        "--run-timeout-seconds", f"{opts.timeout_seconds:g}",
        "--results-dir", str(results),
    ]  # fmt: skip
    if opts.drivers > 1:
        args += ["--drivers", str(opts.drivers)]
    for k in range(opts.drivers):
        args += ["--driver-prefix", ns.prefix(ns.driver_ns(k))]
        args += ["--service-addr", service_addr(k), "--sink-addr", sink_addr(k)]
    if float(opts.duration_seconds) > 0:
        args += ["--duration-seconds", opts.duration_seconds]
    return args


def run_wrapper(args: list[str], timeout: float) -> None:
    """``bench/run-stream-harness.sh args``, its output passed through; raise unless exit 0.

    It runs in its own session; on a timeout or an interrupt it gets SIGTERM (it then
    stops its service and driver), SIGKILL after 20 s.
    """
    if not WRAPPER.exists():
        raise RunError(f"{WRAPPER} not found: run from a checkout of the repository")
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON") or sys.executable}
    try:
        proc = subprocess.Popen(
            ["bash", str(WRAPPER), *args], stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    except OSError as exc:
        raise RunError(f"cannot start {WRAPPER.name}: {exc.strerror or exc}") from exc
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise RunError(f"{WRAPPER.name} still running after {timeout:g}s") from None
    except BaseException:
        _stop(proc)
        raise
    if rc != 0:
        raise RunError(f"{WRAPPER.name} exited with status {rc} (its error is above)")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Checked:
    run_dir: Path
    streams: int
    verified_bytes: int


def _expect(kv: dict[str, str], key: str, want: object, where: Path) -> None:
    got = kv.get(key)
    if got != str(want):
        raise RunError(f"{where}: {key}={got} (expected {want})")


def _int(kv: dict[str, str], key: str, where: Path) -> int:
    value = kv.get(key, "")
    if not value.isdigit():
        raise RunError(f"{where}: {key}={value or '(missing)'} (expected an integer)")
    return int(value)


def check_driver(path: Path, opts: Options, index: int) -> int:
    """Check driver ``index``'s report: its sink checked the length and every byte of every
    stream, it ran against its own addresses (with several drivers: with its own stream
    ids); return its streams."""
    driver = parse_kv_file(path)
    _expect(driver, "role", "tcp-driver", path)
    _expect(driver, "verified", "true", path)
    _expect(driver, "verification", "content", path)
    _expect(driver, "connections", opts.connections, path)
    _expect(driver, "bytes_per_connection", BYTES_PER_CONNECTION, path)
    waves = _int(driver, "actual_iterations", path)
    if waves < 1:
        raise RunError(f"{path}: actual_iterations=0")
    streams = opts.connections * waves
    _expect(driver, "total_streams", streams, path)
    _expect(driver, "total_bytes", streams * BYTES_PER_CONNECTION, path)
    argv = f" {driver.get('argv', '')} "
    for flag, addr in (("--service-addr", service_addr(index)), ("--sink-addr", sink_addr(index))):
        if f" {flag} {addr} " not in argv:
            raise RunError(f"{path}: the driver did not run with {flag} {addr}")
    if opts.drivers > 1:
        first = index * opts.connections
        _expect(driver, "drivers", opts.drivers, path)
        _expect(driver, "driver_index", index, path)
        _expect(driver, "stream_ids", f"{first:04}-{first + opts.connections - 1:04}", path)
    return streams


def check_merged(path: Path, opts: Options, per_driver: list[int]) -> None:
    """The drivers' merged report: the sums of their counts, one latency per stream."""
    merged = parse_kv_file(path)
    streams = sum(per_driver)
    _expect(merged, "merged_drivers", opts.drivers, path)
    _expect(merged, "verified", "true", path)
    _expect(merged, "verification", "content", path)
    _expect(merged, "connections", opts.connections * opts.drivers, path)
    _expect(merged, "total_streams", streams, path)
    _expect(merged, "total_bytes", streams * BYTES_PER_CONNECTION, path)
    _expect(merged, "latency_histogram_count", streams, path)
    _expect(merged, "driver_streams", ",".join(map(str, per_driver)), path)


def check_run(base: Path, opts: Options) -> Checked:
    """Check the one run folder under ``base``; raise :class:`RunError` naming what is off."""
    folders = [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    if len(folders) != 1:
        raise RunError(f"{base}: expected one run folder, found {len(folders)}")
    run_dir = folders[0]
    totals: list[tuple[int, int]] = []
    for n in range(1, opts.runs + 1):
        service_path = run_dir / f"service-run-{n}.txt"
        ready_path = run_dir / f"service-run-{n}.ready"
        service, ready = parse_kv_file(service_path), parse_kv_file(ready_path)
        if opts.drivers == 1:
            streams = check_driver(run_dir / f"handoff-run-{n}.txt", opts, 0)
            _expect(ready, "service_addr", SERVICE_ADDR, ready_path)
        else:
            per_driver = [
                check_driver(run_dir / f"handoff-driver-{k}-run-{n}.txt", opts, k)
                for k in range(opts.drivers)
            ]
            streams = sum(per_driver)
            check_merged(run_dir / f"handoff-run-{n}.txt", opts, per_driver)
            # The service carried each driver's streams on that driver's own route.
            addrs = ",".join(service_addr(k) for k in range(opts.drivers))
            _expect(service, "routes", opts.drivers, service_path)
            _expect(service, "service_addrs", addrs, service_path)
            _expect(service, "route_streams", ",".join(map(str, per_driver)), service_path)
            _expect(ready, "service_addrs", addrs, ready_path)
        # The service forwarded exactly those bytes, bound to its own namespace's address.
        _expect(service, "role", "tcp-service", service_path)
        _expect(service, "verified", "true", service_path)
        _expect(service, "verification", "byte_count", service_path)
        _expect(service, "total_streams", streams, service_path)
        _expect(service, "total_bytes", streams * BYTES_PER_CONNECTION, service_path)
        _expect(service, "service_addr", SERVICE_ADDR, service_path)
        totals.append((streams, streams * BYTES_PER_CONNECTION))

    runs_csv = run_dir / "runs.csv"
    rows = read_runs_csv(runs_csv)
    if [r.get("run") for r in rows] != [str(n) for n in range(1, opts.runs + 1)]:
        raise RunError(f"{runs_csv}: runs {[r.get('run') for r in rows]}, expected 1..{opts.runs}")
    for row, (streams, total) in zip(rows, totals, strict=True):
        for key, want in (
            ("verified", "true"),
            ("total_streams", streams),
            ("total_bytes", total),
            ("service_total_bytes", total),
        ):
            _expect(row, key, want, runs_csv)
    summary_csv = run_dir / "summary.csv"
    summary = read_summary_csv(summary_csv)
    mean = sum(total for _streams, total in totals) / len(totals)
    for key in ("total_bytes", "service_total_bytes"):
        stat = summary.get(key)
        if stat is None or abs(stat.mean - mean) > 1e-6 * max(mean, 1.0):
            raise RunError(f"{summary_csv}: {key} mean {stat and stat.mean} (expected {mean:g})")
    return Checked(
        run_dir,
        sum(streams for streams, _total in totals),
        sum(total for _streams, total in totals),
    )


def build_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        formatter_class=HelpFormatter,
        description=(
            "Run the split TCP roles on two hosts, for real: the tcp-service and the\n"
            "tcp-driver in two network namespaces joined by a veth pair (service\n"
            f"{SERVICE_ADDR}, driver's sink {SINK_ADDR}), through run-stream-harness.sh;\n"
            "check that every byte was verified and the counts match the workload; remove\n"
            "the namespaces however it ends. Needs root and 'ip netns' (else one line, exit 2).\n"
            "--drivers N: N tcp-drivers against the one service, each in a namespace of its\n"
            "own (NAME-drv, NAME-drv1, ...) with a veth pair of its own to the service's\n"
            "(10.203.K.1 and 10.203.K.2 for driver K); every driver's sink checks its own\n"
            "streams, and their reports are merged into one (merge-drivers.sh)."
        ),
        epilog=(
            f"workload per connection: {ROUTE_FRAMES} frames of {FRAME_LEN} bytes + newline,\n"
            f"  TUNNEL, {TUNNEL_BYTES} tunnel bytes ({BYTES_PER_CONNECTION} bytes); one\n"
            "  worker each; service and drivers pinned to the lowest and highest CPU.\n"
            "prints: the wrapper's output, then one line two_hosts=ok ... results=<folder>"
        ),
        exit_statuses={
            0: "run and checked",
            1: "a failed run or check",
            2: "bad usage (a flag; no privilege; a missing extra)",
        },
    )
    parser.add_argument(
        "--implementation",
        choices=[m.value for m in implementations_for(Transport.TCP)],
        default=Implementation.HANDOFF,
        help="the proxy",
    )
    parser.add_argument(
        "--scenario",
        choices=[m.value for m in Scenario],
        default=Scenario.FRAGMENTED,
        help="client write pattern",
    )
    parser.add_argument("--runs", type=whole_number(1, MAX_RUNS), default=1, help="runs")
    parser.add_argument(
        "--connections",
        type=whole_number(1, MAX_CONNECTIONS),
        default=4,
        help="connections per wave",
    )
    parser.add_argument(
        "--duration-seconds",
        type=non_negative_seconds,
        default="0",
        help="repeat waves this long (0: one wave)",
    )
    parser.add_argument(
        "--drivers",
        type=whole_number(1, MAX_NETNS_DRIVERS),
        default=1,
        help="driver processes, one namespace each, against the one service; their reports"
        " are merged",
    )
    parser.add_argument(
        "--netns-name",
        type=netns_name,
        help="namespaces NAME-svc and NAME-drv (NAME-drv1, ... with --drivers) (default:"
        " bh2h-<pid>-<random>)",
    )
    parser.add_argument(
        "--results-dir",
        type=output_dir_arg,
        help="a two_hosts_<timestamp> folder goes here: a folder, or a new one in an existing"
        " folder (default: bench/results of the clone, else of the current folder)",
    )
    parser.add_argument(
        "--timeout-seconds",
        type=seconds(MAX_DURATION_SECONDS + MAX_TIMEOUT_SECONDS),
        default=300.0,
        help="limit for the whole wrapper run",
    )
    return parser


def run(prog: str, argv: Sequence[str]) -> int:
    args = build_parser(prog).parse_args(argv)
    ip = check_privilege()
    results_dir = choose_results_dir(args.results_dir, "--results-dir")[0].resolve()
    opts = Options(
        implementation=Implementation(args.implementation),
        scenario=Scenario(args.scenario),
        runs=args.runs,
        connections=args.connections,
        duration_seconds=args.duration_seconds,
        timeout_seconds=args.timeout_seconds,
        cores=pick_cores(),
        drivers=args.drivers,
    )
    raise_on_termination()
    ns = Namespaces(ip, args.netns_name or default_name(), opts.drivers)
    drivers = range(opts.drivers)
    try:
        with signals_deferred():
            ns.create()
        if opts.drivers == 1:
            where = (
                f"service in network namespace {ns.service} ({SERVICE_ADDR}), driver in"
                f" {ns.driver} (sink {SINK_ADDR}), joined by a veth pair"
            )
        else:
            where = (
                f"service in network namespace {ns.service}"
                f" ({', '.join(service_addr(k) for k in drivers)}), {opts.drivers} drivers in"
                f" {', '.join(f'{ns.driver_ns(k)} (sink {sink_addr(k)})' for k in drivers)},"
                " each joined to the service by a veth pair"
            )
        print(f"{prog}: {where}", file=sys.stderr, flush=True)
        base = new_run_dir(results_dir, "two_hosts")
        run_wrapper(wrapper_args(opts, ns, base), opts.timeout_seconds + 60.0)
        checked = check_run(base, opts)
    finally:
        with signals_deferred():
            failures = ns.remove()
        for line in failures:
            print(f"{prog}: {line}", file=sys.stderr)
    if failures:
        raise RunError(failures[0])
    services = ",".join(service_addr(k) for k in drivers)
    sinks = ",".join(f"{ns.driver_ns(k)}/{sink_addr(k)}" for k in drivers)
    print(
        f"two_hosts=ok runs={opts.runs}"
        + (f" drivers={opts.drivers}" if opts.drivers > 1 else "")
        + f" streams={checked.streams}"
        f" verified_bytes={checked.verified_bytes} bytes_per_connection={BYTES_PER_CONNECTION}"
        f" service={ns.service}/{services} sink={sinks}"
        f" results={checked.run_dir}",
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, "run-two-hosts.sh")
    return run_main(prog, lambda: run(prog, args))


if __name__ == "__main__":
    sys.exit(main())
