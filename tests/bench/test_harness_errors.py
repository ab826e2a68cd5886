"""Bad input and failing runs: one clear line on stderr, the right exit code, no traceback."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_support import SMALL, free_port, run_cli, start_service

from bytes_handoff import DuplexStream
from bytes_handoff.bench.cli import config_from_args
from bytes_handoff.bench.config import BenchConfig
from bytes_handoff.bench.errors import BenchError, UsageError, VerificationError
from bytes_handoff.bench.implementations import IMPLEMENTATIONS, Implementation, register
from bytes_handoff.bench.roles import run_bench


def assert_one_line_error(run_rc: int, stderr: str, code: int, pattern: str) -> None:
    assert run_rc == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("bytes-handoff-bench: error: ")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--bogus"], r"unrecognized arguments: --bogus"),
        (["--connections", "abc"], r"--connections: expected an integer, got 'abc'"),
        (["--duration-seconds", "soon"], r"--duration-seconds: expected a number"),
        (["--frame-len", "8"], r"--frame-len must be at least 16, got 8"),
        (
            ["--read-reserve", "4096", "--write-pending-bytes", "1000"],
            r"--write-pending-bytes \(1000\) must be 0 or at least --read-reserve \(4096\)",
        ),
        (["--connections", "0"], r"--connections must be at least 1"),
        (["--tunnel-bytes", "-1"], r"--tunnel-bytes must be at least 0"),
        (["--route-frames", "0"], r"--route-frames must be at least 1"),
        (["--role", "tcp-service"], r"--role tcp-service needs --transport tcp"),
        (["--transport", "tcp", "--role", "tcp-driver"], r"needs --service-addr and --sink-addr"),
        (
            [
                "--transport",
                "tcp",
                "--role",
                "tcp-service",
                "--service-addr",
                "x",
                "--sink-addr",
                "y",
            ],
            r"--service-addr: expected HOST:PORT",
        ),
        (["--implementation", "nope"], r"--implementation: invalid choice: 'nope'"),
        (["--implementation", "handoff_splice"], r"handoff_splice runs on --transport tcp"),
        (["--frame-len", "40000"], r"exceeds the write budget of 32768 bytes"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], pattern: str) -> None:
    started = time.monotonic()
    run = run_cli(*args, timeout=20)
    assert_one_line_error(run.rc, run.stderr, 2, pattern)
    assert run.stdout == ""
    assert time.monotonic() - started < 10


def test_service_address_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_cli(
            "--transport",
            "tcp",
            "--role",
            "tcp-service",
            "--service-addr",
            f"127.0.0.1:{port}",
            "--sink-addr",
            "127.0.0.1:9",
            timeout=20,
        )
    assert_one_line_error(
        run.rc, run.stderr, 2, rf"cannot listen on 127\.0\.0\.1:{port}: address already in use"
    )


def test_driver_whose_service_refuses() -> None:
    started = time.monotonic()
    port = free_port()
    run = run_cli(
        *SMALL,
        "--transport",
        "tcp",
        "--role",
        "tcp-driver",
        "--service-addr",
        f"127.0.0.1:{port}",
        "--sink-addr",
        f"127.0.0.1:{free_port()}",
        "--startup-timeout-seconds",
        "1",
        timeout=20,
    )
    assert_one_line_error(
        run.rc,
        run.stderr,
        2,
        rf"cannot connect to service at 127\.0\.0\.1:{port}: connection refused",
    )
    assert time.monotonic() - started < 10


def test_service_without_connections_times_out() -> None:
    run = run_cli(
        "--transport",
        "tcp",
        "--role",
        "tcp-service",
        "--service-addr",
        "127.0.0.1:0",
        "--sink-addr",
        "127.0.0.1:9",
        "--startup-timeout-seconds",
        "0.5",
        timeout=20,
    )
    assert_one_line_error(run.rc, run.stderr, 1, r"no connection on 127\.0\.0\.1:\d+ within 0\.5 s")


def test_service_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc, _ = start_service(tmp_path, 9)
    try:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "total_streams=0" in out.splitlines()


# -- a corrupting proxy must fail the run -----------------------------------------------------

FLIP_AT = 100  # tunnel byte to corrupt


async def _corrupt_tunnel(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    """Copies the whole stream but flips one tunnel byte."""
    assert isinstance(inbound, DuplexStream) and isinstance(outbound, DuplexStream)
    data = bytearray()
    while chunk := await inbound.read(65536):
        data += chunk
    data[cfg.prefix_len + FLIP_AT] ^= 0xFF
    await outbound.write(data)
    outbound.shutdown_write()
    return len(data)


@pytest.fixture
def corrupt_impl() -> Iterator[str]:
    register(Implementation("corrupt_tunnel", _corrupt_tunnel, "flips one tunnel byte"))
    try:
        yield "corrupt_tunnel"
    finally:
        IMPLEMENTATIONS.pop("corrupt_tunnel", None)


def test_corrupted_byte_fails_the_run_naming_stream_and_offset(corrupt_impl: str) -> None:
    cfg = config_from_args([*SMALL, "--implementation", corrupt_impl, "--loop", "asyncio"])
    with pytest.raises(BenchError) as info:
        run_bench(cfg)
    offset = cfg.prefix_len + FLIP_AT
    assert re.fullmatch(
        rf"stream 000[0-2]: wrong byte at offset {offset}: expected 0x[0-9a-f]{{2}},"
        r" got 0x[0-9a-f]{2}",
        str(info.value),
    ), str(info.value)
    assert info.value.exit_code == 1


def test_usage_errors_are_bench_errors() -> None:
    with pytest.raises(UsageError):
        config_from_args(["--frame-len", "3"])
    assert issubclass(VerificationError, BenchError)


def test_service_with_a_silent_client_fails_instead_of_hanging(tmp_path: Path) -> None:
    """The run guard: a stream that moves no byte for --startup-timeout-seconds fails the run."""
    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen()
        proc, addr = start_service(
            tmp_path, sink.getsockname()[1], "--startup-timeout-seconds", "1"
        )
        try:
            host, port = addr.split(":")
            with socket.create_connection((host, int(port))):
                _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert_one_line_error(proc.returncode, err, 1, r"no progress for 1 s with 1 streams active")
