"""Every output path of the harness and the run tools, end to end: a character device or a
FIFO is written through (never replaced), anything else that is not a file is refused in
one line with exit 2 before any run, and an output folder must be a folder or have an
existing parent (``src/bytes_handoff_bench/output_paths.py``).

Never aimed at the machine's own ``/dev/null`` or ``/etc``: the devices, FIFOs, links and
folders are made under ``tmp_path`` (a character device with ``/dev/null``'s numbers, so a
write through it goes nowhere; a block device with an unassigned major number, which
cannot be opened). Only a folder no one can write in is real: ``/proc``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_support import SMALL, assert_one_line_error, parse_report, run_script

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"

#: A few KiB per stream: about a second, mostly interpreter start-up.
TINY = [
    "--connections", "2",
    "--route-frames", "4",
    "--frame-len", "32",
    "--tunnel-bytes", "4096",
    "--read-reserve", "1024",
    "--worker-threads", "1",
]  # fmt: skip


def harness(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bytes_handoff_bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def char_device(path: Path) -> Path:
    """A stand-in for ``/dev/null``: a character device with its numbers (1, 3)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    return path


def block_device(path: Path) -> Path:
    """A block device with an unassigned major number: opening it fails (ENXIO)."""
    try:
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(240, 99))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    return path


def kinds(tmp_path: Path) -> dict[str, Path]:
    """One path of each kind an output file must not be, and what each holds."""
    target = tmp_path / "target.csv"
    target.write_text("keep me\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    folder = tmp_path / "folder"
    folder.mkdir()
    return {
        "symlink": link,
        "folder": folder,
        "block device": block_device(tmp_path / "blk"),
        "missing folder": tmp_path / "missing" / "out.csv",
        "unwritable folder": Path("/proc/bytes-handoff-out.csv"),
    }


REFUSED = {
    "symlink": "is a symlink",
    "folder": "is a folder, not a file",
    "block device": "is a block device",
    "missing folder": "does not exist",
    "unwritable folder": "cannot write in '/proc'",
}


def snapshot(tmp_path: Path) -> dict[str, tuple[int, bytes | None]]:
    """Each entry's kind and, for a regular file, its bytes."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for entry in sorted(tmp_path.rglob("*")):
        mode = entry.lstat().st_mode
        body = entry.read_bytes() if stat.S_ISREG(mode) else None
        out[str(entry.relative_to(tmp_path))] = (stat.S_IFMT(mode), body)
    return out


# -- the harness: --rss-samples and --ready-file ----------------------------------------------


@pytest.mark.parametrize("flag", ["--rss-samples", "--ready-file"])
def test_a_character_device_is_written_through_not_replaced(tmp_path: Path, flag: str) -> None:
    null = char_device(tmp_path / "null")
    proc = harness(*SMALL, flag, str(null))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(null.lstat().st_mode), "the device was replaced"
    assert os.listdir(tmp_path) == ["null"]  # no temporary file left beside it


@contextlib.contextmanager
def fifo_reader(path: Path) -> Iterator[list[bytes]]:
    """A FIFO at ``path`` with a reader already open (so a writer's open does not block)."""
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    got: list[bytes] = []
    try:
        yield got
        while select.select([fd], [], [], 5)[0]:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            got.append(chunk)
    finally:
        os.close(fd)


def test_rss_samples_are_written_through_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "rss.fifo"
    with fifo_reader(fifo) as got:
        proc = harness(*SMALL, "--rss-samples", str(fifo))
        assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced"
    assert b"".join(got).startswith(b"elapsed_seconds,rss_bytes\n")
    assert os.listdir(tmp_path) == ["rss.fifo"]


@pytest.mark.parametrize("flag", ["--rss-samples", "--ready-file"])
@pytest.mark.parametrize("kind", list(REFUSED))
def test_what_is_not_a_file_is_refused_before_the_run(tmp_path: Path, flag: str, kind: str) -> None:
    path = kinds(tmp_path)[kind]
    before = snapshot(tmp_path)
    proc = harness(*SMALL, flag, str(path))
    line = assert_one_line_error(proc, "bytes-handoff-bench")
    assert f"{flag} '{path}'" in line and REFUSED[kind] in line, line
    assert proc.stdout == ""  # no report: nothing ran
    assert snapshot(tmp_path) == before


def test_a_regular_file_is_replaced_whole(tmp_path: Path) -> None:
    samples = tmp_path / "rss.csv"
    samples.write_text("old\n")
    proc = harness(*SMALL, "--rss-samples", str(samples))
    assert proc.returncode == 0, proc.stderr
    assert samples.read_text().startswith("elapsed_seconds,rss_bytes\n")
    assert os.listdir(tmp_path) == ["rss.csv"]


# -- output folders of the tools ---------------------------------------------------------------


def bad_folders(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (the value given, a piece of the one-line refusal)."""
    (tmp_path / "file").write_text("a file\n")
    return {
        "file": (str(tmp_path / "file"), "is a file, not a folder"),
        "below a file": (str(tmp_path / "file" / "sub"), "lies under a file"),
        "empty": ("", "expected a folder, got ''"),
        "missing parent": (str(tmp_path / "missing" / "x"), "does not exist"),
    }


def assert_refused(
    proc: subprocess.CompletedProcess[str], prog: str, needle: str, tmp_path: Path, cwd: Path
) -> None:
    line = assert_one_line_error(proc, prog)
    assert needle in line, line
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "file"]
    assert not (tmp_path / "file").is_dir() and (tmp_path / "file").read_text() == "a file\n"
    assert list(cwd.iterdir()) == []  # "" did not mean the current folder


def cwd_of(tmp_path: Path) -> Path:
    cwd = tmp_path / "cwd"  # where "" (that is, ".") would have put the results
    cwd.mkdir()
    return cwd


FOLDER_CASES = ["file", "below a file", "empty", "missing parent"]


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_soak_out_dir_is_checked_before_any_process(tmp_path: Path, case: str) -> None:
    value, needle = bad_folders(tmp_path)[case]
    cwd = cwd_of(tmp_path)
    proc = run_script(
        BENCH / "run-fault-soak.sh",
        *("--duration-seconds", "1", "--out-dir", value),
        cwd=cwd,
        timeout=60,
    )
    assert_refused(proc, "run-fault-soak.sh", needle, tmp_path, cwd)
    assert proc.stdout == ""  # no "soak: seed=..." line: nothing started


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_check_targets_results_dir_is_checked_before_any_run(tmp_path: Path, case: str) -> None:
    value, needle = bad_folders(tmp_path)[case]
    cwd = cwd_of(tmp_path)
    proc = run_script(
        BENCH / "check-targets.sh",
        *("--loops", "asyncio", "--skip-memory", "--duration-seconds", "0.1"),
        *("--connections", "1", "--results-dir", value),
        cwd=cwd,
        timeout=120,
    )
    assert_refused(proc, "check-targets.sh", needle, tmp_path, cwd)


@pytest.mark.parametrize("mode", ["perf", "strace"])
@pytest.mark.parametrize("case", FOLDER_CASES)
def test_profiler_out_dir_is_checked_before_any_run(tmp_path: Path, mode: str, case: str) -> None:
    value, needle = bad_folders(tmp_path)[case]
    cwd = cwd_of(tmp_path)
    script = f"run-split-service-{mode}.sh"
    proc = run_script(
        BENCH / script,
        *("--connections", "1", "--tunnel-bytes", "4096", "--duration-seconds", "0.2"),
        *("--no-perf",) * (mode == "perf"),
        *("--out-dir", value),
        cwd=cwd,
        timeout=120,
    )
    assert_refused(proc, script, needle, tmp_path, cwd)
    assert proc.stdout == ""


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_split_out_dir_is_checked_before_any_run(tmp_path: Path, case: str) -> None:
    value, needle = bad_folders(tmp_path)[case]
    cwd = cwd_of(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bytes_handoff_bench.tools.split", "--out-dir", value],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_refused(proc, "split", needle, tmp_path, cwd)


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_wrapper_results_dir_is_checked_before_any_run(tmp_path: Path, case: str) -> None:
    value, needle = bad_folders(tmp_path)[case]
    cwd = cwd_of(tmp_path)
    proc = run_script(
        BENCH / "run-stream-harness.sh", *TINY, "--runs", "1", "--results-dir", value, cwd=cwd
    )
    assert_refused(proc, "run-stream-harness.sh", needle, tmp_path, cwd)


def test_matrix_results_dir_needs_an_existing_parent(tmp_path: Path) -> None:
    value, needle = bad_folders(tmp_path)["missing parent"]
    cwd = cwd_of(tmp_path)
    env = {"RESULTS_DIR": value, "RUNS": "1", "CONNECTIONS": "1", "FRAME_SIZES": "64"}
    proc = run_script(BENCH / "run-stream-matrix.sh", env=env, cwd=cwd, timeout=60)
    assert_refused(proc, "run-stream-matrix.sh", f"RESULTS_DIR '{value}'", tmp_path, cwd)
    assert needle in proc.stderr


def test_library_ab_results_dir_needs_an_existing_parent(tmp_path: Path) -> None:
    value, needle = bad_folders(tmp_path)["missing parent"]
    cwd = cwd_of(tmp_path)
    # An unknown family ends the command early (after its old mkdir) if the folder passed.
    proc = run_script(
        BENCH / "run-library-ab.sh",
        *("HEAD", "--bench", "no_such_family", "--results-dir", value),
        cwd=cwd,
        timeout=120,
    )
    assert_refused(proc, "run-library-ab.sh", f"--results-dir '{value}'", tmp_path, cwd)
    assert needle in proc.stderr


def test_micro_results_folder_needs_an_existing_parent(tmp_path: Path) -> None:
    value, needle = bad_folders(tmp_path)["missing parent"]
    cwd = cwd_of(tmp_path)
    # COMPARE with a run that is not saved ends the command early if the folder passed.
    env = {"CRITERION_RESULTS": value, "COMPARE": "no-such-run", "BENCH_LOOP": "asyncio"}
    proc = run_script(BENCH / "run-criterion-baseline.sh", env=env, cwd=cwd, timeout=120)
    assert_refused(proc, "run-criterion-baseline.sh", f"CRITERION_RESULTS '{value}'", tmp_path, cwd)
    assert needle in proc.stderr


def test_two_hosts_results_dir_is_checked_before_any_namespace(tmp_path: Path) -> None:
    value, needle = bad_folders(tmp_path)["missing parent"]
    cwd = cwd_of(tmp_path)
    proc = run_script(BENCH / "run-two-hosts.sh", "--results-dir", value, cwd=cwd, timeout=60)
    if "needs root and 'ip netns'" in proc.stderr:
        pytest.skip("run-two-hosts.sh needs root and ip netns; it says so first")
    assert_refused(proc, "run-two-hosts.sh", needle, tmp_path, cwd)


# -- files inside a given, existing output folder -----------------------------------------------


def test_soak_refuses_a_planted_symlink_in_its_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "target"
    target.write_text("keep me\n")
    (out / "summary.txt").symlink_to(target)
    proc = run_script(
        BENCH / "run-fault-soak.sh", "--duration-seconds", "1", "--out-dir", str(out), timeout=60
    )
    line = assert_one_line_error(proc, "run-fault-soak.sh")
    assert "summary.txt" in line and "is a symlink" in line, line
    assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in out.iterdir()) == ["summary.txt"]


@pytest.mark.parametrize("mode", ["perf", "strace"])
def test_profiler_refuses_a_planted_symlink_in_its_out_dir(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "target"
    target.write_text("keep me\n")
    name = "service.svg" if mode == "perf" else "strace-summary.txt"
    (out / name).symlink_to(target)
    script = f"run-split-service-{mode}.sh"
    proc = run_script(
        BENCH / script,
        *("--connections", "1", "--tunnel-bytes", "4096", "--duration-seconds", "0.2"),
        *("--out-dir", str(out)),
        timeout=120,
    )
    line = assert_one_line_error(proc, script)
    assert name in line and "is a symlink" in line, line
    assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_a_log_file_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    from bytes_handoff_bench.processes import Child, RunError

    target = tmp_path / "target"
    target.write_text("keep me\n")
    (tmp_path / "out.txt").symlink_to(target)
    with pytest.raises(RunError, match="is a symlink"):
        Child("echo", ["echo", "hi"], tmp_path / "out.txt", tmp_path / "err.txt")
    assert target.read_text() == "keep me\n"


def test_report_names_the_rss_file(tmp_path: Path) -> None:
    null = char_device(tmp_path / "null")
    proc = harness(*SMALL, "--rss-samples", str(null))
    assert parse_report(proc.stdout)["rss_samples_file"] == str(null)


def test_enxio_block_device_stand_in_cannot_be_opened(tmp_path: Path) -> None:
    # The stand-in really is inert: were a write to go through it, it would fail.
    blk = block_device(tmp_path / "blk")
    with pytest.raises(OSError) as info:
        os.open(blk, os.O_WRONLY)
    assert info.value.errno in (errno.ENXIO, errno.ENODEV, errno.EACCES)
