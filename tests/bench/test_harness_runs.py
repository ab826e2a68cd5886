"""The stream harness end to end through its CLI (``python -m bytes_handoff_bench``), small sizes.

Each run is a subprocess: exit 0, every required key, every byte verified.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness_support import (
    SMALL,
    assert_ok,
    run_cli,
    run_split,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("completion", ["ticket", "fire_and_forget"])
@pytest.mark.parametrize("scenario", ["fragmented", "coalesced"])
@pytest.mark.parametrize("implementation", ["handoff", "manual_vec", "raw_copy"])
@pytest.mark.parametrize("transport", ["duplex", "tcp"])
def test_every_shape_verifies(
    transport: str, implementation: str, scenario: str, completion: str
) -> None:
    run = run_cli(
        *SMALL,
        "--transport",
        transport,
        "--implementation",
        implementation,
        "--scenario",
        scenario,
        "--completion",
        completion,
    )
    assert_ok(run, iterations=1)
    assert run.out["implementation"] == implementation
    assert run.out["transport"] == transport
    assert run.out["scenario"] == scenario
    assert run.out["completion"] == completion
    assert run.out["role"] == "integrated"
    expected_fragment = "64" if scenario == "fragmented" else "1024"
    assert run.out["input_fragment"] == expected_fragment


@pytest.mark.parametrize("completion", ["ticket", "fire_and_forget"])
@pytest.mark.parametrize("scenario", ["fragmented", "coalesced"])
def test_handoff_splice_on_tcp(scenario: str, completion: str) -> None:
    run = run_cli(
        *SMALL,
        "--transport",
        "tcp",
        "--implementation",
        "handoff_splice",
        "--scenario",
        scenario,
        "--completion",
        completion,
    )
    assert_ok(run, iterations=1)
    assert run.out["implementation"] == "handoff_splice"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", ["duplex", "tcp"])
def test_both_loops_and_several_waves(loop: str, transport: str) -> None:
    run = run_cli(*SMALL, "--transport", transport, "--loop", loop, "--iterations", "3")
    assert_ok(run, iterations=3)
    assert run.out["loop"] == loop
    assert run.out["configured_iterations"] == "3"
    assert int(run.out["latency_max_micros"]) >= int(run.out["latency_p50_micros"]) > 0
    assert float(run.out["cpu_total_seconds"]) > 0


def test_frames_split_across_tiny_reads() -> None:
    """Fragments smaller than a frame: the proxy must reassemble every frame."""
    for implementation in ("handoff", "manual_vec"):
        run = run_cli(
            *SMALL,
            "--transport",
            "tcp",
            "--input-fragment",
            "7",
            "--implementation",
            implementation,
        )
        assert_ok(run, iterations=1)


@pytest.mark.parametrize("transport", ["duplex", "tcp"])
def test_two_workers_split_the_connections(transport: str) -> None:
    run = run_cli(*SMALL, "--transport", transport, "--worker-threads", "2", "--connections", "5")
    assert_ok(run, iterations=1)
    assert run.out["worker_threads"] == "2"
    assert run.out["total_streams"] == "5"


def test_sustained_run_samples_rss(tmp_path: Path) -> None:
    samples = tmp_path / "rss.csv"
    run = run_cli(*SMALL, "--duration-seconds", "3", "--rss-samples", str(samples), timeout=60)
    assert_ok(run)
    assert int(run.out["actual_iterations"]) > 1
    assert float(run.out["total_seconds"]) >= 3.0
    assert run.out["rss_samples_file"] == str(samples)
    # 3 s of samples are too few to extrapolate a growth per minute from: said, not made up.
    assert run.out["rss_growth_bytes_per_min"] == "null"
    assert "samples span" in run.out["rss_growth_reason"]
    rows = samples.read_text().splitlines()
    assert rows[0] == "elapsed_seconds,rss_bytes"
    assert len(rows) - 1 >= 3
    for row in rows[1:]:
        elapsed, rss = row.split(",")
        assert float(elapsed) >= 0 and int(rss) > 0


@pytest.mark.parametrize(
    ("workers", "implementation", "scenario"),
    [
        ("1", "handoff", "coalesced"),
        ("2", "manual_vec", "fragmented"),
        ("2", "handoff", "coalesced"),
    ],
)
def test_split_service_and_driver(
    tmp_path: Path, workers: str, implementation: str, scenario: str
) -> None:
    shape = [
        *SMALL,
        "--implementation",
        implementation,
        "--scenario",
        scenario,
        "--worker-threads",
        workers,
    ]
    started = time.monotonic()
    driver, svc, err, rc, addr = run_split(tmp_path, shape, idle_millis=1500)
    lifetime = time.monotonic() - started  # the service's whole life fits in it
    assert_ok(driver, iterations=2)
    assert driver.out["role"] == "tcp-driver"
    assert rc == 0, err
    assert svc["role"] == "tcp-service"
    assert svc["service_addr"] == addr
    assert svc["total_bytes"] == driver.out["total_bytes"]
    assert svc["total_streams"] == driver.out["total_streams"]
    # The service measures its active window, not the 1.5 s idle wait that ends it: the
    # window and that wait both fit in its life, however slowly the machine ran.
    assert float(svc["total_seconds"]) + 1.5 <= lifetime
    assert float(svc["cpu_total_seconds"]) > 0
