"""The logic behind ``bench/merge-drivers.sh``: several drivers of one service, one summary.

One driver process is easily slower than a service with several
``--worker-threads``. So N ``tcp-driver`` processes (on one host or on several)
drive one service together: each runs with ``--drivers N --driver-index K``
(its stream ids are ``K x --connections`` onwards, so no two drivers share one
and each sink refuses another's; an open-loop ``--rate`` is their total and
each offers ``1/N`` of it), against its own ``--service-addr``/``--sink-addr``
pair of the service (which takes one pair per driver), and each writes its own
report. This merges those reports into one, shaped like one driver's:

* the keys that say what ran must be equal in every report (the workload, the
  implementation, the load, the harness's version: :data:`SAME_KEYS`), and the
  reports must be every driver of the run, each once (``driver_index`` 0 to
  ``drivers - 1``); anything else is refused in one line (exit 2);
* counts and rates are added (:data:`SUMMED_KEYS`: bytes, streams, CPU,
  offered and achieved rates, unsent streams); the rates are each driver's own
  over its own window, so their sum is the whole load while the drivers ran at
  the same time (which the run tools see to); the longest window, the most
  waves and the latest start lag are kept (:data:`MAX_KEYS`);
* the latency percentiles come from the drivers' HDR histograms added up
  (``latency_histogram_hdr``, which every report carries: percentiles cannot be
  added, histograms can); the merged histogram is written too, and its count
  must be the sum of the streams;
* ``fell_behind=true`` when any driver fell behind, or when the summed achieved
  rate is more than ``--rate-tolerance`` below the summed offered one;
* ``merged_drivers``, ``connections_per_driver`` (``connections`` is all of the
  drivers' together), ``driver_reports``, ``driver_streams``,
  ``driver_stream_ids`` and ``fell_behind_drivers`` are added; a key that
  differs between drivers but says nothing to merge (``hostname``, ``loop``)
  lists the drivers' values, comma-separated, in report order; what belongs to
  one process only (``pid``, ``argv``, its RSS samples, ``cpu_utilization_pct``
  of its own host) is left out.

A driver has no count of failed streams to add: a stream that fails fails its
driver's run (exit 1, no report), and a missing report is refused here.

``tools/split.py`` runs several drivers on one host (``run-stream-harness.sh
--drivers N``) and writes this merge as the run's ``handoff-run-N.txt``;
``bench/run-two-hosts.sh --drivers 2`` puts each driver in its own network
namespace.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bytes_handoff_bench.cli_common import HelpFormatter, OneLineParser, prog_and_args, run_main
from bytes_handoff_bench.errors import UsageError
from bytes_handoff_bench.names import Role
from bytes_handoff_bench.output_paths import check_output_file, write_output
from bytes_handoff_bench.tools.artifacts import as_number, parse_kv_text

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

__all__ = [
    "MAX_KEYS",
    "SAME_KEYS",
    "SUMMED_KEYS",
    "Report",
    "merge_reports",
    "read_report",
    "report_text",
]

HISTOGRAM = "latency_histogram_hdr"
ABSENT = "(absent)"

#: Equal in every report: one workload, one implementation, one load, one version.
SAME_KEYS = (
    "mode",
    "role",
    "transport",
    "implementation",
    "scenario",
    "completion",
    "connections",
    "route_frames",
    "frame_len",
    "tunnel_bytes",
    "input_fragment",
    "read_reserve",
    "write_pending_bytes",
    "duplex_capacity",
    "bytes_per_connection",
    "configured_iterations",
    "duration_seconds_target",
    "verified",
    "verification",
    "latency_source",
    "package_version",
    "python_implementation",
    "drivers",
    "load",
    "offered_streams_per_sec_all_drivers",
    "rate_tolerance",
    "max_lag_millis",
    "tls",
    "tls_mode",
)

#: Added up over the drivers.
SUMMED_KEYS = (
    "total_streams",
    "total_bytes",
    "bytes_per_sec",
    "mib_per_sec",
    "gib_per_sec",
    "streams_per_sec",
    "cpu_user_seconds",
    "cpu_system_seconds",
    "cpu_total_seconds",
    "cpu_avg_cores",
    "voluntary_context_switches",
    "involuntary_context_switches",
    "max_rss_bytes",
    "latency_histogram_count",
    "offered_streams_per_sec",
    "offered_mib_per_sec",
    "achieved_streams_per_sec",
    "achieved_mib_per_sec",
    "streams_scheduled",
    "streams_started",
    "streams_unsent",
)

#: The largest of the drivers' values.
MAX_KEYS = ("total_seconds", "actual_iterations", "start_lag_max_micros")

#: One process's own: left out of the merge.
DROPPED_KEYS = frozenset(
    {
        "pid",
        "argv",
        "driver_index",
        "stream_ids",
        "cpu_utilization_pct",
        "fell_behind_reason",
        "rss_samples_file",
        "rss_samples",
        "rss_growth_bytes_per_min",
        "rss_growth_reason",
    }
)

PERCENTILES = (
    ("latency_p50_micros", 50.0),
    ("latency_p95_micros", 95.0),
    ("latency_p99_micros", 99.0),
    ("latency_p999_micros", 99.9),
)


@dataclass(frozen=True)
class Report:
    """One driver's report, as read: where from, and its keys."""

    path: str
    kv: Mapping[str, str]

    def get(self, key: str) -> str:
        return self.kv.get(key, ABSENT)

    def integer(self, key: str) -> int:
        value = self.kv.get(key, "")
        if not value.isdigit():
            raise UsageError(f"{self.path}: {key}={value or ABSENT}, expected a whole number")
        return int(value)


def read_report(path: str) -> Report:
    """A driver's report from its file; ``UsageError`` when there is none to read."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    kv = parse_kv_text(text)
    if not kv:
        raise UsageError(f"{path}: no key=value lines: not a report of bytes-handoff-bench")
    return Report(path, kv)


def _fmt(value: float) -> str:
    """As the harness prints numbers: integers plain, others to 6 places, no trailing zeros."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _number(report: Report, key: str) -> float:
    value = as_number(report.kv.get(key, ""))
    if value is None:
        raise UsageError(f"{report.path}: {key}={report.get(key)}, expected a number")
    return value


def _check_one(report: Report) -> None:
    if report.get("role") != Role.TCP_DRIVER:
        raise UsageError(
            f"{report.path}: role={report.get('role')}: only tcp-driver reports merge"
            " (several drivers of one service)"
        )
    if report.get("verified") != "true":
        raise UsageError(
            f"{report.path}: verified={report.get('verified')}: not the report of a run"
            " whose sink verified every stream"
        )
    for key in ("drivers", "driver_index", HISTOGRAM):
        if key not in report.kv:
            raise UsageError(
                f"{report.path}: no {key}= (a report of an older harness?): percentiles cannot"
                " be added, and only the drivers' histograms can be merged"
            )


def _check_together(reports: Sequence[Report]) -> None:
    """Same run, every driver once; ``UsageError`` naming the first difference."""
    first = reports[0]
    for report in reports[1:]:
        for key in SAME_KEYS:
            if report.get(key) != first.get(key):
                raise UsageError(
                    f"{report.path}: {key}={report.get(key)}, but {first.path}:"
                    f" {key}={first.get(key)}: not drivers of one run, refusing to merge"
                )
    drivers = first.integer("drivers")
    seen: dict[int, str] = {}
    for report in reports:
        index = report.integer("driver_index")
        if index in seen:
            raise UsageError(
                f"{report.path} and {seen[index]} are both driver_index={index}: merge each"
                " driver of the run once"
            )
        seen[index] = report.path
    if len(reports) != drivers:
        missing = [str(i) for i in range(drivers) if i not in seen]
        raise UsageError(
            f"{len(reports)} reports, but the drivers ran as {drivers} (drivers={drivers}):"
            f" driver_index {','.join(missing)} missing; merge every driver of the run"
        )


def _histogram(report: Report) -> HdrHistogram:
    from hdrh.histogram import HdrHistogram

    try:
        hist = HdrHistogram.decode(report.kv[HISTOGRAM].encode("ascii"))
    except Exception as exc:  # hdrh raises several kinds on a bad encoding
        raise UsageError(
            f"{report.path}: {HISTOGRAM} does not decode: {type(exc).__name__}: {exc}"
        ) from None
    streams = report.integer("total_streams")
    if hist.get_total_count() != streams:
        raise UsageError(
            f"{report.path}: its histogram holds {hist.get_total_count()} latencies, but"
            f" total_streams={streams}"
        )
    return hist


def merge_reports(reports: Sequence[Report]) -> dict[str, str]:
    """The merged report of ``reports`` (every driver of one run), in the first report's key
    order with the merge's own keys after; ``UsageError`` (one line) when they do not merge."""
    if not reports:
        raise UsageError("no report to merge")
    for report in reports:
        _check_one(report)
    _check_together(reports)
    hists = [_histogram(report) for report in reports]
    merged_hist = hists[0]
    for hist in hists[1:]:
        merged_hist.add(hist)

    first = reports[0]
    out: dict[str, str] = {}
    keys = list(dict.fromkeys(key for report in reports for key in report.kv))
    for key in keys:
        if key in DROPPED_KEYS:
            continue
        if key in SUMMED_KEYS:
            out[key] = _fmt(sum(_number(r, key) for r in reports))
        elif key in MAX_KEYS:
            out[key] = _fmt(max(_number(r, key) for r in reports))
        else:
            values = [r.get(key) for r in reports]
            out[key] = values[0] if len(set(values)) == 1 else ",".join(values)
    connections = first.integer("connections")
    total_bytes = sum(r.integer("total_bytes") for r in reports)
    cpu = sum(_number(r, "cpu_total_seconds") for r in reports)
    out["connections"] = str(connections * len(reports))
    out["cpu_ns_per_byte"] = _fmt(cpu * 1e9 / total_bytes if total_bytes else 0.0)
    for key, percentile in PERCENTILES:
        out[key] = str(merged_hist.get_value_at_percentile(percentile))
    out["latency_max_micros"] = str(merged_hist.get_max_value())
    out["latency_histogram_count"] = str(merged_hist.get_total_count())
    out[HISTOGRAM] = merged_hist.encode().decode("ascii")
    if first.get("load") == "open_loop":
        out.update(_fell_behind(reports, out))
    out["merged_drivers"] = str(len(reports))
    out["connections_per_driver"] = str(connections)
    out["driver_reports"] = ",".join(r.path for r in reports)
    out["driver_streams"] = ",".join(r.get("total_streams") for r in reports)
    out["driver_stream_ids"] = ",".join(r.get("stream_ids") for r in reports)
    return out


def _fell_behind(reports: Sequence[Report], out: Mapping[str, str]) -> dict[str, str]:
    """Whether the drivers together fell behind the offered load, and why."""
    reasons = [
        f"driver {r.get('driver_index')}: {r.get('fell_behind_reason')}"
        for r in reports
        if r.get("fell_behind") == "true"
    ]
    offered = float(out["offered_streams_per_sec"])
    achieved = float(out["achieved_streams_per_sec"])
    tolerance = _number(reports[0], "rate_tolerance")
    short = 1.0 - achieved / offered if offered > 0 else 0.0
    if short > tolerance:
        reasons.append(
            f"all drivers achieved {achieved:.4g} streams/s, {short:.1%} below the offered"
            f" {offered:.4g} (--rate-tolerance {tolerance:g})"
        )
    fields = {
        "fell_behind": "true" if reasons else "false",
        "fell_behind_drivers": str(sum(r.get("fell_behind") == "true" for r in reports)),
    }
    if reasons:
        fields["fell_behind_reason"] = "; ".join(reasons)
    return fields


def report_text(merged: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in merged.items())


def build_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        formatter_class=HelpFormatter,
        description=(
            "Merge the reports of several tcp-driver processes that drove one service\n"
            "together (each run with --drivers N --driver-index K) into one summary: counts\n"
            "and rates added, latency percentiles from their HDR histograms added up.\n"
            "Reports of different runs (workload, implementation, load, version), a driver\n"
            "missing or given twice are refused in one line."
        ),
        epilog=(
            "Examples:\n"
            f"  {prog} driver-0.txt driver-1.txt\n"
            f"  {prog} --out merged.txt run/handoff-driver-*-run-1.txt\n"
            "prints: the merged key=value report (the keys of one driver's report, summed or\n"
            "  merged; plus merged_drivers, connections_per_driver, driver_reports,\n"
            "  driver_streams, driver_stream_ids, fell_behind_drivers)"
        ),
        exit_statuses={
            0: "merged",
            1: "the summary could not be written",
            2: "bad usage, or reports that do not merge (a missing extra too)",
        },
    )
    parser.add_argument(
        "reports",
        nargs="+",
        metavar="REPORT",
        help="a tcp-driver's key=value report (its stdout), one per driver of the run",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        help="also write the merged report here (a new or regular file; default: stdout only)",
    )
    return parser


def run(prog: str, argv: Sequence[str]) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.out is not None:
        check_output_file(args.out, "--out")
    merged = merge_reports([read_report(path) for path in args.reports])
    text = report_text(merged)
    if args.out is not None:
        write_output(args.out, text, "--out")
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    prog, args = prog_and_args(argv, "merge-drivers.sh")
    return run_main(prog, lambda: run(prog, args), bench_extra=("hdrh",))


if __name__ == "__main__":
    sys.exit(main())
