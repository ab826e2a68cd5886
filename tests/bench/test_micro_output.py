"""bench/run-criterion-baseline.sh prints only paths that exist once it is done.

benches/conftest.py names the Markdown table it writes into the run's temporary
folder; the script copies the table beside the saved results and removes that
folder, so it leaves that line out of what it prints and of the saved log.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from harness_support import run_script

from bytes_handoff_bench.tools import micro

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "run-criterion-baseline.sh"
LINE = "Markdown table: /tmp/criterion-baseline.abc/table.md"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"a\nb\n{LINE}\nc\n", "a\nb\nc\n"),
        (f"{LINE}\nrest\n", "rest\n"),
        (f"x\n{LINE}\n", "x\n"),
        (f"x\n{LINE}", f"x\n{LINE}"),  # not a whole line (yet): kept
        (f"x {LINE}\n", f"x {LINE}\n"),  # inside a line: kept
        (f"{LINE}\n{LINE}\n", ""),
        ("no newline at the end", "no newline at the end"),
    ],
)
def test_line_filter_drops_the_whole_line_across_any_chunks(text: str, expected: str) -> None:
    data = text.encode()
    rng = random.Random(text)
    for _ in range(100):
        filtered, out, at = micro.LineFilter(LINE), b"", 0
        while at < len(data):
            size = rng.randint(1, 9)
            out += filtered.feed(data[at : at + size])
            at += size
        out += filtered.flush()
        assert out.decode() == expected


def test_line_filter_holds_back_only_what_could_start_the_line() -> None:
    filtered = micro.LineFilter(LINE)
    assert filtered.feed(b"progress ....") == b"progress ...."  # shown at once
    assert filtered.feed(b"\nMarkdown") == b""  # may be the line
    assert filtered.feed(b" tables\n") == b"\nMarkdown tables"


def test_every_printed_path_exists_after_the_run(tmp_path: Path) -> None:
    results = tmp_path / "criterion"
    env = {
        "BENCH_SMOKE": "1",
        "BENCH": "take_tail_mode_switch",
        "SAMPLE_SIZE": "1",
        "MEASUREMENT_TIME": "0.01",
        "WARM_UP_TIME": "0",
        "CRITERION_RESULTS": str(results),
    }
    proc = run_script(SCRIPT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "criterion-baseline." not in proc.stdout  # the temporary folder, gone by now
    table = re.search(r"^table: +(\S+)$", proc.stdout, re.M)
    assert table is not None, proc.stdout
    assert Path(table[1]).read_text().startswith("|")
    log = re.search(r"^log: +(\S+)$", proc.stdout, re.M)
    assert log is not None and "criterion-baseline." not in Path(log[1]).read_text()
