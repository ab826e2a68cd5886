"""The wheel and sdist: they build, pass ``twine check --strict``, and hold what they should.

The wheel: every module of the package, ``py.typed``, both license texts and
the license metadata, no tests. The sdist: enough to run the test suite from
the unpacked archive (tests with their conftest and tests/bench, benches,
examples, the bench scripts the tests run), and no run outputs.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import bytes_handoff

ROOT = Path(__file__).resolve().parent.parent
LICENSES = ("LICENSE-MIT", "LICENSE-APACHE")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist), built like a release: the sdist first, the wheel from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the venv already has the build backend; no download, seconds.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_twine_check_strict_passes(dists: tuple[Path, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dists_carry_the_one_version(dists: tuple[Path, Path]) -> None:
    wheel, sdist = dists
    version = bytes_handoff.__version__
    assert wheel.name.startswith(f"bytes_handoff-{version}-")
    assert sdist.name == f"bytes_handoff-{version}.tar.gz"


def test_wheel_has_modules_types_and_licenses_but_no_tests(dists: tuple[Path, Path]) -> None:
    wheel, _ = dists
    version = bytes_handoff.__version__
    info = f"bytes_handoff-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"{info}/METADATA").decode()
        licenses = {name: zf.read(f"{info}/licenses/{name}") for name in LICENSES}
    src = ROOT / "src"
    packages = ("bytes_handoff", "bytes_handoff_bench")
    modules = {p.relative_to(src).as_posix() for pkg in packages for p in (src / pkg).rglob("*.py")}
    assert "bytes_handoff/__init__.py" in modules
    assert "bytes_handoff_bench/harness/cli.py" in modules
    assert modules <= names, sorted(modules - names)
    assert {f"{pkg}/py.typed" for pkg in packages} <= names
    for name in LICENSES:
        assert licenses[name] == (ROOT / name).read_bytes()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {*packages, info}, top
    assert "License-Expression: MIT OR Apache-2.0" in metadata
    for name in LICENSES:
        assert f"License-File: {name}" in metadata
    assert f"Version: {version}" in metadata
    assert "Typing :: Typed" in metadata
    assert "Operating System :: Microsoft :: Windows" in metadata


def test_sdist_has_what_the_test_suite_needs(dists: tuple[Path, Path]) -> None:
    _, sdist = dists
    prefix = f"bytes_handoff-{bytes_handoff.__version__}/"
    with tarfile.open(sdist) as tf:
        names = {m.name.removeprefix(prefix) for m in tf.getmembers() if m.isfile()}
    needed = {
        "pyproject.toml",
        "README.md",
        "MANIFEST.in",
        *LICENSES,
        "src/bytes_handoff/py.typed",
        "scripts/check.sh",
        ".ci/run",
        "docs/harness.md",
        "tests/conftest.py",
        "tests/net_support.py",
        "tests/bench/harness_support.py",
        "benches/conftest.py",
    }
    for folder, pattern in [
        ("src/bytes_handoff", "*.py"),
        ("src/bytes_handoff_bench", "*.py"),
        ("tests", "*.py"),
        ("benches", "*.py"),
        ("examples", "*.py"),
        ("bench", "*.sh"),
    ]:
        found = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob(pattern)}
        assert found, folder
        needed |= found
    assert needed <= names, sorted(needed - names)
    for name in names:
        assert not name.startswith(("bench/results/", ".venv/", ".git/")), name
        assert "__pycache__" not in name and not name.endswith(".pyc"), name
