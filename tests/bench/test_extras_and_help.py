"""Without the bench extra every run says which extra to install in one line and
exits 2, while ``--help`` and ``--version`` still answer; ``--help`` shows
defaults, examples and the exit statuses; ``--version``.

A missing package is simulated in a subprocess: a ``sitecustomize`` on
``PYTHONPATH`` sets ``sys.modules[name] = None`` for each name in
``BH_HIDE`` (so ``import name`` raises ``ImportError``), or a stub module
that raises ``ImportError`` when imported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness_support import help_blocks

import bytes_handoff
from bytes_handoff_bench.harness import cli
from bytes_handoff_bench.soak import cli as soak
from bytes_handoff_bench.tools import (
    cost_curve,
    library_ab,
    merge_drivers,
    profilers,
    targets,
    two_hosts,
    wrapper,
)

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
HINT = "install the bench extra: pip install 'bytes-handoff[bench]'"
VERSION = f"bytes-handoff {bytes_handoff.__version__}"

SITECUSTOMIZE = """\
import os
import sys

for _name in os.environ.get("BH_HIDE", "").split():
    sys.modules[_name] = None
"""

PY = [sys.executable, "-m", "bytes_handoff_bench"]
SCRIPT = Path(sys.executable).parent / "bytes-handoff-bench"

# (name, command): every entry point of the bench extra, as a run that would start at once.
ENTRY_POINTS: list[tuple[str, list[str]]] = [
    ("python -m bytes_handoff_bench", PY),
    ("bytes-handoff-bench", [str(SCRIPT)]),
    ("run-stream-harness.sh", ["bash", str(BENCH / "run-stream-harness.sh")]),
    ("run-stream-matrix.sh", ["bash", str(BENCH / "run-stream-matrix.sh")]),
    ("run-fault-soak.sh", ["bash", str(BENCH / "run-fault-soak.sh")]),
    ("check-targets.sh", ["bash", str(BENCH / "check-targets.sh")]),
    ("run-split-service-perf.sh", ["bash", str(BENCH / "run-split-service-perf.sh")]),
    ("run-split-service-strace.sh", ["bash", str(BENCH / "run-split-service-strace.sh")]),
    ("run-two-hosts.sh", ["bash", str(BENCH / "run-two-hosts.sh")]),
    ("run-cost-curve.sh", ["bash", str(BENCH / "run-cost-curve.sh")]),
    # It needs a report to start: the one it is given need not exist (checked after the extra).
    ("merge-drivers.sh", ["bash", str(BENCH / "merge-drivers.sh"), "driver-0.txt"]),
]
#: The programs that need no bench extra (the micro one, or none), which answer too.
OTHER_PROGRAMS: list[tuple[str, list[str]]] = [
    ("run-criterion-baseline.sh", ["bash", str(BENCH / "run-criterion-baseline.sh")]),
    ("run-library-ab.sh", ["bash", str(BENCH / "run-library-ab.sh")]),
    ("run-http-proxy-load.sh", ["bash", str(BENCH / "run-http-proxy-load.sh")]),
    ("publish-results.sh", ["bash", str(BENCH / "publish-results.sh")]),
]
PACKAGES = {"hdrh": "hdrhistogram", "rich": "rich", "matplotlib": "matplotlib"}


@pytest.fixture(scope="module")
def hide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hide")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def run(
    cmd: list[str],
    pythonpath: Path | None = None,
    hide: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHON": sys.executable, "BH_HIDE": hide, **(env or {})}
    if pythonpath is not None:
        full["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonpath), os.environ.get("PYTHONPATH", "")) if p
        )
    return subprocess.run(
        cmd, cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def entry_cases() -> list[tuple[str, list[str], str]]:
    # hdrh everywhere; rich and matplotlib on the harness and the two run wrappers.
    every = ("python -m bytes_handoff_bench", "run-stream-harness.sh", "run-stream-matrix.sh")
    return [
        (name, cmd, module)
        for name, cmd in ENTRY_POINTS
        for module in PACKAGES
        if module == "hdrh" or name in every
    ]


@pytest.mark.parametrize(
    ("name", "cmd", "module"),
    entry_cases(),
    ids=[f"{n}-without-{m}" for n, _c, m in entry_cases()],
)
def test_missing_package_is_one_line_exit_2(
    name: str, cmd: list[str], module: str, hide_dir: Path
) -> None:
    if cmd[0] == str(SCRIPT) and not SCRIPT.exists():
        pytest.skip("the bytes-handoff-bench script is not installed beside this interpreter")
    proc = run(cmd, hide_dir, hide=module)
    prog = "bytes-handoff-bench" if "bytes" in name else name
    line = assert_one_line(proc, f"missing {PACKAGES[module]}", HINT)
    assert line.startswith(f"{prog}: error: "), line
    assert proc.stdout == "", proc.stdout


def test_every_missing_package_is_named_in_the_one_line(hide_dir: Path) -> None:
    proc = run(PY, hide_dir, hide="hdrh rich matplotlib uvloop")
    line = assert_one_line(proc, "missing hdrhistogram, rich, matplotlib:", HINT)
    assert "uvloop" not in line  # optional: the default loop falls back to asyncio


def test_a_broken_install_is_found_too(tmp_path: Path) -> None:
    # An hdrh that is there but fails to import (as a half-installed wheel would).
    (tmp_path / "hdrh").mkdir()
    (tmp_path / "hdrh" / "__init__.py").write_text("raise ImportError('broken hdrh')\n")
    assert_one_line(run(PY, tmp_path), "missing hdrhistogram", HINT)


ALL_PROGRAMS = [
    (name, cmd)
    for name, cmd in [*ENTRY_POINTS, *OTHER_PROGRAMS]
    if name != "python -m bytes_handoff_bench"
] + [("python -m bytes_handoff_bench", PY)]


@pytest.mark.parametrize(("name", "cmd"), ALL_PROGRAMS, ids=[n for n, _c in ALL_PROGRAMS])
def test_help_and_version_answer_without_the_extra(
    name: str, cmd: list[str], hide_dir: Path
) -> None:
    # Only a run needs the bench extra: asking what a program does or which version it is
    # does not.
    if cmd[0] == str(SCRIPT) and not SCRIPT.exists():
        pytest.skip("the bytes-handoff-bench script is not installed beside this interpreter")
    hide = "hdrh rich matplotlib uvloop"
    version = run([*cmd, "--version"], hide_dir, hide=hide)
    assert (version.returncode, version.stdout, version.stderr) == (0, f"{VERSION}\n", "")
    helped = run([*cmd, "--help"], hide_dir, hide=hide)
    assert helped.returncode == 0, helped.stderr
    assert helped.stderr == ""
    text = " ".join(helped.stdout.split())
    assert "--version" in text, text


@pytest.mark.parametrize(("name", "cmd"), ALL_PROGRAMS, ids=[n for n, _c in ALL_PROGRAMS])
def test_every_help_says_the_exit_statuses(name: str, cmd: list[str]) -> None:
    if cmd[0] == str(SCRIPT) and not SCRIPT.exists():
        pytest.skip("the bytes-handoff-bench script is not installed beside this interpreter")
    proc = run([*cmd, "--help"])
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    if name == "run-criterion-baseline.sh":  # pytest's statuses, said in its own words
        assert "Exit status: pytest's; 2 for a bad setting" in text, text
        assert "130 interrupted" in text, text
        return
    statuses = text[text.index("exit status: ") :]
    assert statuses.startswith("exit status: 0 "), statuses
    for needle in (", 1 ", ", 2 bad usage", ", 130 interrupted (Ctrl-C or SIGTERM)"):
        assert needle in statuses, (needle, statuses)
    assert (", 3 a target missed" in statuses) == (name == "check-targets.sh"), statuses


def test_the_load_script_says_in_one_line_that_it_runs_without_uvloop(
    hide_dir: Path,
) -> None:
    # It needs no bench extra; without uvloop its default --loops drops uvloop, and says so.
    script = ["bash", str(BENCH / "run-http-proxy-load.sh")]
    note = (
        "run-http-proxy-load.sh: note: uvloop is not installed, so the proxy runs on asyncio"
        " only (--loops asyncio; pip install uvloop)"
    )
    proc = run([*script, "--tool", "none"], hide_dir, hide="uvloop hdrh rich matplotlib")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == note, proc.stderr
    assert lines[1].startswith("run-http-proxy-load.sh: error: argument --tool"), proc.stderr
    assert "missing" not in proc.stderr  # the bench extra is not needed
    # Not said when the loops are given, nor when uvloop is there.
    for cmd, hide in (([*script, "--loops", "asyncio", "--tool", "none"], "uvloop"),
                      ([*script, "--tool", "none"], "")):  # fmt: skip
        quiet = run(cmd, hide_dir, hide=hide)
        assert quiet.returncode == 2 and "note:" not in quiet.stderr, quiet.stderr


def test_missing_rich_is_found_before_any_run(hide_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    tiny = ["--runs", "1", "--connections", "1", "--tunnel-bytes", "0"]
    harness = run(
        ["bash", str(BENCH / "run-stream-harness.sh"), *tiny, "--results-dir", str(results)],
        hide_dir,
        hide="rich",
    )
    assert_one_line(harness, "missing rich", HINT)
    matrix = run(
        ["bash", str(BENCH / "run-stream-matrix.sh")],
        hide_dir,
        hide="rich",
        env={"RESULTS_DIR": str(results), "RUNS": "1", "CONNECTIONS": "1", "TUNNEL_BYTES": "0"},
    )
    assert_one_line(matrix, "missing rich", HINT)
    assert not results.exists()  # no run folder: nothing started


@pytest.fixture(scope="module")
def broken_uvloop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nouvloop")
    (folder / "uvloop.py").write_text("raise ImportError('No module named uvloop')\n")
    return folder


def test_default_loop_falls_back_to_asyncio_without_uvloop(broken_uvloop: Path) -> None:
    code = (
        "from bytes_handoff_bench.harness.cli import config_from_args;"
        "from bytes_handoff_bench.extras import default_loop;"
        "print(default_loop(), config_from_args([]).loop)"
    )
    proc = run([sys.executable, "-c", code], broken_uvloop)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["asyncio", "asyncio"]


@pytest.mark.parametrize(
    ("cmd", "env", "prog"),
    [
        ([*PY, "--loop", "uvloop"], {}, "bytes-handoff-bench"),
        (
            ["bash", str(BENCH / "run-stream-harness.sh"), "--loop", "uvloop", "--runs", "1"],
            {},
            "run-stream-harness.sh",
        ),
        (["bash", str(BENCH / "run-stream-matrix.sh")], {"LOOP": "uvloop"}, "run-stream-matrix.sh"),
        (
            ["bash", str(BENCH / "run-fault-soak.sh"), "--loop", "uvloop"],
            {},
            "run-fault-soak.sh",
        ),
        (
            ["bash", str(BENCH / "check-targets.sh"), "--loops", "uvloop"],
            {},
            "check-targets.sh",
        ),
    ],
    ids=["harness", "wrapper", "matrix", "soak", "targets"],
)
def test_loop_uvloop_without_uvloop_is_one_line(
    cmd: list[str], env: dict[str, str], prog: str, broken_uvloop: Path, tmp_path: Path
) -> None:
    env = {**env, "RESULTS_DIR": str(tmp_path / "results")}
    line = assert_one_line(run(cmd, broken_uvloop, env=env), "uvloop is not installed", HINT)
    assert line.startswith(f"{prog}: error: "), line
    assert not (tmp_path / "results").exists()


# -- help and version -------------------------------------------------------------------------


PARSERS = {
    "harness": cli.build_parser,
    "wrapper": lambda: wrapper.build_parser("run-stream-harness.sh"),
    "perf": lambda: profilers.build_parser("run-split-service-perf.sh", "perf"),
    "strace": lambda: profilers.build_parser("run-split-service-strace.sh", "strace"),
    "targets": lambda: targets.build_parser("check-targets.sh"),
    "two-hosts": lambda: two_hosts.build_parser("run-two-hosts.sh"),
    "library-ab": lambda: library_ab.build_parser("run-library-ab.sh"),
    "cost-curve": lambda: cost_curve.build_parser("run-cost-curve.sh"),
    "merge-drivers": lambda: merge_drivers.build_parser("merge-drivers.sh"),
}
#: Every program's parser, the soak's too (its options' words are the soak's own).
ALL_PARSERS = {**PARSERS, "soak": lambda: soak.build_parser("run-fault-soak.sh")}


@pytest.mark.parametrize("which", list(ALL_PARSERS))
def test_help_shows_every_default(which: str) -> None:
    # What --help prints: every option that has a default shows it, with or without words.
    parser = ALL_PARSERS[which]()
    blocks = help_blocks(parser.format_help())
    for action in parser._actions:
        if (
            not action.option_strings
            or action.help == argparse.SUPPRESS
            or action.default in (None, argparse.SUPPRESS)
            or isinstance(action.default, bool)
        ):
            continue
        flag = max(action.option_strings, key=len)
        assert flag in blocks, (flag, list(blocks))
        assert f"(default: {action.default})" in " ".join(blocks[flag].split()), blocks[flag]


@pytest.mark.parametrize("which", list(PARSERS))
def test_every_option_has_help_and_shows_its_default(which: str) -> None:
    parser = PARSERS[which]()
    formatter = parser._get_formatter()
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings
        if (
            action.default not in (None, argparse.SUPPRESS)
            and not isinstance(action.default, bool)  # a switch: off unless given
            and action.option_strings
        ):
            shown = formatter._get_help_string(action) or ""  # what --help prints for it
            assert "default" in shown, (action.option_strings, shown)


@pytest.mark.parametrize(
    "cmd",
    [[*PY, "--help"], ["bash", str(BENCH / "run-stream-harness.sh"), "--help"]],
    ids=["harness", "wrapper"],
)
def test_help_has_defaults_examples_and_the_worker_wording(cmd: list[str]) -> None:
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "Examples:" in text
    assert "(default: fragmented)" in text
    assert "(default: handoff)" in text
    at = text.index("--worker-threads WORKER_THREADS", text.index("options:"))
    worker = text[at : at + 260]
    assert "worker processes" in worker, worker
    assert "one event loop per process" in worker, worker
    assert "GIL" in worker, worker


@pytest.mark.parametrize(
    "cmd",
    [
        [*PY, "--version"],
        ["bash", str(BENCH / "run-stream-harness.sh"), "--version"],
        [str(SCRIPT), "--version"],
    ],
    ids=["python -m", "wrapper", "script"],
)
def test_version(cmd: list[str]) -> None:
    if cmd[0] == str(SCRIPT) and not SCRIPT.exists():
        pytest.skip("the bytes-handoff-bench script is not installed beside this interpreter")
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{VERSION}\n"
    assert proc.stderr == ""


def test_criterion_script_names_the_micro_extra(hide_dir: Path) -> None:
    # The micro-benchmarks need the micro extra (pytest-benchmark; uvloop for BENCH_LOOP=uvloop).
    proc = run(
        ["bash", str(BENCH / "run-criterion-baseline.sh")],
        hide_dir,
        hide="pytest_benchmark uvloop",
        env={"BENCH_LOOP": "uvloop"},
    )
    line = assert_one_line(
        proc,
        "missing pytest-benchmark, uvloop",
        "install the micro extra",
        "pip install 'bytes-handoff[micro]'",
    )
    assert line.startswith("run-criterion-baseline.sh: error: "), line


@pytest.mark.parametrize(
    ("name", "cmd"),
    [
        ("bytes-handoff-bench --help", [*PY, "--help"]),
        ("publish-results.sh --dry-run", ["bash", str(BENCH / "publish-results.sh"), "--dry-run"]),
    ],
)
def test_output_into_a_closed_pipe_ends_quietly_with_the_shells_status(
    name: str, cmd: list[str]
) -> None:
    # `| head -1` that has already exited: every write to stdout fails with EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(cmd, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    # argparse's --help drops a failed write itself (status 0); our own output: 141.
    assert proc.returncode == (0 if "--help" in cmd else 141), proc.stderr
    assert proc.stderr == ""
