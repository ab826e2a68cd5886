"""The runnable examples: each exits 0, prints its result, and uses the public API only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bytes_handoff

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Lines each example must print (its own asserts check the details).
EXPECTED_OUTPUT = {
    "line_protocol.py": [
        "line: b'HELLO world\\n'",
        "tail: b'partial tail'",
        "line_protocol: 3 complete lines and a 12-byte partial tail",
    ],
    "length_prefix.py": [
        "header: 30-byte payload announced, 0 bytes of it here",
        "frame:  b'a frame that arrives in pieces'",
        "length_prefix: 4 frames, each header parsed before its payload was sent",
    ],
    "content_routing.py": [
        "routed: b'GET /a\\n'",
        "waiting: incomplete token b'GE'",
        "routed: b'GET /c\\n'",
        "content_routing: routed 3 requests, tunneled 1024 raw bytes intact",
    ],
    "protocol_server.py": [
        "reply: b'GET /A\\n'",
        "reply: b'OK PUT /c\\n'",
        "protocol_server: 3 callback and 3 awaitable replies, in order",
    ],
    "write_handoff.py": [
        "refused: write refused: byte budget exceeded (65 pending bytes attempted, limit 64)"
        " (bytes given back)",
        "write_handoff: 3 producers wrote 30 chunks (150 bytes), every ticket completed,"
        " each producer's order kept",
    ],
}


#: Long-running servers: not run here, each has its own end-to-end test file.
SERVERS = {
    "http_proxy.py": "test_http_proxy.py",
    "starttls_server.py": "test_tls_examples.py",
    "tls_front.py": "test_tls_examples.py",
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted([*EXPECTED_OUTPUT, *SERVERS])
    for test_file in SERVERS.values():
        assert (Path(__file__).parent / test_file).is_file()


@pytest.mark.parametrize(("name", "expected"), EXPECTED_OUTPUT.items(), ids=EXPECTED_OUTPUT)
def test_example_runs_standalone_and_prints_its_result(name: str, expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=EXAMPLES.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    for line in expected:
        assert line in lines
    assert lines[-1] == expected[-1]  # the summary comes last


@pytest.mark.parametrize("name", [*EXPECTED_OUTPUT, *SERVERS])
def test_example_has_a_docstring_and_uses_only_the_public_api(name: str) -> None:
    tree = ast.parse((EXAMPLES / name).read_text())
    assert ast.get_docstring(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and "bytes_handoff" in node.module:
            assert node.module == "bytes_handoff"
            assert {alias.name for alias in node.names} <= set(bytes_handoff.__all__)
        if isinstance(node, ast.Import):
            assert all(not alias.name.startswith("bytes_handoff") for alias in node.names)
