"""Helpers for the stream-harness tests: run the CLI in a subprocess, parse its report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Every key of the Rust harness's report, plus the provenance this harness adds.
REQUIRED_KEYS = [
    "mode",
    "role",
    "transport",
    "implementation",
    "scenario",
    "completion",
    "worker_threads",
    "connections",
    "route_frames",
    "frame_len",
    "tunnel_bytes",
    "input_fragment",
    "read_reserve",
    "write_pending_bytes",
    "duplex_capacity",
    "configured_iterations",
    "duration_seconds_target",
    "actual_iterations",
    "bytes_per_connection",
    "total_streams",
    "total_bytes",
    "total_seconds",
    "bytes_per_sec",
    "mib_per_sec",
    "gib_per_sec",
    "streams_per_sec",
    "cpu_usage_measured",
    "cpu_user_seconds",
    "cpu_system_seconds",
    "cpu_total_seconds",
    "cpu_avg_cores",
    "cpu_utilization_pct",
    "cpu_ns_per_byte",
    "voluntary_context_switches",
    "involuntary_context_switches",
    "max_rss_bytes",
    "latency_p50_micros",
    "latency_p95_micros",
    "latency_p99_micros",
    "latency_p999_micros",
    "latency_max_micros",
    "loop",
    "python_version",
    "package_version",
    "platform",
    "hostname",
    "cpu_count",
    "verified",
]

#: A few KiB per stream: a run is mostly interpreter start-up.
SMALL = [
    "--connections",
    "3",
    "--route-frames",
    "4",
    "--tunnel-bytes",
    "4096",
    "--read-reserve",
    "1024",
]


@dataclass
class Run:
    rc: int
    out: dict[str, str]
    stdout: str
    stderr: str

    def num(self, key: str) -> float:
        return float(self.out[key])


def parse_report(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bytes_handoff_bench", *args]


def run_script(
    script: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run a ``bench/*.sh`` script with this interpreter (``PYTHON``), capturing its output."""
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=cwd,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(
    proc: subprocess.CompletedProcess[str], prog: str = "", status: int = 2
) -> str:
    """``proc`` failed with ``status`` and one line on stderr (``prog: error: ...``); that line."""
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{prog}: error: ") if prog else "error:" in lines[0], lines[0]
    return lines[0]


def run_cli(*args: str, timeout: float = 60) -> Run:
    proc = subprocess.run(
        bench_cmd(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return Run(proc.returncode, parse_report(proc.stdout), proc.stdout, proc.stderr)


def assert_ok(run: Run, iterations: int | None = None) -> None:
    assert run.rc == 0, run.stderr
    missing = [k for k in REQUIRED_KEYS if k not in run.out]
    assert not missing, missing
    assert run.out["verified"] == "true"
    waves = iterations if iterations is not None else int(run.out["actual_iterations"])
    expected = int(run.out["connections"]) * int(run.out["bytes_per_connection"]) * waves
    assert int(run.out["total_bytes"]) == expected
    assert int(run.out["total_streams"]) == int(run.out["connections"]) * waves


def free_port() -> int:
    """A port nobody listens on right now (bind port 0, read it, close)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(tmp_path: Path, sink_port: int, *args: str) -> tuple[subprocess.Popen[str], str]:
    """A tcp-service subprocess on an ephemeral port, once its ready file is written."""
    ready = tmp_path / "service.ready"
    proc = subprocess.Popen(
        bench_cmd(
            *args,
            "--transport",
            "tcp",
            "--role",
            "tcp-service",
            "--service-addr",
            "127.0.0.1:0",
            "--sink-addr",
            f"127.0.0.1:{sink_port}",
            "--ready-file",
            str(ready),
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"service never became ready: {err}")
        time.sleep(0.02)
    fields = parse_report(ready.read_text())
    assert int(fields["pid"]) == proc.pid
    return proc, fields["service_addr"]


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (forked workers keep the parent's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


class Split(NamedTuple):
    driver: Run
    service: dict[str, str]  # the service's report
    service_err: str
    service_rc: int
    service_addr: str  # from its ready file


def run_split(
    tmp_path: Path, shape: list[str], iterations: int = 2, idle_millis: int = 1000
) -> Split:
    """A tcp-service and a tcp-driver with ``shape`` on loopback, both run to the end."""
    sink_port = free_port()
    service, addr = start_service(
        tmp_path, sink_port, *shape, "--idle-timeout-millis", str(idle_millis)
    )
    try:
        driver = run_cli(
            *shape,
            "--transport", "tcp",
            "--role", "tcp-driver",
            "--service-addr", addr,
            "--sink-addr", f"127.0.0.1:{sink_port}",
            "--iterations", str(iterations),
        )  # fmt: skip
        out, err = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
    return Split(driver, parse_report(out), err, service.returncode, addr)


def help_blocks(help_text: str) -> dict[str, str]:
    """Each option's block of a ``--help`` (its line and its help's lines, joined), by flag."""
    blocks: dict[str, str] = {}
    flag = ""
    lines = help_text.splitlines()
    start = lines.index("options:") + 1 if "options:" in lines else len(lines)
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break  # the epilog
        words = line.split()
        if line.startswith("  -") and words:
            flags = [w.rstrip(",") for w in words if w.startswith("--")]
            flag = flags[0] if flags else words[0].rstrip(",")
            blocks[flag] = line.strip()
        elif line.startswith(" " * 6) and flag:
            blocks[flag] += " " + line.strip()
        else:
            flag = ""
    return blocks
