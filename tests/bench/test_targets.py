"""bench/check-targets.sh's arithmetic: paired per-round ratios of the service's ns/B, their
confidence intervals, and pass / MISS / inconclusive with the runs that would decide."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bytes_handoff_bench.processes import RunError
from bytes_handoff_bench.tools.intervals import Verdict
from bytes_handoff_bench.tools.targets import (
    EXIT_INCONCLUSIVE,
    EXIT_MISSED,
    Check,
    build_parser,
    cpu_checks,
    exit_status,
    render,
)

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


def _write(base: Path, ns: dict[tuple[str, str], list[float]] = NS) -> None:
    for (impl, scenario), values in ns.items():
        folder = base / impl / scenario
        folder.mkdir(parents=True)
        rows = "".join(f"{i},{v},0.99\n" for i, v in enumerate(values, 1))
        (folder / "runs.csv").write_text(
            "run,service_cpu_ns_per_byte,service_cpu_avg_cores\n" + rows
        )


def test_protocol_targets_use_paired_rounds_and_the_issue_limits(tmp_path: Path) -> None:
    _write(tmp_path)
    checks = {c.target: c for c in cpu_checks(tmp_path, "uvloop")}
    # Per round 1.0, 1.2, 1.1: geometric mean 1.097, a 95 % interval of [0.874, 1.376]
    # (ln: mean 0.0925, sd 0.0912, t(0.975, 2) = 4.303): 1.05 is inside it, so no verdict.
    coalesced = checks["6a coalesced handoff <= 1.05 x manual_protocol"]
    assert (
        coalesced.ratio is not None
        and abs(coalesced.ratio - 1.2 ** (1 / 3) * 1.1 ** (1 / 3)) < 1e-9
    )
    assert coalesced.estimate is not None and coalesced.estimate.low is not None
    assert abs(coalesced.estimate.low - 0.874) < 1e-3 and coalesced.verdict is Verdict.INCONCLUSIVE
    assert not coalesced.passed
    # Runs needed: the centre is ln 1.0975 - ln 1.05 = 0.0437 from the limit; the half-width
    # t(n - 1) * 0.0912 / sqrt(n) drops below it at n = 20 (2.093 / 4.47 * 0.0912 = 0.0427).
    assert coalesced.row()[-2:] == ["inconclusive", "~20"]
    assert checks["6b fragmented handoff <= 1.05 x manual_protocol"].verdict is Verdict.INCONCLUSIVE
    # handoff_splice 0.5 per round against 1.0, 0.9, 1.0: [0.446, 0.600], all of it <= 0.75.
    splice = checks["6d coalesced handoff_splice <= 0.75 x raw_protocol"]
    assert splice.passed and splice.verdict is Verdict.PASS and splice.row()[-1] == "-"
    assert checks["2 fragmented handoff <= manual_vec"].verdict is Verdict.INCONCLUSIVE


#: Rounds that swing together (host noise), with clear per-round ratios.
CLEAR = {
    # 1a <= 0.6 x manual_vec: 0.50, 0.49, 0.52 per round: pass.
    ("handoff", "coalesced"): [1.0, 2.0, 1.5],
    ("manual_vec", "coalesced"): [2.0, 4.1, 2.9],
    # 1b <= 1.15 x raw_copy: 2.0 in every round: MISS.
    ("raw_copy", "coalesced"): [0.5, 1.0, 0.75],
    # 2 <= 1 x manual_vec: 1.04, 0.97, 1.06 per round: the interval straddles 1.
    ("handoff", "fragmented"): [50.0, 60.0, 55.0],
    ("manual_vec", "fragmented"): [48.0, 62.0, 52.0],
}


def test_a_clear_pass_a_clear_miss_and_an_overlap(tmp_path: Path) -> None:
    _write(tmp_path, CLEAR)
    checks = {c.target.split()[0]: c for c in cpu_checks(tmp_path, "asyncio")}
    assert checks["1a"].verdict is Verdict.PASS
    assert checks["1b"].verdict is Verdict.MISS and checks["1b"].row()[-1] == "-"
    overlap = checks["2"]
    assert overlap.verdict is Verdict.INCONCLUSIVE
    assert overlap.estimate is not None and overlap.estimate.low is not None
    assert overlap.estimate.low < 1.0 < overlap.estimate.high  # type: ignore[operator]
    needed = overlap.row()[-1]
    assert needed.startswith("~") and int(needed[1:]) > 3, needed
    # Unpaired, the medians (55 vs 52: 1.06x) would hide how much the rounds swing.
    assert overlap.measured == "handoff 55.000 / manual_vec 52.000 ns/B"
    # Saturation rows: the mean of the rounds' cores with its interval (0.99 each: a point).
    saturated = checks["3"]
    assert saturated.verdict is Verdict.PASS and saturated.row()[4] == "[0.990, 0.990]"


def test_exit_status_a_miss_before_an_inconclusive_before_a_pass(tmp_path: Path) -> None:
    _write(tmp_path, CLEAR)
    checks = {c.target.split()[0]: c for c in cpu_checks(tmp_path, "asyncio")}
    assert exit_status([checks["1a"]]) == 0
    assert exit_status([checks["1a"], checks["2"]]) == EXIT_INCONCLUSIVE == 4
    assert exit_status([checks["2"], checks["1b"], checks["1a"]]) == EXIT_MISSED == 3
    # A check of one figure (the memory runs) has no interval: the figure decides.
    memory = Check("4a", "uvloop", "30.2 MiB", None, 64, True)
    assert memory.verdict is Verdict.PASS and memory.row()[4] == "-"
    assert exit_status([memory, Check("4b", "uvloop", "2 MiB/min", None, 1, False)]) == 3
    table = render([checks["1a"], checks["2"], memory], "Targets")
    header = next(line for line in table.splitlines() if line.startswith("| target |"))
    assert "| ratio (paired) | 95% CI | limit | result | runs needed |" in header
    assert "| inconclusive | ~" in table


def test_help_names_every_exit_status() -> None:
    text = " ".join(build_parser("check-targets.sh").format_help().split())
    assert "3 a target missed" in text
    assert "4 no target missed but one is inconclusive" in text


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


# -- at equal offered load (informational, beside the targets) ---------------------------------


def _saturated(base: Path, streams_per_sec: dict[str, list[float]]) -> None:
    for impl, values in streams_per_sec.items():
        folder = base / impl / "coalesced"
        folder.mkdir(parents=True)
        rows = "".join(f"{i},{v}\n" for i, v in enumerate(values, 1))
        (folder / "runs.csv").write_text("run,streams_per_sec\n" + rows)


def _at_load(folder: Path, rows: dict[str, list[tuple[float, float, str]]]) -> None:
    for impl, runs in rows.items():
        (folder / impl).mkdir(parents=True)
        lines = "".join(
            f"{i},{cores},{cores * 2},{p99},{'true' if behind else 'false'}\n"
            for i, (cores, p99, behind) in enumerate(runs, 1)
        )
        (folder / impl / "runs.csv").write_text(
            "run,service_cpu_avg_cores,achieved_streams_per_sec,latency_p99_micros,fell_behind\n"
            + lines
        )


def test_equal_load_is_a_fraction_of_the_slowest_saturated_rate(tmp_path: Path) -> None:
    from bytes_handoff_bench.tools.equal_load import equal_load_rate, saturated_streams_per_sec

    _saturated(tmp_path, {"handoff": [600, 640, 620], "manual_vec": [500, 480, 530]})
    (tmp_path / "handoff" / "fragmented").mkdir()  # another scenario: not looked at
    saturated = saturated_streams_per_sec(tmp_path)
    assert saturated == {"handoff": 620, "manual_vec": 500}  # medians
    assert equal_load_rate(saturated, 0.5) == (250.0, "manual_vec")
    assert equal_load_rate({"a": 333.3}, 0.5) == (167.0, "a")  # 3 significant digits


def test_equal_load_runs_every_implementation_at_that_rate_and_marks_fell_behind(
    tmp_path: Path,
) -> None:
    from bytes_handoff_bench.tools.equal_load import measure

    saturated = tmp_path / "saturated"
    _saturated(saturated, {"handoff": [600], "manual_vec": [400], "raw_copy": [800]})
    asked: list[list[str]] = []

    def run_all(extra: list[str], dest: Path) -> Path:
        asked.append(extra)
        _at_load(
            dest,
            {
                "handoff": [(0.5, 3000, False), (0.7, 5000, False), (0.6, 4000, False)],
                "manual_vec": [(0.9, 9000, False), (0.8, 90000, True), (0.9, 8000, False)],
                "raw_copy": [(0.3, 2000, False), (0.3, 2000, False), (0.3, 2000, False)],
            },
        )
        return dest

    text = measure(saturated, "uvloop", 0.5, 3, run_all, tmp_path / "at-load")
    assert asked == [["--scenario", "coalesced", "--rate", "200"]]  # 0.5 x manual_vec's 400
    assert "200 streams/s, open loop" in text and "(manual_vec, 400.0 streams/s" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert lines["| handoff"] == "| handoff | 1.2 | 0.600 | n/a | 4.00 | 1.00x | no |"  # medians
    assert lines["| raw_copy"].endswith("| 0.50x | no |")
    # One of its runs fell behind: marked, and no ratio.
    assert lines["| manual_vec"].endswith("| n/a | FELL_BEHIND=1/3 |")


@pytest.mark.parametrize("value", ["0", "1.5", "nan", "half"])
def test_a_bad_equal_load_fraction_is_one_line(tmp_path: Path, value: str) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "check-targets.sh"), "--equal-load-fraction", value,
         "--results-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "argument --equal-load-fraction: expected a fraction above 0 and at most 1" in lines[0]
    assert list(tmp_path.iterdir()) == []
