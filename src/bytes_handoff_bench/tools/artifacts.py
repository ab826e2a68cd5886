"""Run artifacts of the stream harness: parse ``key=value`` run files, write
``runs.csv`` and ``summary.csv``, and format the one-line summary.

Conventions (the wrappers and the report rely on them):

* A run file is the stdout of one harness process: one ``key=value`` per line.
  Lines without ``=`` are ignored; a repeated key keeps its last value.
* ``runs.csv`` has one row per run. Its first column is ``run`` (the run
  index). In split-process TCP runs the driver's keys keep their names and the
  service's keys are prefixed with ``service_`` (``service_cpu_ns_per_byte``).
  Columns are the union of every run's keys in first-seen order; a key a run
  lacks is an empty cell.
* ``summary.csv`` has the columns ``metric,mean,stdev``, one row per numeric
  column of ``runs.csv`` (``run`` excluded), in ``runs.csv`` column order. A
  column is numeric when every non-empty cell is a finite number; ``null`` (a
  figure the harness declined to give, e.g. ``rss_growth_bytes_per_min`` of a
  short run) counts as empty. ``stdev`` is
  the *sample* standard deviation (n - 1 in the denominator); it is ``0`` when
  only one run has the metric. Process ids (``pid``, ``service_pid``) are
  numbers but not measurements and are left out.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SERVICE_PREFIX = "service_"
#: A value the harness reports as absent (with a ``*_reason`` key beside it).
NULL = "null"
NOT_METRICS = frozenset({"run", "pid", SERVICE_PREFIX + "pid"})

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def parse_kv_text(text: str) -> dict[str, str]:
    """Parse ``key=value`` lines; other lines are ignored."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if _KEY.match(key):
            out[key] = value.strip()
    return out


def parse_kv_file(path: Path) -> dict[str, str]:
    return parse_kv_text(path.read_text(encoding="utf-8", errors="replace"))


def as_number(value: str) -> float | None:
    """The value as a finite float, or ``None`` when it is not a number."""
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return number


def merge_run(driver: Mapping[str, str], service: Mapping[str, str] | None) -> dict[str, str]:
    """One ``runs.csv`` row: driver (or integrated) keys, then ``service_*`` keys."""
    row = dict(driver)
    if service is not None:
        for key, value in service.items():
            row[SERVICE_PREFIX + key] = value
    return row


def _columns(rows: Sequence[Mapping[str, str]]) -> list[str]:
    seen: dict[str, None] = {"run": None}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def write_runs_csv(path: Path, rows: Sequence[Mapping[str, str]]) -> list[str]:
    """Write ``runs.csv``; ``rows[i]`` is run ``i + 1`` unless it has a ``run`` key."""
    columns = _columns(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for index, row in enumerate(rows, start=1):
            full = {"run": str(index), **row}
            writer.writerow([full.get(col, "") for col in columns])
    return columns


def read_runs_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [dict(row) for row in csv.DictReader(fh)]


@dataclass(frozen=True)
class Stat:
    mean: float
    stdev: float
    n: int


def summarize(rows: Sequence[Mapping[str, str]]) -> dict[str, Stat]:
    """Mean and sample stdev of every numeric column, in column order."""
    stats: dict[str, Stat] = {}
    for col in _columns(rows):
        if col in NOT_METRICS:
            continue
        cells = [row.get(col, "") for row in rows]
        present = [c for c in cells if c.strip() and c.strip() != NULL]
        if not present:
            continue
        numbers = [as_number(c) for c in present]
        values = [n for n in numbers if n is not None]
        if len(values) != len(present):
            continue
        mean = statistics.fmean(values)
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        stats[col] = Stat(mean=mean, stdev=stdev, n=len(values))
    return stats


def format_number(value: float) -> str:
    """Compact, round-trippable enough for the CSVs (12 significant digits)."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")


def write_summary_csv(path: Path, stats: Mapping[str, Stat]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["metric", "mean", "stdev"])
        for metric, stat in stats.items():
            writer.writerow([metric, format_number(stat.mean), format_number(stat.stdev)])


def read_summary_csv(path: Path) -> dict[str, Stat]:
    out: dict[str, Stat] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            mean = as_number(row.get("mean", ""))
            stdev = as_number(row.get("stdev", ""))
            metric = row.get("metric", "")
            if metric and mean is not None and stdev is not None:
                out[metric] = Stat(mean=mean, stdev=stdev, n=0)
    return out


def write_cell_artifacts(out_dir: Path, rows: Sequence[Mapping[str, str]]) -> dict[str, Stat]:
    """Write ``runs.csv`` and ``summary.csv`` into ``out_dir``; return the stats."""
    write_runs_csv(out_dir / "runs.csv", rows)
    stats = summarize(rows)
    write_summary_csv(out_dir / "summary.csv", stats)
    return stats


def _fmt(stats: Mapping[str, Stat], key: str, digits: int = 2) -> str | None:
    stat = stats.get(key)
    if stat is None:
        return None
    return f"{stat.mean:.{digits}f}"


FELL_BEHIND = "fell_behind"


def fell_behind_runs(rows: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    """The open-loop runs (``--rate``) among ``rows`` that fell behind the offered load."""
    return [row for row in rows if row.get(FELL_BEHIND, "") == "true"]


def fell_behind_note(rows: Sequence[Mapping[str, str]]) -> str:
    """``FELL_BEHIND=k/n`` when any open-loop run of ``rows`` fell behind, else ``""``:
    such a run's figures are no result at the offered load, and every summary says so."""
    behind = fell_behind_runs(rows)
    return f"FELL_BEHIND={len(behind)}/{len(rows)}" if behind else ""


def fell_behind_in_folder(folder: Path) -> str:
    """:func:`fell_behind_note` of the ``runs.csv`` in ``folder`` (``""`` without one)."""
    runs = folder / "runs.csv"
    return fell_behind_note(read_runs_csv(runs)) if runs.is_file() else ""


def _plain(value: float) -> str:
    """About four significant digits, thousands separated, never an exponent."""
    places = max(0, 3 - math.floor(math.log10(abs(value)))) if value else 0
    text = f"{value:,.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def open_loop_line(row: Mapping[str, str]) -> str:
    """For a comparison of open-loop runs (``row`` is one of them): the offered load, and
    what ``FELL_BEHIND`` means; ``""`` for a closed-loop run."""
    offered = as_number(row.get("offered_streams_per_sec", ""))
    if offered is None:
        return ""
    mib = as_number(row.get("offered_mib_per_sec", ""))
    load = f"{_plain(offered)} streams/s" + (f" ({_plain(mib)} MiB/s)" if mib is not None else "")
    return (
        f"Open loop (`--rate`): {load} offered to every implementation, on a clock; latency"
        " counts from each stream's scheduled start. FELL_BEHIND=k/n marks an implementation"
        " whose k of n runs could not keep up with that load: its figures are not a result"
        " at that load."
    )


def summary_line(
    *,
    transport: str,
    implementation: str,
    scenario: str,
    completion: str,
    runs: int,
    stats: Mapping[str, Stat],
    location: Path | str,
    rows: Sequence[Mapping[str, str]] = (),
) -> str:
    """The printed one-line summary of one (implementation, scenario) cell.

    Split runs print the driver's end-to-end throughput and p99, then the
    service's throughput, CPU cores and ns/B (the figures to compare).
    Open-loop runs (``--rate``) add the offered and achieved streams per
    second, and ``FELL_BEHIND=k/n`` when ``k`` of the ``rows`` fell behind.
    """
    parts = [f"stream {transport} {implementation} {scenario} {completion} runs={runs}"]
    pairs: list[tuple[str, str, int]] = [
        ("mib_per_sec", "mib_per_sec", 2),
        ("cpu_avg_cores", "cpu_avg_cores", 3),
        ("cpu_ns_per_byte", "cpu_ns_per_byte", 3),
        ("p99_us", "latency_p99_micros", 1),
    ]
    if any(key.startswith(SERVICE_PREFIX) for key in stats):
        pairs = [
            ("mib_per_sec", "mib_per_sec", 2),
            ("p99_us", "latency_p99_micros", 1),
            ("service_mib_per_sec", "service_mib_per_sec", 2),
            ("service_cpu_avg_cores", "service_cpu_avg_cores", 3),
            ("service_cpu_ns_per_byte", "service_cpu_ns_per_byte", 3),
        ]
    if "offered_streams_per_sec" in stats:
        pairs += [
            ("offered_streams_per_sec", "offered_streams_per_sec", 1),
            ("achieved_streams_per_sec", "achieved_streams_per_sec", 1),
        ]
    for label, key, digits in pairs:
        value = _fmt(stats, key, digits)
        if value is not None:
            parts.append(f"{label}={value}")
    note = fell_behind_note(rows)
    if note:
        parts.append(note)
    return " ".join(parts) + f" -> {location}"


def iter_run_files(directory: Path, prefix: str) -> Iterable[tuple[int, Path]]:
    """``(index, path)`` of ``<prefix>-run-N.txt`` files, by index."""
    pattern = re.compile(rf"^{re.escape(prefix)}-run-(\d+)\.txt$")
    found: list[tuple[int, Path]] = []
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def rows_from_directory(directory: Path) -> list[dict[str, str]]:
    """Rebuild the ``runs.csv`` rows of a cell folder from its run files."""
    services = dict(iter_run_files(directory, "service"))
    rows = []
    for index, path in iter_run_files(directory, "handoff"):
        service_path = services.get(index)
        service = parse_kv_file(service_path) if service_path is not None else None
        rows.append({"run": str(index), **merge_run(parse_kv_file(path), service)})
    return rows
