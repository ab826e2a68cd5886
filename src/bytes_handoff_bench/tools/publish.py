"""The logic behind ``bench/publish-results.sh``: regenerate the measured parts of RESULTS.md.

``bench/RESULTS.md`` is prose written by hand around figures that the tools
make. The figures live between markers, one pair per *block*::

    <!-- generated: comparison-uvloop -->
    ... written by this tool: never edit by hand ...
    <!-- end generated -->

and everything outside the markers is left exactly as it is. For each block
asked for (all by default, ``--only NAME[,NAME]`` for some) this tool runs the
block's measurement through the bench scripts' command lines, as a user
would (every tool talks to the harness so; this one talks to the tools so):
it gives each run a results folder of its own, then copies what the tool
wrote there (its markdown table, its summary, its chart) into the block,
with the chart copied to ``bench/published/<date>-<name>.png``. Each block
starts with a stamp: the date, the machine, the command that republishes it
and the command(s) it ran. So the document always shows what the tools print,
in the tools' own units (latency in ms), and a chart in the tools' one style.

The document is read again right before each block is written (other people
edit the prose meanwhile) and each block is written as soon as its
measurement is done, so a long run publishes as it goes and a failed block
keeps its previous content. Afterwards, every PNG in the document's
``published/`` folder that the document no longer refers to is removed.

``--quick`` runs tiny workloads (a smoke check, and the tests): its figures
are no result, its blocks say so, and it never writes the published
document: without ``--document`` it works on a copy in its results folder.
``--dry-run`` lists every block and the commands it would run, and runs
nothing. A block that the document has no markers for is not run (its name
is printed); asking for it by name is an error, as are an unknown name, a
marker with an unknown name and a document without any marker (one line,
exit 2).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bytes_handoff_bench.cli_common import (
    HelpFormatter,
    OneLineParser,
    UsageError,
    prog_and_args,
    run_main,
)
from bytes_handoff_bench.output_paths import (
    check_output_file,
    choose_results_dir,
    make_output_dir,
    output_dir_arg,
    project_root,
    write_output,
)
from bytes_handoff_bench.processes import RunError, raise_on_termination

PROG = "publish-results.sh"
START = re.compile(r"^<!-- generated: (?P<name>[A-Za-z0-9_.-]+) -->\s*$")
END = "<!-- end generated -->"
#: The chart of a block, in the document: ``published/<date>-<name>.png``.
PUBLISHED = "published"

# -- the measurements --------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One run of a bench tool: its script (relative to the clone) and its flags.

    ``results_flag``: the flag that takes the folder the tool writes into (publish gives
    each run its own); ``None``: the tool writes nothing, publish keeps what it prints.
    ``ok``: the exit statuses that mean "measured" (``check-targets.sh``: 3 and 4 are a
    missed or inconclusive target, a result like any other).
    """

    script: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    results_flag: str | None = "--results-dir"
    ok: frozenset[int] = frozenset({0})
    label: str = ""

    def flags(self, quick: bool) -> tuple[str, ...]:
        return self.quick_args if quick else self.args

    def shown(self, quick: bool = False) -> str:
        """The command as a person types it from the clone's root."""
        head = ["python", self.script] if self.script.endswith(".py") else [f"./{self.script}"]
        return shlex.join([*head, *self.flags(quick)])

    def argv(self, root: Path, python: str, quick: bool, out: Path) -> list[str]:
        script = str(root / self.script)
        head = [python, script] if self.script.endswith(".py") else ["bash", script]
        tail = [self.results_flag, str(out)] if self.results_flag else []
        return [*head, *self.flags(quick), *tail]


@dataclass(frozen=True)
class Output:
    """What one command left: the folder given to the tool (with its ``results_flag``;
    without one, nothing is there) and what it printed on stdout."""

    command: Command
    folder: Path
    stdout: str


@dataclass
class Rendered:
    """A block's markdown, and its charts: ``(source file, name in published/)``."""

    text: str
    charts: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Context:
    """What a renderer needs besides the outputs."""

    date: str
    #: How the document refers to a file in ``published/`` (relative to the document).
    published_ref: str


Renderer = Callable[["Block", Sequence[Output], Context], Rendered]


@dataclass(frozen=True)
class Block:
    name: str
    what: str
    commands: tuple[Command, ...]
    render: Renderer


# -- reading the tools' outputs -----------------------------------------------------------------


def one_file(folder: Path, pattern: str, block: str) -> Path:
    """The one file matching ``pattern`` below ``folder`` (the newest if several)."""
    found = sorted(folder.rglob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RunError(f"{block}: the tool wrote no {pattern} below {folder}")
    return found[-1]


def demote_headings(text: str) -> str:
    """Markdown headings as bold lines: a block sits inside the document's own sections."""
    out = []
    for line in text.splitlines():
        match = re.match(r"^#{1,6}\s+(.*\S)\s*$", line)
        out.append(f"**{match.group(1)}**" if match else line)
    return "\n".join(out)


def squeeze(lines: Sequence[str]) -> str:
    """The lines without leading and trailing blank ones, and no run of two blank lines."""
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def fenced(text: str, lang: str = "text") -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def chart_ref(ctx: Context, name: str) -> str:
    return f"{ctx.published_ref}/{name}"


def render_comparison(block: Block, outputs: Sequence[Output], ctx: Context) -> Rendered:
    """``run-stream-harness.sh --implementation all``: its ``comparison.md`` (the title,
    how to read it, the table in the tools' units) and ``comparison.png``."""
    (output,) = outputs
    md = one_file(output.folder, "comparison.md", block.name)
    name = f"{ctx.date}-split-tcp-{output.command.label}.png"
    charts: list[tuple[Path, str]] = []
    lines: list[str] = []
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("Run folders:"):
            break  # the run's own folders: not in git
        if line.startswith("Run: `"):
            continue
        chart = re.match(r"^!\[(.*)\]\((.*\.png)\)$", line)
        if chart:
            charts.append((md.parent / chart.group(2), name))
            line = f"![{chart.group(1)}, {output.command.label}]({chart_ref(ctx, name)})"
        lines.append(line)
    return Rendered(squeeze(demote_headings("\n".join(lines)).splitlines()), charts)


def render_markdown(pattern: str) -> Renderer:
    """A tool's markdown file (``targets.md``, ``summary.md``, the A/B table), headings
    demoted."""

    def render(block: Block, outputs: Sequence[Output], ctx: Context) -> Rendered:
        parts = []
        for output in outputs:
            md = one_file(output.folder, pattern, block.name)
            parts.append(demote_headings(md.read_text(encoding="utf-8")))
        return Rendered(squeeze("\n\n".join(parts).splitlines()))

    return render


#: The soak's ``key=value`` summary lines shown (on one line) after its ``soak:`` lines; the
#: rest (thresholds, the run's folder) stay in its ``summary.txt``.
SOAK_KEYS = (
    "seed",
    "duration_seconds",
    "streams_started",
    "proxy_kills",
    "resets",
    "proxy_unexpected_errors",
    "leftover_processes",
    "verdict",
)


def render_soak(block: Block, outputs: Sequence[Output], ctx: Context) -> Rendered:
    """The soak's ``summary.txt`` as printed: its ``soak:`` lines, then the headline
    ``key=value`` pairs on one line."""
    parts = []
    for output in outputs:
        text = one_file(output.folder, "summary.txt", block.name).read_text(encoding="utf-8")
        lines = text.splitlines()
        pairs = dict(line.split("=", 1) for line in lines if re.match(r"^\w+=", line))
        human = [line for line in lines if not re.match(r"^\w+=", line)]
        tail = " ".join(f"{key}={pairs[key]}" for key in SOAK_KEYS if key in pairs)
        parts.append(fenced("\n".join([*human, tail])))
    return Rendered("\n\n".join(parts))


def render_stdout(block: Block, outputs: Sequence[Output], ctx: Context) -> Rendered:
    """What a tool that writes no file printed, in a code block."""
    return Rendered("\n\n".join(fenced(o.stdout) for o in outputs))


def render_cost_curves(block: Block, outputs: Sequence[Output], ctx: Context) -> Rendered:
    """``run-cost-curve.sh`` per loop: its ``cost_curve.md`` (the title, the knees, the
    chart; every point folded away) without its own ``Command:`` line (the stamp has it)."""
    charts: list[tuple[Path, str]] = []
    parts: list[str] = []
    for output in outputs:
        md = one_file(output.folder, "cost_curve.md", block.name)
        name = f"{ctx.date}-cost-curve-{output.command.label}.png"
        lines: list[str] = []
        folded = False
        for line in md.read_text(encoding="utf-8").splitlines():
            if line.startswith("Command: `"):
                continue
            chart = re.match(r"^!\[(.*)\]\((.*\.png)\)$", line)
            if chart:
                charts.append((md.parent / chart.group(2), name))
                line = f"![cost curve, {output.command.label}]({chart_ref(ctx, name)})"
            heading = re.match(r"^#{1,6}\s+(.*\S)\s*$", line)
            if heading and heading.group(1).lower().startswith("every point"):
                lines += [
                    "<details>",
                    f"<summary>{heading.group(1)} ({output.command.label})</summary>",
                    "",
                ]
                folded = True
                continue
            lines.append(line)
        text = squeeze(demote_headings("\n".join(lines)).splitlines())
        parts.append(text + ("\n\n</details>" if folded else ""))
    return Rendered("\n\n".join(parts), charts)


# -- the blocks of RESULTS.md ---------------------------------------------------------------------

#: The published CPU-cost shape (check-targets.sh's), and a tiny one for --quick.
SHAPE = (
    "--transport tcp --implementation all --scenario all --completion fire_and_forget"
    " --connections 16 --route-frames 64 --frame-len 63 --tunnel-bytes 1048576"
    " --read-reserve 16384 --worker-threads 1 --duration-seconds 5 --runs 3"
    " --service-cores 0 --driver-cores 1"
)
TINY_SHAPE = (
    "--transport tcp --implementation all --scenario all --completion fire_and_forget"
    " --connections 2 --route-frames 4 --frame-len 63 --tunnel-bytes 4096 --read-reserve 1024"
    " --worker-threads 1 --runs 1 --service-cores 0 --driver-cores 1"
)
LOOPS = ("uvloop", "asyncio")


def command(
    script: str,
    args: str,
    quick: str,
    *,
    results_flag: str | None = "--results-dir",
    ok: frozenset[int] = frozenset({0}),
    label: str = "",
) -> Command:
    """A :class:`Command` whose flags are written as one shell-quoted string each."""
    return Command(
        script, tuple(shlex.split(args)), tuple(shlex.split(quick)), results_flag, ok, label
    )


def _harness_table(name: str, what: str, shape: str, tiny: str, loop: str, label: str) -> Block:
    """One ``run-stream-harness.sh`` run on ``loop``: its comparison table and chart."""
    return Block(
        name,
        f"{what}, {loop}: table and chart",
        (
            command(
                "bench/run-stream-harness.sh",
                f"{shape} --loop {loop}",
                f"{tiny} --loop {loop}",
                label=label,
            ),
        ),
        render_comparison,
    )


def _comparison(loop: str) -> Block:
    what = "split-process TCP, every implementation, both scenarios"
    return _harness_table(f"comparison-{loop}", what, SHAPE, TINY_SHAPE, loop, loop)


#: Long tunnels: the splice against the cheapest copying proxy once each stream's
#: routing and setup are spread over 16 MiB instead of 1 MiB.
LONG_TUNNEL = (
    "--transport tcp --implementation handoff_splice,raw_protocol --scenario coalesced"
    " --completion fire_and_forget --connections 16 --route-frames 64 --frame-len 63"
    " --tunnel-bytes 16777216 --read-reserve 16384 --worker-threads 1 --duration-seconds 5"
    " --runs 3 --service-cores 0 --driver-cores 1"
)
TINY_LONG_TUNNEL = (
    "--transport tcp --implementation handoff_splice,raw_protocol --scenario coalesced"
    " --completion fire_and_forget --connections 2 --route-frames 4 --frame-len 63"
    " --tunnel-bytes 65536 --read-reserve 1024 --worker-threads 1 --runs 1"
    " --service-cores 0 --driver-cores 1"
)


def _long_tunnel(loop: str) -> Block:
    name = f"long-tunnel-{loop}"
    what = "handoff_splice against raw_protocol with 16 MiB tunnels"
    return _harness_table(name, what, LONG_TUNNEL, TINY_LONG_TUNNEL, loop, name)


def _cost_curve(loop: str) -> Command:
    return command(
        "bench/run-cost-curve.sh",
        f"--loop {loop}",
        f"--loop {loop} --implementation handoff,floor --rates 20,40 --duration-seconds 0.5"
        " --connections 2 --tunnel-bytes 4096",
        label=loop,
    )


def _soak(path: str) -> Block:
    return Block(
        f"soak-{path}",
        f"fault-injection soak, {path} library path: its summary",
        (
            command(
                "bench/run-fault-soak.sh",
                f"--library-path {path} --service-cores 0 --driver-cores 1 --seed 2026",
                f"--library-path {path} --duration-seconds 3 --connections 8"
                " --tunnel-bytes 4096 --seed 2026",
                results_flag="--out-dir",
                label=path,
            ),
        ),
        render_soak,
    )


def _http_proxy(name: str, args: str, quick: str, what: str) -> Block:
    return Block(
        name,
        what,
        (command("bench/run-http-proxy-load.sh", args, f"{quick} --no-proxy-py"),),
        render_markdown("summary.md"),
    )


#: Every block, in the order a full run runs them.
BLOCKS: tuple[Block, ...] = (
    *(_comparison(loop) for loop in LOOPS),
    Block(
        "targets",
        "check-targets.sh: every target with its interval and verdict, equal load, memory",
        (
            command(
                "bench/check-targets.sh",
                "--runs 3 --duration-seconds 5",
                "--runs 3 --duration-seconds 0.5 --connections 2 --loops uvloop --skip-memory"
                " --skip-equal-load",
                ok=frozenset({0, 3, 4}),  # 3, 4: a missed or inconclusive target is a result
            ),
        ),
        render_markdown("targets.md"),
    ),
    *(_long_tunnel(loop) for loop in LOOPS),
    Block(
        "cost-curves",
        "open-loop cost curves, both loops: knees, chart, every point",
        tuple(_cost_curve(loop) for loop in LOOPS),
        render_cost_curves,
    ),
    *(_soak(path) for path in ("socket", "protocol")),
    _http_proxy(
        "http-proxy-requests",
        "--runs 3 --duration 10 --variant auto= --variant 'python=--parser python'",
        "--runs 1 --duration 1 --variant auto= --variant 'python=--parser python'",
        "examples/http_proxy.py and proxy.py under wrk, both parsers: medians, every run",
    ),
    _http_proxy(
        "http-proxy-tunnel",
        "--mode tunnel --runs 3",
        "--mode tunnel --runs 1 --tunnel-mib 4 --downloads 1",
        "examples/http_proxy.py and proxy.py: curl downloads through a CONNECT tunnel",
    ),
    Block(
        "tls-cost",
        "TLS by proto.start_tls() against ssl= at connect: server bytes per CPU-second",
        (
            command(
                "bench/tls_upgrade_cost.py",
                "--mib 64 --runs 5 --loops asyncio,uvloop",
                "--mib 1 --runs 1 --loops asyncio",
                results_flag=None,
            ),
        ),
        render_stdout,
    ),
    Block(
        "library-ab",
        "the library at e28cd67 against the working tree, in one process (with A/A)",
        (
            command(
                "bench/run-library-ab.sh",
                "e28cd67 --cores 1 --blocks 15",
                "e28cd67 --bench split_prefix_mut --blocks 2 --rounds 1",
            ),
        ),
        render_markdown("*.md"),
    ),
)

BY_NAME = {block.name: block for block in BLOCKS}


# -- the document ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A block's markers in the document: the start marker's line and the end marker's
    (0-based), the content being the lines between."""

    name: str
    start: int
    end: int


def find_blocks(text: str, where: str) -> dict[str, Span]:
    """Every marked block of ``text``; ``UsageError`` in one line for a marker without
    its pair, a nested or repeated one, or a name no block has."""
    spans: dict[str, Span] = {}
    open_name: str | None = None
    open_line = 0
    for number, line in enumerate(text.splitlines()):
        match = START.match(line)
        if match:
            name = match.group("name")
            if open_name is not None:
                raise UsageError(
                    f"{where}:{number + 1}: marker {name!r} inside block {open_name!r}"
                    f" (opened on line {open_line + 1}; close it with {END})"
                )
            if name not in BY_NAME:
                raise UsageError(
                    f"{where}:{number + 1}: unknown block {name!r} in a marker"
                    f" (known: {', '.join(BY_NAME)})"
                )
            if name in spans:
                raise UsageError(
                    f"{where}:{number + 1}: block {name!r} is marked twice"
                    f" (first on line {spans[name].start + 1})"
                )
            open_name, open_line = name, number
        elif line.strip() == END:
            if open_name is None:
                raise UsageError(f"{where}:{number + 1}: {END} without a block opened before it")
            spans[open_name] = Span(open_name, open_line, number)
            open_name = None
    if open_name is not None:
        raise UsageError(f"{where}:{open_line + 1}: block {open_name!r} is never closed ({END})")
    if not spans:
        raise UsageError(
            f"{where} has no generated block: mark one with <!-- generated: NAME --> ..."
            f" {END} (names: {', '.join(BY_NAME)})"
        )
    return spans


def replace_block(text: str, name: str, content: str, where: str) -> str:
    """``text`` with block ``name``'s content replaced (the markers and everything outside
    them kept byte for byte)."""
    span = find_blocks(text, where).get(name)
    if span is None:
        raise RunError(f"the markers of {name!r} vanished from {where} while it ran: not written")
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines[span.start].endswith("\r\n") else "\n"
    body = "".join(f"{line}{newline}" for line in ["", *content.split("\n"), ""])
    return "".join([*lines[: span.start + 1], body, *lines[span.end :]])


def stamp(block: Block, ctx: Context, quick: bool, machine: str, load: str = "") -> str:
    """The first lines of a block: when, where, how to redo it, what it ran and (``load``)
    how busy the machine was meanwhile."""
    again = f"./bench/publish-results.sh --only {block.name}" + (" --quick" if quick else "")
    commands = "\n".join(c.shown(quick) for c in block.commands)
    lines = [
        f"<!-- {block.name}: written by bench/publish-results.sh; edit the prose outside the"
        " markers, rerun the command for what is inside -->",
    ]
    if quick:
        lines += [
            "**QUICK RUN (`--quick`): tiny workloads, a smoke check: these figures are no"
            " result.**",
            "",
        ]
    lines += [
        f"Generated {ctx.date} on {machine} by `{again}`, which ran:",
        "",
        fenced(commands, "bash"),
    ]
    if load:
        lines += ["", load]
    return "\n".join(lines)


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the system has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def load_line(before: float | None, after: float | None) -> str:
    """How busy the machine was around a block's runs (its own processes included)."""
    if before is None or after is None:
        return ""
    return (
        f"Load average (1 min, this run's own processes included): {before:.2f} when it"
        f" started, {after:.2f} when it ended."
    )


def machine_line() -> str:
    """The machine and software the figures come from, in one line."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    parts = [
        f"{os.cpu_count() or '?'} CPUs" + (f" ({cpu})" if cpu else ""),
        f"{platform.system()} {platform.release()} {platform.machine()}",
        f"{platform.python_implementation()} {platform.python_version()}",
    ]
    for package in ("uvloop", "bytes-handoff"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            parts.append(f"{package} {importlib.metadata.version(package)}")
    return ", ".join(parts)


# -- running -----------------------------------------------------------------------------------


def _pump(source: IO[str], sink: IO[str], keep: list[str]) -> None:
    for line in source:
        keep.append(line)
        sink.write(line)
        sink.flush()


def run_command(
    argv: Sequence[str], env: dict[str, str], cwd: Path, log: Path
) -> tuple[int, str, str]:
    """Run ``argv`` in its own session, its output shown as it comes and kept (also in
    ``log``.out/.err); ``(status, stdout, last stderr line)``. Interrupted: the child's
    whole group gets SIGTERM (then SIGKILL), so a tool cleans up as on Ctrl-C."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    out: list[str] = []
    err: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, out), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, err), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        status = proc.wait()
    except KeyboardInterrupt:
        _stop(proc)
        raise
    for pump in pumps:
        pump.join()
    write_output(log.with_suffix(".out"), "".join(out), "a run's log")
    write_output(log.with_suffix(".err"), "".join(err), "a run's log")
    last = next((line.strip() for line in reversed(err) if line.strip()), "")
    return status, "".join(out), last


def _stop(proc: subprocess.Popen[str]) -> None:
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Publisher:
    root: Path
    document: Path
    run_dir: Path
    quick: bool
    python: str
    machine: str = field(default_factory=machine_line)

    @property
    def published(self) -> Path:
        return self.document.parent / PUBLISHED

    def context(self) -> Context:
        return Context(datetime.date.today().isoformat(), PUBLISHED)

    def measure(self, block: Block) -> list[Output]:
        """Run the block's commands, each into a folder of its own."""
        env = {**os.environ, "PYTHON": self.python}
        outputs = []
        for command in block.commands:
            name = block.name + (f"-{command.label}" if len(block.commands) > 1 else "")
            folder = self.run_dir / name
            print(f"{PROG}: {block.name}: {command.shown(self.quick)}", flush=True)
            argv = command.argv(self.root, self.python, self.quick, folder)
            log = self.run_dir / name  # name.out, name.err
            started = time.monotonic()
            status, stdout, last = run_command(argv, env, self.root, log)
            took = time.monotonic() - started
            if status not in command.ok:
                why = f": {last}" if last else ""
                raise RunError(f"{block.name}: {command.shown(self.quick)} exited {status}{why}")
            print(f"{PROG}: {block.name}: done in {took:.0f} s", flush=True)
            outputs.append(Output(command, folder, stdout))
        return outputs

    def publish(self, block: Block) -> None:
        """Measure ``block``, then write it into the document as it is now."""
        before = load_average()
        outputs = self.measure(block)
        load = load_line(before, load_average())
        ctx = self.context()
        rendered = block.render(block, outputs, ctx)
        content = stamp(block, ctx, self.quick, self.machine, load) + "\n\n" + rendered.text
        if rendered.charts:
            make_output_dir(self.published, "the published folder")
        for source, name in rendered.charts:
            write_output(self.published / name, source.read_bytes(), "a published chart")
        where = str(self.document)
        text = self.document.read_text(encoding="utf-8")  # again: others edit it meanwhile
        write_output(self.document, replace_block(text, block.name, content, where), where)
        print(f"{PROG}: {block.name}: written into {self.document}", flush=True)

    def remove_unreferenced_charts(self) -> list[Path]:
        """Remove the PNGs in ``published/`` that the document no longer refers to."""
        if not self.published.is_dir():
            return []
        text = self.document.read_text(encoding="utf-8")
        removed = []
        for png in sorted(self.published.glob("*.png")):
            if f"{PUBLISHED}/{png.name}" not in text and png.is_file():
                png.unlink()
                removed.append(png)
        return removed


# -- the command line ----------------------------------------------------------------------------


def build_parser(prog: str) -> OneLineParser:
    listing = "\n".join(f"  {b.name:20} {b.what}" for b in BLOCKS)
    parser = OneLineParser(
        prog=prog,
        formatter_class=HelpFormatter,
        description=(
            "Run every measurement that bench/RESULTS.md publishes, through the bench\n"
            "scripts, and replace each block between <!-- generated: NAME --> and\n"
            "<!-- end generated --> with what the tool printed (tables, charts into\n"
            "bench/published/<date>-*.png), stamped with the date and the command.\n"
            "Everything outside the markers is left as it is."
        ),
        epilog=(
            f"blocks (in the order they run):\n{listing}\n\n"
            "examples:\n"
            f"  {prog} --dry-run                        # what would run\n"
            f"  {prog} --only comparison-uvloop,comparison-asyncio\n"
            f"  {prog} --quick                          # smoke check, on a copy\n"
            f"  {prog}                                  # everything (about an hour)"
        ),
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="the blocks to regenerate (default: every block the document marks)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny workloads (a smoke check; the figures are no result); never into the"
        " published document: without --document, into a copy in the results folder",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list every block and its commands; run nothing"
    )
    parser.add_argument(
        "--document",
        type=Path,
        help="the document to rewrite (default: bench/RESULTS.md of the clone); its charts"
        " go to published/ beside it",
    )
    parser.add_argument(
        "--results-dir",
        type=output_dir_arg,
        help="where the runs' folders go: a new publish_<timestamp> folder in it (default:"
        " bench/results of the clone, else of the current folder)",
    )
    return parser


def clone_root() -> Path:
    """The clone whose bench/ scripts run: the one this module is in, else the current one."""
    here = Path(__file__).resolve().parents[3]
    if (here / "bench" / "run-stream-harness.sh").is_file():
        return here
    found = project_root()
    if found is None or not (found / "bench").is_dir():
        raise UsageError("run it from a clone of bytes-handoff: the bench/ scripts are needed")
    return found


def selected(only: str | None, spans: dict[str, Span], where: str) -> list[Block]:
    """The blocks to run, in :data:`BLOCKS` order."""
    if only is None:
        return [b for b in BLOCKS if b.name in spans]
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if not names or unknown:
        raise UsageError(
            f"--only: unknown block {', '.join(map(repr, unknown)) or repr(only)}"
            f" (known: {', '.join(BY_NAME)})"
        )
    unmarked = [n for n in names if n not in spans]
    if unmarked:
        raise UsageError(
            f"--only: {where} has no markers for {', '.join(unmarked)}: add"
            f" <!-- generated: {unmarked[0]} --> and {END} where it belongs"
        )
    return [b for b in BLOCKS if b.name in names]


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, PROG)
    return run_main(prog, lambda: run(prog, args), bench_extra=None)


def run(prog: str, argv: Sequence[str]) -> int:
    args = build_parser(prog).parse_args(argv)
    root = clone_root()
    published_doc = (root / "bench" / "RESULTS.md").resolve()
    document: Path = args.document or published_doc
    if args.quick and args.document is not None and document.resolve() == published_doc:
        raise UsageError(
            "--quick figures are no result: not into the published document"
            " (give a copy with --document, or none: a copy in the results folder)"
        )
    if not document.is_file():
        raise UsageError(f"--document: no such file: {document}")
    where = str(document)
    spans = find_blocks(document.read_text(encoding="utf-8"), where)
    blocks = selected(args.only, spans, where)

    if args.dry_run:
        print(f"{prog}: {where}: {len(spans)} of {len(BLOCKS)} blocks marked; would run:")
        for block in BLOCKS:
            if block in blocks:
                state = "run"
            elif block.name in spans:
                state = "not asked for"
            else:
                state = "no markers: not run"
            print(f"{block.name} ({state}): {block.what}")
            for command in block.commands:
                print(f"  {command.shown(args.quick)}")
        return 0

    results, default = choose_results_dir(args.results_dir, "--results-dir")
    make_output_dir(results, "--results-dir", parents=default)
    run_dir = _new_run_dir(results)
    if args.quick and args.document is None:
        copy = run_dir / "RESULTS.md"
        shutil.copyfile(document, copy)
        document = copy
    else:
        check_output_file(document, "--document")
    print(f"{prog}: runs in {run_dir}; document {document}", flush=True)
    for block in BLOCKS if args.only is None else ():
        if block.name not in spans:
            print(f"{prog}: note: {block.name}: no markers in {where}: not run", flush=True)

    raise_on_termination()
    publisher = Publisher(root, document, run_dir, args.quick, sys.executable)
    failed: list[str] = []
    for block in blocks:
        try:
            publisher.publish(block)
        except RunError as exc:
            print(f"{prog}: {exc}", file=sys.stderr, flush=True)
            failed.append(block.name)
    for png in publisher.remove_unreferenced_charts():
        print(f"{prog}: removed {png} (the document no longer refers to it)", flush=True)
    done = [b.name for b in blocks if b.name not in failed]
    print(f"{prog}: written: {', '.join(done) or 'none'}; document {document}", flush=True)
    if failed:
        raise RunError(f"{len(failed)} block(s) failed, kept as they were: {', '.join(failed)}")
    return 0


def _new_run_dir(results: Path) -> Path:
    stamp_ = time.strftime("%Y%m%d_%H%M%S")
    for attempt in range(1000):
        path = results / (f"publish_{stamp_}" + (f"-{attempt + 1}" if attempt else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RunError(f"cannot make a run folder in {results}")


if __name__ == "__main__":
    sys.exit(main())
