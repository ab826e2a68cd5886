"""bench/run-library-ab.sh: two revisions of the library side by side in one process.

The arithmetic and the rotation are checked on fake bench modules whose rounds
take known times on a fake clock; the real command is run once on the tiny
inputs against ``HEAD`` and its output checked for structure, never for how
fast anything ran; the case list must be exactly what pytest collects from
``benches/``.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from harness_support import assert_one_line_error, run_script

from bytes_handoff_bench.errors import BenchError
from bytes_handoff_bench.tools import library_ab
from bytes_handoff_bench.tools.library_ab import Case, compare_case, renamed, run_block

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "run-library-ab.sh"
needs_git = pytest.mark.skipif(
    not (ROOT / ".git").exists(), reason="needs a git checkout (not an unpacked sdist)"
)


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_script(SCRIPT, *args, env={"BENCH_SMOKE": "1"}, timeout=timeout)


# -- renaming the library's imports ---------------------------------------------------------


def test_renamed_rewrites_every_absolute_import_of_the_library_and_nothing_else() -> None:
    source = (
        "from bytes_handoff import HandoffBuffer\n"
        "import bytes_handoff\n"
        "from bytes_handoff.errors import WriteClosed\n"
        "    from bytes_handoff.adapters import as_reader\n"
        "from bytes_handoff_bench.names import Loop\n"
        "from .errors import _renamed\n"
        'MESSAGE = "bytes_handoff.BufferError is deprecated"\n'
    )
    assert renamed(source, "bytes_handoff_base") == (
        "from bytes_handoff_base import HandoffBuffer\n"
        "import bytes_handoff_base\n"
        "from bytes_handoff_base.errors import WriteClosed\n"
        "    from bytes_handoff_base.adapters import as_reader\n"
        "from bytes_handoff_bench.names import Loop\n"
        "from .errors import _renamed\n"
        'MESSAGE = "bytes_handoff.BufferError is deprecated"\n'
    )


@needs_git
def test_prepare_lays_out_the_revision_and_the_tree_under_their_own_names(
    tmp_path: Path,
) -> None:
    commit = library_ab.resolve("HEAD~1")
    stems = library_ab.prepare(commit, tmp_path)
    assert stems == ["test_bench_read", "test_bench_write"]
    pkgs = tmp_path / "pkgs"
    at_rev = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:src/bytes_handoff/write_queue.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    written = (pkgs / "bytes_handoff_base" / "write_queue.py").read_text()
    assert written == renamed(at_rev, "bytes_handoff_base")
    tree = (ROOT / "src" / "bytes_handoff" / "write_queue.py").read_text()
    for variant in ("tree", "tree2"):
        assert (pkgs / f"bytes_handoff_{variant}" / "write_queue.py").read_text() == renamed(
            tree, f"bytes_handoff_{variant}"
        )
    bench = (pkgs / "test_bench_write_base.py").read_text()
    assert "from bytes_handoff_base import (" in bench
    assert "from bytes_handoff import" not in bench


@needs_git
def test_the_cases_are_exactly_what_pytest_collects(tmp_path: Path) -> None:
    stems = library_ab.prepare(library_ab.resolve("HEAD"), tmp_path)
    sys.path.insert(0, str(tmp_path / "pkgs"))
    try:
        labels = [case.label for case in library_ab.find_cases(stems, None)]
    finally:
        sys.path.remove(str(tmp_path / "pkgs"))
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT / "benches",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = [
        line.split("::", 1)[1].removeprefix("test_")
        for line in collected.splitlines()
        if "::" in line
    ]
    assert labels == ids


# -- the measurement, on fake bench modules ---------------------------------------------------


class FakeClock:
    """Stands in for ``time`` in library_ab: a round "takes" what it adds, nothing is slept.

    The arithmetic and the rotation are then checked exactly, whatever the machine's load.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def fake_module(
    name: str, seconds_per_round: float, calls: list[str], clock: FakeClock
) -> ModuleType:
    """A bench module whose one case takes ``seconds_per_round`` a round on ``clock``."""
    module = ModuleType(name)

    def test_sleepy(measure: Callable[..., None], size: int) -> None:
        def round_() -> int:
            calls.append(name)
            clock.now += seconds_per_round
            return size

        def check(out: int) -> None:
            assert out == size

        measure(round_, family="sleepy", case=str(size), check=check, nbytes=size)

    module.test_sleepy = test_sleepy  # type: ignore[attr-defined]
    return module


def test_compare_case_measures_a_known_slowdown_and_rotates_who_goes_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(library_ab, "time", clock)
    calls: list[str] = []
    modules = {
        "base": fake_module("base", 0.002, calls, clock),
        "tree": fake_module("tree", 0.004, calls, clock),
        "tree2": fake_module("tree2", 0.004, calls, clock),
    }
    case = Case("test_sleepy", "fake", (("size", 7),))
    result = compare_case(modules, case, blocks=6, rounds=2, loop_name="asyncio")
    assert result.case == "sleepy[7]"
    assert result.blocks == 6
    assert result.ratio == pytest.approx(2.0)  # 4 ms against 2 ms
    assert result.aa_ratio == pytest.approx(1.0)  # the same code twice
    assert (result.base_s, result.tree_s) == (pytest.approx(0.002), pytest.approx(0.004))
    # A warm-up block each (1 + 1 rounds), then 6 blocks of 1 + 2 rounds each; the first
    # round of each block belongs to one variant, and each variant leads two blocks.
    assert len(calls) == 3 * 2 + 6 * 3 * 3
    blocks = calls[6:]
    leaders = [blocks[i] for i in range(0, len(blocks), 9)]
    assert sorted(leaders) == ["base", "base", "tree", "tree", "tree2", "tree2"]


def test_a_failing_check_fails_the_block() -> None:
    module = ModuleType("wrong")

    def test_wrong(measure: Callable[..., None]) -> None:
        def check(out: int) -> None:
            assert out == 0, f"expected 0, got {out}"

        measure(lambda: 1, family="wrong", case="x", check=check)

    module.test_wrong = test_wrong  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="expected 0, got 1"):
        run_block(module, Case("test_wrong", "fake", ()), 2, "asyncio")


def test_a_case_that_leaves_a_task_running_or_never_measures_is_an_error() -> None:
    module = ModuleType("leaky")

    def test_leaky(measure: Callable[..., None], loop: asyncio.AbstractEventLoop) -> None:
        async def start() -> None:
            loop.create_task(asyncio.sleep(60))

        def round_() -> None:
            loop.run_until_complete(start())

        measure(round_, family="leaky", case="x", check=lambda out: None)

    def test_idle(measure: Callable[..., Any]) -> None:
        pass

    module.test_leaky = test_leaky  # type: ignore[attr-defined]
    module.test_idle = test_idle  # type: ignore[attr-defined]
    with pytest.raises(BenchError, match=r"leaky: \d+ task\(s\) left running"):
        run_block(module, Case("test_leaky", "fake", ()), 1, "asyncio")
    with pytest.raises(BenchError, match="idle never called measure"):
        run_block(module, Case("test_idle", "fake", ()), 1, "asyncio")


# -- the command ------------------------------------------------------------------------------


@needs_git
def test_a_small_real_comparison_against_head(tmp_path: Path) -> None:
    proc = run(
        "HEAD",
        *("--bench", "split_prefix_mut,write_byte_budget_backpressure"),
        *("--blocks", "2", "--rounds", "1", "--loop", "asyncio"),
        *("--results-dir", str(tmp_path)),
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    (md,) = tmp_path.glob("HEAD_*.md")
    assert f"ab_md={md}" in proc.stdout
    payload = json.loads(md.with_suffix(".json").read_text())
    assert payload["commit"] == library_ab.resolve("HEAD") and payload["loop"] == "asyncio"
    cases = [r["case"] for r in payload["results"]]
    assert cases == [
        "split_prefix_mut[16]",
        "split_prefix_mut[64]",
        "split_prefix_mut[512]",
        "write_byte_budget_backpressure[try_write]",
        "write_byte_budget_backpressure[write]",
    ]
    # Structure only: how fast each side ran depends on the machine's load, not on this code.
    table = md.read_text()
    for r in payload["results"]:
        assert set(r) == {"case", "base_s", "tree_s", "ratio", "aa_ratio", "blocks"}
        assert r["blocks"] == 2
        for key in ("base_s", "tree_s", "ratio", "aa_ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        row = (
            f"| {r['case']} | {r['base_s'] * 1e3:,.3f} | {r['tree_s'] * 1e3:,.3f} "
            f"| {r['ratio']:.3f} | {r['aa_ratio']:.3f} |"
        )
        assert row in table.splitlines(), (row, table)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("no-such-rev-xyz",), "unknown revision 'no-such-rev-xyz'"),
        (("HEAD", "--frobnicate"), "unrecognized arguments: --frobnicate"),
        (("HEAD", "--bench", "read_everything"), "unknown family read_everything (known: "),
        (("HEAD", "--bench", ","), "unknown family ',' (known: "),
        (("HEAD", "--blocks", "0"), "argument --blocks: expected a whole number from 1 to 1000"),
        (("HEAD", "--blocks", "nan"), "argument --blocks: expected a whole number from 1 to 1000"),
        (
            ("HEAD", "--rounds", "9" * 5000),
            "argument --rounds: expected a whole number from 1 to 1000",
        ),
        (("HEAD", "--loop", "trio"), "argument --loop: invalid choice: 'trio'"),
        (("HEAD", "--cores", "4096"), "argument --cores: CPU 4096 in '4096' is not available here"),
        (("HEAD", "--cores", "x"), "argument --cores: expected a CPU list like 0 or 0-3,8"),
        ((), "the following arguments are required: rev"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], needle: str) -> None:
    if any("HEAD" in a or "rev" in a for a in args) and not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    line = assert_one_line_error(run(*args), "run-library-ab.sh")
    assert needle in line, line


def test_help_explains_the_comparison() -> None:
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    assert "A/A" in proc.stdout and "(default: 20)" in proc.stdout
