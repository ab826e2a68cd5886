"""The README's promises that code can check: its example runs, its commands and paths exist."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def test_opens_with_install_then_the_two_commands() -> None:
    (lang0, first), (lang1, second) = BLOCKS[:2]
    assert lang1 == "bash"
    assert (lang0, first.strip()) == ("bash", "pip install bytes-handoff")
    commands = [line for line in second.splitlines() if line and not line.startswith("#")]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -e '.[bench]' && "
        "./bench/run-stream-harness.sh",
        "bash scripts/check.sh",
    ]
    assert "scripts/check.sh" in (ROOT / ".ci" / "run").read_text()


def _example() -> str:
    code = next(body for lang, body in BLOCKS if lang == "python")
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 12, f"the opening example has {len(lines)} lines"
    return code


@pytest.mark.asyncio
async def test_the_opening_example_echoes_every_line_in_order() -> None:
    code = _example()
    assert code.rstrip().endswith("asyncio.run(main())")
    namespace: dict[str, object] = {}
    # Everything but the last line: the test serves on a free port instead of 8888.
    exec(code.rstrip().removesuffix("asyncio.run(main())"), namespace)
    handle = namespace["handle"]
    server = await namespace["start_handoff_server"](handle, "127.0.0.1", 0)  # type: ignore[operator]
    async with asyncio.timeout(10), server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"line {i}\n".encode() * (i % 3 + 1) for i in range(200)]
        payload = b"".join(lines)
        for start in range(0, len(payload), 7):  # split across reads
            writer.write(payload[start : start + 7])
            await writer.drain()
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    expected = b"".join(b"echo " + line for chunk in lines for line in chunk.splitlines(True))
    assert answer == expected


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


def test_the_readme_cites_no_document_outside_the_repository() -> None:
    for phrase in ("SPEC", "PERFORMANCE-NOTES", "the seed", "seed's", "../shared"):
        assert phrase not in README
