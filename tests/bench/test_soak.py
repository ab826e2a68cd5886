"""bench/run-fault-soak.sh: a few-second smoke run with real faults, its bad-input
handling, the stream classification and the leak gate it rests on."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from bytes_handoff import BufferIOError, WriteClosed, WriteIOError
from bytes_handoff_bench.harness.implementations import ProtocolError
from bytes_handoff_bench.soak.config import SoakConfig
from bytes_handoff_bench.soak.driver import StreamRecord
from bytes_handoff_bench.soak.memory import (
    HEAP_CSV_HEADER,
    HeapSample,
    heap_failures,
    heap_growth,
    parse_heap_samples,
    robust_slope,
    steady_slope,
)
from bytes_handoff_bench.soak.orchestrator import Orchestrator, processes_with
from bytes_handoff_bench.soak.service import proxy_error_category
from bytes_handoff_bench.tools.artifacts import parse_kv_text

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "bench" / "run-fault-soak.sh"


@pytest.mark.slow
@pytest.mark.timeout(20)
def test_smoke_run_injects_faults_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    args = [
        "--duration-seconds", "5",
        "--connections", "16",
        "--kill-interval-seconds", "1",
        "--client-reset-rate", "0.2",
        "--sink-reset-rate", "0.2",
        "--tunnel-bytes", "32768",
        "--seed", "7",
        "--out-dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        ["bash", str(SOAK), *args], capture_output=True, text=True, timeout=18, cwd=ROOT
    )
    kv = parse_kv_text(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert kv["verdict"] == "pass"
    assert kv["seed"] == "7"
    assert int(kv["proxy_kills"]) > 0
    assert int(kv["resets"]) > 0
    assert int(kv["client_resets"]) > 0 and int(kv["sink_resets"]) > 0
    assert int(kv["streams_verified"]) > 0
    for failure in ("corrupted", "hang", "proxy_crashed", "unexplained"):
        assert kv[f"failures_{failure}"] == "0"
    assert kv["leftover_processes"] == "0"
    # Independently of the script's own check: nothing started with this run's spec survives.
    assert processes_with(str(out / "soak.json")) == []
    assert parse_kv_text((out / "summary.txt").read_text()) == kv


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_protocol_path_survives_sinks_that_stall_then_reset(tmp_path: Path) -> None:
    """Sinks stop reading (the proxy's writes pause), then reset; the stream is long
    enough to fill every buffer and the write budget. On the protocol path this once
    froze the proxy's loop, then reordered bytes and hung streams (fixed since)."""
    out = tmp_path / "soak"
    args = [
        "--library-path", "protocol",
        "--duration-seconds", "4",
        "--connections", "32",
        "--kill-interval-seconds", "0",
        "--client-reset-rate", "0",
        "--sink-reset-rate", "0",
        "--sink-stall-reset-rate", "0.1",
        "--stall-seconds", "0.5",
        "--hang-seconds", "8",
        "--seed", "1",
        "--out-dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        ["bash", str(SOAK), *args], capture_output=True, text=True, timeout=35, cwd=ROOT
    )
    kv = parse_kv_text(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert kv["verdict"] == "pass"
    assert kv["library_path"] == "protocol"
    assert int(kv["sink_stall_resets"]) > 0
    assert int(kv["streams_verified"]) > 0
    for failure in ("corrupted", "hang", "proxy_crashed", "unexplained"):
        assert kv[f"failures_{failure}"] == "0"


@pytest.mark.parametrize(
    "args",
    [
        ["--connections", "0"],
        ["--sink-stall-reset-rate", "0.5", "--sink-reset-rate", "0.6"],
        ["--stall-seconds", "0"],
        ["--library-path", "tls"],
        ["--services", "1"],
        ["--client-reset-rate", "1.5"],
        ["--service-cores", "0"],
        ["--duration-seconds", "soon"],
        ["--no-such-flag"],
        # Values that would never end or fork without limit: refused before anything runs.
        ["--duration-seconds", "1e300"],
        ["--hang-seconds", "inf"],
        ["--kill-interval-seconds", "nan"],
        ["--services", "99999999"],
        ["--seed", "9" * 30],
        ["--rss-limit-mib-per-min", "inf"],
        ["--rss-limit-mib-per-min", "-1"],
        ["--heap-limit-bytes-per-stream", "-1"],
        ["--heap-limit-bytes-per-stream", "inf"],
        ["--py-blocks-limit-per-stream", "nan"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(SOAK), *args, "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run-fault-soak.sh: error: "), proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_proxy_errors_are_named_and_unknown_types_are_not() -> None:
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    assert proxy_error_category(BufferIOError(reset)) == "read_ECONNRESET"
    assert proxy_error_category(WriteIOError(BrokenPipeError(errno.EPIPE, "pipe"))) == "write_EPIPE"
    assert proxy_error_category(WriteClosed()) == "write_closed"
    assert proxy_error_category(ProtocolError("eof")) == "eof_before_marker"
    assert proxy_error_category(BufferIOError(ValueError("lying reader"))) is None
    assert proxy_error_category(RuntimeError("bug")) is None


def record(**kw: object) -> StreamRecord:
    base: dict[str, object] = {
        "wave": 0, "conn": 1, "fragment": 97, "client_reset_at": None, "sink_reset_at": None,
    }  # fmt: skip
    base.update(kw)
    return StreamRecord(**base)  # type: ignore[arg-type]


def test_driver_classification_puts_wrong_bytes_and_hangs_first() -> None:
    assert record(client="ok", sink="verified").classify() == "verified"
    assert record(client="ok", sink="corrupted").classify() == "corrupted"
    assert record(client="reset_injected", sink="duplicate").classify() == "corrupted"
    assert record(client="hang", sink="verified").classify() == "hang"
    assert record(client="ok", sink="hang").classify() == "hang"
    assert record(client="reset_injected", sink="short").classify() == "client_reset"
    assert record(client="error_ECONNRESET", sink="reset_injected").classify() == "sink_reset"
    assert record(client="connect_refused").classify() == "connect_refused"
    # Broken without an injected cause: only the orchestrator knows about kills.
    assert record(client="error_ECONNRESET", sink="short").classify() == "pending"


def test_a_break_counts_as_proxy_killed_only_when_its_proxy_died_first(tmp_path: Path) -> None:
    orch = Orchestrator(SoakConfig(), tmp_path)
    orch.kills = {100: (10.5, 10.6)}
    accepts = {5000: [(10.1, 100)], 5001: [(10.1, 200)], 5002: [(12.1, 100)]}
    rec = {"t_start": 10.0, "t_end": 11.0, "client_port": 5000}
    assert orch.classify_pending(rec, accepts)[0] == "proxy_killed"
    # Served by a proxy that was not killed: a real failure.
    assert orch.classify_pending({**rec, "client_port": 5001}, accepts)[0] == "unexplained"
    orch.crashed = {200: 10.9}
    assert orch.classify_pending({**rec, "client_port": 5001}, accepts)[0] == "proxy_crashed"
    # Its proxy was killed only after the stream had already broken.
    early = {"t_start": 10.0, "t_end": 10.4, "client_port": 5000}
    assert orch.classify_pending(early, accepts)[0] == "unexplained"
    # Never accepted: explained only by a listener killed while the stream was open.
    assert orch.classify_pending({**rec, "client_port": 5003}, accepts)[0] == "proxy_killed"
    # Started after the SIGKILL, but before the dying listener was gone.
    dying = {"t_start": 10.55, "t_end": 10.58, "client_port": 5003}
    assert orch.classify_pending(dying, accepts)[0] == "proxy_killed"
    later = {"t_start": 11.0, "t_end": 12.0, "client_port": 5003}
    assert orch.classify_pending(later, accepts)[0] == "unexplained"


# -- the leak gate ------------------------------------------------------------------------------


def idle_samples(
    leak_bytes: float = 0.0,
    leak_blocks: float = 0.0,
    leak_objects: float = 0.0,
    n: int = 30,
    per_wave: int = 64,
    step_at: int = 24,
) -> list[HeapSample]:
    """Service 0's idle samples over a run, one a wave, shaped like the measured ones: free
    lists filling ever slower, a table that grows once at a new peak of streams open at
    once (at sample ``step_at``), a little jitter; plus a leak of so much a stream."""
    samples = []
    for i in range(n):
        streams = i * per_wave
        warm = 1.0 - 0.9**i  # flattens; still grows after the warm-up, as measured
        step = 1 if i >= step_at else 0
        jitter = (-1) ** i
        samples.append(
            HeapSample(
                t=100.0 + 2.0 * i,
                streams=streams,
                heap_bytes=int(
                    5_000_000 + 50_000 * warm + 32_768 * step + 500 * jitter + leak_bytes * streams
                ),
                py_blocks=int(
                    90_000 + 600 * warm + 140 * step + 3 * jitter + leak_blocks * streams
                ),
                gc_objects=int(21_000 + (i % 2) + leak_objects * streams),
            )
        )
    return samples


def test_leak_gate_passes_high_water_steps_and_fails_a_leak_per_stream() -> None:
    cfg = SoakConfig()
    healthy = heap_growth(idle_samples())
    assert healthy is not None and healthy.not_gated is None
    assert healthy.bytes_per_stream is not None
    assert abs(healthy.bytes_per_stream) < cfg.heap_limit_bytes_per_stream / 4
    assert abs(healthy.py_blocks_per_stream) < cfg.py_blocks_limit_per_stream / 3
    assert abs(healthy.gc_objects_per_stream) < cfg.gc_objects_limit_per_stream / 4
    assert heap_failures(healthy, cfg) == []

    # A 4 KiB buffer kept per stream (a bytes object: one block, its payload malloc'd).
    buffers = heap_growth(idle_samples(leak_bytes=4096 + 33, leak_blocks=1))
    assert buffers is not None and buffers.bytes_per_stream is not None
    assert buffers.bytes_per_stream == pytest.approx(4129, abs=50)
    reasons = heap_failures(buffers, cfg)
    assert len(reasons) == 2
    assert "live heap grew" in reasons[0] and "Python blocks grew" in reasons[1]

    # A small bytes object per stream: pymalloc's, not malloc's, not gc's: the blocks see it.
    small = heap_failures(heap_growth(idle_samples(leak_bytes=8, leak_blocks=1)), cfg)
    assert len(small) == 1 and "Python blocks grew 1." in small[0]

    # A list per stream: one block, one gc object.
    dicts = heap_failures(heap_growth(idle_samples(leak_blocks=1, leak_objects=1)), cfg)
    assert len(dicts) == 2 and "gc-tracked objects grew 1.00 per stream" in dicts[1]
    # A tracked object every 5 streams passes the blocks limit, not the gc one.
    rare = heap_failures(heap_growth(idle_samples(leak_blocks=0.2, leak_objects=0.2)), cfg)
    assert len(rare) == 1 and "gc-tracked objects grew 0.20" in rare[0]

    # Half an object a stream is the blocks limit: over it fails, well under it passes.
    assert heap_failures(heap_growth(idle_samples(leak_blocks=0.6)), cfg)
    assert not heap_failures(heap_growth(idle_samples(leak_blocks=0.25)), cfg)


@pytest.mark.parametrize("step_at", [7, 12, 15, 18, 22, 26, 29])
def test_a_one_time_step_anywhere_passes_and_a_leak_still_fails(step_at: int) -> None:
    cfg = SoakConfig()
    growth = heap_growth(idle_samples(step_at=step_at))
    assert growth is not None and heap_failures(growth, cfg) == []
    assert abs(growth.py_blocks_per_stream) < cfg.py_blocks_limit_per_stream / 2
    leaking = heap_growth(idle_samples(leak_blocks=1, step_at=step_at))
    assert leaking is not None
    assert leaking.py_blocks_per_stream == pytest.approx(1.0, abs=0.25)
    assert len(heap_failures(leaking, cfg)) == 1


def test_leak_gate_does_not_gate_a_short_run_and_gates_blocks_without_mallinfo() -> None:
    cfg = SoakConfig()
    assert heap_growth(idle_samples(n=1)) is None  # one sample: no slope at all
    short = heap_growth(idle_samples(leak_bytes=4096, leak_blocks=1, n=12))
    assert short is not None and short.not_gated is not None
    assert "at least 12" in short.not_gated
    assert heap_failures(short, cfg) == []  # reported (a huge slope), not gated
    few_streams = heap_growth(idle_samples(leak_blocks=1, per_wave=10))
    assert few_streams is not None and "at least 600 streams" in (few_streams.not_gated or "")

    no_malloc = [
        HeapSample(s.t, s.streams, -1, s.py_blocks, s.gc_objects)
        for s in idle_samples(leak_bytes=4096, leak_blocks=1)
    ]
    growth = heap_growth(no_malloc)
    assert growth is not None and growth.bytes_per_stream is None
    reasons = heap_failures(growth, cfg)
    assert len(reasons) == 1 and "Python blocks" in reasons[0]
    # The RSS slope reports; it gates only when asked for.
    assert cfg.rss_limit_mib_per_min is None


def test_steady_slope_is_the_slowest_stretch_and_ignores_one_odd_sample() -> None:
    assert robust_slope([(0, 5.0), (1, 7.0), (3, 11.0)]) == pytest.approx(2.0)
    assert robust_slope([(1, 5.0), (1, 9.0)]) == 0.0  # x does not vary
    spike = [(float(x), 3.0 * x + (500.0 if x == 4 else 0.0)) for x in range(10)]
    assert robust_slope(spike) == pytest.approx(3.0)
    # A step in the middle moves a median of all pairs (and a least-squares fit); the
    # stretches without it do not.
    step = [(float(x), 0.0 if x < 10 else 1000.0) for x in range(21)]
    assert robust_slope(step) > 40
    assert steady_slope(step) == 0.0
    line = [(float(x), 7.0 * x) for x in range(21)]
    assert steady_slope(line) == pytest.approx(7.0)
    flattening = [(float(x), 100.0 * (1 - 0.8**x)) for x in range(21)]
    assert steady_slope(flattening) < robust_slope(flattening) / 4


def test_heap_samples_round_trip_and_torn_lines_are_skipped() -> None:
    samples = idle_samples(n=3)
    text = HEAP_CSV_HEADER + "".join(s.csv_line() for s in samples)
    text += "12.5,64,oops,1,2\n" + "13.0,64,5\n" + "13.5,64"  # bad, short, torn
    assert parse_heap_samples(text) == [
        HeapSample(round(s.t, 3), s.streams, s.heap_bytes, s.py_blocks, s.gc_objects)
        for s in samples
    ]
    live = HeapSample.now(7, 123)
    assert live.streams == 7 and live.gc_objects == 123 and live.py_blocks > 0
    assert parse_heap_samples(HEAP_CSV_HEADER + live.csv_line())[0].streams == 7
