"""bench/run-stream-harness.sh and bench/run-stream-matrix.sh end to end, at
tiny sizes, plus their handling of bad input."""

from __future__ import annotations

import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness_support import assert_one_line_error, help_blocks, processes_mentioning
from harness_support import run_script as run

from bytes_handoff_bench.tools import matrix
from bytes_handoff_bench.tools.artifacts import (
    as_number,
    parse_kv_file,
    parse_kv_text,
    read_runs_csv,
    read_summary_csv,
)

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "bench" / "run-stream-harness.sh"
MATRIX = ROOT / "bench" / "run-stream-matrix.sh"

# A few KiB per connection: each run takes about a second, mostly interpreter start-up.
TINY = [
    "--connections",
    "2",
    "--route-frames",
    "4",
    "--frame-len",
    "32",
    "--tunnel-bytes",
    "4096",
    "--read-reserve",
    "1024",
    "--worker-threads",
    "1",
]


def one_run_folder(results: Path) -> Path:
    folders = [p for p in results.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def assert_summary_matches_runs(cell: Path, runs: int) -> None:
    rows = read_runs_csv(cell / "runs.csv")
    assert [r["run"] for r in rows] == [str(n) for n in range(1, runs + 1)]
    summary = read_summary_csv(cell / "summary.csv")
    assert "mib_per_sec" in summary and "cpu_ns_per_byte" in summary
    assert "pid" not in summary and "service_pid" not in summary
    for metric, stat in summary.items():
        values = [as_number(r[metric]) for r in rows if r[metric] != ""]
        assert all(v is not None for v in values), metric
        numbers = [v for v in values if v is not None]
        assert math.isclose(stat.mean, statistics.fmean(numbers), rel_tol=1e-9, abs_tol=1e-9)
        expected = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        assert math.isclose(stat.stdev, expected, rel_tol=1e-6, abs_tol=1e-9), metric


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--runs", "two"], "--runs"),
        (["--connections", "-3"], "--connections"),
        (["--runs"], "--runs"),
        (
            ["--runs", "99999999999999999999"],
            "argument --runs: expected a whole number from 1 to 10000",
        ),
        (["--runs", "1e3"], "argument --runs: expected a whole number from 1 to 10000"),
        (["--scenario", "sideways"], "--scenario"),
        (["--service-cores", "0"], "--driver-cores"),
        (["--transport", "tcp", "--driver-cores", "1"], "--service-cores"),
        (["--transport", "duplex", "--service-cores", "0", "--driver-cores", "1"], "tcp"),
        (["--service-cores", "0-999", "--driver-cores", "1"], "not available"),
        (["--frame-len", "8"], "--frame-len"),
        (
            ["--tunnel-bytes", "99999999999999999999"],
            "--tunnel-bytes must be at most 1073741824 (1 GiB), got 99999999999999999999",
        ),
        (["--transport", "duplex", "--implementation", "handoff_splice"], "--transport tcp"),
    ],
)
def test_harness_wrapper_bad_input(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = run(HARNESS, *args, "--results-dir", str(tmp_path), timeout=60)
    assert needle in assert_one_line_error(proc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ("file", "is a file, not a folder"),
        ("file/sub", "lies under a file"),
        ("", "--results-dir: expected a folder, got ''"),
        # Even root cannot create a file in /proc (os.access says it can).
        ("/proc/bytes-handoff-results", "cannot write in '/proc'"),
    ],
)
def test_harness_wrapper_refuses_a_bad_results_dir(tmp_path: Path, where: str, needle: str) -> None:
    (tmp_path / "file").write_text("not a folder\n")
    cwd = tmp_path / "cwd"  # where "" (that is, ".") would have put the results
    cwd.mkdir()
    path = where if not where or where.startswith("/") else str(tmp_path / where)
    proc = run(HARNESS, *TINY, "--results-dir", path, timeout=60, cwd=cwd)
    assert needle in assert_one_line_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "file"]
    assert list(cwd.iterdir()) == []


def test_harness_wrapper_refuses_what_the_harness_would(tmp_path: Path) -> None:
    # The harness refuses a write budget below the read reserve: so does the wrapper, first.
    proc = run(HARNESS, *TINY, "--write-pending-bytes", "10", "--results-dir", str(tmp_path))
    line = assert_one_line_error(proc)
    assert "--write-pending-bytes (10) must be 0 or at least --read-reserve (1024)" in line
    assert list(tmp_path.iterdir()) == []


#: Flags of the harness that the wrapper passes on (or leaves to the harness's default).
SHARED_FLAGS = (
    "--transport",
    "--implementation",
    "--scenario",
    "--completion",
    "--worker-threads",
    "--connections",
    "--route-frames",
    "--frame-len",
    "--tunnel-bytes",
    "--read-reserve",
    "--write-pending-bytes",
    "--duplex-capacity",
    "--iterations",
    "--duration-seconds",
    "--idle-timeout-millis",
    "--startup-timeout-seconds",
)


def help_defaults(help_text: str) -> dict[str, str]:
    """The ``(default: X)`` of each option in a ``--help``, numbers made comparable."""
    found = {}
    for flag, block in help_blocks(help_text).items():
        match = re.search(r"\(default: ([^,;)\s]+)", block)
        if match:
            value = match[1]
            found[flag] = f"{float(value):g}" if re.fullmatch(r"[\d.]+", value) else value
    return found


def test_the_harness_and_its_wrapper_show_one_set_of_defaults() -> None:
    harness = subprocess.run(
        [sys.executable, "-m", "bytes_handoff_bench", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    wrapper_help = run(HARNESS, "--help")
    assert wrapper_help.returncode == 0, wrapper_help.stderr
    ours, theirs = help_defaults(wrapper_help.stdout), help_defaults(harness.stdout)
    assert {flag: ours.get(flag) for flag in SHARED_FLAGS} == {
        flag: theirs.get(flag) for flag in SHARED_FLAGS
    }
    # Where the wrapper must differ, its --help says so and why.
    text = " ".join(wrapper_help.stdout.split())
    assert "split: one per CPU of --service-cores, so that the pinned service uses" in text


def test_a_wrapper_run_without_shape_flags_is_the_harness_default_run(tmp_path: Path) -> None:
    keys = (
        "transport",
        "implementation",
        "completion",
        "worker_threads",
        "connections",
        "route_frames",
        "frame_len",
        "tunnel_bytes",
        "input_fragment",
        "read_reserve",
        "write_pending_bytes",
        "duplex_capacity",
        "configured_iterations",
        "duration_seconds_target",
        "bytes_per_connection",
    )
    direct = subprocess.run(
        [sys.executable, "-m", "bytes_handoff_bench", "--scenario", "coalesced"],
        capture_output=True,
        text=True,
        check=True,
    )
    proc = run(HARNESS, "--scenario", "coalesced", "--runs", "1", "--results-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = parse_kv_file(one_run_folder(tmp_path) / "handoff-run-1.txt")
    expected = parse_kv_text(direct.stdout)
    assert {k: report[k] for k in keys} == {k: expected[k] for k in keys}


def test_harness_wrapper_reports_a_failing_run(tmp_path: Path) -> None:
    # An interpreter whose harness answers --help but fails every run.
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1 $2" = "-m bytes_handoff_bench" ] && [ "$3" != "--help" ]; then\n'
        '  echo "bytes-handoff-bench: error: a run that fails" >&2\n'
        "  exit 1\n"
        "fi\n"
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    results = tmp_path / "results"
    proc = run(
        HARNESS,
        *TINY,
        "--runs",
        "2",
        "--results-dir",
        str(results),
        env={"PYTHON": str(python)},
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "run 1 (handoff fragmented)" in last and "handoff-run-1.err" in last


def test_split_process_runs_both_scenarios(tmp_path: Path) -> None:
    proc = run(
        HARNESS,
        "--transport",
        "tcp",
        "--completion",
        "fire_and_forget",
        "--scenario",
        "all",
        "--runs",
        "2",
        *TINY,
        "--service-cores",
        "0",
        "--driver-cores",
        "1",
        "--idle-timeout-millis",
        "300",
        "--results-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    base = one_run_folder(tmp_path)
    assert base.name.startswith("stream_tcp_handoff_all_fire_and_forget_")
    for scenario in ("fragmented", "coalesced"):
        cell = base / scenario
        for n in (1, 2):
            driver = (cell / f"handoff-run-{n}.txt").read_text()
            service = (cell / f"service-run-{n}.txt").read_text()
            assert "role=tcp-driver" in driver and f"scenario={scenario}" in driver
            assert "role=tcp-service" in service and "cpu_ns_per_byte=" in service
        assert_summary_matches_runs(cell, 2)
        assert "service_cpu_ns_per_byte" in read_summary_csv(cell / "summary.csv")
        summary_lines = [
            line
            for line in proc.stdout.splitlines()
            if line.startswith(f"stream tcp handoff {scenario} fire_and_forget runs=2 ")
        ]
        assert len(summary_lines) == 1, proc.stdout
        assert "service_cpu_ns_per_byte=" in summary_lines[0]
        assert summary_lines[0].endswith(scenario)


def test_all_implementations_write_comparison(tmp_path: Path) -> None:
    proc = run(
        HARNESS,
        "--implementation",
        "all",
        "--scenario",
        "coalesced",
        "--runs",
        "1",
        *TINY,
        "--loop",
        "asyncio",
        "--results-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    base = one_run_folder(tmp_path)
    assert base.name.startswith("stream_duplex_all_coalesced_ticket_")
    assert not (base / "handoff_splice").exists()  # TCP only
    assert "loop=asyncio" in (base / "raw_copy" / "handoff-run-1.txt").read_text()
    comparison = (base / "comparison.md").read_text()
    for impl in ("handoff", "manual_vec", "raw_copy"):
        assert (base / impl / "handoff-run-1.txt").exists()
        assert_summary_matches_runs(base / impl, 1)
        assert f"| coalesced | {impl} |" in comparison
        assert f"stream duplex {impl} coalesced ticket runs=1 " in proc.stdout
    assert (base / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "comparison=" in proc.stdout
    # For people: what ran in the title, one run's stdev is n/a, no exponent.
    title = comparison.splitlines()[0]
    assert title.startswith("# Comparison: in-memory duplex, one process, asyncio, ticket")
    assert title.endswith("2 connections, each 4 frames of 33 B + 4 KiB tunnel, 1 worker process")
    # No terminal here: the printed table at its natural width, its title one line, no
    # line padded with spaces.
    assert title.removeprefix("# Comparison: ") in proc.stdout.splitlines()
    assert [line for line in proc.stdout.splitlines() if line != line.rstrip()] == []
    assert "± n/a" in comparison and "Lower is better" in comparison
    assert not re.search(r"\d[eE][+-]?\d", comparison.split("Run folders:")[0])


def test_matrix_tiny_grid(tmp_path: Path) -> None:
    env = {
        "IMPLEMENTATIONS": "handoff manual_vec",
        "SCENARIOS": "coalesced",
        "CONNECTIONS": "1 2",
        "FRAME_SIZES": "64",
        "RUNS": "1",
        "ROUTE_FRAMES": "4",
        "TUNNEL_BYTES": "4096",
        "READ_RESERVE": "1024",
        "RESULTS_DIR": str(tmp_path),
    }
    proc = run(MATRIX, env=env)
    assert proc.returncode == 0, proc.stderr
    base = one_run_folder(tmp_path)
    assert base.name.startswith("matrix_")
    rows = read_runs_csv(base / "matrix.csv")
    assert {(r["implementation"], r["connections"]) for r in rows} == {
        ("handoff", "1"),
        ("handoff", "2"),
        ("manual_vec", "1"),
        ("manual_vec", "2"),
    }
    for row in rows:
        assert row["frame_len"] == "63" and float(row["mib_per_sec_mean"]) > 0
        cell = base / row["path"]
        assert (cell / "handoff-run-1.txt").exists()
        assert "connections=" + row["connections"] in (cell / "handoff-run-1.txt").read_text()
    md = (base / "matrix.md").read_text()
    assert md.count("| coalesced |") == 4
    assert "stream matrix" in proc.stdout and "matrix_csv=" in proc.stdout
    # The ratio column, the plots beside matrix.md, each cell's result as it finished.
    handoff_rows = [line for line in md.splitlines() if "| handoff |" in line]
    other_rows = [line for line in md.splitlines() if "| manual_vec |" in line]
    assert len(handoff_rows) == len(other_rows) == 2
    assert all(" | 1.00x | " in line for line in handoff_rows)
    assert all(re.search(r" \| \d+\.\d\dx \| ", line) for line in other_rows), md
    for name in ("ratio_heatmap_coalesced.png", "ns_per_byte_coalesced.png"):
        assert (base / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in md
    assert "plots=" in proc.stdout
    done = [line for line in proc.stderr.splitlines() if line.startswith("done coalesced, ")]
    assert len(done) == 4 and any("x handoff)" in line for line in done), proc.stderr
    # No terminal here: the table keeps one line per row (its natural width).
    assert any(line.split()[:1] == ["manual_vec"] for line in proc.stdout.splitlines())


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CONNECTIONS": "1 x"}, "CONNECTIONS"),
        ({"IMPLEMENTATIONS": "handoff nope"}, "IMPLEMENTATIONS"),
        ({"RUNS": "0"}, "RUNS"),
        # A run count with no end would start runs that never finish.
        ({"RUNS": "99999999999999999999"}, "RUNS: expected integers >= 1"),
        ({"RUNS": "10001"}, "RUNS: at most 10000, got 10001"),
        ({"RUNS": "9" * 5000}, "RUNS: expected integers >= 1"),
        ({"RUNS": "nan"}, "RUNS: expected integers >= 1, got 'nan'"),
        ({"SERVICE_CORES": "0"}, "DRIVER_CORES"),
    ],
)
def test_matrix_bad_env(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    proc = run(MATRIX, env={**env, "RESULTS_DIR": str(tmp_path)}, timeout=60)
    assert needle in assert_one_line_error(proc)
    assert list(tmp_path.iterdir()) == []


def test_matrix_help_is_plain_text_with_every_setting() -> None:
    proc = run(MATRIX, "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: run-stream-matrix.sh [-h] [--version]\n")
    # Plain text, not the module's reStructuredText: no table rules, no ``literals``.
    assert "``" not in proc.stdout and not re.search(r"^\s*=+\s", proc.stdout, re.M)
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line[:2] == "  "}
    for name, default, _meaning in matrix.SETTINGS:
        assert name in rows, name
        assert rows[name].split(None, 1)[1].startswith(default or "-"), rows[name]
    # Where it differs from the harness's workload, it says so and why.
    text = " ".join(proc.stdout.split())
    assert "(the harness's default is 1048576: smaller here, so that the matrix ends" in text


def test_matrix_warns_about_a_misspelt_setting(tmp_path: Path) -> None:
    # CONECTIONS=1 would be ignored and the whole default matrix would start: say so first.
    # (RUNS=0 then stops it before any run.)
    env = {"CONECTIONS": "1", "RUNS": "0", "RESULTS_DIR": str(tmp_path / "results")}
    proc = run(MATRIX, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    warning, error = proc.stderr.splitlines()
    assert warning == (
        "run-stream-matrix.sh: warning: not a setting, ignored: CONECTIONS (did you mean"
        " CONNECTIONS?)"
    )
    assert error.startswith("run-stream-matrix.sh: error: RUNS"), error
    assert not (tmp_path / "results").exists()


def test_matrix_names_close_misspellings_only() -> None:
    environ = {
        "CONECTIONS": "1",
        "RUN": "1",
        "IMPLEMENTATION": "handoff",
        "CONNECTIONS": "1",  # a setting
        "SSH_CONNECTION": "10.0.0.1 22 10.0.0.2 22",  # another program's
        "PATH": "/bin",
        "COLUMNS": "80",
        "conections": "1",  # not upper case
    }
    assert matrix.unknown_settings(environ) == [
        ("CONECTIONS", "CONNECTIONS"),
        ("IMPLEMENTATION", "IMPLEMENTATIONS"),
        ("RUN", "RUNS"),
    ]


#: One quick cell per shape: a run that should have been refused ends fast.
TINY_MATRIX = {
    "IMPLEMENTATIONS": "raw_copy",
    "SCENARIOS": "coalesced",
    "CONNECTIONS": "1",
    "RUNS": "1",
    "ROUTE_FRAMES": "4",
    "TUNNEL_BYTES": "4096",
    "READ_RESERVE": "1024",
}


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        # 8 ran 16-byte frames labelled f8.
        (
            {"FRAME_SIZES": "64 8"},
            "FRAME_SIZES: 8 is outside the harness's 17 to 1048577 bytes",
        ),
        ({"FRAME_SIZES": "16"}, "FRAME_SIZES: 16 is outside"),
        ({"FRAME_SIZES": "99999999"}, "FRAME_SIZES: 99999999 is outside"),
        ({"WORKER_THREADS": "999"}, "--worker-threads must be at most 256, got 999"),
        ({"RESULTS_DIR": "{tmp}/file"}, "is a file, not a folder"),
        ({"RESULTS_DIR": "{tmp}/file/sub"}, "lies under a file"),
        ({"RESULTS_DIR": "/proc/bytes-handoff-results"}, "cannot write in '/proc'"),
    ],
)
def test_matrix_refuses_before_any_run(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    (tmp_path / "file").write_text("not a folder\n")
    env = {"RESULTS_DIR": str(tmp_path), **env}
    env["RESULTS_DIR"] = env["RESULTS_DIR"].replace("{tmp}", str(tmp_path))
    proc = run(MATRIX, env={**TINY_MATRIX, **env}, timeout=60)
    assert needle in assert_one_line_error(proc)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_terminating_the_wrapper_stops_service_and_driver(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            "bash",
            str(HARNESS),
            "--transport",
            "tcp",
            "--runs",
            "1",
            *TINY,
            "--duration-seconds",
            "60",
            "--service-cores",
            "0",
            "--driver-cores",
            "1",
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        driver_txt = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(tmp_path.glob("*/handoff-run-1.txt"))
            if found:
                driver_txt = found[0]
                break
            time.sleep(0.05)
        assert driver_txt is not None, "the driver never started"
        # Both children up (a loaded machine may take a while to exec them): service, driver.
        while time.monotonic() < deadline and len(processes_mentioning(str(tmp_path))) < 2:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert len(processes_mentioning(str(tmp_path))) >= 2
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "run-stream-harness.sh: interrupted"
    assert "Traceback" not in err
    assert processes_mentioning(str(tmp_path)) == []


SPLIT_TINY = [
    "--transport",
    "tcp",
    "--scenario",
    "coalesced",
    "--runs",
    "1",
    *TINY,
    "--service-cores",
    "0",
    "--driver-cores",
    "1",
    "--idle-timeout-millis",
    "300",
]


def test_service_address_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run(
            HARNESS,
            *SPLIT_TINY,
            "--service-addr",
            f"127.0.0.1:{port}",
            "--results-dir",
            str(tmp_path),
            timeout=120,
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "run 1 (handoff coalesced): service exited with status" in last
    assert "before it was ready" in last and "service-run-1.err" in last
    assert processes_mentioning(str(tmp_path)) == []


def test_concurrent_split_runs_do_not_collide(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    procs = [
        subprocess.Popen(
            ["bash", str(HARNESS), *SPLIT_TINY, "--results-dir", str(tmp_path / str(i))],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "stream tcp handoff coalesced ticket runs=1 " in out
    addrs = set()
    for i in range(3):
        ready = next((tmp_path / str(i)).glob("*/service-run-1.ready")).read_text()
        addrs.add(next(line for line in ready.splitlines() if line.startswith("service_addr=")))
    assert len(addrs) == 3


def test_all_implementations_split_tcp_adds_splice(tmp_path: Path) -> None:
    proc = run(HARNESS, *SPLIT_TINY, "--implementation", "all", "--results-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    base = one_run_folder(tmp_path)
    assert base.name.startswith("stream_tcp_all_coalesced_ticket_")
    comparison = (base / "comparison.md").read_text()
    assert "service ns/B" in comparison
    impls = (
        "handoff",
        "handoff_splice",
        "handoff_protocol",
        "manual_vec",
        "raw_copy",
        "manual_protocol",
        "raw_protocol",
        "floor",
    )
    for impl in impls:
        assert "role=tcp-service" in (base / impl / "service-run-1.txt").read_text()
        assert f"| coalesced | {impl} |" in comparison
    # Interleaved per run index: every implementation's run 1 ran in one sweep.
    order = [
        line.split("] ")[1].split(":")[0] for line in proc.stderr.splitlines() if "[run " in line
    ]
    assert order == [f"{impl} coalesced" for impl in impls]
    # One order everywhere: the runs, the summary lines, the table printed and in
    # comparison.md (the chart takes the table's).
    summaries = [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("stream ")]
    printed = [line.split()[0] for line in proc.stdout.splitlines() if line.split()[:1] in
               [[impl] for impl in impls]]  # fmt: skip
    md_rows = [line.split(" | ")[1] for line in comparison.splitlines() if line.startswith("| ")]
    assert summaries == printed == md_rows[1:] == list(impls), (summaries, printed, md_rows)


def test_open_loop_runs_that_fell_behind_are_marked_everywhere(tmp_path: Path) -> None:
    # 100,000 streams/s and 1 ms of slack: no driver keeps up with that, on any machine.
    proc = run(
        HARNESS,
        "--implementation", "all",
        "--scenario", "coalesced",
        "--runs", "1",
        *TINY,
        "--loop", "asyncio",
        "--rate", "100000",
        "--duration-seconds", "0.2",
        "--max-lag-millis", "1",
        "--results-dir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    base = one_run_folder(tmp_path)
    comparison = (base / "comparison.md").read_text()
    assert "Open loop (`--rate`): 100,000 streams/s" in comparison
    for impl in ("handoff", "manual_vec", "raw_copy"):
        row = read_runs_csv(base / impl / "runs.csv")[0]
        assert row["fell_behind"] == "true" and row["offered_streams_per_sec"] == "100000"
        assert int(row["streams_unsent"]) > 0
        line = next(x for x in proc.stdout.splitlines() if x.startswith(f"stream duplex {impl} "))
        assert "offered_streams_per_sec=100000.0 achieved_streams_per_sec=" in line
        assert " FELL_BEHIND=1/1 -> " in line
        assert f"| coalesced | {impl} FELL_BEHIND=1/1 |" in comparison
        assert re.search(rf"\] {impl} coalesced: .* FELL BEHIND: the schedule slipped", proc.stderr)


def test_split_open_loop_gives_the_rate_to_the_driver_only(tmp_path: Path) -> None:
    proc = run(
        HARNESS,
        "--transport", "tcp",
        "--scenario", "coalesced",
        "--runs", "1",
        *TINY,
        "--service-cores", "0",
        "--driver-cores", "1",
        "--rate", "20",
        "--duration-seconds", "0.5",
        "--results-dir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cell = one_run_folder(tmp_path)
    driver = parse_kv_file(cell / "handoff-run-1.txt")
    service = parse_kv_file(cell / "service-run-1.txt")
    assert driver["load"] == "open_loop" and "--rate 20" in driver["argv"]
    assert "load" not in service and "--rate" not in service["argv"]  # it serves what arrives
    assert float(driver["offered_streams_per_sec"]) == 20
    summary = next(x for x in proc.stdout.splitlines() if x.startswith("stream tcp handoff "))
    assert "offered_streams_per_sec=20.0" in summary


def test_a_bad_rate_is_refused_before_any_run(tmp_path: Path) -> None:
    proc = run(HARNESS, "--rate", "0", "--results-dir", str(tmp_path), timeout=60)
    assert "argument --rate: expected a positive number, got '0'" in assert_one_line_error(proc)
    proc = run(HARNESS, "--rate", "10", "--rate-mib", "1", "--results-dir", str(tmp_path))
    assert "--rate and --rate-mib are one setting" in assert_one_line_error(proc)
    assert list(tmp_path.iterdir()) == []
