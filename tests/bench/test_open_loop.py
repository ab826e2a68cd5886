"""Open-loop driving (``--rate``): streams on a clock, latency from when each was due.

Structure checks, not timings (the machine is shared and noisy), except the
stall checks, which compare with lower bounds that hold whenever the method is
right: a stream whose proxy sleeps ``STALL`` cannot take less than ``STALL``,
and a stream that waited for a busy connection carries that wait too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_support import SMALL, free_port, run_cli, start_service

from bytes_handoff_bench.errors import UsageError
from bytes_handoff_bench.harness.cli import config_from_args
from bytes_handoff_bench.harness.config import BenchConfig
from bytes_handoff_bench.harness.implementations import IMPLEMENTATIONS, Implementation, register
from bytes_handoff_bench.harness.output import report_lines
from bytes_handoff_bench.harness.roles import run_bench

#: What every open-loop report adds, and a closed-loop one never has.
OPEN_LOOP_KEYS = [
    "load",
    "offered_streams_per_sec",
    "offered_mib_per_sec",
    "achieved_streams_per_sec",
    "achieved_mib_per_sec",
    "rate_tolerance",
    "max_lag_millis",
    "streams_scheduled",
    "streams_started",
    "streams_unsent",
    "start_lag_max_micros",
    "fell_behind",
]

#: A service's flags (with a sink address that is never reached: the flags are refused first).
SERVICE = ["--transport", "tcp", "--role", "tcp-service", "--service-addr", "127.0.0.1:0"]
SERVICE += ["--sink-addr", "127.0.0.1:9"]

#: How long the test-only implementation sleeps before it copies a stream.
STALL = 0.2


def run_here(args: list[str]) -> dict[str, str]:
    """One run in this process (a test-only implementation is registered only here)."""
    cfg = config_from_args(args)
    outcome = run_bench(cfg)
    return dict(line.split("=", 1) for line in report_lines(cfg, outcome))


async def _slowed(inbound: object, outbound: object, cfg: BenchConfig) -> int:
    await asyncio.sleep(STALL)  # a service that takes STALL longer per stream
    return await IMPLEMENTATIONS["raw_copy"].proxy(inbound, outbound, cfg)


@pytest.fixture
def slowed() -> Iterator[str]:
    register(Implementation("slowed_for_test", _slowed, "raw_copy after a sleep of STALL"))
    try:
        yield "slowed_for_test"
    finally:
        IMPLEMENTATIONS.pop("slowed_for_test", None)


def assert_open_loop_report(out: dict[str, str]) -> None:
    missing = [key for key in OPEN_LOOP_KEYS if key not in out]
    assert not missing, missing
    assert out["load"] == "open_loop"
    assert out["latency_source"] == "due_to_sink_eof"
    assert out["verified"] == "true"
    scheduled, started = int(out["streams_scheduled"]), int(out["streams_started"])
    assert int(out["streams_unsent"]) == scheduled - started
    assert int(out["total_streams"]) == started  # every started stream verified
    assert int(out["total_bytes"]) == started * int(out["bytes_per_connection"])
    assert out["fell_behind"] in ("true", "false")
    # A run that fell behind says why, with the numbers; one that kept up says nothing.
    assert ("fell_behind_reason" in out) == (out["fell_behind"] == "true")


# -- closed loop stays as it was -------------------------------------------------------------


def test_closed_loop_output_is_unchanged_without_rate() -> None:
    run = run_cli(*SMALL, "--iterations", "2")
    assert run.rc == 0, run.stderr
    assert [key for key in OPEN_LOOP_KEYS if key in run.out] == []
    assert "fell_behind_reason" not in run.out
    assert run.out["latency_source"] == "connect_to_sink_eof"
    assert int(run.out["total_streams"]) == 3 * 2
    assert run.stderr == ""


# -- open loop on every transport and role ---------------------------------------------------


@pytest.mark.parametrize("transport", ["duplex", "tcp"])
def test_open_loop_reports_offered_and_achieved(transport: str) -> None:
    run = run_cli(*SMALL, "--transport", transport, "--rate", "40", "--duration-seconds", "0.5")
    assert run.rc == 0, run.stderr
    assert_open_loop_report(run.out)
    assert float(run.out["offered_streams_per_sec"]) == 40
    assert int(run.out["streams_scheduled"]) == 20  # 40 streams/s for 0.5 s
    assert float(run.out["achieved_streams_per_sec"]) > 0
    if run.out["fell_behind"] == "true":  # a noisy moment: said on stderr too, one line
        assert run.stderr.startswith("bytes-handoff-bench: warning: fell behind"), run.stderr


def test_without_a_duration_the_schedule_holds_iterations_times_connections() -> None:
    run = run_cli(*SMALL, "--rate", "200", "--iterations", "3")
    assert run.rc == 0, run.stderr
    assert_open_loop_report(run.out)
    assert int(run.out["streams_scheduled"]) == 3 * 3


def test_rate_mib_is_turned_into_streams_per_second() -> None:
    cfg = config_from_args([*SMALL, "--rate-mib", "2"])
    assert cfg.offered_streams_per_sec == pytest.approx(2 * 2**20 / cfg.bytes_per_connection)
    run = run_cli(*SMALL, "--rate-mib", "0.5", "--duration-seconds", "0.4")
    assert run.rc == 0, run.stderr
    assert_open_loop_report(run.out)
    assert float(run.out["offered_mib_per_sec"]) == pytest.approx(0.5, rel=1e-5)
    expected = 0.5 * 2**20 / int(run.out["bytes_per_connection"])
    assert float(run.out["offered_streams_per_sec"]) == pytest.approx(expected, rel=1e-5)


def test_split_driver_paces_with_two_workers_and_the_service_serves(tmp_path: Path) -> None:
    # Two driver workers share the sink's port: a stream may be verified by the other
    # worker's sink, and its connection must still learn that it is done.
    sink_port = free_port()
    service, addr = start_service(tmp_path, sink_port, *SMALL, "--idle-timeout-millis", "500")
    try:
        driver = run_cli(
            *SMALL,
            "--transport", "tcp",
            "--role", "tcp-driver",
            "--service-addr", addr,
            "--sink-addr", f"127.0.0.1:{sink_port}",
            "--worker-threads", "2",
            "--rate", "30",
            "--duration-seconds", "0.5",
        )  # fmt: skip
        out, err = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
    assert driver.rc == 0, driver.stderr
    assert service.returncode == 0, err
    assert_open_loop_report(driver.out)
    service_out = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert [key for key in OPEN_LOOP_KEYS if key in service_out] == []  # it only serves
    assert service_out["total_streams"] == driver.out["total_streams"]


# -- a stalled service shows as higher latency and as fell behind, never as a better figure --


@pytest.mark.parametrize("transport", ["duplex", "tcp"])
def test_a_slowed_implementation_p99_grows_by_at_least_the_stall(
    slowed: str, transport: str
) -> None:
    # 3 connections, each stream >= STALL: 10 streams/s (0.3 s apart per connection) fit.
    out = run_here(
        [*SMALL, "--transport", transport, "--implementation", slowed, "--loop", "asyncio",
         "--rate", "10", "--duration-seconds", "0.6"]
    )  # fmt: skip
    assert_open_loop_report(out)
    # Every stream includes the stall: a lower bound, whatever the machine does.
    assert int(out["latency_p50_micros"]) >= STALL * 1e6
    assert int(out["latency_p99_micros"]) >= STALL * 1e6


def test_a_stalled_service_falls_behind_and_its_waits_count(slowed: str) -> None:
    # 3 connections, each stream >= STALL = 0.2 s: at most 15 streams/s, offered 60. Stream
    # j of a connection is due at j * 0.05 s but cannot start before j * 0.2 s, so the
    # schedule slips past 400 ms by j = 3, and stream 2 already waited >= 0.3 s.
    offered, capacity = 60.0, 3 / STALL
    out = run_here(
        [*SMALL, "--implementation", slowed, "--loop", "asyncio", "--rate", f"{offered:g}",
         "--duration-seconds", "1", "--max-lag-millis", "400"]
    )  # fmt: skip
    assert_open_loop_report(out)
    assert out["fell_behind"] == "true"
    assert "--max-lag-millis 400" in out["fell_behind_reason"]
    assert int(out["streams_unsent"]) > 0
    achieved = float(out["achieved_streams_per_sec"])
    assert achieved < offered * (1 - float(out["rate_tolerance"]))  # never a better figure
    assert achieved <= capacity * 1.01 and float(out["streams_per_sec"]) <= capacity * 1.01
    # The wait for a busy connection is counted: more than the stall alone.
    assert int(out["latency_max_micros"]) >= 2.2 * STALL * 1e6
    assert int(out["latency_p99_micros"]) >= 2.2 * STALL * 1e6
    assert int(out["start_lag_max_micros"]) >= 0.25 * 1e6


# -- bad flags: one line, exit 2 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rate", "0"], "--rate must be above 0, got 0.0"),
        (["--rate", "-5"], "--rate must be above 0"),
        (["--rate", "nan"], "argument --rate: expected a finite number"),
        (["--rate", "2e6"], "more than 1,000,000"),
        (["--rate-mib", "0"], "--rate-mib must be above 0"),
        (["--rate", "10", "--rate-mib", "1"], "--rate and --rate-mib are one setting"),
        (["--rate-tolerance", "0.1"], "--rate-tolerance needs --rate or --rate-mib"),
        (["--max-lag-millis", "50"], "--max-lag-millis needs --rate or --rate-mib"),
        (["--rate", "10", "--rate-tolerance", "1"], "--rate-tolerance must be at least 0"),
        (["--rate", "10", "--rate-tolerance", "-0.1"], "--rate-tolerance must be at least 0"),
        (["--rate", "10", "--max-lag-millis", "0"], "--max-lag-millis must be from 1"),
        (["--rate", "0.00001"], "would take 300000 s to start, more than 86400"),
        (
            [*SERVICE, "--rate", "10"],
            "--rate paces the clients, and --role tcp-service has none",
        ),
    ],
)
def test_bad_rate_flags_are_usage_errors(args: list[str], needle: str) -> None:
    with pytest.raises(UsageError) as info:
        config_from_args([*SMALL, *args])
    assert needle in str(info.value), str(info.value)


def test_a_bad_rate_is_one_line_and_exit_2() -> None:
    run = run_cli("--rate", "10", "--rate-mib", "1")
    assert run.rc == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bytes-handoff-bench: error: "), run.stderr
    assert run.stdout == ""
