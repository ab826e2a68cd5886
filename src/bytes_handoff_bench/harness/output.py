"""The run's ``key=value`` report on stdout (the Rust harness binary's keys plus provenance)."""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Iterator

import bytes_handoff

from ..names import Role
from .config import BenchConfig
from .metrics import rss_growth
from .open_loop import judge
from .roles import RunOutcome

__all__ = ["report_lines"]

MODE = "stream_harness"


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


def open_loop_fields(cfg: BenchConfig, outcome: RunOutcome) -> dict[str, object]:
    """The keys of an open-loop run (``--rate``): offered and achieved load, and whether
    it fell behind (then ``fell_behind_reason`` says why, with the numbers)."""
    verdict = judge(cfg, outcome.summary)
    mib = cfg.bytes_per_connection / 2**20
    fields: dict[str, object] = {
        "load": "open_loop",
        "latency_source": "due_to_sink_eof",
        "offered_streams_per_sec": verdict.offered_streams_per_sec,
        "offered_mib_per_sec": verdict.offered_streams_per_sec * mib,
        "achieved_streams_per_sec": verdict.achieved_streams_per_sec,
        "achieved_mib_per_sec": verdict.achieved_streams_per_sec * mib,
        "rate_tolerance": cfg.rate_tolerance,
        "max_lag_millis": cfg.max_lag_millis,
        "streams_scheduled": verdict.scheduled,
        "streams_started": verdict.started,
        "streams_unsent": verdict.unsent,
        "start_lag_max_micros": round(verdict.start_lag_max * 1e6),
        "fell_behind": verdict.fell_behind,
    }
    if cfg.drivers > 1:
        fields["offered_streams_per_sec_all_drivers"] = cfg.offered_streams_per_sec_all_drivers
    if verdict.fell_behind:
        fields["fell_behind_reason"] = verdict.reason
    return fields


def tls_fields(cfg: BenchConfig, outcome: RunOutcome) -> dict[str, object]:
    """A ``--tls`` run's keys: the mode, where the certificate came from, and (where clients
    and sinks ran: integrated, tcp-driver) the versions and ciphers they negotiated."""
    if not cfg.tls:
        return {}
    fields: dict[str, object] = {
        "tls_mode": cfg.tls_mode,
        "tls_certificate": outcome.tls_certificate,
    }
    s = outcome.summary
    if s.tls_versions:
        fields["tls_version"] = ",".join(s.tls_versions)
    if s.tls_ciphers:
        fields["tls_cipher"] = ",".join(s.tls_ciphers)
    return fields


def several_drivers_fields(cfg: BenchConfig, outcome: RunOutcome) -> dict[str, object]:
    """What lets several drivers' reports be merged into one (``bench/merge-drivers.sh``):
    the driver's place among them and its stream ids; the service's routes (one per
    driver) and the streams each carried."""
    if cfg.role == Role.TCP_DRIVER:
        ids = cfg.stream_ids
        return {
            "drivers": cfg.drivers,
            "driver_index": cfg.driver_index,
            "stream_ids": f"{ids.start:04}-{ids.stop - 1:04}",
        }
    if cfg.role == Role.TCP_SERVICE:
        routes = len(cfg.routes)
        counts = outcome.summary.route_streams + [0] * (routes - len(outcome.summary.route_streams))
        return {
            "routes": routes,
            "service_addrs": ",".join(outcome.service_addrs),
            "route_streams": ",".join(str(n) for n in counts),
        }
    return {}


def report_lines(cfg: BenchConfig, outcome: RunOutcome) -> Iterator[str]:
    """Every line of the report, in a stable order."""
    s = outcome.summary
    cpu_count = os.cpu_count() or 1
    seconds = s.seconds
    cpu_total = s.cpu_user + s.cpu_system
    rate = s.bytes / seconds if seconds > 0 else 0.0
    avg_cores = cpu_total / seconds if seconds > 0 else 0.0
    if cfg.role == Role.TCP_SERVICE:
        waves = s.streams // cfg.connections
        verification = "byte_count"  # the service forwards; the driver's sink checks content
    else:
        waves = s.waves
        verification = "content"
    fields: dict[str, object] = {
        "mode": MODE,
        "role": cfg.role,
        "transport": cfg.transport,
        "implementation": cfg.implementation,
        "scenario": cfg.scenario,
        "completion": cfg.completion,
        "worker_threads": cfg.worker_threads,
        "connections": cfg.connections,
        "route_frames": cfg.route_frames,
        "frame_len": cfg.frame_len,
        "tunnel_bytes": cfg.tunnel_bytes,
        "input_fragment": cfg.input_fragment,
        "read_reserve": cfg.read_reserve,
        "write_pending_bytes": cfg.write_pending_bytes,
        "duplex_capacity": cfg.duplex_capacity,
        "configured_iterations": cfg.iterations,
        "duration_seconds_target": float(cfg.duration_seconds),
        "actual_iterations": waves,
        "bytes_per_connection": cfg.bytes_per_connection,
        "total_streams": s.streams,
        "total_bytes": s.bytes,
        "total_seconds": seconds,
        "bytes_per_sec": rate,
        "mib_per_sec": rate / 2**20,
        "gib_per_sec": rate / 2**30,
        "streams_per_sec": s.streams / seconds if seconds > 0 else 0.0,
        "cpu_usage_measured": True,
        "cpu_user_seconds": s.cpu_user,
        "cpu_system_seconds": s.cpu_system,
        "cpu_total_seconds": cpu_total,
        "cpu_avg_cores": avg_cores,
        # Share of the whole machine: 100 * cpu_avg_cores / os.cpu_count().
        "cpu_utilization_pct": 100.0 * avg_cores / cpu_count,
        "cpu_ns_per_byte": cpu_total * 1e9 / s.bytes if s.bytes else 0.0,
        "voluntary_context_switches": s.vcsw,
        "involuntary_context_switches": s.ivcsw,
        "max_rss_bytes": s.max_rss_bytes,
        "latency_p50_micros": s.latency_micros["p50"],
        "latency_p95_micros": s.latency_micros["p95"],
        "latency_p99_micros": s.latency_micros["p99"],
        "latency_p999_micros": s.latency_micros["p999"],
        "latency_max_micros": s.latency_micros["max"],
        "latency_source": "accept_to_done"
        if cfg.role == Role.TCP_SERVICE
        else "connect_to_sink_eof",
        "verified": True,
        "verification": verification,
        "tls": cfg.tls,
        "loop": cfg.loop,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "package_version": bytes_handoff.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": cpu_count,
        "pid": os.getpid(),
        "argv": " ".join(sys.argv[1:]),
    }
    if s.histogram is not None:
        # Percentiles cannot be added; histograms can: several drivers' reports are merged
        # from these (HdrHistogram's encode(): base64 of its compressed V2 encoding).
        fields["latency_histogram_count"] = s.histogram_count
        fields["latency_histogram_hdr"] = s.histogram.decode("ascii")
    fields.update(tls_fields(cfg, outcome))
    fields.update(several_drivers_fields(cfg, outcome))
    if cfg.open_loop:
        fields.update(open_loop_fields(cfg, outcome))
    if outcome.service_addr is not None:
        fields["service_addr"] = outcome.service_addr
    if outcome.rss_samples is not None and cfg.rss_samples:
        fields["rss_samples_file"] = os.path.abspath(cfg.rss_samples)
        fields["rss_samples"] = len(outcome.rss_samples)
        growth = rss_growth(outcome.rss_samples)
        if growth.bytes_per_min is not None:
            fields["rss_growth_bytes_per_min"] = growth.bytes_per_min
        else:
            # Said, not made up: "null" is no number, and the reason is on the next line.
            fields["rss_growth_bytes_per_min"] = "null"
            fields["rss_growth_reason"] = growth.reason
    for key, value in fields.items():
        yield f"{key}={_fmt(value)}"
