"""The logic behind ``bench/run-split-service-perf.sh`` and
``bench/run-split-service-strace.sh``: profile the ``tcp-service`` role of a
split-process TCP run while the driver runs pinned to other cores.

Profilers attach to the service's processes (the leader and any worker
processes) *after* its ready file appears and before the driver starts, so the
profile covers the active window, not interpreter start-up.

``perf`` mode makes up to three passes of the same run shape, each a complete
split run (profilers perturb each other, so they do not share a run):

1. ``py-spy record --format flamegraph`` -> ``service.svg`` (Python stacks);
2. ``py-spy record --format raw`` -> ``service-stacks.txt`` (collapsed stacks)
   and ``top-functions.txt`` (self and total samples per Python function);
3. ``perf record -e cpu-clock -g`` -> ``service.perf.data`` and
   ``perf-report.txt`` (native symbols: interpreter, libc, kernel). If perf
   cannot record here, ``perf-note.txt`` says why and the script goes on.

``strace`` mode makes one pass with ``strace -c -f`` attached to the service
-> ``strace-summary.txt`` (syscall counts and time).

Each pass keeps its run files (``<pass>-service-run-1.txt``,
``<pass>-driver-run-1.txt``) so the profiled run's own figures are at hand.

``--out-dir`` is checked before any run (``output_paths``): a folder, or a new
one whose parent exists; in one that exists, every file a pass writes (these
and the profilers' own outputs and logs) must be absent, a regular file, a
character device or a FIFO. Without it: ``<mode>_split_...`` under the default
results folder (``bench/results`` of the clone, else of the current folder).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bytes_handoff_bench import defaults
from bytes_handoff_bench.cli_common import (
    OneLineParser,
    UsageError,
    cpuset,
    non_negative_int,
    non_negative_number,
    positive_int,
    prog_and_args,
    run_main,
)
from bytes_handoff_bench.extras import require_loop
from bytes_handoff_bench.limits import MIN_FRAME_LEN
from bytes_handoff_bench.names import (
    Completion,
    Loop,
    Scenario,
    Transport,
    implementations_for,
)
from bytes_handoff_bench.output_paths import (
    check_output_dir,
    check_output_file,
    choose_results_dir,
    make_output_dir,
    output_dir_arg,
    write_output,
)
from bytes_handoff_bench.processes import RunError, raise_on_termination
from bytes_handoff_bench.tools.split import Attacher, SplitConfig, check_run_files, run_split
from bytes_handoff_bench.tools.wrapper import cpu_count, display_path, preflight

# The harness's workload (``defaults``), shorter for strace, which slows the service down.
PERF_DEFAULTS = {
    "connections": defaults.CONNECTIONS,
    "tunnel_bytes": defaults.TUNNEL_BYTES,
    "duration_seconds": "5",
}
STRACE_DEFAULTS = {
    "connections": defaults.CONNECTIONS,
    "tunnel_bytes": 262144,
    "duration_seconds": "2",
}


def build_parser(prog: str, mode: str) -> OneLineParser:
    perf = mode == "perf"
    settings = PERF_DEFAULTS if perf else STRACE_DEFAULTS
    what = (
        "a py-spy flame graph, its top functions,\nand perf record where it works"
        if perf
        else "strace -c -f syscall counts"
    )
    parser = OneLineParser(
        prog=prog,
        description=(
            f"Profile the tcp-service role of a split TCP run ({what})\nwhile the driver runs"
            " pinned to other cores. The outputs' paths are printed."
        ),
        epilog=(
            "The workload is the harness's (bytes-handoff-bench --help), but for the\n"
            "scenario (coalesced), the completion (fire_and_forget) and a sustained run"
            + ("." if perf else ",\nand a 256 KiB tunnel: strace slows the service down.")
        ),
    )
    parser.add_argument(
        "--implementation",
        choices=[m.value for m in implementations_for(Transport.TCP)],
        default=defaults.IMPLEMENTATION,
        help="the proxy in the profiled service",
    )
    parser.add_argument(
        "--scenario",
        choices=[*(m.value for m in Scenario), "all"],
        default=Scenario.COALESCED,
        help="client write pattern; all: each, one subfolder each",
    )
    parser.add_argument(
        "--completion",
        choices=[m.value for m in Completion],
        default=Completion.FIRE_AND_FORGET,
        help="await a completion ticket per frame, or fire and forget",
    )
    parser.add_argument(
        "--worker-threads",
        type=positive_int,
        help="worker processes, one event loop each (default: CPUs in --service-cores)",
    )
    parser.add_argument(
        "--connections",
        type=positive_int,
        default=settings["connections"],
        help="connections per wave",
    )
    parser.add_argument(
        "--route-frames",
        type=positive_int,
        default=defaults.ROUTE_FRAMES,
        help="route frames per connection",
    )
    parser.add_argument(
        "--frame-len", type=positive_int, default=defaults.FRAME_LEN, help="frame length, >= 16"
    )
    parser.add_argument(
        "--tunnel-bytes",
        type=non_negative_int,
        default=settings["tunnel_bytes"],
        help="tunnel payload per connection",
    )
    parser.add_argument(
        "--read-reserve",
        type=positive_int,
        default=defaults.READ_RESERVE,
        help="proxy read size",
    )
    parser.add_argument(
        "--duration-seconds",
        type=non_negative_number,
        default=settings["duration_seconds"],
        help="repeat waves this long (0: one wave)",
    )
    parser.add_argument(
        "--service-cores", type=cpuset, default="0", help="CPU list of the profiled service"
    )
    parser.add_argument("--driver-cores", type=cpuset, default="1", help="CPU list of the driver")
    parser.add_argument(
        "--loop",
        choices=[m.value for m in Loop],
        help="event loop (default: the harness's: uvloop if installed, else asyncio)",
    )
    parser.add_argument(
        "--idle-timeout-millis",
        type=positive_int,
        default=defaults.IDLE_TIMEOUT_MILLIS,
        help="the service ends this long after its last stream",
    )
    parser.add_argument(
        "--out-dir",
        type=output_dir_arg,
        help="a folder, or a new one in an existing folder (default:"
        f" bench/results/{mode}_split_... of the clone, else of the current folder)",
    )
    if perf:
        parser.add_argument("--rate", type=positive_int, default=250, help="py-spy samples/s")
        parser.add_argument("--perf-freq", type=positive_int, default=997, help="perf samples/s")
        parser.add_argument("--no-perf", action="store_true", help="skip the perf record pass")
    return parser


def harness_args(args: argparse.Namespace, scenario: str) -> list[str]:
    workers = args.worker_threads or cpu_count(args.service_cores)
    out = [
        "--transport",
        Transport.TCP,
        "--implementation",
        args.implementation,
        "--scenario",
        scenario,
        "--completion",
        args.completion,
        "--worker-threads",
        str(workers),
        "--connections",
        str(args.connections),
        "--route-frames",
        str(args.route_frames),
        "--frame-len",
        str(args.frame_len),
        "--tunnel-bytes",
        str(args.tunnel_bytes),
        "--read-reserve",
        str(args.read_reserve),
    ]
    if float(args.duration_seconds) > 0:
        out += ["--duration-seconds", str(args.duration_seconds)]
    if args.loop:
        out += ["--loop", args.loop]
    return out


def split_config(
    args: argparse.Namespace, scenario: str, out_dir: Path, stem: str, attacher: Attacher
) -> SplitConfig:
    duration = float(args.duration_seconds)
    return SplitConfig(
        harness_args=harness_args(args, scenario),
        out_dir=out_dir,
        run_index=1,
        python=os.environ.get("PYTHON") or sys.executable,
        service_cores=args.service_cores,
        driver_cores=args.driver_cores,
        idle_timeout_millis=args.idle_timeout_millis,
        run_timeout_seconds=max(300.0, 3 * duration + 120.0),
        attachers=[attacher],
        label=f"{stem} pass ({args.implementation} {scenario})",
        driver_file_stem=f"{stem}-driver",
        service_file_stem=f"{stem}-service",
    )


# -- py-spy -------------------------------------------------------------------------


def py_spy_binary() -> str:
    """py-spy next to the interpreter (the venv), else on PATH."""
    python = os.environ.get("PYTHON") or sys.executable
    candidate = Path(python).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("py-spy")
    if found is None:
        raise RunError("py-spy is not installed (pip install 'bytes-handoff[profile]')")
    return found


def py_spy_attacher(out_dir: Path, fmt: str, output: Path, rate: int, stem: str) -> Attacher:
    binary = py_spy_binary()

    def argv(pids: list[int]) -> list[str]:
        # --subprocesses follows worker processes of the service leader.
        return [
            binary,
            "record",
            "--pid",
            str(pids[0]),
            "--subprocesses",
            "--rate",
            str(rate),
            "--format",
            fmt,
            "--output",
            str(output),
        ]

    return Attacher(
        name="py-spy",
        argv=argv,
        stdout_path=out_dir / f"{stem}-py-spy.out",
        stderr_path=out_dir / f"{stem}-py-spy.log",
        # py-spy prints nothing on attach when stderr is not a terminal: give it a
        # moment, and fail if it exited meanwhile (no permission, not Python, ...).
        settle_seconds=1.0,
    )


_LINE_SUFFIX = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    """``func (file.py:12)`` -> ``func (file.py)``: one entry per function."""
    return _LINE_SUFFIX.sub(")", frame.strip())


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([frame_name(f) for f in stack.split(";") if f], int(count)))
    return stacks


def top_functions(text: str, limit: int = 40) -> str:
    """Self and total sample counts per Python function from collapsed stacks."""
    stacks = parse_collapsed(text)
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [
        f"# py-spy samples: {total} (non-idle; collapsed stacks in service-stacks.txt)",
        "# self = samples with the function on top of the stack; total = samples with it"
        " anywhere in the stack. Time in C code (the event loop's poll and callbacks,"
        " socket calls) counts as self time of the innermost Python frame, e.g. Runner.run.",
        "",
        f"## top {limit} by self samples",
        f"{'self':>8} {'self%':>7} {'total':>8} {'total%':>7}  function (file)",
    ]

    def pct(value: int) -> float:
        return 100.0 * value / total if total else 0.0

    def row(name: str) -> str:
        s, t = own[name], inclusive[name]
        return f"{s:>8} {pct(s):>6.1f}% {t:>8} {pct(t):>6.1f}%  {name}"

    lines += [row(name) for name, _ in own.most_common(limit)]
    lines += [
        "",
        f"## top {limit} by total samples",
        f"{'self':>8} {'self%':>7} {'total':>8} {'total%':>7}  function (file)",
    ]
    lines += [row(name) for name, _ in inclusive.most_common(limit)]
    return "\n".join(lines) + "\n"


# -- perf ---------------------------------------------------------------------------


def perf_attacher(out_dir: Path, data: Path, freq: int) -> Attacher:
    def argv(pids: list[int]) -> list[str]:
        return [
            "perf",
            "record",
            "-e",
            "cpu-clock",
            "-F",
            str(freq),
            "-g",
            "-p",
            ",".join(str(p) for p in pids),
            "-o",
            str(data),
        ]

    return Attacher(
        name="perf record",
        argv=argv,
        stdout_path=out_dir / "perf-record.out",
        stderr_path=out_dir / "perf-record.log",
        settle_seconds=0.5,
    )


def perf_report(data: Path, out_dir: Path) -> str | None:
    """Write ``perf-report.txt`` (flat, by symbol) and ``perf-report-callgraph.txt``.

    Returns ``None`` on success, else why nothing could be reported.
    """
    reports = {
        "perf-report.txt": ["--no-children", "-g", "none", "--sort", "comm,dso,symbol"],
        "perf-report-callgraph.txt": ["--children"],
    }
    for name, extra in reports.items():
        try:
            proc = subprocess.run(
                [
                    "perf",
                    "report",
                    "--stdio",
                    "--percent-limit",
                    "0.5",
                    *extra,
                    "-i",
                    str(data),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"perf report failed: {exc}"
        if proc.returncode != 0 or "no samples" in proc.stderr + proc.stdout:
            message = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            return f"perf report found nothing to show (exit {proc.returncode}): {message}"
        header = (
            "# CPython 3.11 has no perf trampoline (-X perf is 3.12+): Python code shows as\n"
            "# interpreter C frames (_PyEval_EvalFrameDefault); see top-functions.txt and\n"
            "# service.svg (py-spy) for the Python functions.\n"
        )
        write_output(out_dir / name, header + proc.stdout, name)
    return None


# -- passes -------------------------------------------------------------------------


def run_perf_mode(args: argparse.Namespace, scenario: str, out_dir: Path) -> list[str]:
    """The three passes for one scenario; returns the lines to print."""
    printed: list[str] = []
    svg = out_dir / "service.svg"
    run_split(
        split_config(
            args,
            scenario,
            out_dir,
            "flamegraph",
            py_spy_attacher(out_dir, "flamegraph", svg, args.rate, "flamegraph"),
        )
    )
    if not svg.exists() or svg.stat().st_size == 0:
        raise RunError(f"py-spy wrote no flame graph (log: {out_dir / 'flamegraph-py-spy.log'})")
    printed.append(f"flamegraph={display_path(svg)}")

    stacks = out_dir / "service-stacks.txt"
    run_split(
        split_config(
            args,
            scenario,
            out_dir,
            "stacks",
            py_spy_attacher(out_dir, "raw", stacks, args.rate, "stacks"),
        )
    )
    if not stacks.exists():
        raise RunError(f"py-spy wrote no stacks (log: {out_dir / 'stacks-py-spy.log'})")
    top = out_dir / "top-functions.txt"
    write_output(top, top_functions(stacks.read_text(encoding="utf-8")), top.name)
    printed.append(f"top_functions={display_path(top)}")

    note = out_dir / "perf-note.txt"
    if args.no_perf:
        write_output(note, "perf pass skipped (--no-perf)\n", note.name)
        printed.append(f"perf_note={display_path(note)}")
        return printed
    if shutil.which("perf") is None:
        write_output(note, "perf is not installed; no perf record pass\n", note.name)
        printed.append(f"perf_note={display_path(note)}")
        return printed
    data = out_dir / "service.perf.data"
    attacher = perf_attacher(out_dir, data, args.perf_freq)
    attacher.ok_returncodes = (0,)
    reason: str | None = None
    try:
        result = run_split(split_config(args, scenario, out_dir, "perf", attacher))
        rc = result.attacher_returncodes.get("perf record", 0)
        if rc != 0:
            reason = f"perf record exited with status {rc}: see {attacher.stderr_path}"
    except RunError as exc:
        if "perf record" not in str(exc):
            raise
        reason = str(exc)
    if reason is None:
        reason = perf_report(data, out_dir)
    if reason is None:
        printed.append(f"perf_report={display_path(out_dir / 'perf-report.txt')}")
        printed.append(f"perf_callgraph={display_path(out_dir / 'perf-report-callgraph.txt')}")
        printed.append(f"perf_data={display_path(data)}")
    else:
        write_output(
            note,
            f"perf record could not profile the service on this machine.\nreason: {reason}\n",
            note.name,
        )
        printed.append(f"perf_note={display_path(note)}")
    return printed


def strace_attacher(out_dir: Path, summary: Path) -> Attacher:
    if shutil.which("strace") is None:
        raise RunError("strace is not installed")

    def argv(pids: list[int]) -> list[str]:
        cmd = ["strace", "-c", "-f", "-o", str(summary)]
        for pid in pids:
            cmd += ["-p", str(pid)]
        return cmd

    return Attacher(
        name="strace",
        argv=argv,
        stdout_path=out_dir / "strace.out",
        stderr_path=out_dir / "strace.log",
        ready_marker="attached",
    )


def run_strace_mode(args: argparse.Namespace, scenario: str, out_dir: Path) -> list[str]:
    summary = out_dir / "strace-summary.txt"
    run_split(split_config(args, scenario, out_dir, "strace", strace_attacher(out_dir, summary)))
    if not summary.exists() or "total" not in summary.read_text(encoding="utf-8"):
        raise RunError(f"strace wrote no summary (log: {out_dir / 'strace.log'})")
    return [f"strace_summary={display_path(summary)}"]


#: Per mode: the passes (their run files' stem) and the files each mode writes itself or
#: has its profilers write, in each scenario's folder.
PASSES = {"perf": ("flamegraph", "stacks", "perf"), "strace": ("strace",)}
OUTPUTS = {
    "perf": (
        "service.svg",
        "service-stacks.txt",
        "top-functions.txt",
        "perf-note.txt",
        "service.perf.data",
        "perf-report.txt",
        "perf-report-callgraph.txt",
        "flamegraph-py-spy.out",
        "flamegraph-py-spy.log",
        "stacks-py-spy.out",
        "stacks-py-spy.log",
        "perf-record.out",
        "perf-record.log",
    ),
    "strace": ("strace-summary.txt", "strace.out", "strace.log"),
}


#: Only for the names of a pass's run files: never started.
_NO_ATTACHER = Attacher(name="none", argv=lambda pids: [], stdout_path=None, stderr_path=Path())


def check_out_dir(
    mode: str, args: argparse.Namespace, base: Path, scenarios: Sequence[str]
) -> None:
    """Refuse (``UsageError``), before any run, a scenario folder or a file in one that a
    pass could not write: each is checked as ``output_paths`` says."""
    for scenario in scenarios:
        out_dir = base / scenario if len(scenarios) > 1 else base
        if out_dir != base and base.is_dir():
            check_output_dir(out_dir, "--out-dir")
        if not out_dir.is_dir():
            continue  # made new
        for name in OUTPUTS[mode]:
            check_output_file(out_dir / name, f"--out-dir: {name}")
        for stem in PASSES[mode]:
            check_run_files(split_config(args, scenario, out_dir, stem, _NO_ATTACHER), "--out-dir")


def default_out_dir(mode: str, args: argparse.Namespace) -> Path:
    results, _default = choose_results_dir(None, "--out-dir")
    stamp = time.strftime("%Y%m%d_%H%M%S")
    return results / f"{mode}_split_{args.implementation}_{args.scenario}_{stamp}_{os.getpid()}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("perf", "strace"):
        print(
            "usage: python -m bytes_handoff_bench.tools.profilers perf|strace [flags]",
            file=sys.stderr,
        )
        return 2
    mode = argv[0]
    prog, rest = prog_and_args(argv[1:], f"run-split-service-{mode}.sh")
    return run_main(prog, lambda: profile(prog, mode, rest))


def profile(prog: str, mode: str, argv: Sequence[str]) -> int:
    """Check the flags, then profile each scenario; ``UsageError``/``RunError`` on failure."""
    args = build_parser(prog, mode).parse_args(argv)
    if args.out_dir is not None:
        check_output_dir(args.out_dir, "--out-dir")
    if args.frame_len < MIN_FRAME_LEN:
        raise UsageError(f"--frame-len must be >= {MIN_FRAME_LEN}, got {args.frame_len}")
    if shutil.which("taskset") is None:
        raise UsageError("taskset is required to pin the service and the driver")
    scenarios = list(Scenario) if args.scenario == "all" else [Scenario(args.scenario)]
    # The harness checks every scenario's flags before anything starts (and that it starts).
    answer = preflight([harness_args(args, scenario) for scenario in scenarios])
    if args.loop and "--loop" not in answer.flags:
        raise UsageError("--loop is not supported by this harness")
    for error in answer.errors:
        if error is not None:
            raise UsageError(error)
    require_loop(args.loop)

    base: Path = args.out_dir or default_out_dir(mode, args)
    check_out_dir(mode, args, base, scenarios)
    print(
        f"{mode}: implementation={args.implementation} scenario={args.scenario} "
        f"service_cores={args.service_cores} driver_cores={args.driver_cores} "
        f"out_dir={display_path(base)}",
        flush=True,
    )
    raise_on_termination()
    for scenario in scenarios:
        out_dir = base / scenario if len(scenarios) > 1 else base
        # The default base may be new with its parents; a given one has its parent.
        make_output_dir(out_dir, "--out-dir", parents=True)
        lines = (
            run_perf_mode(args, scenario, out_dir)
            if mode == "perf"
            else run_strace_mode(args, scenario, out_dir)
        )
        for line in lines:
            print(f"{scenario}: {line}", flush=True)
        if mode == "strace":
            summary = (out_dir / "strace-summary.txt").read_text(encoding="utf-8")
            print("\n".join(summary.splitlines()[:14]), flush=True)
        else:
            top = (out_dir / "top-functions.txt").read_text(encoding="utf-8")
            print("\n".join(top.splitlines()[3:19]), flush=True)
    print(f"outputs in {display_path(base)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
