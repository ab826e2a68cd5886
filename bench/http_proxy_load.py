"""Load run for examples/http_proxy.py: direct, through the example on each loop, through proxy.py.

Two modes. ``--mode requests`` (the default) drives wrk (or ab) at a small
fixed-response keep-alive upstream (uvloop when it is installed), so that the
proxy, not the upstream, is the bottleneck: straight at the upstream
("direct"), through ``examples/http_proxy.py`` on each event loop (and each
``--variant`` of its flags), and through proxy.py (``proxy-py==2.4.10``, one
worker: ``--num-workers 1 --num-acceptors 1``). ``--mode tunnel`` has curl
download a large body (``--tunnel-mib``, ``--downloads`` times) from a plain
TCP upstream through a ``CONNECT`` tunnel (``curl --proxytunnel``) of each proxy.

Every proxy is pinned to the same core (``--proxy-core``); the load tool and
the upstream share the other (``--load-core``). The runs are interleaved by
round: each round runs direct, then every proxy once, their order rotated by
one each round. A proxy's CPU time is the utime + stime (+ cutime + cstime, for
children it reaped) of its whole process tree, read from ``/proc`` before and
after the measured window: proxy.py forks its acceptor, ``--workers N`` its
workers. The figure to compare is requests per proxy CPU-second (requests) or
proxy CPU nanoseconds per byte (tunnel), each also as a ratio to proxy.py's in
the same round; the medians table gives the median over the rounds.

proxy.py is installed once into its own venv (``--proxy-py-venv``, default
``bench/results/.proxy-py-venv`` or ``$BH_PROXY_PY_VENV``) and reused; if that
fails (pip cannot reach an index), one line says so and the run goes on
without it, marked missing (``--require-proxy-py``: fail instead). It runs with
``--log-level ERROR`` (no access log, as the example has none) and ``HOME`` in
its venv (it makes ``~/.proxy`` when it starts).

Writes ``rounds.csv`` (every run) and ``summary.md`` (the tables it prints)
to a new ``http_proxy_<mode>_<timestamp>`` folder in ``--results-dir``.

Run it through ``bench/run-http-proxy-load.sh``; ``--help`` lists the flags.
``python bench/http_proxy_load.py upstream --port N`` runs the upstream alone,
``... blob --port N --size BYTES`` the tunnel mode's upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import importlib.util
import io
import os
import re
import selectors
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
from bytes_handoff_bench.extras import default_loop
from bytes_handoff_bench.names import Loop
from bytes_handoff_bench.output_paths import (
    choose_results_dir,
    make_output_dir,
    output_dir_arg,
    write_output,
)

ROOT = Path(__file__).resolve().parent.parent
PROXY = ROOT / "examples" / "http_proxy.py"
STARTUP_SECONDS = 15.0
PROXY_PY = "proxy-py==2.4.10"
PROXY_PY_VERSION = PROXY_PY.split("==")[1]
PROXY_PY_VENV_ENV = "BH_PROXY_PY_VENV"
DEFAULT_PROXY_PY_VENV = ROOT / "bench" / "results" / ".proxy-py-venv"
PIP_SECONDS = 300
MIB = 1 << 20
LUA = 'wrk.path = "{target}"\n'

# -- the upstreams ------------------------------------------------------------------------------


class FixedResponse(asyncio.Protocol):
    """Answers every request head with the same response; GETs only, pipelining allowed."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.pending = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        count = data.count(b"\r\n\r\n")
        if count and self.transport is not None:
            self.transport.write(self.response * count)
            data = data[data.rfind(b"\r\n\r\n") + 4 :]
        if len(data) > 65536 and self.transport is not None:
            self.transport.close()  # not a request stream: give up on it
        self.pending = data


async def run_upstream(port: int, body_size: int) -> None:
    body = b"x" * body_size
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body)
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FixedResponse(response), "127.0.0.1", port)
    print(f"upstream: listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def upstream_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="http_proxy_load.py upstream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--body-size", type=int, default=1024)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run_upstream(args.port, args.body_size))


def serve_blob(conn: socket.socket, size: int, chunk: memoryview) -> None:
    """One request head in, then ``size`` bytes of body and a close."""
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data or len(head) > 65536:
                return
            head += data
        with contextlib.suppress(OSError):  # the client went away: its problem, not ours
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size
            )
            left = size
            while left:
                step = min(left, len(chunk))
                conn.sendall(chunk[:step])
                left -= step


def blob_main(argv: list[str]) -> None:
    """The tunnel mode's upstream: plain TCP, a thread per connection, ``--size`` bytes each."""
    parser = argparse.ArgumentParser(prog="http_proxy_load.py blob")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", type=int, default=256 * MIB)
    args = parser.parse_args(argv)
    chunk = memoryview(b"x" * MIB)
    with socket.create_server(("127.0.0.1", args.port), backlog=128) as server:
        print(f"blob: listening on 127.0.0.1:{server.getsockname()[1]}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                conn, _ = server.accept()
                threading.Thread(
                    target=serve_blob, args=(conn, args.size, chunk), daemon=True
                ).start()


# -- processes, CPU time ------------------------------------------------------------------------


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if core else argv


def last_line(text: str, default: str = "no output") -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else default)[:300]


@contextlib.contextmanager
def started(
    argv: list[str],
    pattern: str | None,
    *,
    port_file: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start a server, wait for its port (the line matching ``pattern`` on its stdout, or
    the number in ``port_file``) and for it to accept; stop it (SIGTERM) on exit."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if pattern else subprocess.DEVNULL,
            stderr=err,
            text=True,
            env=env,
        )
        try:
            port = wait_for_port(proc, pattern, port_file)
            if port is None:
                err.seek(0)
                why = (
                    f"exited with status {proc.returncode}"
                    if proc.poll() is not None
                    else f"did not start within {STARTUP_SECONDS:g} s"
                )
                raise BenchError(f"{shlex.join(argv)} {why}: {last_line(err.read())}")
            yield proc, port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for_port(
    proc: subprocess.Popen[str], pattern: str | None, port_file: Path | None
) -> int | None:
    deadline = time.monotonic() + STARTUP_SECONDS
    port: int | None = None
    if pattern is not None:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            line = proc.stdout.readline() if sel.select(STARTUP_SECONDS) else ""
        match = re.search(pattern, line)
        port = int(match[1]) if match else None
    elif port_file is not None:
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                port = int(port_file.read_text().split()[0])
            if port is None:
                time.sleep(0.05)
    if port is None:
        return None
    while time.monotonic() < deadline and proc.poll() is None:  # listening, and accepting?
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return port
        time.sleep(0.05)
    return None


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime + cutime + cstime in clock ticks), for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # gone since the scan
            continue
        fields = text.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return table


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant, with the children they reaped."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            ticks += table[pid][1]
            todo += children.get(pid, [])
    return ticks / os.sysconf("SC_CLK_TCK")


# -- proxy.py in its own venv -------------------------------------------------------------------


def proxy_py_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not (python.exists() and (venv / "bin" / "proxy").exists()):
        return None
    code = "import importlib.metadata as m; print(m.version('proxy-py'))"
    try:
        done = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def install_proxy_py(venv: Path, prog: str) -> str | None:
    """Make ``venv`` and pip install proxy.py into it, unless it is there; why not, or None."""
    if proxy_py_version(venv) == PROXY_PY_VERSION:
        return None
    print(f"{prog}: installing {PROXY_PY} into {venv} (once; it is reused)", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [
            *(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--retries", "1"),
            *("--timeout", "20", "--disable-pip-version-check", PROXY_PY),
        ],
    ]
    for argv in steps:
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=PIP_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            return f"{shlex.join(argv)} did not finish within {PIP_SECONDS} s"
        except OSError as exc:
            return f"{shlex.join(argv)}: {exc.strerror or exc}"
        if done.returncode != 0:
            return f"{shlex.join(argv)} failed: {last_line(done.stderr + done.stdout)}"
    version = proxy_py_version(venv)
    if version != PROXY_PY_VERSION:
        return f"{venv}/bin/proxy is not proxy.py {PROXY_PY_VERSION} after pip ({version})"
    return None


# -- what is measured ---------------------------------------------------------------------------

DIRECT, EXAMPLE, PROXY_PY_NAME = "direct", "example", "proxy.py"


@dataclass
class Contender:
    """One thing a round measures: direct, the example with a loop and flags, or proxy.py."""

    kind: str  # DIRECT, EXAMPLE or PROXY_PY_NAME
    loop: str = "-"
    variant: str = "-"
    args: list[str] = field(default_factory=list)  # the example's extra flags


@dataclass
class Row:
    """One run: one contender in one round."""

    round: int
    contender: Contender
    status: str = "ok"  # or "missing" (proxy.py could not be installed)
    window_s: float = 0.0
    proxy_cpu_s: float | None = None
    # requests mode
    requests: int = 0
    requests_per_s: float = 0.0
    percentiles: dict[str, float] = field(default_factory=dict)  # "50" -> ms
    non_2xx: int = 0
    socket_errors: int = 0
    # tunnel mode
    downloads: int = 0
    bytes: int = 0
    mib_per_s: float = 0.0
    # against proxy.py in the same round: (per-CPU figure, rate)
    vs_proxy_py: tuple[float | None, float | None] = (None, None)
    command: str = ""

    @property
    def cpu_cores(self) -> float | None:
        if self.proxy_cpu_s is None or self.window_s <= 0:
            return None
        return self.proxy_cpu_s / self.window_s

    @property
    def per_cpu(self) -> float | None:
        """Requests per CPU-second (requests mode) or CPU ns per byte (tunnel mode)."""
        if self.proxy_cpu_s is None or self.status != "ok":
            return None
        if self.bytes:
            return self.proxy_cpu_s * 1e9 / self.bytes
        return self.requests / self.proxy_cpu_s if self.proxy_cpu_s > 0 else None

    @property
    def rate(self) -> float:
        return self.mib_per_s if self.bytes else self.requests_per_s


# -- requests mode: wrk or ab -------------------------------------------------------------------


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unknown latency {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match[2]]
    return float(match[1]) * scale


def found(pattern: str, out: str, tool: str, what: str) -> re.Match[str]:
    match = re.search(pattern, out)
    if match is None:
        raise BenchError(f"no {what} in {tool}'s output (last line: {last_line(out)!r})")
    return match


@dataclass
class LoadOutput:
    requests: int
    requests_per_s: float
    percentiles: dict[str, float]
    non_2xx: int
    socket_errors: int


def parse_wrk(out: str) -> LoadOutput:
    rps = float(found(r"Requests/sec:\s+([\d.]+)", out, "wrk", "requests/s")[1])
    count = int(found(r"(\d+) requests in ", out, "wrk", "request count")[1])
    pct = {m[1]: to_ms(m[2]) for m in re.finditer(r"^\s+(\d+)%\s+(\S+)$", out, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return LoadOutput(
        count,
        rps,
        pct,
        int(non_2xx[1]) if non_2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
    )


def parse_ab(out: str) -> LoadOutput:
    rps = float(found(r"Requests per second:\s+([\d.]+)", out, "ab", "requests/s")[1])
    count = int(found(r"Complete requests:\s+(\d+)", out, "ab", "request count")[1])
    pct = {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\d+)%\s+(\d+)", out, re.M)}
    non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    return LoadOutput(
        count, rps, pct, int(non_2xx[1]) if non_2xx else 0, int(failed[1]) if failed else 0
    )


def checked_run(argv: list[str], limit: float) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{shlex.join(argv)} did not finish within {limit:g} s") from None
    if done.returncode != 0:
        why = last_line(done.stderr + "\n" + done.stdout)
        raise BenchError(f"{shlex.join(argv)} failed (exit {done.returncode}): {why}")
    return done.stdout


def load_argv(args: argparse.Namespace, target: str, via: int | None, lua: Path) -> list[str]:
    """The load tool's command line for ``target``, direct or through the proxy at ``via``."""
    if args.tool == "wrk":
        argv = [
            *("wrk", "-t", str(args.threads), "-c", str(args.connections)),
            *("-d", f"{args.duration}s", "--latency"),
        ]
        if via is None:
            argv.append(target)
        else:
            # wrk has no proxy option: it sends the absolute URI to the proxy's address.
            lua.write_text(LUA.format(target=target))
            argv += ["-s", str(lua), f"http://127.0.0.1:{via}/"]
    else:
        argv = ["ab", "-k", "-q", "-c", str(args.connections), "-t", str(args.duration)]
        argv += ["-n", "100000000"]  # -t caps the run; -n only has to be large
        if via is not None:
            argv += ["-X", f"127.0.0.1:{via}"]
        argv.append(target)
    return pinned(args.load_core, argv)


def measure_requests(args: argparse.Namespace, row: Row, target: str, proxy: Proxy | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        argv = load_argv(args, target, proxy.port if proxy else None, Path(tmp) / "proxy.lua")
        before = tree_cpu_seconds(proxy.pid) if proxy else 0.0
        start = time.monotonic()
        out = checked_run(argv, args.duration + 60)
        row.window_s = time.monotonic() - start
        row.proxy_cpu_s = tree_cpu_seconds(proxy.pid) - before if proxy else None
    if args.verbose:
        print(out)
    parsed = (parse_wrk if args.tool == "wrk" else parse_ab)(out)
    row.requests, row.requests_per_s = parsed.requests, parsed.requests_per_s
    row.percentiles = parsed.percentiles
    row.non_2xx, row.socket_errors = parsed.non_2xx, parsed.socket_errors
    row.command = shlex.join(argv)
    if proxy is not None and args.tool == "wrk":
        row.command += f"  # proxy.lua: {LUA.format(target=target).strip()}"


# -- tunnel mode: curl through CONNECT ----------------------------------------------------------


def measure_tunnel(args: argparse.Namespace, row: Row, target: str, proxy: Proxy | None) -> None:
    size = args.tunnel_mib * MIB
    argv = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}\\n"]
    if proxy is not None:
        argv += ["--proxytunnel", "-x", f"http://127.0.0.1:{proxy.port}"]
    argv = pinned(args.load_core, [*argv, target])
    seconds = 0.0
    before = tree_cpu_seconds(proxy.pid) if proxy else 0.0
    start = time.monotonic()
    for _ in range(args.downloads):
        out = checked_run(argv, 600)
        got, took = out.split()
        if int(got) != size:
            raise BenchError(f"{shlex.join(argv)} got {got} bytes, not {size}")
        row.bytes += size
        seconds += float(took)
    row.window_s = time.monotonic() - start
    row.proxy_cpu_s = tree_cpu_seconds(proxy.pid) - before if proxy else None
    row.downloads = args.downloads
    row.mib_per_s = row.bytes / MIB / seconds if seconds > 0 else 0.0
    row.command = f"{args.downloads} x {shlex.join(argv)}"


# -- the rounds ---------------------------------------------------------------------------------


@dataclass
class Proxy:
    pid: int
    port: int


def proxy_command(args: argparse.Namespace, c: Contender, proxy_py: Path | None) -> list[str]:
    if c.kind == EXAMPLE:
        argv = [sys.executable, str(PROXY), "--port", "0", "--loop", c.loop, *c.args]
        if args.mode == "tunnel":
            argv += ["--connect-ports", str(args.upstream_port)]
        return pinned(args.proxy_core, argv)
    assert proxy_py is not None
    return pinned(
        args.proxy_core,
        [
            *(str(proxy_py), "--hostname", "127.0.0.1", "--port", "0"),
            *("--port-file", "PORT_FILE", "--num-workers", "1", "--num-acceptors", "1"),
            *("--log-level", "ERROR"),
        ],
    )


@contextlib.contextmanager
def proxy_running(
    args: argparse.Namespace, c: Contender, proxy_py: Path | None
) -> Iterator[tuple[Proxy | None, list[str]]]:
    if c.kind == DIRECT:
        yield None, []
        return
    argv = proxy_command(args, c, proxy_py)
    if c.kind == EXAMPLE:
        with started(argv, r"listening on 127\.0\.0\.1:(\d+)") as (proc, port):
            yield Proxy(proc.pid, port), argv
        return
    assert proxy_py is not None
    home = proxy_py.parent.parent / "home"  # proxy.py makes ~/.proxy when it starts
    home.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        argv = [str(port_file) if a == "PORT_FILE" else a for a in argv]
        env = {**os.environ, "HOME": str(home)}
        with started(argv, None, port_file=port_file, env=env) as (proc, port):
            yield Proxy(proc.pid, port), argv


def contenders(args: argparse.Namespace) -> list[Contender]:
    """The proxies of one round, in the first round's order (direct is not one)."""
    common = shlex.split(args.proxy_args)
    variants = args.variant or [(args.proxy_args.strip() or "-", [])]
    out = [
        Contender(EXAMPLE, loop, name, [*common, *extra])
        for name, extra in variants
        for loop in args.loops
    ]
    if not args.no_proxy_py:
        out.append(Contender(PROXY_PY_NAME))
    return out


def ratios(rows: list[Row]) -> None:
    """Each row's per-CPU figure and rate over those of proxy.py in the same round."""
    by_round = {r.round: r for r in rows if r.contender.kind == PROXY_PY_NAME and r.status == "ok"}
    for r in rows:
        ref = by_round.get(r.round)
        if ref is None or r.status != "ok":
            continue
        mine, theirs = r.per_cpu, ref.per_cpu
        r.vs_proxy_py = (
            mine / theirs if mine is not None and theirs else None,
            r.rate / ref.rate if ref.rate and r.contender.kind != DIRECT else None,
        )


def run_rounds(
    args: argparse.Namespace,
    prog: str,
    target: str,
    proxy_py: Path | None,
    measure: Callable[[argparse.Namespace, Row, str, Proxy | None], None],
) -> list[Row]:
    rows: list[Row] = []
    order = contenders(args)
    for c in {c.variant: c for c in order if c.kind == EXAMPLE}.values():
        try:  # each variant's flags start the example, or the run stops before it begins
            with proxy_running(args, c, proxy_py):
                pass
        except BenchError as exc:
            why = f"the example does not start with --proxy-args/--variant: {exc}"
            raise UsageError(why) from None
    for n in range(1, args.runs + 1):
        shift = (n - 1) % len(order) if order else 0
        for c in [Contender(DIRECT), *order[shift:], *order[:shift]]:
            row = Row(n, c)
            if c.kind == PROXY_PY_NAME and proxy_py is None:
                row.status = "missing"
            else:
                with proxy_running(args, c, proxy_py) as (proxy, argv):
                    measure(args, row, target, proxy)
                if argv:
                    row.command = f"{shlex.join(argv)}; {row.command}"
            rows.append(row)
            print(f"{prog}: {progress(row)}", flush=True)
    ratios(rows)
    return rows


def progress(r: Row) -> str:
    name = f"round {r.round} {label(r.contender)}"
    if r.status != "ok":
        return f"{name}: {r.status}"
    cpu = f", proxy CPU {r.cpu_cores:.2f}" if r.cpu_cores is not None else ""
    if r.bytes:
        per = f", {r.per_cpu:.3f} ns/B" if r.per_cpu is not None else ""
        return f"{name}: {r.mib_per_s:,.0f} MiB/s{cpu}{per}"
    per = f", {r.per_cpu:,.0f} req/CPU-s" if r.per_cpu is not None else ""
    return f"{name}: {r.requests_per_s:,.0f} req/s{cpu}{per}"


def label(c: Contender) -> str:
    return " ".join(x for x in (c.kind, c.loop, c.variant) if x != "-")


# -- output -------------------------------------------------------------------------------------

REQUEST_COLUMNS = [
    *("round", "proxy", "loop", "variant", "status", "requests", "window_s", "requests_per_s"),
    *("p50_ms", "p75_ms", "p90_ms", "p99_ms", "non_2xx", "socket_errors"),
    *("proxy_cpu_s", "proxy_cpu_cores", "requests_per_cpu_s"),
    *("requests_per_cpu_s_vs_proxy_py", "requests_per_s_vs_proxy_py", "command"),
]
TUNNEL_COLUMNS = [
    *("round", "proxy", "loop", "variant", "status", "downloads", "bytes", "window_s"),
    *("mib_per_s", "proxy_cpu_s", "proxy_cpu_cores", "ns_per_byte"),
    *("ns_per_byte_vs_proxy_py", "mib_per_s_vs_proxy_py", "command"),
]


def num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def csv_text(rows: list[Row], mode: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REQUEST_COLUMNS if mode == "requests" else TUNNEL_COLUMNS)
    for r in rows:
        c, ok = r.contender, r.status == "ok"
        head = [r.round, c.kind, c.loop, c.variant, r.status]
        cpu = [num(r.proxy_cpu_s, 3), num(r.cpu_cores, 3)]
        vs = [num(r.vs_proxy_py[0]), num(r.vs_proxy_py[1])]
        if mode == "requests":
            pct = [num(r.percentiles.get(k), 3) for k in ("50", "75", "90", "99")]
            body = [r.requests, num(r.window_s, 3), num(r.requests_per_s, 2), *pct]
            body += [r.non_2xx, r.socket_errors, *cpu, num(r.per_cpu, 1)]
        else:
            body = [r.downloads, r.bytes, num(r.window_s, 3), num(r.mib_per_s, 1), *cpu]
            body += [num(r.per_cpu, 4)]
        writer.writerow(head + (body + vs if ok else [""] * (len(body) + 2)) + [r.command])
    return out.getvalue()


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


REQUEST_HEAD = [
    *("proxy", "loop", "variant", "requests/s", "p50 ms", "p99 ms", "non-2xx", "socket errors"),
    *("proxy CPU", "requests per CPU-s", "req/CPU-s ÷ proxy.py", "req/s ÷ proxy.py"),
]
TUNNEL_HEAD = [
    *("proxy", "loop", "variant", "MiB/s", "proxy CPU", "CPU ns/B"),
    *("ns/B ÷ proxy.py", "MiB/s ÷ proxy.py"),
]


def cells(rs: list[Row], mode: str) -> list[str]:
    """A table row for the runs ``rs`` of one contender: one run, or medians over rounds."""
    c = rs[0].contender
    head = [c.kind, c.loop, c.variant]
    ok = [r for r in rs if r.status == "ok"]
    width = len(REQUEST_HEAD if mode == "requests" else TUNNEL_HEAD) - 3
    if not ok:
        return head + ["missing"] + ["-"] * (width - 1)
    cpu = cell(med([r.cpu_cores for r in ok]), ".2f")
    per = med([r.per_cpu for r in ok])
    vs = [cell(med([r.vs_proxy_py[i] for r in ok]), ".2f") for i in (0, 1)]
    if mode == "requests":
        pct = [cell(med([r.percentiles.get(k) for r in ok]), ".2f") for k in ("50", "99")]
        return [
            *head,
            cell(med([r.requests_per_s for r in ok]), ",.0f"),
            *pct,
            str(sum(r.non_2xx for r in ok)),
            str(sum(r.socket_errors for r in ok)),
            cpu,
            cell(per, ",.0f"),
            *vs,
        ]
    return [*head, cell(med([r.mib_per_s for r in ok]), ",.0f"), cpu, cell(per, ".3f"), *vs]


def table(groups: list[list[Row]], mode: str, first: list[str] | None = None) -> str:
    head = (first or []) + (REQUEST_HEAD if mode == "requests" else TUNNEL_HEAD)
    lead = len(first or []) + 3
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * lead + "---:|" * (len(head) - lead)]
    for rs in groups:
        extra = [str(rs[0].round)] if first else []
        lines.append("| " + " | ".join(extra + cells(rs, mode)) + " |")
    return "\n".join(lines)


def summary(args: argparse.Namespace, rows: list[Row], missing: str | None) -> str:
    mode = args.mode
    by: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        c = r.contender
        by.setdefault((c.kind, c.loop, c.variant), []).append(r)
    what = "requests per proxy CPU-second" if mode == "requests" else "proxy CPU ns per byte"
    intro = (
        f"Medians of {args.runs} interleaved round{'s' if args.runs > 1 else ''}"
        f" ({what} is the figure to compare; ÷ proxy.py: the median over the rounds of"
        " each round's ratio to proxy.py in that round"
    )
    if mode == "requests":
        intro += "; non-2xx and socket errors: summed over the rounds"
    parts = [
        intro + "):",
        table(list(by.values()), mode),
        "Every run:",
        table([[r] for r in rows], mode, ["round"]),
    ]
    if missing is not None:
        parts.append(f"proxy.py: missing ({missing}).")
    return "\n\n".join(parts) + "\n"


# -- the command line ---------------------------------------------------------------------------


def loop_names(text: str) -> list[str]:
    """A comma-separated list of event loops, each available here."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in tuple(Loop)]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"expected loops from {', '.join(Loop)}, comma separated, got {text!r}"
        )
    if "uvloop" in names and importlib.util.find_spec("uvloop") is None:
        raise argparse.ArgumentTypeError("uvloop is not installed (pip install uvloop)")
    return names


def core_list(text: str) -> str:
    """A ``taskset -c`` CPU list ('' = unpinned)."""
    return cpuset(text) if text.strip() else ""


def flag_words(text: str) -> str:
    """Flags for the example, as a shell would split them."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None
    if any(w in ("--port", "--loop") or w.startswith(("--port=", "--loop=")) for w in words):
        raise argparse.ArgumentTypeError("--port and --loop are the run's own (see --loops)")
    return text


def variant(text: str) -> tuple[str, list[str]]:
    """``NAME=FLAGS``: a named set of the example's flags."""
    name, eq, flags = text.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z0-9_.+-]{1,40}", name):
        raise argparse.ArgumentTypeError(
            f"expected NAME=FLAGS (NAME letters, digits, _.+-), got {text!r}"
        )
    return name, shlex.split(flag_words(flags))


def build_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
        epilog=(
            "examples:\n"
            f"  {prog} --runs 3 --duration 10\n"
            f"  {prog} --variant auto= --variant python='--parser python'"
            " --variant w2='--workers 2'\n"
            f"  {prog} --mode tunnel --runs 3 --tunnel-mib 256 --downloads 8"
        ),
    )
    parser.add_argument(
        "--mode",
        choices=("requests", "tunnel"),
        default="requests",
        help="requests: wrk/ab at a 1 KiB-ish response; tunnel: curl downloads through CONNECT",
    )
    parser.add_argument(
        "--tool", choices=("wrk", "ab"), default="wrk", help="the load tool (requests mode)"
    )
    parser.add_argument(
        "--duration", type=whole_number(1, 3600), default=10, help="seconds per run (requests)"
    )
    parser.add_argument(
        "--connections", type=whole_number(1, 10_000), default=32, help="open connections"
    )
    parser.add_argument("--threads", type=whole_number(1, 256), default=1, help="wrk threads")
    parser.add_argument(
        "--body-size", type=whole_number(0, 64 << 20), default=1024, help="upstream response bytes"
    )
    parser.add_argument(
        "--tunnel-mib",
        type=whole_number(1, 65536),
        default=256,
        help="MiB per download (tunnel mode)",
    )
    parser.add_argument(
        "--downloads",
        type=whole_number(1, 100),
        default=8,
        help="downloads per run, one after another (tunnel mode)",
    )
    parser.add_argument(
        "--loops",
        type=loop_names,
        default=f"{Loop.ASYNCIO},{Loop.UVLOOP}" if default_loop() == Loop.UVLOOP else Loop.ASYNCIO,
        help="the example's event loops, in order",
    )
    parser.add_argument(
        "--proxy-args",
        type=flag_words,
        default="",
        metavar="FLAGS",
        help="extra flags for every run of the example, e.g. '--parser python' (one flag"
        " alone: --proxy-args=--flag)",
    )
    parser.add_argument(
        "--variant",
        type=variant,
        action="append",
        metavar="NAME=FLAGS",
        help="a named set of the example's flags (after --proxy-args), each run on every loop;"
        " repeat it to compare them, e.g. --variant auto= --variant py='--parser python'",
    )
    parser.add_argument("--runs", type=whole_number(1, 100), default=3, help="interleaved rounds")
    parser.add_argument(
        "--proxy-core", type=core_list, default="0", help="taskset core list ('' = unpinned)"
    )
    parser.add_argument(
        "--load-core", type=core_list, default="1", help="for the load tool and the upstream"
    )
    parser.add_argument(
        "--proxy-py-venv",
        type=output_dir_arg,
        default=Path(os.environ.get(PROXY_PY_VENV_ENV) or DEFAULT_PROXY_PY_VENV),
        metavar="DIR",
        help=f"proxy.py's own venv, made once and reused (${PROXY_PY_VENV_ENV} sets the default)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-proxy-py", action="store_true", help="leave proxy.py out")
    which.add_argument(
        "--require-proxy-py",
        action="store_true",
        help="fail (exit 1) if proxy.py cannot be installed, instead of marking it missing",
    )
    parser.add_argument(
        "--results-dir",
        type=output_dir_arg,
        default=None,
        metavar="DIR",
        help="where the run's folder goes (default: bench/results)",
    )
    parser.add_argument("--verbose", action="store_true", help="print the load tool's output")
    return parser


def main(argv: list[str]) -> int:
    if argv[:1] == ["upstream"]:
        upstream_main(argv[1:])
        return 0
    if argv[:1] == ["blob"]:
        blob_main(argv[1:])
        return 0
    prog, argv = prog_and_args(argv, Path(sys.argv[0]).name)
    return run_main(prog, lambda: run(build_parser(prog).parse_args(argv), prog), bench_extra=None)


def new_run_dir(results_dir: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for attempt in range(1000):
        path = results_dir / (f"{name}_{stamp}" + (f"-{attempt + 1}" if attempt else ""))
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise BenchError(f"cannot make a run folder in {results_dir}")


def run(args: argparse.Namespace, prog: str) -> int:
    tool = args.tool if args.mode == "requests" else "curl"
    if shutil.which(tool) is None:
        raise UsageError(f"{tool} not found (apt-get install wrk apache2-utils curl)")
    if (args.proxy_core or args.load_core) and shutil.which("taskset") is None:
        raise UsageError("taskset not found (or pass --proxy-core '' --load-core '')")
    results_dir, default = choose_results_dir(args.results_dir, "--results-dir")

    proxy_py: Path | None = None
    missing: str | None = None
    if not args.no_proxy_py:
        missing = install_proxy_py(args.proxy_py_venv, prog)
        if missing is None:
            proxy_py = args.proxy_py_venv / "bin" / "proxy"
        elif args.require_proxy_py:
            raise BenchError(f"proxy.py is missing: {missing}")
        else:
            print(
                f"{prog}: note: proxy.py is missing, so the run goes on without it"
                f" (--require-proxy-py refuses): {missing}",
                file=sys.stderr,
                flush=True,
            )

    py = sys.executable
    here = str(Path(__file__).resolve())
    if args.mode == "requests":
        upstream = [py, here, "upstream", "--body-size", str(args.body_size)]
        pattern = r"^upstream: listening on 127\.0\.0\.1:(\d+)"
        measure = measure_requests
    else:
        upstream = [py, here, "blob", "--size", str(args.tunnel_mib * MIB)]
        pattern = r"^blob: listening on 127\.0\.0\.1:(\d+)"
        measure = measure_tunnel
    upstream = pinned(args.load_core, upstream)
    with started(upstream, pattern) as (_, up_port):
        args.upstream_port = up_port
        target = f"http://127.0.0.1:{up_port}/"
        print(f"{prog}: upstream {target} ({shlex.join(upstream)})", flush=True)
        if proxy_py is not None:
            print(f"{prog}: proxy.py {PROXY_PY_VERSION}: {proxy_py}", flush=True)
        rows = run_rounds(args, prog, target, proxy_py, measure)

    make_output_dir(results_dir, "--results-dir", parents=default)
    run_dir = new_run_dir(results_dir, f"http_proxy_{args.mode}")
    text = summary(args, rows, missing)
    write_output(run_dir / "rounds.csv", csv_text(rows, args.mode), "rounds.csv")
    write_output(run_dir / "summary.md", text, "summary.md")
    print()
    print(text)
    for r in rows:
        if r.command:
            print(f"round {r.round} {label(r.contender)}: {r.command}")
    print(f"\n{prog}: results in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
