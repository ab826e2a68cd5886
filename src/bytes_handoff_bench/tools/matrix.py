"""The logic behind ``bench/run-stream-matrix.sh``: a decision matrix.

Configured by environment variables (defaults scaled to a
2-core machine):

=================  ==================================  =========================
variable           default                             meaning
=================  ==================================  =========================
TRANSPORT          duplex                              duplex or tcp
IMPLEMENTATIONS    all                                 all: each that runs on TRANSPORT
SCENARIOS          fragmented coalesced
CONNECTIONS        1 4 16                              connections per wave
FRAME_SIZES        64 1024 16384                       frame size incl. newline
INPUT_FRAGMENTS    (scenario default)                  optional client write sizes
COMPLETION         fire_and_forget                     ticket or fire_and_forget
WORKER_THREADS     1                                   event-loop processes
RUNS               3                                   runs per cell
ROUTE_FRAMES       64
TUNNEL_BYTES       262144                              (1 MiB on larger machines)
READ_RESERVE       16384
DURATION_SECONDS   0                                   >0: sustained runs
LOOP               (harness default)                   asyncio or uvloop
SERVICE_CORES      (none)                              with DRIVER_CORES: split TCP
DRIVER_CORES       (none)
RESULTS_DIR        bench/results
=================  ==================================  =========================

A frame size maps to ``--frame-len size - 1`` (the frame plus its newline is
``size`` bytes); sizes outside the harness's 17 bytes to 1 MiB + 1 are refused
before any run. When a frame (plus newline) is larger than the
default write budget (``2 * READ_RESERVE``), the cell raises
``--write-pending-bytes`` to the frame size so the handoff can queue one frame.

Cells of one shape run interleaved per run index (run 1 of every
implementation, then run 2, ...). Output: ``<RESULTS_DIR>/matrix_<timestamp>/``
with one folder per cell (run files, ``runs.csv``, ``summary.csv``),
``matrix.csv`` (one row per cell: mean and sample stdev of the key metrics),
``matrix.md`` and a printed table.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bytes_handoff_bench.cli_common import UsageError, prog_and_args, run_main
from bytes_handoff_bench.extras import require_loop
from bytes_handoff_bench.limits import MAX_FRAME_LEN, MIN_FRAME_LEN
from bytes_handoff_bench.names import (
    Completion,
    Implementation,
    Loop,
    Scenario,
    Transport,
    implementations_for,
)
from bytes_handoff_bench.processes import RunError, raise_on_termination
from bytes_handoff_bench.tools.artifacts import Stat, format_number, write_cell_artifacts
from bytes_handoff_bench.tools.wrapper import (
    Plan,
    check_cells,
    check_results_dir,
    cpuset,
    display_path,
    new_run_dir,
    run_cell_once,
)

DEFAULTS: dict[str, str] = {
    "TRANSPORT": Transport.DUPLEX,
    "IMPLEMENTATIONS": "all",
    "SCENARIOS": "fragmented coalesced",
    "CONNECTIONS": "1 4 16",
    "FRAME_SIZES": "64 1024 16384",
    "INPUT_FRAGMENTS": "",
    "COMPLETION": Completion.FIRE_AND_FORGET,
    "WORKER_THREADS": "1",
    "RUNS": "3",
    "ROUTE_FRAMES": "64",
    "TUNNEL_BYTES": "262144",
    "READ_RESERVE": "16384",
    "DURATION_SECONDS": "0",
    "LOOP": "",
    "SERVICE_CORES": "",
    "DRIVER_CORES": "",
    "RESULTS_DIR": "",
}

KEY_METRICS = (
    "mib_per_sec",
    "streams_per_sec",
    "cpu_avg_cores",
    "cpu_ns_per_byte",
    "latency_p50_micros",
    "latency_p99_micros",
    "max_rss_bytes",
)
SERVICE_METRICS = (
    "service_mib_per_sec",
    "service_cpu_avg_cores",
    "service_cpu_ns_per_byte",
    "service_max_rss_bytes",
)


@dataclass
class Cell:
    implementation: str
    scenario: str
    connections: int
    frame_size: int
    frame_len: int
    input_fragment: int | None
    write_pending_bytes: int | None
    path: Path
    rows: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def name(self) -> str:
        frag = f"_i{self.input_fragment}" if self.input_fragment else ""
        return f"{self.implementation}_{self.scenario}_c{self.connections}_f{self.frame_size}{frag}"


def env(name: str, environ: Mapping[str, str]) -> str:
    return environ.get(name, "").strip() or DEFAULTS[name]


def int_list(name: str, environ: Mapping[str, str], low: int = 1) -> list[int]:
    values = []
    for word in env(name, environ).split():
        if not word.isdigit() or int(word) < low:
            raise UsageError(f"{name}: expected integers >= {low}, got {word!r}")
        values.append(int(word))
    return values


def one_int(name: str, environ: Mapping[str, str], low: int = 1) -> int:
    values = int_list(name, environ, low)
    if len(values) != 1:
        raise UsageError(f"{name}: expected one integer, got {env(name, environ)!r}")
    return values[0]


def choice_list(name: str, environ: Mapping[str, str], choices: Sequence[str]) -> list[str]:
    words = env(name, environ).split()
    for word in words:
        if word not in choices:
            raise UsageError(f"{name}: {word!r} is not one of {', '.join(choices)}")
    if not words:
        raise UsageError(f"{name} is empty")
    return list(dict.fromkeys(words))


@dataclass
class MatrixConfig:
    plan: Plan
    implementations: list[Implementation]
    scenarios: list[Scenario]
    connections: list[int]
    frame_sizes: list[int]
    input_fragments: list[int | None]
    read_reserve: int


def make_config(environ: Mapping[str, str], python: str) -> MatrixConfig:
    transport = choice_list("TRANSPORT", environ, tuple(Transport))
    if len(transport) != 1:
        raise UsageError("TRANSPORT: expected one of duplex, tcp")
    completion = choice_list("COMPLETION", environ, tuple(Completion))
    if len(completion) != 1:
        raise UsageError("COMPLETION: expected one of ticket, fire_and_forget")
    loop = env("LOOP", environ)
    if loop and loop not in tuple(Loop):
        raise UsageError(f"LOOP: {loop!r} is not one of {', '.join(Loop)}")
    require_loop(loop or None, "LOOP")
    service_cores = env("SERVICE_CORES", environ)
    driver_cores = env("DRIVER_CORES", environ)
    if bool(service_cores) != bool(driver_cores):
        raise UsageError("SERVICE_CORES and DRIVER_CORES go together (split TCP)")
    split = bool(service_cores)
    if split:
        if transport[0] != Transport.TCP:
            raise UsageError("SERVICE_CORES/DRIVER_CORES need TRANSPORT=tcp")
        try:
            service_cores, driver_cores = cpuset(service_cores), cpuset(driver_cores)
        except Exception as exc:
            raise UsageError(f"SERVICE_CORES/DRIVER_CORES: {exc}") from exc
    duration = env("DURATION_SECONDS", environ)
    try:
        duration_value = float(duration)
    except ValueError:
        duration_value = -1.0
    if not 0 <= duration_value < float("inf"):
        raise UsageError(f"DURATION_SECONDS: expected a non-negative number, got {duration!r}")
    read_reserve = one_int("READ_RESERVE", environ)
    shape = {
        "--worker-threads": str(one_int("WORKER_THREADS", environ)),
        "--route-frames": str(one_int("ROUTE_FRAMES", environ)),
        "--tunnel-bytes": str(one_int("TUNNEL_BYTES", environ, 0)),
        "--read-reserve": str(read_reserve),
    }
    if duration_value > 0:
        shape["--duration-seconds"] = duration
    frags: list[int | None] = list(int_list("INPUT_FRAGMENTS", environ)) or [None]
    frame_sizes = int_list("FRAME_SIZES", environ)
    for size in frame_sizes:
        if not MIN_FRAME_LEN + 1 <= size <= MAX_FRAME_LEN + 1:
            raise UsageError(
                f"FRAME_SIZES: {size} is outside the harness's {MIN_FRAME_LEN + 1} to"
                f" {MAX_FRAME_LEN + 1} bytes (a frame plus its newline: --frame-len"
                f" {MIN_FRAME_LEN} to {MAX_FRAME_LEN})"
            )
    results = env("RESULTS_DIR", environ)
    plan = Plan(
        transport=Transport(transport[0]),
        implementations=[],
        scenarios=[],
        completion=Completion(completion[0]),
        runs=one_int("RUNS", environ),
        shape=shape,
        loop=Loop(loop) if loop else None,
        split=split,
        service_cores=service_cores or None,
        driver_cores=driver_cores or None,
        service_addr=None,
        sink_addr=None,
        idle_timeout_millis=1000,
        run_timeout_seconds=max(600.0, 3.0 * duration_value + 300.0),
        results_dir=Path(results)
        if results
        else Path(__file__).resolve().parents[3] / "bench" / "results",
        python=python,
    )
    return MatrixConfig(
        plan=plan,
        implementations=list(
            dict.fromkeys(
                impl
                for word in choice_list("IMPLEMENTATIONS", environ, (*Implementation, "all"))
                for impl in (
                    implementations_for(transport[0]) if word == "all" else [Implementation(word)]
                )
            )
        ),
        scenarios=[Scenario(word) for word in choice_list("SCENARIOS", environ, tuple(Scenario))],
        connections=int_list("CONNECTIONS", environ),
        frame_sizes=frame_sizes,
        input_fragments=frags,
        read_reserve=read_reserve,
    )


def build_cells(cfg: MatrixConfig, base: Path) -> list[list[Cell]]:
    """Groups of cells that share a shape (one cell per implementation)."""
    groups: list[list[Cell]] = []
    for scenario in cfg.scenarios:
        for connections in cfg.connections:
            for frame_size in cfg.frame_sizes:
                frame_len = frame_size - 1  # make_config refused sizes the harness cannot run
                budget = frame_len + 1 if frame_len + 1 > 2 * cfg.read_reserve else None
                for frag in cfg.input_fragments:
                    group = []
                    for impl in cfg.implementations:
                        cell = Cell(
                            impl, scenario, connections, frame_size, frame_len, frag, budget, base
                        )
                        cell.path = base / cell.name
                        group.append(cell)
                    groups.append(group)
    return groups


def cell_plan(cfg: MatrixConfig, cell: Cell) -> Plan:
    shape = dict(cfg.plan.shape)
    shape["--connections"] = str(cell.connections)
    shape["--frame-len"] = str(cell.frame_len)
    if cell.input_fragment is not None:
        shape["--input-fragment"] = str(cell.input_fragment)
    if cell.write_pending_bytes is not None:
        shape["--write-pending-bytes"] = str(cell.write_pending_bytes)
    return dataclasses.replace(cfg.plan, shape=shape)


def metric_names(split: bool) -> list[str]:
    return [*KEY_METRICS, *(SERVICE_METRICS if split else ())]


def write_matrix_csv(path: Path, cells: Sequence[Cell], split: bool) -> None:
    metrics = metric_names(split)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "implementation",
                "scenario",
                "connections",
                "frame_size",
                "frame_len",
                "input_fragment",
                "runs",
                *[f"{m}_{s}" for m in metrics for s in ("mean", "stdev")],
                "path",
            ]
        )
        for cell in cells:
            values: list[str] = []
            for metric in metrics:
                stat = cell.stats.get(metric)
                values += (
                    [format_number(stat.mean), format_number(stat.stdev)] if stat else ["", ""]
                )
            writer.writerow(
                [
                    cell.implementation,
                    cell.scenario,
                    cell.connections,
                    cell.frame_size,
                    cell.frame_len,
                    cell.input_fragment or "",
                    len(cell.rows),
                    *values,
                    cell.path.name,
                ]
            )


def table(cells: Sequence[Cell], split: bool) -> tuple[list[str], list[list[str]]]:
    ns = "service_cpu_ns_per_byte" if split else "cpu_ns_per_byte"
    cores = "service_cpu_avg_cores" if split else "cpu_avg_cores"
    headers = [
        "scenario",
        "conns",
        "frame",
        "implementation",
        "MiB/s",
        "service ns/B" if split else "ns/B (whole process)",
        "service cores" if split else "CPU cores",
        "p99 µs",
        "max RSS MiB",
    ]
    rows = []
    for cell in cells:

        def fmt(
            key: str, digits: int, scale: float = 1.0, stats: Mapping[str, Stat] = cell.stats
        ) -> str:
            stat = stats.get(key)
            return "n/a" if stat is None else f"{stat.mean / scale:.{digits}f}"

        rows.append(
            [
                cell.scenario,
                str(cell.connections),
                str(cell.frame_size),
                cell.implementation,
                fmt("mib_per_sec", 2),
                fmt(ns, 3),
                fmt(cores, 3),
                fmt("latency_p99_micros", 1),
                fmt("service_max_rss_bytes" if split else "max_rss_bytes", 1, 1024 * 1024),
            ]
        )
    return headers, rows


def write_matrix_md(path: Path, cells: Sequence[Cell], cfg: MatrixConfig) -> None:
    headers, rows = table(cells, cfg.plan.split)
    plan = cfg.plan
    lines = [
        f"# Stream matrix: {path.parent.name}",
        "",
        f"transport={plan.transport} completion={plan.completion} runs={plan.runs} "
        + " ".join(f"{k[2:]}={v}" for k, v in plan.shape.items())
        + (
            f" service_cores={plan.service_cores} driver_cores={plan.driver_cores}"
            if plan.split
            else ""
        ),
        "",
        "Means over the runs; matrix.csv has the sample stdevs.",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * (len(headers) - 4)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, "run-stream-matrix.sh")
    # rich draws the progress: checked before any run.
    return run_main(prog, lambda: run(prog, args), bench_extra=("rich",))


def run(prog: str, argv: Sequence[str]) -> int:
    """Check every cell (``UsageError``, ``RunError``), then run the matrix."""
    if argv[:1] in (["--help"], ["-h"]):
        print(__doc__)
        return 0
    if argv:
        raise UsageError("takes no arguments (configure with environment variables; see --help)")
    python = os.environ.get("PYTHON") or sys.executable
    cfg = make_config(os.environ, python)
    check_results_dir(cfg.plan.results_dir, "RESULTS_DIR")
    probe = cell_plan(cfg, build_cells(cfg, Path("."))[0][0])
    check_cells(
        probe,
        [
            (
                f"cell {cell.name}: ",
                cell_plan(cfg, cell).harness_args(cell.implementation, cell.scenario),
            )
            for cell in (c for group in build_cells(cfg, Path(".")) for c in group)
        ],
    )
    supported = probe.supported_flags

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    err = Console(stderr=True)
    raise_on_termination()
    try:
        base = new_run_dir(cfg.plan.results_dir, "matrix")
    except (RunError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    groups = build_cells(cfg, base)
    cells = [c for g in groups for c in g]
    plan = cfg.plan
    err.print(
        f"matrix={display_path(base)} transport={plan.transport} cells={len(cells)} "
        f"runs={plan.runs} "
        f"implementations=[{' '.join(cfg.implementations)}] scenarios=[{' '.join(cfg.scenarios)}] "
        f"connections={cfg.connections} frame_sizes={cfg.frame_sizes}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    failure: str | None = None
    done_runs = 0
    ns_name = "service_cpu_ns_per_byte" if plan.split else "cpu_ns_per_byte"
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task("matrix", total=len(cells) * plan.runs)
        try:
            for group in groups:
                for n in range(1, plan.runs + 1):
                    for cell in group:
                        progress.update(task, description=f"{cell.name} run {n}/{plan.runs}")
                        cplan = cell_plan(cfg, cell)
                        cplan.supported_flags = supported
                        row = run_cell_once(cplan, cell.implementation, cell.scenario, cell.path, n)
                        cell.rows.append(row)
                        progress.advance(task)
                        done_runs += 1
                        if not err.is_terminal:
                            # No live bar without a terminal (CI logs): one line per run.
                            err.print(
                                f"[{done_runs}/{len(cells) * plan.runs}] {cell.name} run {n}: "
                                f"mib_per_sec={row.get('mib_per_sec', '?')} "
                                f"{ns_name}={row.get(ns_name, '?')}",
                                highlight=False,
                                markup=False,
                                soft_wrap=True,
                            )
                for cell in group:
                    cell.stats = write_cell_artifacts(cell.path, cell.rows)
        except RunError as exc:
            failure = str(exc)
        except KeyboardInterrupt:
            failure = "interrupted"
    done = [c for c in cells if c.stats]
    write_matrix_csv(base / "matrix.csv", done, plan.split)
    write_matrix_md(base / "matrix.md", done, cfg)
    headers, table_body = table(done, plan.split)
    out = Table(title=f"stream matrix ({plan.transport}, {plan.completion}, runs={plan.runs})")
    for i, header in enumerate(headers):
        out.add_column(header, justify="left" if i in (0, 3) else "right")
    for line in table_body:
        out.add_row(*line)
    Console(width=160).print(out)
    csv_path, md_path = display_path(base / "matrix.csv"), display_path(base / "matrix.md")
    print(f"matrix_csv={csv_path} matrix_md={md_path}")
    if failure is not None:
        print(f"{prog}: error: {failure}", file=sys.stderr)
        return 130 if failure == "interrupted" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
