"""``bytes_handoff_bench.output_paths``: which output paths are written, how, and where results
go by default. Devices, FIFOs and links are made under ``tmp_path`` (see
``test_output_refusals.py`` for the commands end to end)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest
from harness_support import run_script

from bytes_handoff_bench.errors import BenchError, UsageError
from bytes_handoff_bench.output_paths import (
    check_output_dir,
    check_output_file,
    default_results_dir,
    make_output_dir,
    open_output,
    output_dir_arg,
    project_root,
    write_output,
)

ROOT = Path(__file__).resolve().parents[2]


def char_device(path: Path) -> Path:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    return path


# -- files --------------------------------------------------------------------------------------


def test_a_new_or_regular_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    check_output_file(path, "--out")
    write_output(path, "one\n", "--out")
    write_output(path, b"two\n", "--out")
    assert path.read_text() == "two\n"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_a_character_device_is_written_through(tmp_path: Path) -> None:
    null = char_device(tmp_path / "null")
    check_output_file(null, "--out")
    write_output(null, "gone\n", "--out")
    with open_output(null, "--out") as fh:
        fh.write(b"gone too\n")
    assert stat.S_ISCHR(null.lstat().st_mode)
    assert os.listdir(tmp_path) == ["null"]


def test_a_fifo_is_written_through(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    check_output_file(fifo, "--out")
    write_output(fifo, "through\n", "--out")
    reader.join(10)
    assert got == [b"through\n"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p.symlink_to(p.parent / "target"), "is a symlink (to "),
        (lambda p: p.symlink_to(p.parent / "nowhere"), "is a symlink (to "),
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (
            lambda p: os.mknod(p, stat.S_IFBLK | 0o600, os.makedev(240, 99)),
            "is a block device",
        ),
    ],
    ids=["symlink", "dangling symlink", "folder", "block device"],
)
def test_what_is_not_a_file_is_refused(tmp_path: Path, make: object, needle: str) -> None:
    (tmp_path / "target").write_text("keep me\n")
    path = tmp_path / "out"
    try:
        make(path)  # type: ignore[operator]
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    expected = re.escape(f"--out '{path}' {needle}")
    with pytest.raises(UsageError, match=f"^{expected}"):
        check_output_file(path, "--out")
    # Looked at again when written: what appeared during the run is refused as well.
    with pytest.raises(BenchError, match=f"^{expected}") as info:
        write_output(path, "x", "--out")
    assert not isinstance(info.value, UsageError)  # exit 1: the run happened
    with pytest.raises(BenchError, match=re.escape(needle)):
        open_output(path, "--out")
    assert (tmp_path / "target").read_text() == "keep me\n"


def test_a_file_whose_folder_is_missing_or_unwritable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    cases = {
        tmp_path / "missing" / "out": "its folder .* does not exist",
        tmp_path / "file" / "out": "its folder .* is not a folder",
        Path("/proc/bytes-handoff-out"): "cannot write in '/proc'",
    }
    for path, needle in cases.items():
        with pytest.raises(UsageError, match=needle):
            check_output_file(path, "--out")
    with pytest.raises(UsageError, match="expected a file name, got ''"):
        check_output_file("", "--out")


# -- folders ------------------------------------------------------------------------------------


def test_output_folders(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "linked").symlink_to(tmp_path, target_is_directory=True)
    assert check_output_dir(tmp_path, "--dir") == tmp_path
    assert check_output_dir(tmp_path / "new", "--dir") == tmp_path / "new"
    assert check_output_dir(tmp_path / "linked", "--dir") == tmp_path / "linked"
    refused = {
        tmp_path / "file": "is a file, not a folder",
        tmp_path / "file" / "sub": "lies under a file",
        tmp_path / "dangling": "is a symlink to nothing",
        tmp_path / "a" / "b": r"its parent folder .* does not exist \(make it first\)",
        Path("/proc/bytes-handoff-results"): "cannot write in '/proc'",
    }
    for path, needle in refused.items():
        with pytest.raises(UsageError, match=rf"^--dir '{path}'.*{needle}"):
            check_output_dir(path, "--dir")
    # A default folder may be made with its parents; still never under a file.
    assert check_output_dir(tmp_path / "a" / "b", "--dir", parents=True) == tmp_path / "a" / "b"
    with pytest.raises(UsageError, match="lies under a file"):
        check_output_dir(tmp_path / "file" / "a" / "b", "--dir", parents=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file", "linked"]
    made = make_output_dir(tmp_path / "a" / "b", "--dir", parents=True)
    assert made.is_dir()
    with pytest.raises(BenchError, match=r"^--dir: cannot make '.*file/c'"):
        make_output_dir(tmp_path / "file" / "c", "--dir")


@pytest.mark.parametrize("text", ["", "  "])
def test_an_empty_folder_argument_is_refused(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="expected a folder"):
        output_dir_arg(text)


# -- the default results folder -----------------------------------------------------------------


def pyproject(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')


def test_default_results_go_to_the_clone_found_upward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = tmp_path / "clone"
    pyproject(clone, "bytes-handoff")
    pyproject(clone / "sub", "something-else")  # another project inside: looked past
    deep = clone / "sub" / "deeper"
    deep.mkdir()
    monkeypatch.chdir(deep)
    assert project_root() == clone
    assert default_results_dir() == clone / "bench" / "results"
    assert default_results_dir("ab") == clone / "bench" / "results" / "ab"
    assert not (clone / "bench").exists()  # computed, not made


@pytest.mark.parametrize("other", [None, "bytes-handoff-fork", "broken"])
def test_default_results_go_under_the_current_folder_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: str | None
) -> None:
    if other == "broken":
        (tmp_path / "pyproject.toml").write_text("[project\nname = ")
    elif other is not None:
        pyproject(tmp_path, other)
    monkeypatch.chdir(tmp_path)
    assert project_root() is None
    assert default_results_dir("criterion") == tmp_path / "bench" / "results" / "criterion"


def test_default_results_are_never_inside_site_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plain install: site-packages outside any clone, and the package's own folder in it.
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "bytes_handoff_bench").mkdir(parents=True)
    monkeypatch.chdir(site / "bytes_handoff_bench")
    with pytest.raises(UsageError, match="would be inside site-packages"):
        default_results_dir()
    # This interpreter's own site-packages: in this checkout's .venv, so the clone's folder.
    monkeypatch.chdir(sysconfig.get_paths()["purelib"])
    found = project_root()
    if found is not None:
        assert default_results_dir() == found / "bench" / "results"
    else:
        with pytest.raises(UsageError, match="would be inside site-packages"):
            default_results_dir()


def test_this_checkout_is_a_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT / "src")
    assert project_root() == ROOT


@pytest.mark.slow
def test_the_wrapper_defaults_to_the_current_folder_outside_a_clone(tmp_path: Path) -> None:
    tiny = ["--runs", "1", "--connections", "1", "--route-frames", "2", "--tunnel-bytes", "0"]
    proc = run_script(ROOT / "bench" / "run-stream-harness.sh", *tiny, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "bench" / "results").iterdir()
    assert run.name.startswith("stream_duplex_handoff_fragmented_")
    assert (run / "runs.csv").is_file()
    assert f"results={Path('bench') / 'results' / run.name}" in proc.stderr


def test_targets_refuse_a_sustained_run_too_short_for_an_rss_growth(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bytes_handoff_bench.tools.targets", "--sustained-seconds", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--sustained-seconds must be at least" in proc.stderr
    assert list(tmp_path.iterdir()) == []
