"""Shared machinery for the micro-benchmarks (the Python side of the crate's Criterion benches).

Run them through ``bench/run-criterion-baseline.sh``; by hand::

    .venv/bin/python -m pytest benches --benchmark-enable --benchmark-only

How one case is measured (:func:`measure`):

1. The case runs once untimed and its result is checked (line count, byte
   count, last frame, bytes the sink received...), so a broken case fails
   instead of looking fast.
2. ``--warm-up-time SECONDS`` (ours, not pytest-benchmark's): the case runs
   back to back for that long, untimed. pytest-benchmark's own warm-up counts
   iterations, not seconds, so the scripts leave it off and use this.
3. pytest-benchmark times it: ``max(--benchmark-min-rounds, ceil(--benchmark-max-time
   / one round))`` rounds, one round being one call of the case.
4. The result of the last timed round is checked again.

Async cases run ``loop.run_until_complete(...)`` per round on one loop made per
case: uvloop unless ``BENCH_LOOP=asyncio``. ``BENCH_SMOKE=1`` shrinks every
input for a fast CI pass (numbers from it mean nothing).

Every case records ``extra_info``: ``family``, ``case``, ``loop``, ``smoke``
and ``bytes`` (bytes through the case per round) or ``ops`` (operations per
round). The saved JSON gets ``bytes_per_sec``/``mib_per_sec`` (or
``ops_per_sec``) from the median added, and the terminal shows a table of
family, case, median and throughput, with the change against a compared run.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")
LOOP_NAME = os.environ.get("BENCH_LOOP", "uvloop") or "uvloop"
SMOKE = os.environ.get("BENCH_SMOKE", "") not in ("", "0")

MIB = 1024 * 1024


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bytes-handoff benches")
    group.addoption(
        "--warm-up-time",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="run each case untimed, back to back, for this many seconds before timing it",
    )
    group.addoption(
        "--bench-markdown",
        default=None,
        metavar="PATH",
        help="also write the family/case/median/throughput table to PATH as Markdown",
    )


def pytest_configure(config: pytest.Config) -> None:
    if LOOP_NAME not in LOOPS:
        raise pytest.UsageError(f"BENCH_LOOP must be one of {', '.join(LOOPS)}, got {LOOP_NAME!r}")
    warm = config.getoption("warm_up_time", 0.0)
    if warm is not None and (warm < 0 or not math.isfinite(warm)):
        raise pytest.UsageError(f"--warm-up-time must be a finite number >= 0, got {warm}")


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    # Results from different loops are different machines for comparison purposes.
    machine_info["event_loop"] = LOOP_NAME
    machine_info["bench_smoke"] = SMOKE


def new_event_loop() -> asyncio.AbstractEventLoop:
    if LOOP_NAME == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per case; every round runs on it. Fails the case if a task leaks."""
    ev = new_event_loop()
    try:
        yield ev
        leftover = [t for t in asyncio.all_tasks(ev) if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            ev.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        assert not leftover, f"{len(leftover)} task(s) still running after the case"
    finally:
        ev.close()


Measure = Callable[..., Any]


@pytest.fixture
def measure(benchmark: Any, request: pytest.FixtureRequest) -> Measure:
    """Check, warm up, time and label one case; see the module docstring."""
    warm_up = float(request.config.getoption("warm_up_time") or 0.0)

    def run(
        fn: Callable[[], T],
        *,
        family: str,
        case: str,
        check: Callable[[T], None],
        nbytes: int | None = None,
        ops: int | None = None,
    ) -> T:
        assert (nbytes is None) != (ops is None), "give bytes or ops per round, not both"
        check(fn())
        if benchmark.enabled and warm_up > 0:
            deadline = time.perf_counter() + warm_up
            while time.perf_counter() < deadline:
                fn()
        benchmark.group = family
        benchmark.extra_info.update(family=family, case=case, loop=LOOP_NAME, smoke=SMOKE)
        if nbytes is not None:
            benchmark.extra_info["bytes"] = nbytes
        else:
            benchmark.extra_info["ops"] = ops
        result = benchmark(fn)
        check(result)
        return result

    return run


# -- reporting ------------------------------------------------------------------------------------


def _throughput(extra: dict[str, Any], median: float) -> dict[str, float]:
    if median <= 0:
        return {}
    if extra.get("bytes"):
        bps = extra["bytes"] / median
        return {"bytes_per_sec": bps, "mib_per_sec": bps / MIB}
    if extra.get("ops"):
        return {"ops_per_sec": extra["ops"] / median}
    return {}


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    for bench in output_json["benchmarks"]:
        extra = bench.setdefault("extra_info", {})
        extra.update(_throughput(extra, bench["stats"]["median"]))


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3f} {unit}"
    return f"{seconds / 1e-9:.1f} ns"


def _fmt_rate(extra: dict[str, Any], median: float) -> str:
    rate = _throughput(extra, median)
    if "mib_per_sec" in rate:
        return f"{rate['mib_per_sec']:.1f} MiB/s"
    if "ops_per_sec" in rate:
        return f"{rate['ops_per_sec'] / 1e6:.3f} Mops/s"
    return "-"


def _rows(config: pytest.Config) -> tuple[list[list[str]], bool]:
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or bs.disabled:
        return [], False
    compared: dict[str, dict[str, Any]] = {}
    for mapping in getattr(bs, "compared_mapping", {}).values():
        compared.update(mapping)
    rows: list[list[str]] = []
    for bench in bs.benchmarks:
        if bench.has_error or not bench.stats:
            continue
        extra = bench.extra_info
        median = bench.stats.median
        iqr = bench.stats.iqr if len(bench.stats.data) >= 2 else 0.0
        row = [
            extra.get("family", bench.group or bench.name),
            extra.get("case") or "-",
            _fmt_time(median),
            _fmt_rate(extra, median),
            f"{iqr / median * 100:.0f}%" if median > 0 else "-",
            str(bench.stats.rounds),
        ]
        if compared:
            old = compared.get(bench.fullname)
            if old is None:
                row += ["-", "new"]
            else:
                old_median = old["stats"]["median"]
                change = (median - old_median) / old_median * 100 if old_median else 0.0
                row += [_fmt_time(old_median), f"{change:+.1f}% time"]
        rows.append(row)
    return rows, bool(compared)


HEAD = ["family", "case", "median", "throughput", "IQR/median", "rounds"]


def _markdown(rows: list[list[str]], with_compare: bool) -> str:
    head = list(HEAD)
    if with_compare:
        head += ["baseline median", "change"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows, with_compare = _rows(config)
    if not rows:
        return
    head = list(HEAD)
    if with_compare:
        head += ["baseline", "change"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    terminalreporter.section(f"bytes-handoff micro-benchmarks (loop={LOOP_NAME}, median per round)")
    terminalreporter.write_line("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for row in rows:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        terminalreporter.write_line("  ".join(cells))
    path = config.getoption("bench_markdown")
    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_markdown(rows, with_compare))
        terminalreporter.write_line(f"Markdown table: {out}")
