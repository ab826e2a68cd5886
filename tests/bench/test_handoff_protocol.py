"""``handoff_protocol``: the workload on the library's protocol path, end to end."""

from __future__ import annotations

import pytest
from harness_support import SMALL, assert_ok, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("completion", ["fire_and_forget", "ticket"])
@pytest.mark.parametrize("scenario", ["fragmented", "coalesced"])
def test_integrated_tcp_verifies(scenario: str, completion: str, loop: str) -> None:
    run = run_cli(
        *SMALL,
        "--transport", "tcp",
        "--implementation", "handoff_protocol",
        "--scenario", scenario,
        "--completion", completion,
        "--loop", loop,
    )  # fmt: skip
    assert_ok(run, iterations=1)  # every byte verified by the sink, exact byte count
    assert run.out["implementation"] == "handoff_protocol"


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_full_write_budget_pauses_the_client_side_and_loses_nothing(loop: str) -> None:
    """A write budget of one read against 1 MiB per stream: refusals and pauses, no loss."""
    run = run_cli(
        "--connections", "4",
        "--route-frames", "64",
        "--tunnel-bytes", str(1024 * 1024),
        "--read-reserve", "1024",
        "--write-pending-bytes", "1024",
        "--input-fragment", "7000",
        "--transport", "tcp",
        "--implementation", "handoff_protocol",
        "--completion", "fire_and_forget",
        "--loop", loop,
    )  # fmt: skip
    assert_ok(run, iterations=1)


def test_the_protocol_path_runs_on_tcp_only() -> None:
    run = run_cli(*SMALL, "--transport", "duplex", "--implementation", "handoff_protocol")
    assert run.rc == 2
    assert "runs on --transport tcp" in run.stderr
