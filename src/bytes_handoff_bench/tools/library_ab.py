"""The library at a git revision against the working tree, side by side in one process.

Two pytest-benchmark runs of the same code can differ by a factor of two on a
shared machine (other tenants, frequency changes), so comparing saved runs
(``run-criterion-baseline.sh --compare``) cannot show a change of a few
percent. This loads both libraries into one process under different package
names (``bytes_handoff_base``: the revision; ``bytes_handoff_tree``: the
working tree), runs every case of ``benches/`` against each in rotating
blocks, so that whatever slows the machine slows both alike, and also against
a second copy of the working tree: that A/A ratio is the noise floor to read
the A/B ratio against.

  ./bench/run-library-ab.sh HEAD~1                        # every case, 20 blocks
  ./bench/run-library-ab.sh main --bench split_prefix_mut,write_many_tasks --cores 1

Per case: the median round time at the revision and in the working tree (each
block times ``--rounds`` rounds and keeps their median), the median over blocks
of tree / revision, and the median over blocks of tree / tree again. Each
case's result is checked after every block, as ``benches/conftest.py`` does.
The table is printed and saved as ``<results>/<rev>_<time>.md`` (default
``bench/results/ab`` of the clone, else of the current folder) and
``.json``. ``BENCH_SMOKE=1`` runs the tiny inputs (a quick check; no meaning).

Exit statuses: :data:`EXIT_STATUSES` (the end of ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import io
import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bytes_handoff_bench.cli_common import (
    HelpFormatter,
    OneLineParser,
    UsageError,
    cpuset,
    prog_and_args,
    run_main,
    whole_number,
)
from bytes_handoff_bench.errors import BenchError
from bytes_handoff_bench.extras import MICRO_EXTRA_HINT, missing_packages
from bytes_handoff_bench.names import Loop
from bytes_handoff_bench.output_paths import (
    choose_results_dir,
    make_output_dir,
    output_dir_arg,
    write_output,
)
from bytes_handoff_bench.processes import RunError

ROOT = Path(__file__).resolve().parents[3]
LIBRARY = Path("src") / "bytes_handoff"
BENCHES = ROOT / "benches"
#: The revision, the working tree, and the working tree again (the A/A control).
VARIANTS = ("base", "tree", "tree2")
MAX_BLOCKS = 1000
MAX_ROUNDS = 1000

#: An import of the library at the start of a line (absolute, so it must be renamed).
_IMPORT = re.compile(r"^(\s*)(from|import) bytes_handoff(?=[\s.])", re.M)


#: What ``--help`` says of the exit statuses (the others are every program's).
EXIT_STATUSES = {
    0: "compared",
    1: "a run or a check failed",
    2: "bad usage (a flag, an unknown revision, one without src/bytes_handoff, a family"
    " that does not exist; a missing micro extra)",
}


def renamed(source: str, package: str) -> str:
    """``source`` with every line-initial import of ``bytes_handoff`` renamed to ``package``."""
    return _IMPORT.sub(rf"\1\2 {package}", source)


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise UsageError("git is not installed: the revision cannot be read") from None
    except subprocess.TimeoutExpired:
        raise RunError(f"git {' '.join(args)} did not finish within 60 s") from None


def resolve(rev: str) -> str:
    """The commit ``rev`` names in this checkout; :class:`UsageError` when none."""
    if rev.startswith("-") or not rev.strip():
        raise UsageError(f"expected a git revision, got {rev!r}")
    done = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if done.returncode != 0:
        if _git("rev-parse", "--git-dir").returncode != 0:
            raise UsageError(f"{ROOT} is not a git checkout: no revision to compare with")
        raise UsageError(f"unknown revision {rev!r} in {ROOT}")
    return done.stdout.decode().strip()


def _copy_package(source: Path, dest: Path, package: str) -> None:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in dest.rglob("*.py"):
        path.write_text(renamed(path.read_text(encoding="utf-8"), package), encoding="utf-8")


def prepare(commit: str, work: Path) -> list[str]:
    """Lay out ``work/pkgs``: each variant's library and bench modules; return the modules' stems.

    ``bytes_handoff_<variant>`` is the library (the revision's for ``base``,
    the working tree's otherwise); ``<bench>_<variant>.py`` is each
    ``benches/test_bench_*.py`` importing that library.
    """
    archive = _git("archive", "--format=tar", commit, str(LIBRARY))
    if archive.returncode != 0:
        raise UsageError(f"revision {commit[:12]} has no {LIBRARY} to compare with")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(work / "rev", filter="data")
        else:  # our own git archive of one folder
            tar.extractall(work / "rev")
    pkgs = work / "pkgs"
    pkgs.mkdir()
    for variant in VARIANTS:
        source = work / "rev" / LIBRARY if variant == "base" else ROOT / LIBRARY
        _copy_package(source, pkgs / f"bytes_handoff_{variant}", f"bytes_handoff_{variant}")
    stems = sorted(path.stem for path in BENCHES.glob("test_bench_*.py"))
    if not stems:
        raise UsageError(f"no benches/test_bench_*.py under {ROOT}")
    for stem in stems:
        bench = (BENCHES / f"{stem}.py").read_text(encoding="utf-8")
        for variant in VARIANTS:
            text = renamed(bench, f"bytes_handoff_{variant}")
            (pkgs / f"{stem}_{variant}.py").write_text(text, encoding="utf-8")
    return stems


# -- the worker: one process, every variant loaded --------------------------------------------


@dataclass(frozen=True)
class Case:
    """One parametrization of one benchmark function."""

    function: str
    stem: str
    params: tuple[tuple[str, Any], ...]

    @property
    def family(self) -> str:
        return self.function.removeprefix("test_")

    @property
    def label(self) -> str:
        values = "-".join(str(value) for _, value in self.params)
        return f"{self.family}[{values}]" if values else self.family


def _grid(function: Callable[..., Any]) -> Iterator[tuple[tuple[str, Any], ...]]:
    """Every combination of the function's ``pytest.mark.parametrize`` values, in pytest's order."""
    axes: list[list[tuple[tuple[str, Any], ...]]] = []
    for mark in getattr(function, "pytestmark", []):  # pytest.Mark
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        rows = []
        for value in values:
            value = getattr(value, "values", value)  # pytest.param(...)
            row = value if len(names) > 1 else (value,)
            rows.append(tuple(zip(names, row, strict=True)))
        axes.append(rows)
    # pytestmark lists the decorator nearest the function first; like pytest, vary it slowest.
    for combo in itertools.product(*axes):
        yield tuple(pair for axis in combo for pair in axis)


def find_cases(stems: Sequence[str], families: Sequence[str] | None) -> list[Case]:
    """The cases of the working tree's bench modules, restricted to ``families``."""
    cases: list[Case] = []
    for stem in stems:
        module = importlib.import_module(f"{stem}_tree")
        for name, function in vars(module).items():
            wanted = families is None or name.removeprefix("test_") in families
            if name.startswith("test_") and inspect.isfunction(function) and wanted:
                cases.extend(Case(name, stem, params) for params in _grid(function))
    return cases


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == Loop.UVLOOP:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def run_block(module: ModuleType, case: Case, rounds: int, loop_name: str) -> float:
    """Call the case's function with a timing ``measure``; the median of ``rounds`` rounds."""
    times: list[float] = []

    def measure(round_: Callable[[], Any], *, check: Callable[[Any], None], **_info: Any) -> None:
        out = round_()
        check(out)
        for _ in range(rounds):
            start = time.perf_counter()
            out = round_()
            times.append(time.perf_counter() - start)
        check(out)  # the last result, as after a timed run

    function = getattr(module, case.function)
    kwargs: dict[str, Any] = dict(case.params)
    wanted = inspect.signature(function).parameters
    loop = _new_loop(loop_name) if "loop" in wanted else None
    try:
        if loop is not None:
            kwargs["loop"] = loop
        function(measure, **kwargs)
        if loop is not None:
            leftover = [task for task in asyncio.all_tasks(loop) if not task.done()]
            if leftover:
                raise BenchError(f"{case.label}: {len(leftover)} task(s) left running")
    finally:
        if loop is not None:
            loop.close()
    if not times:
        raise BenchError(f"{case.label} never called measure()")
    return statistics.median(times)


@dataclass
class Result:
    case: str
    base_s: float
    tree_s: float
    #: Median over blocks of tree / base, and of tree2 / tree (the A/A control).
    ratio: float
    aa_ratio: float
    blocks: int


def compare_case(
    modules: dict[str, ModuleType], case: Case, blocks: int, rounds: int, loop_name: str
) -> Result:
    # One untimed block each first: imports, caches and allocator warm.
    for variant in VARIANTS:
        run_block(modules[variant], case, 1, loop_name)
    seen: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for block in range(blocks):
        shift = block % len(VARIANTS)  # who goes first rotates
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            seen[variant].append(run_block(modules[variant], case, rounds, loop_name))
    base, tree, tree2 = (seen[variant] for variant in VARIANTS)
    return Result(
        case=case.label,
        base_s=statistics.median(base),
        tree_s=statistics.median(tree),
        ratio=statistics.median(t / b for b, t in zip(base, tree, strict=True)),
        aa_ratio=statistics.median(t2 / t for t, t2 in zip(tree, tree2, strict=True)),
        blocks=blocks,
    )


def worker(argv: Sequence[str]) -> int:
    """``--worker WORK BLOCKS ROUNDS LOOP FAMILIES|all``: JSON lines of results on stdout."""
    work, blocks, rounds, loop_name, wanted = argv
    sys.path.insert(0, str(Path(work) / "pkgs"))
    stems = sorted(p.stem.removesuffix("_tree") for p in (Path(work) / "pkgs").glob("*_tree.py"))
    families = None if wanted == "all" else wanted.split(",")
    for case in find_cases(stems, families):
        modules = {v: importlib.import_module(f"{case.stem}_{v}") for v in VARIANTS}
        result = compare_case(modules, case, int(blocks), int(rounds), loop_name)
        print(json.dumps(asdict(result)), flush=True)
    return 0


# -- the command ------------------------------------------------------------------------------


def core_list(text: str) -> str:
    """A CPU list for ``taskset -c`` (which must be installed)."""
    if shutil.which("taskset") is None:
        raise argparse.ArgumentTypeError("needs taskset (util-linux), which is not installed")
    return cpuset(text)


def build_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0] if __doc__ else None,
        formatter_class=HelpFormatter,
        exit_statuses=EXIT_STATUSES,
    )
    parser.add_argument("rev", help="the git revision to compare the working tree with")
    parser.add_argument(
        "--bench",
        default="all",
        help="families, comma separated (test_<family> in benches/), or all",
    )
    parser.add_argument(
        "--blocks", type=whole_number(1, MAX_BLOCKS), default=20, help="blocks per case and variant"
    )
    parser.add_argument(
        "--rounds", type=whole_number(1, MAX_ROUNDS), default=5, help="timed rounds per block"
    )
    parser.add_argument(
        "--loop",
        choices=[m.value for m in Loop],
        default=Loop.UVLOOP,
        help="event loop for the async cases",
    )
    parser.add_argument("--cores", type=core_list, help="pin the run with taskset -c CORES")
    parser.add_argument(
        "--results-dir",
        type=output_dir_arg,
        help="where the .md and .json go: a folder, or a new one in an existing folder"
        " (default: bench/results/ab of the clone, else of the current folder)",
    )
    return parser


def table(results: Sequence[Result], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "| case | revision ms | tree ms | tree / revision | A/A (noise) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.base_s * 1e3:,.3f} | {r.tree_s * 1e3:,.3f} "
            f"| {r.ratio:.3f} | {r.aa_ratio:.3f} |"
        )
    lines += [
        "",
        "Lower is better. Each ratio is the median over blocks of the per-block ratio;"
        " a tree / revision ratio inside the A/A spread is no change.",
    ]
    return "\n".join(lines) + "\n"


def run(prog: str, argv: Sequence[str]) -> int:
    args = build_parser(prog).parse_args(argv)
    needed = [("pytest", "pytest")] + [("uvloop", "uvloop")] * (args.loop == Loop.UVLOOP)
    missing = missing_packages(needed)
    if missing:
        raise UsageError(f"missing {', '.join(missing)}: {MICRO_EXTRA_HINT}")
    results_dir, default = choose_results_dir(args.results_dir, "--results-dir", "ab")
    commit = resolve(args.rev)
    with tempfile.TemporaryDirectory(prefix="library-ab.") as tmp:
        stems = prepare(commit, Path(tmp))
        sys.path.insert(0, str(Path(tmp) / "pkgs"))
        try:
            known = sorted({case.family for case in find_cases(stems, None)})
        finally:
            sys.path.remove(str(Path(tmp) / "pkgs"))
        families = "all"
        if args.bench != "all":
            chosen = [name.strip() for name in args.bench.split(",") if name.strip()]
            unknown = [name for name in chosen if name not in known]
            if not chosen or unknown:
                raise UsageError(
                    f"unknown family {', '.join(unknown) or repr(args.bench)}"
                    f" (known: {', '.join(known)})"
                )
            families = ",".join(chosen)
        command = [sys.executable, "-m", "bytes_handoff_bench.tools.library_ab", "--worker"]
        command += [tmp, str(args.blocks), str(args.rounds), args.loop, families]
        if args.cores:
            command = ["taskset", "-c", args.cores, *command]
        print(
            f"{prog}: {args.rev} ({commit[:12]}) against the working tree; {args.blocks} blocks"
            f" x {args.rounds} rounds per case, {args.loop}, cores {args.cores or 'any'};"
            f" results in {results_dir}{' (the default)' if default else ''}",
            flush=True,
        )
        results = _run_worker(command)
    title = f"Library A/B: working tree against {args.rev} ({commit[:12]}), {args.loop}"
    text = table(results, title)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", args.rev)
    make_output_dir(results_dir, "--results-dir", parents=default)
    md = results_dir / f"{name}_{stamp}.md"
    write_output(md, text, "--results-dir")
    meta = {"rev": args.rev, "commit": commit, "loop": args.loop, "rounds": args.rounds}
    payload = {**meta, "cores": args.cores, "results": [asdict(r) for r in results]}
    write_output(md.with_suffix(".json"), json.dumps(payload, indent=2) + "\n", "--results-dir")
    print()
    print(text)
    print(f"ab_md={md}")
    return 0


def _run_worker(command: list[str]) -> list[Result]:
    """Run the worker, echoing each case as it finishes; its results."""
    results = []
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            for line in proc.stdout:
                result = Result(**json.loads(line))
                results.append(result)
                print(
                    f"  {result.case}: {result.ratio:.3f} x (A/A {result.aa_ratio:.3f})",
                    flush=True,
                )
            errors = proc.stderr.read()
            status = proc.wait()
        except BaseException:
            proc.kill()
            raise
    if status != 0:
        last = [line for line in errors.splitlines() if line.strip()][-1:] or ["no output"]
        raise RunError(f"the comparison failed (exit {status}): {last[0][:300]}")
    if not results:
        raise RunError("the comparison ran no case")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--worker"]:
        return worker(args[1:])
    prog, rest = prog_and_args(args, "run-library-ab.sh")
    return run_main(prog, lambda: run(prog, rest), bench_extra=None)


if __name__ == "__main__":
    sys.exit(main())
