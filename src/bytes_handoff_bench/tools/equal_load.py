"""``check-targets.sh`` at equal offered load: every implementation at one open-loop rate.

The saturated comparisons let each implementation run as fast as it can, so a
faster one also moves more bytes; ns/B puts them on one scale, but queueing,
batching and the loop's idle time differ at full load. Here every
implementation gets the same offered load instead (the harness's ``--rate``,
open loop: streams started on a clock, latency from each stream's scheduled
start), below every implementation's saturation, and the service's CPU cores
compare the cost of the same work directly.

The rate is ``--equal-load-fraction`` (default 0.5) of the slowest
implementation's saturated streams per second in the coalesced scenario of the
saturated runs just made (the median of its runs, as the driver counted them).
An implementation that fell behind even at that load (its achieved rate short
of the offered one, or its schedule slipped) is marked ``FELL_BEHIND`` and gets
no ratio: its figures are no result at that load.

Informational: these rows are reported beside the targets and never change
the exit status.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bytes_handoff_bench.names import REPORT_ORDER, Implementation, Scenario
from bytes_handoff_bench.processes import RunError
from bytes_handoff_bench.tools.artifacts import as_number, fell_behind_note, read_runs_csv

__all__ = [
    "DEFAULT_FRACTION",
    "SCENARIO",
    "EqualLoadRow",
    "equal_load_rate",
    "equal_load_rows",
    "measure",
    "render",
    "saturated_streams_per_sec",
]

#: The scenario compared at equal load (the headline CPU-cost one).
SCENARIO = Scenario.COALESCED
#: The equal load, as a fraction of the slowest implementation's saturated streams/s.
DEFAULT_FRACTION = 0.5


def _median(rows: Sequence[Mapping[str, str]], key: str) -> float | None:
    values = [v for row in rows if (v := as_number(row.get(key, ""))) is not None]
    return statistics.median(values) if values else None


def _ordered(names: Sequence[str]) -> list[str]:
    rank = {str(name): i for i, name in enumerate(REPORT_ORDER)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def saturated_streams_per_sec(base: Path, scenario: str = SCENARIO) -> dict[str, float]:
    """Each implementation's median driver streams/s in ``base/<impl>/<scenario>/runs.csv``
    (a ``--implementation all --scenario all`` folder of saturated runs)."""
    found: dict[str, float] = {}
    for folder in sorted(p for p in base.iterdir() if (p / scenario / "runs.csv").is_file()):
        value = _median(read_runs_csv(folder / scenario / "runs.csv"), "streams_per_sec")
        if value is not None and value > 0:
            found[folder.name] = value
    return found


def equal_load_rate(saturated: Mapping[str, float], fraction: float) -> tuple[float, str]:
    """``fraction`` of the slowest implementation's saturated rate (3 significant digits),
    and which implementation that is."""
    if not saturated:
        raise RunError(f"no saturated streams_per_sec to size the equal load from ({SCENARIO})")
    slowest = min(saturated, key=lambda name: saturated[name])
    return float(f"{fraction * saturated[slowest]:.3g}"), slowest


@dataclass(frozen=True)
class EqualLoadRow:
    """One implementation at the equal load: medians of its runs."""

    implementation: str
    achieved: float | None
    cores: float | None
    ns_per_byte: float | None
    p99_ms: float | None
    #: ``FELL_BEHIND=k/n`` when k of its n runs fell behind the load, else ``""``.
    fell_behind: str


def equal_load_rows(folder: Path) -> list[EqualLoadRow]:
    """The rows of a ``--implementation all --scenario coalesced --rate R`` wrapper folder."""
    rows = []
    for impl in _ordered([p.name for p in folder.iterdir() if (p / "runs.csv").is_file()]):
        runs = read_runs_csv(folder / impl / "runs.csv")
        p99 = _median(runs, "latency_p99_micros")
        rows.append(
            EqualLoadRow(
                implementation=impl,
                achieved=_median(runs, "achieved_streams_per_sec"),
                cores=_median(runs, "service_cpu_avg_cores"),
                ns_per_byte=_median(runs, "service_cpu_ns_per_byte"),
                p99_ms=None if p99 is None else p99 / 1000,
                fell_behind=fell_behind_note(runs),
            )
        )
    return rows


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render(
    rows: Sequence[EqualLoadRow],
    loop: str,
    rate: float,
    slowest: str,
    fraction: float,
    saturated: Mapping[str, float],
    runs: int,
) -> str:
    """The markdown section: one row per implementation, service cores against ``handoff``'s
    (when both kept up)."""
    reference = next(
        (r for r in rows if r.implementation == Implementation.HANDOFF and not r.fell_behind),
        None,
    )
    lines = [
        f"At equal offered load ({loop}): {rate:g} streams/s, open loop, for every"
        f" implementation = {fraction:g} x the slowest saturated rate ({slowest},"
        f" {saturated[slowest]:.1f} streams/s coalesced); medians of {runs} interleaved runs."
        " Informational: no target, no effect on the exit status. Lower is better for"
        " service cores, ns/B and p99; cores vs handoff below 1.00x costs less CPU for the"
        " same work. FELL_BEHIND: could not keep up with this load (no ratio).",
        "",
        "| implementation | achieved streams/s | service CPU cores | service ns/B | driver p99 ms"
        " | cores vs handoff | fell behind |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio = "n/a"
        if (
            reference is not None
            and not row.fell_behind
            and row.cores is not None
            and reference.cores
        ):
            ratio = f"{row.cores / reference.cores:.2f}x"
        lines.append(
            f"| {row.implementation} | {_num(row.achieved, 1)} | {_num(row.cores)}"
            f" | {_num(row.ns_per_byte)} | {_num(row.p99_ms, 2)} | {ratio}"
            f" | {row.fell_behind or 'no'} |"
        )
    return "\n".join(lines) + "\n"


def measure(
    saturated_base: Path,
    loop: str,
    fraction: float,
    runs: int,
    run_all: Callable[[list[str], Path], Path],
    dest: Path,
) -> str:
    """Size the equal load from ``saturated_base``, run every implementation at it with
    ``run_all(extra wrapper flags, results folder) -> run folder``, and render the section."""
    saturated = saturated_streams_per_sec(saturated_base)
    rate, slowest = equal_load_rate(saturated, fraction)
    folder = run_all(["--scenario", SCENARIO, "--rate", f"{rate:g}"], dest)
    return render(equal_load_rows(folder), loop, rate, slowest, fraction, saturated, runs)
