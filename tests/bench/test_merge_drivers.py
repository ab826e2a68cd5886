"""Several drivers, one service: disjoint stream ids, one route per driver, merged reports.

N tcp-driver processes (``--drivers N --driver-index K``) drive one tcp-service
that has one ``--service-addr``/``--sink-addr`` pair per driver; each writes its
own report, and ``bench/merge-drivers.sh`` adds them up: counts and rates
summed, percentiles from the drivers' HDR histograms added up. Everything here
runs on one host without privilege; the run with a network namespace per driver
is in ``test_two_hosts.py``. No timing is asserted (the machine is shared).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_support import (
    ROOT,
    SMALL,
    assert_one_line_error,
    bench_cmd,
    free_port,
    parse_report,
    run_script,
)
from hdrh.histogram import HdrHistogram

from bytes_handoff_bench.errors import UsageError, VerificationError
from bytes_handoff_bench.harness.cli import config_from_args
from bytes_handoff_bench.harness.workload import StreamVerifier, Workload
from bytes_handoff_bench.tools.artifacts import parse_kv_file, read_runs_csv
from bytes_handoff_bench.tools.merge_drivers import Report, merge_reports

MERGE = ROOT / "bench" / "merge-drivers.sh"
HARNESS = ROOT / "bench" / "run-stream-harness.sh"
TCP = [*SMALL, "--transport", "tcp"]


def start(*args: str, out: Path) -> subprocess.Popen[str]:
    """A harness process with its report going to ``out`` (stderr kept in ``out.err``)."""
    return subprocess.Popen(
        bench_cmd(*args),
        cwd=ROOT,
        stdout=out.open("w"),
        stderr=out.with_suffix(".err").open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def finish(proc: subprocess.Popen[str], out: Path, timeout: float = 60) -> dict[str, str]:
    try:
        rc = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, out.with_suffix(".err").read_text()
    return parse_kv_file(out)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[str], list[str]]]:
    """A tcp-service with two workers and two routes (one per driver): its process, the
    addresses the drivers connect to (from its ready file) and their sinks' addresses."""
    sinks = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    ready = tmp_path / "service.ready"
    routes = [w for sink in sinks for w in ("--service-addr", "127.0.0.1:0", "--sink-addr", sink)]
    proc = start(
        *TCP, "--role", "tcp-service", "--worker-threads", "2", *routes,
        "--ready-file", str(ready), "--idle-timeout-millis", "400",
        out=tmp_path / "service.txt",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, (tmp_path / "service.err").read_text()
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.02)
        addrs = parse_kv_file(ready)["service_addrs"].split(",")
        assert len(addrs) == 2 and parse_kv_file(ready)["service_addr"] == addrs[0]
        yield proc, addrs, sinks
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def driver_args(addrs: list[str], sinks: list[str], k: int, *more: str) -> list[str]:
    return [
        *TCP, "--role", "tcp-driver", "--service-addr", addrs[k], "--sink-addr", sinks[k],
        "--drivers", "2", "--driver-index", str(k), *more,
    ]  # fmt: skip


def hist(report: dict[str, str]) -> HdrHistogram:
    return HdrHistogram.decode(report["latency_histogram_hdr"].encode())


def test_two_drivers_one_service_merge_to_the_sums(
    tmp_path: Path, service: tuple[subprocess.Popen[str], list[str], list[str]]
) -> None:
    proc, addrs, sinks = service
    load = ["--rate", "40", "--duration-seconds", "0.5", "--worker-threads", "2"]
    outs = [tmp_path / f"driver-{k}.txt" for k in range(2)]
    drivers = [start(*driver_args(addrs, sinks, k, *load), out=outs[k]) for k in range(2)]
    reports = [finish(d, out) for d, out in zip(drivers, outs, strict=True)]
    svc = finish(proc, tmp_path / "service.txt")

    # Each driver: its own stream ids, its share of the rate, every byte verified.
    for k, report in enumerate(reports):
        assert report["verified"] == "true" and report["verification"] == "content"
        assert (report["drivers"], report["driver_index"]) == ("2", str(k))
        assert report["stream_ids"] == ("0000-0002", "0003-0005")[k]
        assert float(report["offered_streams_per_sec"]) == 20
        assert float(report["offered_streams_per_sec_all_drivers"]) == 40
        assert int(report["latency_histogram_count"]) == int(report["total_streams"]) > 0
        assert hist(report).get_total_count() == int(report["total_streams"])
    streams = [int(r["total_streams"]) for r in reports]

    merged_out = tmp_path / "merged.txt"
    proc_merge = run_script(MERGE, "--out", str(merged_out), *map(str, outs))
    assert proc_merge.returncode == 0, proc_merge.stderr
    merged = parse_report(proc_merge.stdout)
    assert parse_kv_file(merged_out) == merged

    # Counts and rates are the drivers' sums ...
    for key in ("total_streams", "total_bytes", "streams_scheduled", "streams_started"):
        assert int(merged[key]) == sum(int(r[key]) for r in reports), key
    for key in ("offered_streams_per_sec", "achieved_streams_per_sec", "mib_per_sec"):
        assert float(merged[key]) == pytest.approx(sum(float(r[key]) for r in reports)), key
    assert float(merged["offered_streams_per_sec"]) == pytest.approx(40)
    assert merged["streams_unsent"] == "0" and merged["fell_behind_drivers"] in ("0", "1", "2")
    assert (merged["merged_drivers"], merged["drivers"]) == ("2", "2")
    assert (merged["connections"], merged["connections_per_driver"]) == ("6", "3")
    assert merged["driver_streams"] == ",".join(map(str, streams))
    assert merged["driver_stream_ids"] == "0000-0002,0003-0005"
    assert merged["verified"] == "true" and merged["role"] == "tcp-driver"
    assert "pid" not in merged and "argv" not in merged and "driver_index" not in merged
    # ... and the latency histogram holds every stream of both: one latency per stream.
    assert int(merged["latency_histogram_count"]) == sum(streams)
    assert hist(merged).get_total_count() == sum(streams)
    # Merged percentiles lie between the drivers' (a mixture's quantile does); a sum or
    # an average of percentiles would be a different figure.
    for key in ("latency_p50_micros", "latency_p99_micros"):
        values = [int(r[key]) for r in reports]
        assert min(values) <= int(merged[key]) <= max(values), (key, values, merged[key])
    assert int(merged["latency_max_micros"]) == max(int(r["latency_max_micros"]) for r in reports)

    # The service carried each driver's streams on that driver's route, and all of them.
    assert svc["total_streams"] == merged["total_streams"]
    assert svc["total_bytes"] == merged["total_bytes"]
    assert (svc["routes"], svc["service_addrs"]) == ("2", ",".join(addrs))
    assert svc["route_streams"] == ",".join(map(str, streams))


def test_the_service_waits_for_a_driver_that_starts_after_another_ended(
    tmp_path: Path, service: tuple[subprocess.Popen[str], list[str], list[str]]
) -> None:
    # Driver 0 ends; the service is idle past its idle timeout (400 ms) but keeps serving:
    # driver 1 has not come yet. Once it has, and has ended, the service reports both.
    proc, addrs, sinks = service
    first = finish(
        start(*driver_args(addrs, sinks, 0), out=tmp_path / "d0.txt"), tmp_path / "d0.txt"
    )
    time.sleep(1.0)
    assert proc.poll() is None, (tmp_path / "service.err").read_text()
    more = ["--iterations", "2"]
    second = finish(
        start(*driver_args(addrs, sinks, 1, *more), out=tmp_path / "d1.txt"), tmp_path / "d1.txt"
    )
    svc = finish(proc, tmp_path / "service.txt")
    assert (first["total_streams"], second["total_streams"]) == ("3", "6")
    assert svc["total_streams"] == "9" and svc["route_streams"] == "3,6"


def test_a_route_without_its_driver_fails_the_service_in_one_line(tmp_path: Path) -> None:
    sinks = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    ports = [free_port(), free_port()]
    routes = [
        w for port, sink in zip(ports, sinks, strict=True)
        for w in ("--service-addr", f"127.0.0.1:{port}", "--sink-addr", sink)
    ]  # fmt: skip
    svc_out = tmp_path / "service.txt"
    svc = start(*TCP, "--role", "tcp-service", *routes, "--startup-timeout-seconds", "3",
                "--idle-timeout-millis", "200", out=svc_out)  # fmt: skip
    try:
        driver = finish(
            start(
                *TCP, "--role", "tcp-driver", "--service-addr", f"127.0.0.1:{ports[0]}",
                "--sink-addr", sinks[0], "--drivers", "2", out=tmp_path / "d0.txt",
            ),
            tmp_path / "d0.txt",
        )  # fmt: skip
        rc = svc.wait(30)
    finally:
        if svc.poll() is None:
            svc.kill()
            svc.wait()
    assert driver["verified"] == "true"
    assert rc == 1
    err = svc_out.with_suffix(".err").read_text().strip().splitlines()
    assert err == [
        f"bytes-handoff-bench: error: no connection on 127.0.0.1:{ports[1]} within 3 s"
        " (--startup-timeout-seconds); 1 of 2 routes had one"
    ], err


def test_the_wrapper_runs_two_drivers_and_its_runs_csv_is_their_merge(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    results = tmp_path / "results"
    proc = run_script(
        HARNESS, *SMALL, "--service-cores", str(cpus[0]), "--driver-cores", str(cpus[-1]),
        "--drivers", "2", "--runs", "1", "--iterations", "2", "--worker-threads", "1",
        "--idle-timeout-millis", "300", "--results-dir", str(results),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert " drivers=2 " in proc.stderr
    run_dir = next(results.iterdir())
    reports = [parse_kv_file(run_dir / f"handoff-driver-{k}-run-1.txt") for k in range(2)]
    merged = parse_kv_file(run_dir / "handoff-run-1.txt")
    service = parse_kv_file(run_dir / "service-run-1.txt")
    assert [r["stream_ids"] for r in reports] == ["0000-0002", "0003-0005"]
    assert [r["total_streams"] for r in reports] == ["6", "6"]  # 3 connections, 2 waves each
    assert merged["merged_drivers"] == "2" and merged["total_streams"] == "12"
    assert int(merged["total_bytes"]) == sum(int(r["total_bytes"]) for r in reports)
    assert merged["latency_histogram_count"] == "12" and hist(merged).get_total_count() == 12
    assert service["total_streams"] == "12" and service["route_streams"] == "6,6"
    row = read_runs_csv(run_dir / "runs.csv")[0]
    assert row["total_streams"] == row["service_total_streams"] == "12"
    assert row["merged_drivers"] == "2"
    assert not list(run_dir.glob("*.err"))


def test_the_wrapper_refuses_drivers_without_split_mode() -> None:
    line = assert_one_line_error(run_script(HARNESS, "--drivers", "2"), "run-stream-harness.sh")
    assert line.endswith("--drivers needs split mode: pass --service-cores and --driver-cores")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--drivers", "2", "--service-addr", "127.0.0.1:7001"],
            "--service-addr given 1 times: give it once per driver (--drivers 2)",
        ),
        (
            ["--drivers", "2", "--sink-addr", "127.0.0.1:7002"] * 3,
            "--sink-addr given 3 times: give it once per driver (--drivers 2)",
        ),
        (
            ["--service-addr", "127.0.0.1:7001", "--service-addr", "127.0.0.1:7003"],
            "--service-addr given 2 times: give it once",
        ),
        (
            ["--drivers", "3", "--driver-prefix", "env", "--driver-prefix", "env"],
            "--driver-prefix given 2 times: give it once for all drivers or once per driver",
        ),
        (["--drivers", "2", "--connections", "6000"], "6000 = 12000 stream ids, more than 10000"),
    ],
)
def test_the_wrapper_refuses_bad_driver_flags(args: list[str], needle: str) -> None:
    proc = run_script(HARNESS, "--service-cores", "0", "--driver-cores", "0", *args)
    line = assert_one_line_error(proc, "run-stream-harness.sh")
    assert needle in line, line


# -- the harness's flags and the workload's ids ----------------------------------------------

DRIVER = ["--transport", "tcp", "--role", "tcp-driver", "--service-addr", "127.0.0.1:9"]
DRIVER += ["--sink-addr", "127.0.0.1:0"]
SERVICE = ["--transport", "tcp", "--role", "tcp-service", "--service-addr", "127.0.0.1:0"]
SERVICE += ["--sink-addr", "127.0.0.1:7"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--drivers", "2"], "--drivers and --driver-index are for --role tcp-driver"),
        ([*DRIVER, "--drivers", "2", "--driver-index", "2"], "--driver-index must be from 0 to"),
        ([*DRIVER, "--drivers", "0"], "--drivers must be from 1 to 64, got 0"),
        ([*DRIVER, "--drivers", "3", "--connections", "4000"], "= 12000 stream ids"),
        ([*DRIVER, "--service-addr", "127.0.0.1:10"], "--service-addr given 2 times and"),
        (
            [*DRIVER, "--service-addr", "127.0.0.1:10", "--sink-addr", "127.0.0.1:11"],
            "given once, except to --role tcp-service",
        ),
        (
            [*SERVICE, "--service-addr", "127.0.0.1:0", "--sink-addr", "127.0.0.1:0"],
            "--sink-addr: the service needs the sink's concrete port",
        ),
    ],
)
def test_the_harness_refuses_bad_driver_flags(args: list[str], needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        config_from_args(args)
    assert needle in str(caught.value), str(caught.value)


def test_a_driver_offers_its_share_and_owns_its_stream_ids() -> None:
    cfg = config_from_args([*DRIVER, "--connections", "4", "--drivers", "4", "--rate", "100"])
    assert cfg.offered_streams_per_sec == 25 and cfg.offered_streams_per_sec_all_drivers == 100
    last = config_from_args(
        [*DRIVER, "--connections", "4", "--drivers", "4", "--driver-index", "3"]
    )
    assert last.stream_ids == range(12, 16)


def test_the_sink_refuses_another_drivers_stream() -> None:
    cfg = config_from_args([*DRIVER, *SMALL, "--drivers", "2", "--driver-index", "1"])
    mine = Workload(cfg, stream_ids=cfg.stream_ids)  # ids 3, 4, 5
    assert mine.frame(0, 0).startswith(b"GET /tenant/0003/object/00000000")
    data = bytearray(mine.stream_bytes(2))
    verifier = StreamVerifier(mine)
    verifier.feed(data, len(data))
    verifier.finish()
    assert verifier.conn == 2 and verifier.name == "stream 0005"

    other = Workload(cfg, stream_ids=range(0, 3))  # driver 0's
    theirs = bytearray(other.stream_bytes(1))
    with pytest.raises(VerificationError) as caught:
        StreamVerifier(mine).feed(theirs, len(theirs))
    assert str(caught.value) == (
        "stream 0001: not one of this sink's stream ids (0003 to 0005): another driver's"
        " stream, or one the service mixed up"
    )
    # The tunnel bytes follow the id too: driver 1's connection 0 is not driver 0's.
    assert mine.stream_bytes(0)[-100:] != other.stream_bytes(0)[-100:]


# -- what does not merge ----------------------------------------------------------------------


def report(index: int, drivers: int = 2, streams: int = 3, **changes: str) -> Report:
    """A driver's report as the harness writes it (the keys the merge reads)."""
    h = HdrHistogram(1, 60_000_000, 3)
    for i in range(streams):
        h.record_value(1000 * (index + 1) + i)
    kv = {
        "mode": "stream_harness",
        "role": "tcp-driver",
        "transport": "tcp",
        "implementation": "handoff",
        "scenario": "fragmented",
        "completion": "ticket",
        "connections": "3",
        "tunnel_bytes": "4096",
        "bytes_per_connection": "4359",
        "actual_iterations": "1",
        "total_streams": str(streams),
        "total_bytes": str(streams * 4359),
        "total_seconds": "0.5",
        "mib_per_sec": "1.5",
        "cpu_total_seconds": "0.25",
        "latency_p99_micros": "999",
        "verified": "true",
        "verification": "content",
        "package_version": "0.1.0",
        "hostname": f"host{index}",
        "pid": str(100 + index),
        "latency_histogram_count": str(streams),
        "latency_histogram_hdr": h.encode().decode(),
        "drivers": str(drivers),
        "driver_index": str(index),
        "stream_ids": f"{3 * index:04}-{3 * index + 2:04}",
    }
    kv.update(changes)
    return Report(f"driver-{index}.txt", {k: v for k, v in kv.items() if v != "-"})


def test_merge_of_closed_loop_reports() -> None:
    merged = merge_reports([report(0), report(1, streams=6)])
    assert merged["total_streams"] == "9" and merged["total_bytes"] == str(9 * 4359)
    assert merged["mib_per_sec"] == "3" and merged["total_seconds"] == "0.5"
    assert merged["hostname"] == "host0,host1" and "pid" not in merged
    assert merged["latency_p50_micros"] == "2001"  # the 5th of 9: 1000-1002, 2000-2005
    assert merged["latency_max_micros"] == "2005" and merged["latency_histogram_count"] == "9"
    assert float(merged["cpu_ns_per_byte"]) == pytest.approx(0.5e9 / (9 * 4359))
    assert "fell_behind" not in merged  # closed loop


@pytest.mark.parametrize(
    ("reports", "needle"),
    [
        (
            [report(0), report(1, implementation="raw_copy")],
            "driver-1.txt: implementation=raw_copy, but driver-0.txt: implementation=handoff:"
            " not drivers of one run, refusing to merge",
        ),
        ([report(0), report(1, tunnel_bytes="8192")], "tunnel_bytes=8192, but"),
        ([report(0), report(1, package_version="0.2.0")], "package_version=0.2.0, but"),
        (
            [report(0), report(1, load="open_loop")],
            "load=open_loop, but driver-0.txt: load=(absent)",
        ),
        ([report(0), report(0)], "driver-0.txt and driver-0.txt are both driver_index=0"),
        ([report(0, drivers=3), report(1, drivers=3)], "driver_index 2 missing"),
        ([report(0), report(1, role="tcp-service")], "role=tcp-service: only tcp-driver reports"),
        ([report(0, verified="false"), report(1)], "verified=false: not the report of a run"),
        ([report(0), report(1, latency_histogram_hdr="-")], "no latency_histogram_hdr="),
        ([report(0), report(1, latency_histogram_hdr="HISTFAAAnot")], "does not decode"),
        (
            [report(0), report(1, total_streams="4")],
            "driver-1.txt: its histogram holds 3 latencies, but total_streams=4",
        ),
    ],
)
def test_reports_that_do_not_merge_are_refused(reports: list[Report], needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        merge_reports(reports)
    assert needle in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_merge_script_refuses_in_one_line(tmp_path: Path) -> None:
    paths = []
    for k, changes in enumerate(({}, {"scenario": "coalesced"})):
        path = tmp_path / f"d{k}.txt"
        path.write_text("".join(f"{key}={v}\n" for key, v in report(k, **changes).kv.items()))
        paths.append(str(path))
    proc = run_script(MERGE, *paths)
    line = assert_one_line_error(proc, "merge-drivers.sh")
    assert "scenario=coalesced, but" in line and proc.stdout == ""
    proc = run_script(MERGE, str(tmp_path / "missing.txt"))
    assert "missing.txt: cannot read: No such file or directory" in assert_one_line_error(
        proc, "merge-drivers.sh"
    )
    proc = run_script(MERGE)
    assert "required: REPORT" in assert_one_line_error(proc, "merge-drivers.sh")
