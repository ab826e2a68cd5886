"""bench/run-fault-soak.sh: a few-second smoke run with real faults, its bad-input
handling, and the stream classification it rests on."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from bytes_handoff import BufferIOError, WriteClosed, WriteIOError
from bytes_handoff_bench.harness.implementations import ProtocolError
from bytes_handoff_bench.harness.soak import (
    Orchestrator,
    SoakConfig,
    StreamRecord,
    processes_with,
    proxy_error_category,
)
from bytes_handoff_bench.tools.artifacts import parse_kv_text

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "bench" / "run-fault-soak.sh"


@pytest.mark.slow
@pytest.mark.timeout(20)
def test_smoke_run_injects_faults_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    args = [
        "--duration-seconds", "5",
        "--connections", "16",
        "--kill-interval-seconds", "1",
        "--client-reset-rate", "0.2",
        "--sink-reset-rate", "0.2",
        "--tunnel-bytes", "32768",
        "--seed", "7",
        "--out-dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        ["bash", str(SOAK), *args], capture_output=True, text=True, timeout=18, cwd=ROOT
    )
    kv = parse_kv_text(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert kv["verdict"] == "pass"
    assert kv["seed"] == "7"
    assert int(kv["proxy_kills"]) > 0
    assert int(kv["resets"]) > 0
    assert int(kv["client_resets"]) > 0 and int(kv["sink_resets"]) > 0
    assert int(kv["streams_verified"]) > 0
    for failure in ("corrupted", "hang", "proxy_crashed", "unexplained"):
        assert kv[f"failures_{failure}"] == "0"
    assert kv["leftover_processes"] == "0"
    # Independently of the script's own check: nothing started with this run's spec survives.
    assert processes_with(str(out / "soak.json")) == []
    assert parse_kv_text((out / "summary.txt").read_text()) == kv


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_protocol_path_survives_sinks_that_stall_then_reset(tmp_path: Path) -> None:
    """Sinks stop reading (the proxy's writes pause), then reset; the stream is long
    enough to fill every buffer and the write budget. On the protocol path this once
    froze the proxy's loop, then reordered bytes and hung streams (fixed since)."""
    out = tmp_path / "soak"
    args = [
        "--library-path", "protocol",
        "--duration-seconds", "4",
        "--connections", "32",
        "--kill-interval-seconds", "0",
        "--client-reset-rate", "0",
        "--sink-reset-rate", "0",
        "--sink-stall-reset-rate", "0.1",
        "--stall-seconds", "0.5",
        "--hang-seconds", "8",
        "--seed", "1",
        "--out-dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        ["bash", str(SOAK), *args], capture_output=True, text=True, timeout=35, cwd=ROOT
    )
    kv = parse_kv_text(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert kv["verdict"] == "pass"
    assert kv["library_path"] == "protocol"
    assert int(kv["sink_stall_resets"]) > 0
    assert int(kv["streams_verified"]) > 0
    for failure in ("corrupted", "hang", "proxy_crashed", "unexplained"):
        assert kv[f"failures_{failure}"] == "0"


@pytest.mark.parametrize(
    "args",
    [
        ["--connections", "0"],
        ["--sink-stall-reset-rate", "0.5", "--sink-reset-rate", "0.6"],
        ["--stall-seconds", "0"],
        ["--library-path", "tls"],
        ["--services", "1"],
        ["--client-reset-rate", "1.5"],
        ["--service-cores", "0"],
        ["--duration-seconds", "soon"],
        ["--no-such-flag"],
        # Values that would never end or fork without limit: refused before anything runs.
        ["--duration-seconds", "1e300"],
        ["--hang-seconds", "inf"],
        ["--kill-interval-seconds", "nan"],
        ["--services", "99999999"],
        ["--seed", "9" * 30],
        ["--rss-limit-mib-per-min", "inf"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(SOAK), *args, "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run-fault-soak.sh: error: "), proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_proxy_errors_are_named_and_unknown_types_are_not() -> None:
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    assert proxy_error_category(BufferIOError(reset)) == "read_ECONNRESET"
    assert proxy_error_category(WriteIOError(BrokenPipeError(errno.EPIPE, "pipe"))) == "write_EPIPE"
    assert proxy_error_category(WriteClosed()) == "write_closed"
    assert proxy_error_category(ProtocolError("eof")) == "eof_before_marker"
    assert proxy_error_category(BufferIOError(ValueError("lying reader"))) is None
    assert proxy_error_category(RuntimeError("bug")) is None


def record(**kw: object) -> StreamRecord:
    base: dict[str, object] = {
        "wave": 0, "conn": 1, "fragment": 97, "client_reset_at": None, "sink_reset_at": None,
    }  # fmt: skip
    base.update(kw)
    return StreamRecord(**base)  # type: ignore[arg-type]


def test_driver_classification_puts_wrong_bytes_and_hangs_first() -> None:
    assert record(client="ok", sink="verified").classify() == "verified"
    assert record(client="ok", sink="corrupted").classify() == "corrupted"
    assert record(client="reset_injected", sink="duplicate").classify() == "corrupted"
    assert record(client="hang", sink="verified").classify() == "hang"
    assert record(client="ok", sink="hang").classify() == "hang"
    assert record(client="reset_injected", sink="short").classify() == "client_reset"
    assert record(client="error_ECONNRESET", sink="reset_injected").classify() == "sink_reset"
    assert record(client="connect_refused").classify() == "connect_refused"
    # Broken without an injected cause: only the orchestrator knows about kills.
    assert record(client="error_ECONNRESET", sink="short").classify() == "pending"


def test_a_break_counts_as_proxy_killed_only_when_its_proxy_died_first(tmp_path: Path) -> None:
    orch = Orchestrator(SoakConfig(), tmp_path)
    orch.kills = {100: (10.5, 10.6)}
    accepts = {5000: [(10.1, 100)], 5001: [(10.1, 200)], 5002: [(12.1, 100)]}
    rec = {"t_start": 10.0, "t_end": 11.0, "client_port": 5000}
    assert orch.classify_pending(rec, accepts)[0] == "proxy_killed"
    # Served by a proxy that was not killed: a real failure.
    assert orch.classify_pending({**rec, "client_port": 5001}, accepts)[0] == "unexplained"
    orch.crashed = {200: 10.9}
    assert orch.classify_pending({**rec, "client_port": 5001}, accepts)[0] == "proxy_crashed"
    # Its proxy was killed only after the stream had already broken.
    early = {"t_start": 10.0, "t_end": 10.4, "client_port": 5000}
    assert orch.classify_pending(early, accepts)[0] == "unexplained"
    # Never accepted: explained only by a listener killed while the stream was open.
    assert orch.classify_pending({**rec, "client_port": 5003}, accepts)[0] == "proxy_killed"
    # Started after the SIGKILL, but before the dying listener was gone.
    dying = {"t_start": 10.55, "t_end": 10.58, "client_port": 5003}
    assert orch.classify_pending(dying, accepts)[0] == "proxy_killed"
    later = {"t_start": 11.0, "t_end": 12.0, "client_port": 5003}
    assert orch.classify_pending(later, accepts)[0] == "unexplained"
