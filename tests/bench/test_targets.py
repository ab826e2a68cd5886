"""bench/check-targets.sh's arithmetic: medians of the service's ns/B, ratios, pass/miss."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bytes_handoff_bench.processes import RunError
from bytes_handoff_bench.tools.targets import cpu_checks

ROOT = Path(__file__).resolve().parents[2]

#: service ns/B per implementation and scenario: three runs each, medians as noted.
NS = {
    ("handoff", "coalesced"): [1.0, 1.2, 1.1],  # median 1.1
    ("handoff", "fragmented"): [50.0, 60.0, 55.0],  # 55
    ("manual_protocol", "coalesced"): [1.0, 1.0, 1.0],
    ("manual_protocol", "fragmented"): [60.0, 60.0, 60.0],
    ("raw_protocol", "coalesced"): [1.0, 0.9, 1.0],  # 1.0
    ("handoff_splice", "coalesced"): [0.5, 0.5, 0.5],
    ("manual_vec", "coalesced"): [2.0, 2.0, 2.0],
    ("manual_vec", "fragmented"): [50.0, 50.0, 50.0],
    ("raw_copy", "coalesced"): [1.0, 1.0, 1.0],
}


def _write(base: Path) -> None:
    for (impl, scenario), values in NS.items():
        folder = base / impl / scenario
        folder.mkdir(parents=True)
        rows = "".join(f"{i},{v},0.99\n" for i, v in enumerate(values, 1))
        (folder / "runs.csv").write_text(
            "run,service_cpu_ns_per_byte,service_cpu_avg_cores\n" + rows
        )


def test_protocol_targets_use_medians_and_the_issue_limits(tmp_path: Path) -> None:
    _write(tmp_path)
    checks = {c.target: c for c in cpu_checks(tmp_path, "uvloop")}
    coalesced = checks["6a coalesced handoff <= 1.05 x manual_protocol"]
    assert coalesced.ratio is not None and abs(coalesced.ratio - 1.1) < 1e-9
    assert not coalesced.passed  # 1.10 > 1.05
    fragmented = checks["6b fragmented handoff <= 1.05 x manual_protocol"]
    assert fragmented.passed and abs(fragmented.ratio - 55 / 60) < 1e-9  # type: ignore[operator]
    assert checks["6c coalesced handoff <= 1.2 x raw_protocol"].passed  # 1.1 / 1.0
    assert checks["6d coalesced handoff_splice <= 0.75 x raw_protocol"].passed  # 0.5
    assert not checks["2 fragmented handoff <= manual_vec"].passed  # 55 / 50


def test_every_ratio_target_and_the_saturation_rows_are_checked(tmp_path: Path) -> None:
    _write(tmp_path)
    names = [c.target for c in cpu_checks(tmp_path, "asyncio")]
    tags = [name.split()[0] for name in names]
    assert tags == ["1a", "1b", "2", "5", "6a", "6b", "6c", "6d", *["3"] * 6], names
    assert "1b coalesced handoff <= 1.15 x raw_copy" in names
    assert "3 coalesced service saturated: raw_protocol" in names


def test_targets_of_implementations_that_did_not_run_are_left_out(tmp_path: Path) -> None:
    # No splice (not Linux) and no protocol baselines: targets 5 and 6 are not checked.
    _write(tmp_path)
    for impl in ("handoff_splice", "manual_protocol", "raw_protocol"):
        shutil.rmtree(tmp_path / impl)
    tags = [c.target.split()[0] for c in cpu_checks(tmp_path, "asyncio")]
    assert tags == ["1a", "1b", "2", "3", "3", "3"]  # handoff, manual_vec, raw_copy


def test_a_missing_headline_baseline_is_a_failed_run_not_a_pass(tmp_path: Path) -> None:
    _write(tmp_path)
    shutil.rmtree(tmp_path / "manual_vec")
    with pytest.raises(RunError, match=r"manual_vec/coalesced/runs\.csv"):
        cpu_checks(tmp_path, "asyncio")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--runs", "2"], "argument --runs: expected a whole number from 3 to 10000, got '2'"),
        (["--runs", "9" * 30], "argument --runs: expected a whole number from 3 to 10000"),
        (["--duration-seconds", "inf"], "argument --duration-seconds: expected seconds above 0"),
        (["--duration-seconds", "nan"], "argument --duration-seconds: expected seconds above 0"),
        (["--sustained-seconds", "1e300"], "argument --sustained-seconds: expected seconds"),
        (["--connections", "0"], "argument --connections: expected a whole number from 1"),
        (["--service-cores", "4096"], "argument --service-cores: CPU 4096 in '4096' is not"),
        (["--loops", "trio"], "--loops takes uvloop and/or asyncio, got 'trio'"),
    ],
)
def test_bad_flags_are_one_line_before_any_run(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "check-targets.sh"), *args, "--results-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("check-targets.sh: error: "), proc.stderr
    assert needle in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []
