"""The verdict: per-category lines and the final ``key=value`` summary of a soak.

Every stream the driver started ends in a category (``config.CATEGORIES``):
the driver's own, or the orchestrator's for a break with no injected cause.
Any stream in a failure category, any error the library does not promise, a
failed leak gate (:mod:`.memory`), a process left behind or an interrupted run
makes the verdict ``fail``; the reasons are printed one per line (50 at most).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from typing import Any

from ..harness.metrics import rss_growth
from ..output_paths import write_output
from .config import CATEGORIES, FAILURE_CATEGORIES, MIB, MIN_RSS_SAMPLES, SoakConfig
from .memory import HeapSample, heap_failures, heap_growth, parse_heap_samples
from .orchestrator import Orchestrator, processes_with


def summarize(
    orch: Orchestrator, cfg: SoakConfig, interrupted: bool, started: float
) -> tuple[list[str], dict[str, object]]:
    """Per-category lines and the final key=value summary (with the verdict)."""
    lines: list[str] = []
    reasons = list(orch.failures)
    driver: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        driver = json.loads((orch.out / "driver.json").read_text())
    if not driver:
        reasons.append("the driver wrote no results (driver.json)")
    categories: Counter[str] = Counter(driver.get("outcomes", {}))
    accepts = orch.accepts()
    for rec in driver.get("pending", []):
        category, why = orch.classify_pending(rec, accepts)
        categories[category] += 1
        if category in FAILURE_CATEGORIES:
            reasons.append(
                f"{category}: stream {rec['conn']:04} (wave {rec['wave']}, port"
                f" {rec['client_port']}): client {rec['client']}, sink {rec['sink']}"
                f" {rec['detail']}; {why}"
            )
    reasons.extend(driver.get("failures", []))

    proxy: Counter[str] = Counter()
    for inc in orch.incarnations:
        with contextlib.suppress(OSError, ValueError):
            stats = json.loads(inc.stem.with_suffix(".stats.json").read_text())
            proxy.update(stats["counts"])
            reasons.extend(f"{inc.stem.name}: unexpected {u}" for u in stats["unexpected"])

    for name in CATEGORIES:
        mark = "  FAILURE" if name in FAILURE_CATEGORIES and categories[name] else ""
        lines.append(f"soak: streams {name:<16} {categories[name]:>8}{mark}")
    for name, count in sorted(proxy.items()):
        lines.append(f"soak: proxy   {name:<28} {count:>8}")

    steady = next((i for i in orch.incarnations if i.slot == 0), None)
    heap_samples: list[HeapSample] = []
    if steady is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            heap_samples = parse_heap_samples(steady.stem.with_suffix(".heap.csv").read_text())
    heap = heap_growth(heap_samples)
    reasons.extend(heap_failures(heap, cfg))
    if heap is None:
        lines.append(
            f"soak: heap    service 0: {len(heap_samples)} idle samples, too few for a growth"
            " figure (NOT GATED)"
        )
    else:
        if heap.bytes_per_stream is None or heap.bytes_per_min is None:
            per_stream = "no malloc figure (needs glibc 2.33+)"
        else:
            per_stream = (
                f"malloc'd {heap.bytes_per_stream:+.1f} bytes/stream"
                f" ({heap.bytes_per_min / MIB:+.3f} MiB/min)"
            )
        lines.append(
            f"soak: heap    service 0 idle, after gc: {heap.samples} samples over {heap.streams}"
            f" streams after the first 20 %: {per_stream}, {heap.py_blocks_per_stream:+.3f}"
            f" Python blocks/stream, {heap.gc_objects_per_stream:+.3f} gc objects/stream"
            + (f" (NOT GATED: {heap.not_gated})" if heap.not_gated else "")
        )
    heap_bytes = None if heap is None else heap.bytes_per_stream
    heap_mib_min = None if heap is None or heap.bytes_per_min is None else heap.bytes_per_min / MIB
    samples = steady.rss if steady is not None else []
    fit = rss_growth(samples)
    growth = None if fit.bytes_per_min is None else fit.bytes_per_min / MIB
    rss_limit = cfg.rss_limit_mib_per_min
    gated = rss_limit is not None and growth is not None and len(samples) >= MIN_RSS_SAMPLES
    if gated and growth is not None and rss_limit is not None and growth > rss_limit:
        reasons.append(f"service 0 RSS grew {growth:.2f} MiB/min (limit {rss_limit:g})")
    peak = max((r for i in orch.incarnations for _, r in i.rss), default=0)
    if growth is None:
        shown = f"no growth figure ({fit.reason})"
    else:
        if rss_limit is None:
            gate = " (reported, not gated: a high-water mark, see the heap line)"
        elif not gated:
            gate = f" (not gated: fewer than {MIN_RSS_SAMPLES} samples)"
        else:
            gate = ""
        shown = f"growth {growth:.3f} MiB/min after the first 20 %{gate}"
    lines.append(
        f"soak: rss     service 0: {len(samples)} samples, {shown};"
        f" peak of any service {peak / MIB:.1f} MiB"
    )

    kills = "".join(f"{pid},{k:.6f},{r:.6f}\n" for pid, (k, r) in orch.kills.items())
    write_output(orch.out / "kills.csv", "pid,killed_at,reaped_at\n" + kills, "kills.csv")
    rss = "".join(
        f"{i.stem.name},{i.child.pid},{t:.1f},{r}\n" for i in orch.incarnations for t, r in i.rss
    )
    write_output(
        orch.out / "rss.csv", "service,pid,elapsed_seconds,vm_rss_bytes\n" + rss, "rss.csv"
    )

    time.sleep(0.1)
    leftovers = processes_with(orch.token)
    if leftovers:
        reasons.append(f"processes left behind: {leftovers}")
    lines.append(
        f"soak: processes: {len(orch.incarnations) + (orch.driver is not None)} started,"
        f" {len(leftovers)} left {leftovers if leftovers else '(none remains)'}"
    )
    if interrupted:
        reasons.append("interrupted by a signal")
    if categories["verified"] == 0:
        reasons.append("no stream was verified")
    for reason in reasons[:50]:
        lines.append(f"soak: FAIL {reason}")
    if len(reasons) > 50:
        lines.append(f"soak: FAIL ... and {len(reasons) - 50} more")

    failures = {f"failures_{name}": categories[name] for name in CATEGORIES if name != "verified"}
    summary: dict[str, object] = {
        "seed": cfg.seed,
        "duration_seconds": cfg.duration_seconds,
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "connections": cfg.connections,
        "services": cfg.services,
        "waves": driver.get("waves", 0),
        "streams_started": driver.get("streams_started", 0),
        "streams_verified": categories["verified"],
        **failures,
        "proxy_kills": len(orch.kills),
        "client_resets": driver.get("client_resets", 0),
        "sink_resets": driver.get("sink_resets", 0),
        "sink_stall_resets": driver.get("sink_stall_resets", 0),
        "resets": driver.get("client_resets", 0)
        + driver.get("sink_resets", 0)
        + driver.get("sink_stall_resets", 0),
        "library_path": cfg.library_path,
        "proxy_unexpected_errors": sum(v for k, v in proxy.items() if k.startswith("unexpected")),
        # "null" when the samples are too few to mean anything; the reason beside it.
        "heap_samples": 0 if heap is None else heap.samples,
        "heap_growth_bytes_per_stream": _figure(heap_bytes, 1),
        "heap_growth_mib_per_min": _figure(heap_mib_min, 3),
        "heap_limit_bytes_per_stream": cfg.heap_limit_bytes_per_stream,
        "py_blocks_growth_per_stream": _figure(
            None if heap is None else heap.py_blocks_per_stream, 3
        ),
        "py_blocks_limit_per_stream": cfg.py_blocks_limit_per_stream,
        "gc_objects_growth_per_stream": _figure(
            None if heap is None else heap.gc_objects_per_stream, 3
        ),
        "gc_objects_limit_per_stream": cfg.gc_objects_limit_per_stream,
        "heap_gated": int(heap is not None and heap.not_gated is None),
        "rss_growth_mib_per_min": "null" if growth is None else round(growth, 3),
        **({"rss_growth_reason": fit.reason} if growth is None else {}),
        "rss_limit_mib_per_min": "null" if rss_limit is None else rss_limit,
        "rss_gated": int(gated),
        "leftover_processes": len(leftovers),
        "out_dir": orch.out,
        "verdict": "fail" if reasons else "pass",
    }
    return lines, summary


def _figure(value: float | None, digits: int) -> object:
    """A summary figure rounded, or ``null`` when there is none."""
    if value is None:
        return "null"
    return round(value, digits) if digits else round(value)
