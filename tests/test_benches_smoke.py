"""Smoke test of the micro-benchmarks and their baseline script (no timing assertions).

Runs ``bench/run-criterion-baseline.sh`` once over every family with tiny
inputs (``BENCH_SMOKE=1``) and minimal settings, then reads the saved JSON:
every family and case benches/README.md names must be there with a positive median and
a positive throughput. Also checks ``--save`` then ``--compare`` and that bad
input fails with one clear line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "run-criterion-baseline.sh"

EXPECTED: dict[str, set[str]] = {
    "read_raw_discard_lower_bound": {"64", "16384"},
    "read_owned_lines": {
        f"{impl}/{size}"
        for impl in ("manual_bytearray_copy", "bytearray_split", "handoff_buffer")
        for size in (64, 16384)
    },
    "read_handoff_fragmentation_sweep": {"64", "256", "1024", "4096", "16384"},
    "split_freeze_prefixes": {"16", "64", "512"},
    "split_prefix_mut": {"16", "64", "512"},
    "take_tail_mode_switch": {"prefix_512"},
    "search_trickle": {
        f"{impl}/16384" for impl in ("handoff_split_through", "manual_rescan", "manual_resume")
    },
    "write_large_chunks": {
        f"{impl}/{size}"
        for impl in (
            "direct_write_all",
            "handoff_ticket_single_task",
            "handoff_fire_and_forget_single_task",
        )
        for size in (65536, 1048576)
    },
    "write_many_tasks": {
        f"{mode}/{tasks}" for mode in ("ticket", "fire_and_forget") for tasks in (1, 4, 16, 64)
    },
    "write_byte_budget_backpressure": {"try_write", "write"},
}
# Families whose rounds move no bytes report operations per second instead.
OPS_FAMILIES = {"write_byte_budget_backpressure"}


def run_script(results: Path, *args: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        PYTHON=sys.executable,
        CRITERION_RESULTS=str(results),
        BENCH_SMOKE="1",
        SAMPLE_SIZE="1",
        MEASUREMENT_TIME="0.01",
        WARM_UP_TIME="0",
    )
    if importlib.util.find_spec("uvloop") is None:
        env["BENCH_LOOP"] = "asyncio"
    for key in ("BENCH", "SAVE", "COMPARE", "COMPARE_FAIL", "TASKSET_CORES", "PERF_STAT"):
        env.pop(key, None)
    env.update(env_overrides)
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def saved_runs(results: Path, name: str) -> list[Path]:
    return sorted(results.glob(f"*/[0-9][0-9][0-9][0-9]_{name}.json"))


def load(path: Path) -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(path.read_text())
    benches: list[dict[str, Any]] = data["benchmarks"]
    return benches


def test_every_family_runs_and_reports_a_number(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--save", "smoke")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (saved,) = saved_runs(tmp_path, "smoke")
    assert f"results: {saved}" in proc.stdout
    assert saved.with_suffix(".md").is_file() and saved.with_suffix(".log").is_file()

    seen: dict[str, set[str]] = {}
    for bench in load(saved):
        extra = bench["extra_info"]
        family, case = extra["family"], extra["case"]
        seen.setdefault(family, set()).add(case)
        where = f"{family}/{case}"
        assert bench["group"] == family, where
        assert bench["stats"]["median"] > 0, where
        assert bench["stats"]["rounds"] >= 1, where
        if family in OPS_FAMILIES:
            assert extra["ops"] > 0 and extra["ops_per_sec"] > 0, where
        else:
            assert extra["bytes"] > 0, where
            assert extra["bytes_per_sec"] > 0 and extra["mib_per_sec"] > 0, where
    assert seen == EXPECTED

    # The summary table names every case.
    table = saved.with_suffix(".md").read_text()
    for family, cases in EXPECTED.items():
        for case in cases:
            assert f"| {family} | {case} |" in table


def test_save_then_compare(tmp_path: Path) -> None:
    first = run_script(tmp_path, "--save", "before", BENCH="take_tail_mode_switch")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    (before,) = saved_runs(tmp_path, "before")

    second = run_script(
        tmp_path, "--compare", "before", BENCH="take_tail_mode_switch", SAVE="after"
    )
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert f"comparing with: {before}" in second.stdout
    assert "Comparing against benchmarks from" in second.stdout
    (after,) = saved_runs(tmp_path, "after")
    assert [b["extra_info"]["case"] for b in load(after)] == ["prefix_512"]
    # Our summary puts the baseline median and the change beside each case.
    assert "| baseline median | change |" in after.with_suffix(".md").read_text()
    assert "% time" in second.stdout


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"SAMPLE_SIZE": "abc"}, (), "SAMPLE_SIZE must be a whole number"),
        ({"MEASUREMENT_TIME": "0"}, (), "MEASUREMENT_TIME must be a number"),
        ({"WARM_UP_TIME": "soon"}, (), "WARM_UP_TIME must be a number"),
        ({"BENCH": "read_everything"}, (), "unknown BENCH family 'read_everything'"),
        ({}, ("--compare", "never_saved"), "no saved run 'never_saved'"),
        ({}, ("--frobnicate",), "unknown argument '--frobnicate'"),
    ],
)
def test_bad_input_fails_with_one_clear_line(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    proc = run_script(tmp_path, *args, **env)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not saved_runs(tmp_path, "*")
