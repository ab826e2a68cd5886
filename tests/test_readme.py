"""The README's promises that code can check: its install commands, every Python block
run as a program against a real connection, its claims, commands and paths."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import bytes_handoff
from bytes_handoff import HandoffBuffer

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
VERSION = bytes_handoff.__version__

#: Bound on every wait for a block's program or its peer: a hang fails, slowness does not.
TIMEOUT = 60.0


def _prose() -> str:
    """The README without its fenced blocks."""
    return re.sub(r"```\w*\n.*?```", "", README, flags=re.S)


def _paragraphs() -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", _prose()) if p.strip()]


# -- installing ---------------------------------------------------------------------------------


def test_opens_with_the_install_from_a_clone_then_the_two_commands() -> None:
    (lang0, first), (lang1, second) = BLOCKS[:2]
    assert (lang0, lang1) == ("bash", "bash")
    # Not on the package index: from a clone, or a wheel built from it.
    assert first.splitlines() == [
        "pip install .",
        f"python -m build && pip install dist/bytes_handoff-{VERSION}-py3-none-any.whl",
    ]
    commands = [line for line in second.splitlines() if line and not line.startswith("#")]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -e '.[bench]' && "
        "./bench/run-stream-harness.sh",
        "bash scripts/check.sh",
    ]
    assert "scripts/check.sh" in (ROOT / ".ci" / "run").read_text()


#: ``pip install bytes-handoff``, ``pip install 'bytes-handoff[anyio]'``: from the index.
_INDEX_INSTALL = re.compile(r"pip install ['\"]?bytes-handoff\b")


def test_an_install_from_the_index_is_only_mentioned_as_what_works_once_published() -> None:
    for lang, body in BLOCKS:
        assert not _INDEX_INSTALL.search(body), f"a {lang} block installs from the index"
    mentions = [p for p in _paragraphs() if _INDEX_INSTALL.search(p)]
    assert mentions, "say what will work once the package is published"
    for paragraph in mentions:
        assert "Once it is published" in paragraph and "fails" in paragraph, paragraph


# -- scripts/check.sh ---------------------------------------------------------------------------

CHECK = ROOT / "scripts" / "check.sh"


def _check_sh_tools() -> list[tuple[str, str]]:
    """check.sh's (command, package) pairs."""
    (pairs,) = re.findall(r"^for tool in (.*); do$", CHECK.read_text(), flags=re.M)
    return [(pair.split(":")[0], pair.split(":")[1]) for pair in pairs.split()]


def test_the_readme_says_what_check_sh_needs_and_how_long_it_takes() -> None:
    (paragraph,) = [p for p in _paragraphs() if "exactly what CI runs" in p]
    for command, package in _check_sh_tools():
        assert f"`{command}`" in paragraph and f"`{package}`" in paragraph, (command, package)
    for fact in ("about 5 minutes on a 2-core machine", "root", "apt-get", "test_two_hosts.py"):
        assert fact in paragraph, fact


def _fake_bin(folder: Path, uid: int, *, apt_get: bool, tools: bool) -> Path:
    """A PATH with only what check.sh's first step runs, ``id -u`` printing ``uid``."""
    folder.mkdir()

    def script(name: str, body: str) -> None:
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)

    real_dirname = shutil.which("dirname")
    assert real_dirname is not None
    (folder / "dirname").symlink_to(real_dirname)
    script("id", f"echo {uid}")
    if apt_get:  # must not be called: it would install for real
        script("apt-get", f"touch {folder / 'apt-get-was-called'}; exit 1")
    if tools:
        for command, _ in _check_sh_tools():
            script(command, "exit 0")
    return folder


def _run_check(tmp_path: Path, fake: Path) -> subprocess.CompletedProcess[str]:
    """check.sh from a copy of the checkout holding only it (no .venv to set up)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(CHECK, tmp_path / "scripts" / "check.sh")
    bash = shutil.which("bash")
    assert bash is not None
    # Past the tools check the script sets up a venv: this "python3" says it got there.
    venv = tmp_path / "python3"
    venv.write_text("#!/bin/sh\necho 'reached the venv set-up'\nexit 3\n")
    venv.chmod(0o755)
    env = {"PATH": str(fake), "PYTHON_FOR_VENV": str(venv)}
    return subprocess.run(
        [bash, str(tmp_path / "scripts" / "check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


MISSING = "strace curl openssl wrk apache2-utils iproute2"


def test_check_sh_without_root_names_what_to_install_and_how_in_one_line(
    tmp_path: Path,
) -> None:
    fake = _fake_bin(tmp_path / "bin", 1000, apt_get=True, tools=False)
    proc = _run_check(tmp_path, fake)
    assert (proc.returncode, proc.stdout) == (1, ""), proc
    assert proc.stderr == (
        f"check: cannot install {MISSING} without root; run as root first:"
        f" apt-get update && apt-get install -y {MISSING}\n"
    )
    assert not (fake / "apt-get-was-called").exists()


def test_check_sh_without_apt_get_says_so_in_one_line(tmp_path: Path) -> None:
    fake = _fake_bin(tmp_path / "bin", 0, apt_get=False, tools=False)
    proc = _run_check(tmp_path, fake)
    assert (proc.returncode, proc.stdout) == (1, ""), proc
    assert proc.stderr == (
        f"check: cannot install {MISSING}: no apt-get here; install those packages with the"
        " system's package manager, then run this script again\n"
    )


def test_check_sh_goes_on_when_every_tool_is_there(tmp_path: Path) -> None:
    fake = _fake_bin(tmp_path / "bin", 1000, apt_get=True, tools=True)
    proc = _run_check(tmp_path, fake)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "reached the venv set-up\n", "")


# -- every Python block runs ---------------------------------------------------------------------


def python_blocks() -> dict[str, str]:
    """Every ```python block, by the heading of its section (one block per section)."""
    blocks: dict[str, str] = {}
    heading = ""
    fence: str | None = None
    body: list[str] = []
    for line in README.splitlines(keepends=True):
        if fence is None:
            if line.startswith("```"):
                fence, body = line[3:].strip(), []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            if fence == "python":
                assert heading not in blocks, f"two Python blocks under {heading!r}"
                blocks[heading] = "".join(body)
            fence = None
        else:
            body.append(line)
    return blocks


#: The port every networked block uses; each run gets a free one in its place.
PORT = "8888"


@dataclass
class Program:
    """A README block running as a program of its own."""

    proc: subprocess.Popen[bytes]
    folder: Path

    def stdout(self) -> str:
        return (self.folder / "stdout").read_text()

    def stderr(self) -> str:
        return (self.folder / "stderr").read_text()

    def wait(self) -> int:
        """Its exit status; it must end by itself."""
        return self.proc.wait(TIMEOUT)

    def stop(self) -> None:
        """End a server that serves until stopped."""
        self.proc.terminate()
        self.proc.wait(TIMEOUT)


@contextlib.contextmanager
def running(code: str, port: int, folder: Path) -> Iterator[Program]:
    """Run ``code`` as ``python block.py``, with ``port`` in place of the README's port."""
    assert code.count(PORT) == 1, f"a networked block names port {PORT} once"
    script = folder / "block.py"
    script.write_text(code.replace(PORT, str(port)))
    with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(script)], cwd=folder, stdout=out, stderr=err)
    try:
        yield Program(proc, folder)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def connect(port: int, program: Program) -> socket.socket:
    """A connection to the block's server, once it listens."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        except ConnectionRefusedError:
            if program.proc.poll() is not None:
                pytest.fail(f"the block exited before it listened: {program.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail("the block never listened")
            time.sleep(0.05)


def recv_all(sock: socket.socket) -> bytes:
    sock.settimeout(TIMEOUT)
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def listener() -> socket.socket:
    """Where a client block connects to."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    return sock


def drive_a_line_echo_server(code: str, folder: Path, prefix: bytes) -> None:
    port = free_port()
    with running(code, port, folder) as program:
        lines = [f"line {i}\n".encode() * (i % 3 + 1) for i in range(200)]
        payload = b"".join(lines)
        with connect(port, program) as sock:
            for start in range(0, len(payload), 7):  # split across reads
                sock.sendall(payload[start : start + 7])
            sock.shutdown(socket.SHUT_WR)
            answer = recv_all(sock)
        expected = b"".join(prefix + line for chunk in lines for line in chunk.splitlines(True))
        assert answer == expected
        program.stop()  # a server: it serves until stopped
    assert program.stderr() == ""


def drive_the_opening_example(code: str, folder: Path) -> None:
    drive_a_line_echo_server(code, folder, b"echo ")


def drive_the_protocol_path(code: str, folder: Path) -> None:
    drive_a_line_echo_server(code, folder, b"")


def drive_the_read_side(code: str, folder: Path) -> None:
    port = free_port()
    with running(code, port, folder) as program, connect(port, program) as sock:
        for part in (b"GET /a\nGET", b" /b\n", b"TUNNEL\nraw bytes\n", b"no newline"):
            sock.sendall(part)
        sock.shutdown(socket.SHUT_WR)
        assert program.wait() == 0, program.stderr()
        assert recv_all(sock) == b""
    assert program.stderr() == ""
    assert program.stdout().splitlines() == [
        "frame b'GET /a\\n'",
        "frame b'GET /b\\n'",
        "frame b'TUNNEL\\n'",
        "raw b'raw bytes\\nno newline'",
    ]


def drive_the_write_side(code: str, folder: Path) -> None:
    with listener() as server, running(code, server.getsockname()[1], folder) as program:
        conn, _ = server.accept()
        with conn:
            received = recv_all(conn)
        assert program.wait() == 0, program.stderr()
    assert received == b"".join(b"frame %d\n" % i for i in range(100)) + b"last\nextra\n"
    assert (program.stdout(), program.stderr()) == ("", "")


def drive_the_registered_adapters(code: str, folder: Path) -> None:
    with listener() as server, running(code, server.getsockname()[1], folder) as program:
        conn, _ = server.accept()
        with conn:
            assert recv_all(conn) == b"hello\n"  # then end of stream: shutdown() ran
            conn.sendall(b"hi from the server\n")
        assert program.wait() == 0, program.stderr()
    assert (program.stdout(), program.stderr()) == ("b'hi from the server\\n'\n", "")


#: How each section's block is run: every block has one, and is driven by a real client or
#: server; a block added to the README fails here until it gets one.
DRIVERS: dict[str, Callable[[str, Path], None]] = {
    "bytes-handoff (Python)": drive_the_opening_example,
    "Read side": drive_the_read_side,
    "Write side": drive_the_write_side,
    "Protocol path: `create_server`, `create_connection`, TLS": drive_the_protocol_path,
    "Readers, writers, and adding your own": drive_the_registered_adapters,
}


def test_every_python_block_has_a_driver() -> None:
    assert sorted(python_blocks()) == sorted(DRIVERS)


@pytest.mark.parametrize("section", sorted(DRIVERS))
def test_the_python_block_runs_as_written(section: str, tmp_path: Path) -> None:
    code = python_blocks()[section]
    DRIVERS[section](code, tmp_path)


def test_every_python_block_passes_the_project_lint(tmp_path: Path) -> None:
    for i, code in enumerate(python_blocks().values()):
        (tmp_path / f"block_{i}.py").write_text(code)
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", "pyproject.toml"]
        + [str(path) for path in sorted(tmp_path.glob("*.py"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- claims ---------------------------------------------------------------------------------------


def test_a_line_count_claimed_for_a_block_is_its_length() -> None:
    # "A line server in ten lines" once sat above a 17-line block. Counts go in digits.
    for claim in re.finditer(r"\bin (\w+) lines\b", README):
        block = re.compile(r"```\w+\n(.*?)```", re.S).search(README, claim.end())
        assert block is not None, claim[0]
        assert claim[1] == str(len(block[1].splitlines())), claim[0]


def test_the_read_side_table_lists_every_public_member_of_the_buffer() -> None:
    section = README.split("### Read side", 1)[1].split("\n### ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    public = sorted(name for name in vars(HandoffBuffer) if not name.startswith("_"))
    assert "split_through" in public
    missing = [name for name in public if not re.search(rf"\b{name}\b", table)]
    assert missing == []


def test_releases_are_named_by_their_version() -> None:
    assert "this release" not in README and "next release" not in README
    (paragraph,) = [p for p in _paragraphs() if "deprecated alias" in p]
    assert f"before {VERSION}" in paragraph and f"in {VERSION} it is" in paragraph, paragraph


def test_the_criterion_script_name_is_explained() -> None:
    explained = [
        p
        for p in _paragraphs()
        if "`bench/run-criterion-baseline.sh`" in p
        and "Rust crate" in p
        and "runs pytest-benchmark, not Criterion" in p
    ]
    assert len(explained) == 1


def test_sentences_that_were_once_garbled_stay_fixed() -> None:
    prose = " ".join(_prose().split())
    assert "fan-in stays from" not in prose
    assert "fan-in from 1 to 64 producers costs at most about 1.5x per byte" in prose


# -- paths and references -------------------------------------------------------------------------

#: Repository paths the README names in backticks (files and folders).
_PATH = re.compile(
    r"`((?:src|bench|benches|docs|examples|tests|scripts|\.ci)/[\w./<>*-]*|LICENSE-\w+)`"
)


def test_every_repository_path_the_readme_names_exists() -> None:
    missing = []
    for path in sorted(set(_PATH.findall(README))):
        if "<" in path or "*" in path or path.startswith("bench/results/"):
            continue  # a pattern or a run's output, not a committed file
        if not (ROOT / path.rstrip("/")).exists():
            missing.append(path)
    assert missing == []


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_in_page_link_names_a_heading() -> None:
    headings = re.findall(r"^#{1,6} (.+)$", _prose(), flags=re.M)
    slugs = {_slug(h) for h in headings}
    links = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert links, "the README links no section: the pattern above went stale"
    assert sorted(links - slugs) == []


def test_the_readme_cites_no_document_outside_the_repository() -> None:
    for phrase in ("SPEC", "PERFORMANCE-NOTES", "the seed", "seed's", "../shared"):
        assert phrase not in README
