"""bench/run-split-service-perf.sh and bench/run-split-service-strace.sh end to
end on the handoff service, at tiny sizes (service on CPU 0, driver on CPU 1)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bytes_handoff_bench.tools.profilers import top_functions

ROOT = Path(__file__).resolve().parents[2]

# Enough traffic for a few hundred samples at 250 Hz in a second, little CPU.
SMALL = [
    "--connections",
    "4",
    "--route-frames",
    "16",
    "--tunnel-bytes",
    "65536",
    "--duration-seconds",
    "1",
    "--idle-timeout-millis",
    "300",
]

HANDOFF_FUNCTIONS = re.compile(r"read_available|proxy_handoff")


def run(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_top_functions_counts_self_and_total() -> None:
    text = (
        'process 1:"python";main (a.py:3);loop (a.py:9);read (b.py:1) 6\n'
        'process 1:"python";main (a.py:3);loop (a.py:10) 3\n'
        "main (a.py:4);write (b.py:7) 1\n"
    )
    report = top_functions(text)
    assert "# py-spy samples: 10" in report
    lines = report.splitlines()
    read = next(line for line in lines if line.endswith("read (b.py)"))
    assert read.split()[:4] == ["6", "60.0%", "6", "60.0%"]
    main = next(line for line in lines if line.endswith("main (a.py)"))
    assert main.split()[:4] == ["0", "0.0%", "10", "100.0%"]
    assert not any("process 1" in line for line in lines)


def test_perf_script_profiles_the_service(tmp_path: Path) -> None:
    out = tmp_path / "perf"
    proc = run("run-split-service-perf.sh", "--scenario", "all", *SMALL, "--out-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for scenario in ("fragmented", "coalesced"):
        folder = out / scenario
        svg = (folder / "service.svg").read_text()
        assert svg.lstrip().startswith("<?xml") or "<svg" in svg[:500]
        assert HANDOFF_FUNCTIONS.search(svg), f"no handoff frames in {scenario} flame graph"
        top = (folder / "top-functions.txt").read_text()
        assert HANDOFF_FUNCTIONS.search(top), top[:2000]
        assert (folder / "service-stacks.txt").stat().st_size > 0
        # Either perf recorded the service, or a note says why it could not.
        report = folder / "perf-report.txt"
        note = folder / "perf-note.txt"
        assert report.exists() or note.exists()
        if report.exists():
            assert "python" in report.read_text()
        assert "role=tcp-service" in (folder / "flamegraph-service-run-1.txt").read_text()
        assert f"{scenario}: flamegraph=" in proc.stdout
        assert f"{scenario}: top_functions=" in proc.stdout
    assert f"outputs in {out}" in proc.stdout or "outputs in" in proc.stdout


def test_strace_script_counts_service_syscalls(tmp_path: Path) -> None:
    out = tmp_path / "strace"
    proc = run("run-split-service-strace.sh", "--scenario", "all", *SMALL, "--out-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for scenario in ("fragmented", "coalesced"):
        summary = (out / scenario / "strace-summary.txt").read_text()
        syscalls = {
            line.split()[-1]
            for line in summary.splitlines()
            if line[:1].isdigit() or line.startswith(" ")
        }
        assert "total" in summary
        assert syscalls & {"recvfrom", "recvmsg", "recv", "read"}, summary
        assert syscalls & {"sendmsg", "sendto", "send", "write", "writev"}, summary
        assert syscalls & {"epoll_wait", "epoll_pwait", "epoll_pwait2"}, summary
        assert f"{scenario}: strace_summary=" in proc.stdout


@pytest.mark.parametrize("script", ["run-split-service-perf.sh", "run-split-service-strace.sh"])
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--connections", "many"], "--connections"),
        # Refused by the harness's own check before anything starts (no service, no folder).
        (["--connections", "9" * 20], "--connections must be at most 10000"),
        (["--tunnel-bytes", "99999999999"], "--tunnel-bytes must be at most 1073741824"),
        (["--scenario", "all", "--frame-len", "1048577"], "--frame-len must be at most"),
    ],
)
def test_profiler_bad_input(tmp_path: Path, script: str, args: list[str], needle: str) -> None:
    out = tmp_path / "out"
    proc = run(script, *args, "--out-dir", str(out), timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in lines[0], lines[0]
    assert not out.exists()


def test_perf_failure_leaves_a_note_and_the_python_profile(tmp_path: Path) -> None:
    # A perf that cannot open events (as on kernels or containers that forbid it).
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_perf = fake_bin / "perf"
    fake_perf.write_text(
        "#!/bin/sh\necho 'perf_event_open(..., PERF_FLAG_FD_CLOEXEC) failed with "
        "unexpected error 1 (Operation not permitted)' >&2\nexit 255\n"
    )
    fake_perf.chmod(0o755)
    out = tmp_path / "perf"
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "bench" / "run-split-service-perf.sh"),
            "--scenario",
            "coalesced",
            *SMALL,
            "--out-dir",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, "PATH": f"{fake_bin}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    note = (out / "perf-note.txt").read_text()
    assert "could not profile" in note and "Operation not permitted" in note
    assert not (out / "perf-report.txt").exists()
    assert HANDOFF_FUNCTIONS.search((out / "top-functions.txt").read_text())
    assert "coalesced: perf_note=" in proc.stdout


def test_service_prefix_runs_the_service_under_a_command(tmp_path: Path) -> None:
    from bytes_handoff_bench.tools.split import SplitConfig, run_split

    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    summary = tmp_path / "prefix-strace.txt"
    result = run_split(
        SplitConfig(
            harness_args=[
                "--transport",
                "tcp",
                "--scenario",
                "coalesced",
                "--connections",
                "2",
                "--tunnel-bytes",
                "4096",
                "--worker-threads",
                "1",
            ],
            out_dir=tmp_path,
            python=sys.executable,
            service_cores="0",
            driver_cores="1",
            idle_timeout_millis=300,
            service_prefix=["strace", "-f", "-c", "-o", str(summary)],
        )
    )
    assert result.service["role"] == "tcp-service"
    assert result.driver["role"] == "tcp-driver"
    assert "total" in summary.read_text()
