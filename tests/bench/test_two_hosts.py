"""The split roles on two hosts: bench/run-two-hosts.sh and the wrapper's role prefixes.

The real run puts the tcp-service and the tcp-driver in two network namespaces
joined by a veth pair (it needs root and ``ip netns``, which CI has). Where it
lacks them it says so in one line and exits 2, and the tests that need them
fail with that line: they never pass without having run. The namespaces are
removed by the script however it ends, and again by a fixture finalizer (also
when this test process gets SIGTERM).

The wrapper's ``--service-prefix``/``--driver-prefix`` and the rule that given
addresses are never reserved or bound on this host are tested without privilege.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from harness_support import free_port, processes_mentioning

from bytes_handoff_bench import ports
from bytes_handoff_bench.processes import RunError
from bytes_handoff_bench.tools import split, two_hosts
from bytes_handoff_bench.tools.artifacts import parse_kv_file, read_runs_csv, read_summary_csv

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "run-two-hosts.sh"
HARNESS = ROOT / "bench" / "run-stream-harness.sh"
NEEDS = "run-two-hosts.sh: error: needs root and 'ip netns' (network namespaces): "
#: The workload run-two-hosts.sh runs, per connection: 16 frames of 63 bytes + "\n",
#: "TUNNEL\n", 65536 tunnel bytes.
BYTES_PER_CONNECTION = 16 * 64 + 7 + 65536
CONNECTIONS = 4


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1", **extra}


def run_script(
    cmd: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in its own session; on a timeout or an interrupt SIGTERM it (it cleans
    up), then SIGKILL."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env or _env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        _stop(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _stop(proc: subprocess.Popen[str]) -> None:
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def one_line_refusal(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(NEEDS), lines[0]
    assert proc.stdout == ""
    return lines[0]


def require_success(proc: subprocess.CompletedProcess[str]) -> None:
    """Exit 0, or fail with the script's last line (its one-line refusal without root)."""
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.fail(f"run-two-hosts.sh exited {proc.returncode}: {last}", pytrace=False)


def netns_exists(name: str) -> bool:
    return (two_hosts.NETNS_DIR / name).exists()


@pytest.fixture
def netns_name() -> Iterator[str]:
    """A name no other run uses; whatever the test leaves behind under it is removed.

    SIGTERM of this process becomes KeyboardInterrupt meanwhile, so that the script
    under test is stopped and this finalizer still runs.
    """
    name = f"bh2h-t{os.getpid()}-{secrets.token_hex(2)}"

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield name
    finally:
        signal.signal(signal.SIGTERM, previous)
        names = [f"{name}-svc", f"{name}-drv", f"{name}-drv1"]
        if any(netns_exists(n) for n in names):
            two_hosts.remove_namespaces(two_hosts.find_ip(), names)


def can_bind_here(host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
        return True


@pytest.mark.slow
def test_two_hosts_run_verifies_every_byte_across_the_veth(tmp_path: Path, netns_name: str) -> None:
    proc = run_script(
        [
            "bash", str(SCRIPT),
            "--netns-name", netns_name,
            "--connections", str(CONNECTIONS),
            "--runs", "1",
            "--results-dir", str(tmp_path),
            "--timeout-seconds", "120",
        ],
        timeout=240,
    )  # fmt: skip
    require_success(proc)
    print(proc.stderr, proc.stdout, sep="")  # the run, for the log

    # The script removed its namespaces and everything that ran in them.
    assert not netns_exists(f"{netns_name}-svc") and not netns_exists(f"{netns_name}-drv")
    assert processes_mentioning(str(tmp_path)) == []
    # The roles' addresses exist only in the namespaces: nothing bound them here.
    assert not can_bind_here(two_hosts.SERVICE_IP) and not can_bind_here(two_hosts.DRIVER_IP)

    last = proc.stdout.strip().splitlines()[-1]
    fields = dict(word.split("=", 1) for word in last.split())
    expected = CONNECTIONS * BYTES_PER_CONNECTION
    assert fields["two_hosts"] == "ok"
    assert fields["verified_bytes"] == str(expected) and fields["streams"] == str(CONNECTIONS)
    assert fields["service"] == f"{netns_name}-svc/10.203.0.1:7001"
    assert fields["sink"] == f"{netns_name}-drv/10.203.0.2:7002"
    run_dir = Path(fields["results"])
    assert run_dir.parent.parent == tmp_path
    assert run_dir.name.startswith("stream_tcp_handoff_fragmented_ticket_")
    mode = next(line for line in proc.stderr.splitlines() if line.startswith("results="))
    assert f"service_prefix='{two_hosts.find_ip()} netns exec {netns_name}-svc'" in mode
    assert f"driver_prefix='{two_hosts.find_ip()} netns exec {netns_name}-drv'" in mode

    # Checked here again, from the files, independently of the script's own checks.
    driver = parse_kv_file(run_dir / "handoff-run-1.txt")
    service = parse_kv_file(run_dir / "service-run-1.txt")
    ready = parse_kv_file(run_dir / "service-run-1.ready")
    assert driver["role"] == "tcp-driver" and service["role"] == "tcp-service"
    # The driver's sink checked the length and content of every byte of every stream.
    assert driver["verified"] == "true" and driver["verification"] == "content"
    assert driver["bytes_per_connection"] == str(BYTES_PER_CONNECTION)
    assert driver["actual_iterations"] == "1"
    assert driver["total_streams"] == service["total_streams"] == str(CONNECTIONS)
    assert driver["total_bytes"] == service["total_bytes"] == str(expected)
    assert service["verification"] == "byte_count"
    assert " --service-addr 10.203.0.1:7001 --sink-addr 10.203.0.2:7002" in driver["argv"]
    assert ready["service_addr"] == service["service_addr"] == "10.203.0.1:7001"
    assert not (run_dir / "handoff-run-1.err").exists()
    assert not (run_dir / "service-run-1.err").exists()
    rows = read_runs_csv(run_dir / "runs.csv")
    assert len(rows) == 1 and rows[0]["run"] == "1"
    assert rows[0]["total_bytes"] == rows[0]["service_total_bytes"] == str(expected)
    assert rows[0]["verified"] == rows[0]["service_verified"] == "true"
    summary = read_summary_csv(run_dir / "summary.csv")
    assert summary["total_bytes"].mean == summary["service_total_bytes"].mean == expected
    assert summary["mib_per_sec"].mean > 0 and summary["service_cpu_ns_per_byte"].mean > 0
    assert "stream tcp handoff fragmented ticket runs=1 " in proc.stdout


@pytest.mark.slow
def test_two_drivers_in_two_namespaces_drive_one_service_and_merge(
    tmp_path: Path, netns_name: str
) -> None:
    proc = run_script(
        [
            "bash", str(SCRIPT),
            "--netns-name", netns_name,
            "--drivers", "2",
            "--connections", str(CONNECTIONS),
            "--runs", "1",
            "--results-dir", str(tmp_path),
            "--timeout-seconds", "120",
        ],
        timeout=240,
    )  # fmt: skip
    require_success(proc)
    print(proc.stderr, proc.stdout, sep="")  # the run, for the log
    names = [f"{netns_name}-svc", f"{netns_name}-drv", f"{netns_name}-drv1"]
    assert not any(netns_exists(name) for name in names)
    assert processes_mentioning(str(tmp_path)) == []

    last = proc.stdout.strip().splitlines()[-1]
    fields = dict(word.split("=", 1) for word in last.split())
    assert fields["two_hosts"] == "ok" and fields["drivers"] == "2"
    assert fields["streams"] == str(2 * CONNECTIONS)
    assert fields["verified_bytes"] == str(2 * CONNECTIONS * BYTES_PER_CONNECTION)
    assert fields["service"] == f"{netns_name}-svc/10.203.0.1:7001,10.203.1.1:7001"
    assert fields["sink"] == f"{netns_name}-drv/10.203.0.2:7002,{netns_name}-drv1/10.203.1.2:7002"
    mode = next(line for line in proc.stderr.splitlines() if line.startswith("results="))
    assert " drivers=2 " in mode
    for k, name in enumerate(names[1:]):
        assert f"driver_{k}_prefix='{two_hosts.find_ip()} netns exec {name}'" in mode

    # Checked here again, from the files: each driver's sink verified the content of its
    # own streams (its own ids), in its own namespace, across its own veth pair.
    run_dir = Path(fields["results"])
    drivers = [parse_kv_file(run_dir / f"handoff-driver-{k}-run-1.txt") for k in range(2)]
    for k, driver in enumerate(drivers):
        assert driver["verified"] == "true" and driver["verification"] == "content"
        assert (driver["drivers"], driver["driver_index"]) == ("2", str(k))
        first = k * CONNECTIONS
        assert driver["stream_ids"] == f"{first:04}-{first + CONNECTIONS - 1:04}"
        assert driver["total_streams"] == str(CONNECTIONS)
        addrs = f" --service-addr 10.203.{k}.1:7001 --sink-addr 10.203.{k}.2:7002 "
        assert addrs in f" {driver['argv']} "
    # Merged: the sums, and one latency per stream in the merged histogram.
    merged = parse_kv_file(run_dir / "handoff-run-1.txt")
    assert merged["merged_drivers"] == "2"
    assert merged["total_streams"] == str(2 * CONNECTIONS)
    assert int(merged["total_bytes"]) == sum(int(d["total_bytes"]) for d in drivers)
    assert merged["latency_histogram_count"] == str(2 * CONNECTIONS)
    # The service carried each driver's streams on that driver's route.
    service = parse_kv_file(run_dir / "service-run-1.txt")
    assert service["total_streams"] == str(2 * CONNECTIONS)
    assert service["route_streams"] == f"{CONNECTIONS},{CONNECTIONS}"
    assert service["service_addrs"] == "10.203.0.1:7001,10.203.1.1:7001"
    row = read_runs_csv(run_dir / "runs.csv")[0]
    assert row["total_bytes"] == row["service_total_bytes"] == merged["total_bytes"]


@pytest.mark.slow
def test_sigterm_stops_the_run_and_removes_the_namespaces(tmp_path: Path, netns_name: str) -> None:
    proc = subprocess.Popen(
        [
            "bash", str(SCRIPT),
            "--netns-name", netns_name,
            "--duration-seconds", "60",
            "--results-dir", str(tmp_path),
        ],
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        driver_started = False
        while time.monotonic() < deadline and proc.poll() is None:
            if list(tmp_path.glob("*/*/handoff-run-1.txt")):
                driver_started = True
                break
            time.sleep(0.05)
        if not driver_started:
            if proc.poll() is None:
                _stop(proc)
                pytest.fail("the driver did not start within 60 s", pytrace=False)
            out, err = proc.communicate(timeout=30)
            require_success(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
            pytest.fail("run-two-hosts.sh ended before its driver started", pytrace=False)
        time.sleep(0.5)
        assert netns_exists(f"{netns_name}-svc") and netns_exists(f"{netns_name}-drv")
        assert len(processes_mentioning(str(tmp_path))) >= 2  # service and driver
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            _stop(proc)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "run-two-hosts.sh: interrupted"
    assert "Traceback" not in err
    assert not netns_exists(f"{netns_name}-svc") and not netns_exists(f"{netns_name}-drv")
    assert processes_mentioning(str(tmp_path)) == []


def _unprivileged_command() -> list[str] | None:
    """run-two-hosts.sh as an unprivileged user (``nobody``), if one can run this Python."""
    if os.geteuid() != 0:
        return ["bash", str(SCRIPT)]
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return None
    drop = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    # The script itself where that user can run the interpreter through bash; else what
    # the script runs (its interpreter may lie under a folder only root can search).
    for cmd in (
        [*drop, "bash", str(SCRIPT)],
        [*drop, sys.executable, "-m", "bytes_handoff_bench.tools.two_hosts"],
    ):
        probe = subprocess.run(
            [*cmd, "--help"], cwd=ROOT, env=_env(), capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return cmd if cmd[-1] == str(SCRIPT) else [*cmd, "--prog", "run-two-hosts.sh"]
    return None


def test_an_unprivileged_user_is_refused_in_one_line(tmp_path: Path) -> None:
    cmd = _unprivileged_command()
    if cmd is None:
        pytest.skip("no unprivileged user here can run this Python (the EPERM test still runs)")
    proc = run_script([*cmd, "--results-dir", str(tmp_path / "results")], timeout=60)
    line = one_line_refusal(proc)
    assert line.endswith(", not root"), line
    assert not (tmp_path / "results").exists()


def test_a_failing_ip_netns_is_refused_in_one_line(tmp_path: Path) -> None:
    # An `ip` that fails as it does without the privilege.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ip").write_text(
        "#!/bin/sh\necho 'mount --make-shared /run/netns failed: Operation not permitted' >&2\n"
        "exit 1\n"
    )
    (fake / "ip").chmod(0o755)
    env = _env(PATH=f"{fake}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = run_script(
        ["bash", str(SCRIPT), "--results-dir", str(tmp_path / "results")], timeout=60, env=env
    )
    line = one_line_refusal(proc)
    if os.geteuid() == 0:
        assert "'ip netns add bh2h-" in line and line.endswith("Operation not permitted"), line
    assert not (tmp_path / "results").exists()


def test_two_hosts_help_and_bad_flags() -> None:
    proc = run_script(["bash", str(SCRIPT), "--help"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "network namespaces" in proc.stdout and "--netns-name" in proc.stdout
    proc = run_script(["bash", str(SCRIPT), "--netns-name", "a b"], timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "run-two-hosts.sh: error: argument --netns-name: expected up to 40 letters, digits,"
        " '_', '.', '-', got 'a b'"
    )
    # Refused at the call, before any namespace exists (a run would otherwise start first).
    for args, needle in (
        (["--connections", "9" * 20], "argument --connections: expected a whole number from 1"),
        (["--runs", "0"], "argument --runs: expected a whole number from 1 to 10000"),
        (["--duration-seconds", "1e9"], "argument --duration-seconds: expected at most 86400"),
        (["--duration-seconds", "nan"], "argument --duration-seconds: expected a non-negative"),
        (["--timeout-seconds", "inf"], "argument --timeout-seconds: expected seconds above 0"),
        (["--drivers", "9"], "argument --drivers: expected a whole number from 1 to 8"),
    ):
        proc = run_script(["bash", str(SCRIPT), *args], timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().startswith(f"run-two-hosts.sh: error: {needle}"), proc.stderr


# -- the wrapper's role prefixes, without privilege -------------------------------------------


def _cores() -> tuple[str, str]:
    cpus = sorted(os.sched_getaffinity(0))
    return str(cpus[0]), str(cpus[-1])


SPLIT = [
    "--transport", "tcp",
    "--scenario", "coalesced",
    "--runs", "1",
    "--connections", "2",
    "--route-frames", "4",
    "--frame-len", "32",
    "--tunnel-bytes", "4096",
    "--read-reserve", "1024",
    "--worker-threads", "1",
    "--idle-timeout-millis", "300",
]  # fmt: skip


CORES = ["--service-cores", "0", "--driver-cores", "0"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--service-prefix", ""], "argument --service-prefix: expected a command like"),
        (["--service-prefix", "   "], "argument --service-prefix: expected a command like"),
        (["--driver-prefix", "ip 'netns"], "argument --driver-prefix: cannot parse"),
        (["--driver-prefix", "no-such-command-bh"], "command not found: 'no-such-command-bh'"),
        (["--service-prefix", "env"], "need split mode: pass --service-cores and --driver-cores"),
        (
            ["--service-prefix", "env", *CORES],
            "--service-prefix/--driver-prefix need --service-addr and --sink-addr",
        ),
        (
            ["--driver-prefix", "env", *CORES, "--service-addr", "127.0.0.1:7001"],
            "need --service-addr and --sink-addr",
        ),
    ],
)
def test_wrapper_prefix_bad_input(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = run_script(
        ["bash", str(HARNESS), *SPLIT, *args, "--results-dir", str(tmp_path)], timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run-stream-harness.sh: error: "), proc.stderr
    assert needle in lines[0]
    assert list(tmp_path.iterdir()) == []


def _logging_prefix(tmp_path: Path) -> tuple[Path, Path]:
    """A prefix command that logs ``<role> <argv>`` to a file, then runs the rest."""
    log = tmp_path / "prefix.log"
    script = tmp_path / "log prefix"  # a space: the prefix is parsed as shell words
    script.write_text(f'#!/bin/sh\necho "$*" >> \'{log}\'\nshift\nexec "$@"\n')
    script.chmod(0o755)
    return script, log


@pytest.mark.slow
def test_wrapper_runs_each_role_under_its_prefix_with_taskset_inside(tmp_path: Path) -> None:
    script, log = _logging_prefix(tmp_path)
    service_cores, driver_cores = _cores()
    service_addr, sink_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    results = tmp_path / "results"
    proc = run_script(
        [
            "bash", str(HARNESS), *SPLIT,
            "--service-cores", service_cores, "--driver-cores", driver_cores,
            "--service-prefix", f"'{script}' service",
            "--driver-prefix", f"'{script}' driver",
            "--service-addr", service_addr, "--sink-addr", sink_addr,
            "--results-dir", str(results),
        ],
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    service_line, driver_line = lines
    assert service_line.startswith(f"service taskset -c {service_cores} {sys.executable} -m ")
    assert driver_line.startswith(f"driver taskset -c {driver_cores} {sys.executable} -m ")
    assert "--role tcp-service" in service_line and "--role tcp-driver" in driver_line
    for line in lines:
        assert f"--service-addr {service_addr} --sink-addr {sink_addr}" in line
    run_dir = next(results.iterdir())
    driver = parse_kv_file(run_dir / "handoff-run-1.txt")
    assert driver["verified"] == "true" and driver["verification"] == "content"
    assert parse_kv_file(run_dir / "service-run-1.txt")["service_addr"] == service_addr
    assert read_runs_csv(run_dir / "runs.csv")[0]["service_total_bytes"] == driver["total_bytes"]


def test_given_addresses_are_not_reserved_or_bound_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 192.0.2.0/24 is for documentation: no interface here has it, binding it fails.
    service_addr, sink_addr = "192.0.2.1:7001", "192.0.2.2:7002"
    assert not can_bind_here("192.0.2.1")
    asked: list[tuple[int, str]] = []

    def recording(
        count: int, host: str = "127.0.0.1", lock_dir: Path | None = None
    ) -> list[ports.PortReservation]:
        asked.append((count, host))
        return ports.reserve_ports(count, host, lock_dir)

    monkeypatch.setattr(split, "reserve_ports", recording)
    log = tmp_path / "argv.log"
    stand_in = tmp_path / "elsewhere"  # where the role would run: logs, then fails
    stand_in.write_text(f"#!/bin/sh\necho \"$*\" >> '{log}'\nexit 3\n")
    stand_in.chmod(0o755)
    cfg = split.SplitConfig(
        harness_args=["--transport", "tcp"],
        out_dir=tmp_path / "run",
        service_addr=service_addr,
        sink_addr=sink_addr,
        service_prefix=[str(stand_in)],
        driver_prefix=[str(stand_in)],
        startup_timeout_seconds=10,
    )
    with pytest.raises(RunError, match="service exited with status 3 before it was ready"):
        split.run_split(cfg)
    assert asked == [(0, "127.0.0.1")]
    assert f"--service-addr {service_addr} --sink-addr {sink_addr}" in log.read_text()
