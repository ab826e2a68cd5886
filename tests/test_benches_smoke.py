"""Smoke test of the micro-benchmarks and their baseline script (no timing assertions).

Runs ``bench/run-criterion-baseline.sh`` once over every family with tiny
inputs (``BENCH_SMOKE=1``) and minimal settings, then reads the saved JSON:
every family and case benches/README.md names must be there with a positive median and
a positive throughput. Also checks ``--save`` then ``--compare``, that bad
input fails with one clear line (exit 2), and that the families are the
benchmark functions pytest collects (``micro.collect_families``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bytes_handoff_bench.tools import micro

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
        # Not numbers, not finite, negative or too large: refused before anything runs.
        ({"SAMPLE_SIZE": "NaN"}, (), "SAMPLE_SIZE must be a whole number >= 1, got 'NaN'"),
        ({"SAMPLE_SIZE": "-5"}, (), "SAMPLE_SIZE must be a whole number >= 1, got '-5'"),
        ({"SAMPLE_SIZE": "0"}, (), "SAMPLE_SIZE must be a whole number >= 1"),
        ({"SAMPLE_SIZE": "9" * 5000}, (), "SAMPLE_SIZE must be at most 1000000"),
        ({"MEASUREMENT_TIME": "nan"}, (), "MEASUREMENT_TIME must be a number of seconds > 0"),
        ({"MEASUREMENT_TIME": "inf"}, (), "MEASUREMENT_TIME must be a number of seconds > 0"),
        ({"MEASUREMENT_TIME": "-1"}, (), "MEASUREMENT_TIME must be a number of seconds > 0"),
        ({"MEASUREMENT_TIME": "1" * 400}, (), "MEASUREMENT_TIME must be at most 3600 seconds"),
        ({"WARM_UP_TIME": "-0.5"}, (), "WARM_UP_TIME must be a number of seconds >= 0"),
        ({"WARM_UP_TIME": "NaN"}, (), "WARM_UP_TIME must be a number of seconds >= 0"),
        ({"WARM_UP_TIME": "86400"}, (), "WARM_UP_TIME must be at most 3600 seconds"),
        ({"PERF_STAT": "yes"}, (), "PERF_STAT must be 0 or 1, got 'yes'"),
        ({"BENCH_LOOP": "trio"}, (), "BENCH_LOOP must be uvloop or asyncio, got 'trio'"),
        ({"BENCH": " , "}, (), "BENCH is empty"),
        ({"SAVE": "a/b"}, (), "SAVE name may use letters, digits"),
        ({"COMPARE_FAIL": "median:5%"}, (), "COMPARE_FAIL needs COMPARE"),
        ({}, ("--save",), "--save needs a NAME"),
        ({}, ("--compare", "0042"), "no saved run '0042' under"),
        ({}, ("--compare", "a/b"), "COMPARE must be a saved run name, a run number or a file"),
    ],
)
def test_bad_input_fails_with_one_clear_line(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    proc = run_script(tmp_path, *args, **env)
    assert proc.returncode != 0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not saved_runs(tmp_path, "*")


def test_compare_with_a_missing_baseline_names_the_saved_runs(tmp_path: Path) -> None:
    saved = tmp_path / "Linux-CPython-3.11-64bit"
    saved.mkdir()
    (saved / "0001_before.json").write_text("{}")
    proc = run_script(tmp_path, "--compare", "after", BENCH="take_tail_mode_switch")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line == (
        f"run-criterion-baseline.sh: error: no saved run 'after' under {tmp_path.resolve()} "
        "(saved: 0001_before.json)"
    )
    assert proc.stdout == ""


# -- the families come from the benchmarks themselves ------------------------------------------


def bench_functions() -> list[str]:
    """Every ``test_<family>`` function of ``benches/test_bench_*.py``, in file order."""
    names = []
    for path in sorted((ROOT / "benches").glob("test_bench_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names += [
            node.name.removeprefix("test_")
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        ]
    return names


def test_every_bench_function_is_a_family() -> None:
    families = micro.collect_families(sys.executable, ROOT / "benches")
    assert list(families) == bench_functions()
    assert set(families) == set(EXPECTED)
    # A family selects its function once, whatever its parameters.
    assert families["take_tail_mode_switch"] == [
        f"{ROOT / 'benches' / 'test_bench_read.py'}::test_take_tail_mode_switch"
    ]
    assert len(families["read_owned_lines"]) == 1


def test_a_new_bench_function_is_a_new_family(tmp_path: Path) -> None:
    benches = tmp_path / "benches"
    benches.mkdir()
    (benches / "test_bench_fake.py").write_text(
        "import pytest\n\n\n"
        "@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_fake_family(n):\n    pass\n\n\n"
        "def test_other_fake(): pass\n"
    )
    families = micro.collect_families(sys.executable, benches)
    assert families == {
        "fake_family": [f"{benches / 'test_bench_fake.py'}::test_fake_family"],
        "other_fake": [f"{benches / 'test_bench_fake.py'}::test_other_fake"],
    }
    assert micro.select("other_fake, fake_family,fake_family", families) == [
        *families["other_fake"],
        *families["fake_family"],
    ]
    (benches / "test_bench_fake.py").write_text("def test_broken(:\n")
    with pytest.raises(micro.RunError, match="exited with status"):
        micro.collect_families(sys.executable, benches)


def test_help_lists_every_family(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "SAMPLE_SIZE=100" in proc.stdout and "--compare NAME" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "Families: " + " ".join(bench_functions())
