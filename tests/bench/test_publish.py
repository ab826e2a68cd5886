"""bench/publish-results.sh: the measured parts of RESULTS.md, regenerated between markers.

On a temporary document: ``--quick --only`` two cheap blocks rewrites exactly
those blocks (the prose, the other blocks and the markers byte for byte as
they were), copies nothing it was not asked for, removes the published PNGs
that nothing refers to any more, and a second run leaves the same structure.
Unknown names, a document without markers and bad markers are refused in one
line (exit 2) before anything runs; ``--dry-run`` lists every block and its
commands and runs nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from harness_support import assert_one_line_error, run_script

from bytes_handoff_bench.errors import UsageError
from bytes_handoff_bench.tools import publish

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "publish-results.sh"
PROG = "publish-results.sh"
END = "<!-- end generated -->"

DOCUMENT = f"""\
# Results

Prose at the top, written by hand.

<!-- generated: tls-cost -->
old TLS figures
<!-- end generated -->

Prose between, with a chart outside any block: ![kept](published/kept.png)

<!-- generated: soak-socket -->
old soak figures ![old](published/2020-01-01-old-soak.png)
{END}

<!-- generated: comparison-uvloop -->
not asked for: left alone ![untouched](published/2020-01-01-split-tcp-uvloop.png)
{END}

Prose at the end.
"""


def outside(text: str) -> list[str]:
    """The document without its blocks' contents: the prose and the markers."""
    kept, inside = [], False
    for line in text.splitlines():
        if publish.START.match(line):
            kept.append(line)
            inside = True
        elif line == END:
            kept.append(line)
            inside = False
        elif not inside:
            kept.append(line)
    return kept


def block(text: str, name: str) -> str:
    match = re.search(rf"<!-- generated: {name} -->\n(.*?)\n{END}", text, re.S)
    assert match, name
    return match.group(1)


def stamp_of(content: str) -> str:
    """A block's stamp: everything up to its command's closing fence."""
    return content.split("```\n", 1)[0]


@pytest.fixture
def document(tmp_path: Path) -> Path:
    doc = tmp_path / "doc" / "RESULTS.md"
    (doc.parent / "published").mkdir(parents=True)
    doc.write_text(DOCUMENT, encoding="utf-8")
    for name in ("kept.png", "2020-01-01-old-soak.png", "2020-01-01-split-tcp-uvloop.png"):
        (doc.parent / "published" / name).write_bytes(b"png")
    return doc


def publish_quick(doc: Path, results: Path, only: str) -> str:
    results.mkdir(exist_ok=True)
    proc = run_script(
        SCRIPT, "--quick", "--only", only, "--document", str(doc), "--results-dir", str(results)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return doc.read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the TLS block needs openssl")
def test_quick_rewrites_exactly_the_marked_blocks(document: Path, tmp_path: Path) -> None:
    first = publish_quick(document, tmp_path / "results", "tls-cost,soak-socket")
    # Outside the blocks (the prose and the markers) and the block not asked for: as it was.
    assert outside(first) == outside(DOCUMENT)
    assert block(first, "comparison-uvloop") == block(DOCUMENT, "comparison-uvloop")
    for name, command, figures in [
        ("tls-cost", "python bench/tls_upgrade_cost.py --mib 1", "start_tls / ssl= ="),
        ("soak-socket", "./bench/run-fault-soak.sh --library-path socket", "verdict=pass"),
    ]:
        content = block(first, name)
        assert "old" not in content
        assert f"`./bench/publish-results.sh --only {name} --quick`" in content
        assert f"```bash\n{command}" in content  # the command it ran, beside its figures
        assert "QUICK RUN" in content and figures in content
    # The old soak chart is referred to by nothing now: gone; the others stay.
    published = sorted(p.name for p in (document.parent / "published").iterdir())
    assert published == ["2020-01-01-split-tcp-uvloop.png", "kept.png"]

    second = publish_quick(document, tmp_path / "results", "tls-cost,soak-socket")
    assert outside(second) == outside(DOCUMENT)
    assert block(second, "comparison-uvloop") == block(DOCUMENT, "comparison-uvloop")
    for name in ("tls-cost", "soak-socket"):
        assert stamp_of(block(second, name)) == stamp_of(block(first, name))
    numbers = re.compile(r"[+-]?\d[\d.,]*")
    assert numbers.sub("N", block(second, "tls-cost")) == numbers.sub("N", block(first, "tls-cost"))


def test_dry_run_lists_every_block_and_runs_nothing(document: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run_script(
        SCRIPT, "--dry-run", "--document", str(document), "--results-dir", str(results)
    )
    assert proc.returncode == 0, proc.stderr
    for b in publish.BLOCKS:
        assert re.search(rf"^{re.escape(b.name)} \(", proc.stdout, re.M), b.name
        for command in b.commands:
            assert f"  {command.shown()}\n" in proc.stdout
    assert "tls-cost (run)" in proc.stdout
    assert "targets (no markers: not run)" in proc.stdout
    assert document.read_text(encoding="utf-8") == DOCUMENT
    assert not results.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--only", "tls-cost,nope"], "--only: unknown block 'nope'"),
        (["--only", "targets"], "has no markers for targets"),
    ],
)
def test_refuses_unknown_and_unmarked_names(
    document: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = run_script(SCRIPT, *args, "--quick", "--document", str(document))
    assert needle in assert_one_line_error(proc, PROG)
    assert document.read_text(encoding="utf-8") == DOCUMENT


def test_refuses_a_document_without_markers(tmp_path: Path) -> None:
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n\nOnly prose.\n", encoding="utf-8")
    proc = run_script(SCRIPT, "--document", str(doc), "--results-dir", str(tmp_path))
    assert "has no generated block" in assert_one_line_error(proc, PROG)
    assert list(tmp_path.iterdir()) == [doc]


def test_quick_never_writes_the_published_document() -> None:
    before = (ROOT / "bench" / "RESULTS.md").read_bytes()
    proc = run_script(SCRIPT, "--quick", "--document", str(ROOT / "bench" / "RESULTS.md"))
    assert "not into the published document" in assert_one_line_error(proc, PROG)
    assert (ROOT / "bench" / "RESULTS.md").read_bytes() == before


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("<!-- generated: tls-cost -->\nx\n", "never closed"),
        (f"x\n{END}\n", "without a block opened"),
        ("<!-- generated: tls-cost -->\n<!-- generated: targets -->\n", "inside block"),
        (f"<!-- generated: tls-cost -->\n{END}\n" * 2, "marked twice"),
        (f"<!-- generated: tls-costs -->\n{END}\n", "unknown block 'tls-costs'"),
    ],
)
def test_bad_markers_are_refused(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=re.escape(needle)):
        publish.find_blocks(text, "doc.md")


def test_replace_block_keeps_everything_else_byte_for_byte() -> None:
    text = f"a\r\n<!-- generated: targets -->\r\nold\r\n{END}\r\nb\r\n"
    new = publish.replace_block(text, "targets", "new\nlines", "doc.md")
    assert new == f"a\r\n<!-- generated: targets -->\r\n\r\nnew\r\nlines\r\n\r\n{END}\r\nb\r\n"
    assert publish.replace_block(new, "targets", "new\nlines", "doc.md") == new


def test_the_published_document_marks_only_known_blocks() -> None:
    spans = publish.find_blocks(
        (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8"), "RESULTS.md"
    )
    assert {"comparison-uvloop", "comparison-asyncio"} <= set(spans)
