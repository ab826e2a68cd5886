"""Bad input and failing runs: one clear line on stderr, the right exit code, no traceback."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_support import SMALL, free_port, run_cli, start_service

from bytes_handoff import DuplexStream
from bytes_handoff_bench.errors import BenchError, UsageError, VerificationError
from bytes_handoff_bench.harness.cli import config_from_args
from bytes_handoff_bench.harness.config import BenchConfig
from bytes_handoff_bench.harness.implementations import IMPLEMENTATIONS, Implementation, register
from bytes_handoff_bench.harness.roles import run_bench


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
    run = run_cli(*args, timeout=20)  # a run that does not end fails here
    assert_one_line_error(run.rc, run.stderr, 2, pattern)
    assert run.stdout == ""


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


# -- every number has an upper bound, checked before anything is allocated ----------------------

HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--worker-threads", HUGE], rf"--worker-threads must be at most 256, got {HUGE}$"),
        (["--connections", HUGE], rf"--connections must be at most 10000 .*, got {HUGE}$"),
        (["--route-frames", HUGE], rf"--route-frames must be at most 1000000, got {HUGE}$"),
        (["--frame-len", HUGE], rf"--frame-len must be at most 1048576 \(1 MiB\), got {HUGE}$"),
        (["--tunnel-bytes", HUGE], r"--tunnel-bytes must be at most 1073741824 \(1 GiB\)"),
        (["--read-reserve", HUGE], r"--read-reserve must be at most 67108864 \(64 MiB\)"),
        (["--input-fragment", HUGE], r"--input-fragment must be at most 67108864"),
        (["--duplex-capacity", HUGE], r"--duplex-capacity must be at most 67108864"),
        (["--write-pending-bytes", HUGE], r"--write-pending-bytes must be at most 134217728"),
        (["--iterations", HUGE], r"--iterations must be at most 1000000"),
        (["--duration-seconds", "1e9"], r"--duration-seconds must be at most 86400 \(24 h\)"),
        (["--duration-seconds", "nan"], r"--duration-seconds: expected a finite number"),
        (["--duration-seconds", "inf"], r"--duration-seconds: expected a finite number"),
        (["--startup-timeout-seconds=-inf"], r"expected a finite number, got '-inf'"),
        (["--startup-timeout-seconds", "1e300"], r"must be at most 3600 \(1 h\), got 1e\+300"),
        (["--idle-timeout-millis", HUGE], r"--idle-timeout-millis must be at most 3600000"),
        (
            ["--connections", "10000", "--route-frames", "100000"],
            r"would hold about 125\.6 GiB \(10000 connections x \d+ bytes \+ 1 workers x"
            r" \d+ bytes\), more than the 8 GiB limit",
        ),
        (
            ["--tunnel-bytes", str(2**30), "--worker-threads", "3"],
            r"3 workers x \d+ bytes\), more than the 8 GiB limit",
        ),
        (
            ["--rss-samples", "/nonexistent/rss.csv"],
            r"--rss-samples '/nonexistent/rss\.csv': its folder '/nonexistent' does not exist",
        ),
        (["--rss-samples", ""], r"--rss-samples: expected a file name, got ''"),
    ],
)
def test_numbers_are_bounded_before_the_run(args: list[str], pattern: str) -> None:
    # In-process: on a harness without the bound the config is returned and nothing runs.
    with pytest.raises(UsageError, match=pattern):
        config_from_args(args)


def test_bounds_are_in_the_help() -> None:
    run = run_cli("--help", timeout=20)
    assert run.rc == 0, run.stderr
    text = " ".join(run.stdout.split())
    for needle in ("(1-256)", "(1-10000)", "16 to 1 MiB", "0 to 1 GiB", "<= 24 h", "8 GiB"):
        assert needle in text, needle


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--tunnel-bytes", HUGE], r"--tunnel-bytes must be at most 1073741824 \(1 GiB\)"),
        (["--read-reserve", HUGE], r"--read-reserve must be at most 67108864 \(64 MiB\)"),
        (["--startup-timeout-seconds", "nan"], r"expected a finite number, got 'nan'"),
        (["--connections", "9" * 5000], r"expected an integer, got '9{40}\.\.\.'$"),
    ],
)
def test_out_of_bound_numbers_are_one_line(args: list[str], pattern: str) -> None:
    run = run_cli(*SMALL, *args, timeout=20)
    assert_one_line_error(run.rc, run.stderr, 2, pattern)
    assert run.stdout == ""


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
