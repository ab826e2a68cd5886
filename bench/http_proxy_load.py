"""Load run for examples/http_proxy.py: wrk (or ab) direct to an upstream, then through the proxy.

The upstream is a small fixed-response keep-alive server (uvloop when it is
installed), so that the proxy, not the upstream, is the bottleneck. The proxy is
pinned to one core (``--proxy-core``); the load tool and the upstream share the
other (``--load-core``). Each run prints requests/s, latency percentiles, the
count of non-2xx answers and socket errors, and the proxy's CPU use.

Run it through ``bench/run-http-proxy-load.sh``; ``--help`` lists the flags.
``python bench/http_proxy_load.py upstream --port N`` runs the upstream alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import re
import selectors
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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

ROOT = Path(__file__).resolve().parent.parent
PROXY = ROOT / "examples" / "http_proxy.py"
STARTUP_SECONDS = 15.0

# -- the upstream -------------------------------------------------------------------------------


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


# -- the load run --------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    loop: str
    requests_per_s: float
    percentiles: dict[str, float]  # "50%" -> milliseconds
    non_2xx: int
    errors: int
    proxy_cpu: float | None  # cores the proxy used, on average
    command: str


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if core else argv


@contextlib.contextmanager
def started(argv: list[str], pattern: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start a server, wait for the line that names its port, stop it on exit."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            line = proc.stdout.readline() if sel.select(STARTUP_SECONDS) else ""
        match = re.search(pattern, line)
        if match is None:
            raise BenchError(
                f"{shlex.join(argv)} did not start within {STARTUP_SECONDS:g} s: {line!r}"
            )
        yield proc, int(match[1])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unknown latency {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match[2]]
    return float(match[1]) * scale


def requests_per_s(pattern: str, out: str, tool: str) -> float:
    match = re.search(pattern, out)
    if match is None:
        tail = out.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"no requests/s in {tool}'s output (last line: {tail[0][:200]!r})")
    return float(match[1])


def parse_wrk(out: str) -> tuple[float, dict[str, float], int, int]:
    rps = requests_per_s(r"Requests/sec:\s+([\d.]+)", out, "wrk")
    pct = {m[1] + "%": to_ms(m[2]) for m in re.finditer(r"^\s+(\d+)%\s+(\S+)$", out, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return (
        rps,
        pct,
        int(non_2xx[1]) if non_2xx else 0,
        sum(int(g) for g in errors.groups()) if errors else 0,
    )


def parse_ab(out: str) -> tuple[float, dict[str, float], int, int]:
    rps = requests_per_s(r"Requests per second:\s+([\d.]+)", out, "ab")
    pct = {m[1] + "%": float(m[2]) for m in re.finditer(r"^\s+(\d+)%\s+(\d+)", out, re.M)}
    non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    return rps, pct, int(non_2xx[1]) if non_2xx else 0, int(failed[1]) if failed else 0


def load(
    args: argparse.Namespace, target: str, via_proxy: int | None, lua: Path
) -> tuple[list[str], str]:
    """The load tool's command line for ``target``, direct or through the proxy; its output."""
    if args.tool == "wrk":
        argv = [
            *("wrk", "-t", str(args.threads), "-c", str(args.connections)),
            *("-d", f"{args.duration}s", "--latency"),
        ]
        if via_proxy is None:
            argv.append(target)
        else:
            # wrk has no proxy option: it sends the absolute URI to the proxy's address.
            lua.write_text(f'wrk.path = "{target}"\n')
            argv += ["-s", str(lua), f"http://127.0.0.1:{via_proxy}/"]
    else:
        argv = ["ab", "-k", "-q", "-c", str(args.connections), "-t", str(args.duration)]
        argv += ["-n", "100000000"]  # -t caps the run; -n only has to be large
        if via_proxy is not None:
            argv += ["-X", f"127.0.0.1:{via_proxy}"]
        argv.append(target)
    argv = pinned(args.load_core, argv)
    limit = args.duration + 60
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{shlex.join(argv)} did not finish within {limit} s") from None
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise BenchError(f"{shlex.join(argv)} failed (exit {done.returncode}): {why[:200]}")
    return argv, done.stdout


def measure(
    args: argparse.Namespace, name: str, loop: str, target: str, proxy: tuple[int, int] | None
) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "proxy.lua"
        before = cpu_seconds(proxy[0]) if proxy else 0.0
        start = time.monotonic()
        argv, out = load(args, target, proxy[1] if proxy else None, lua)
        elapsed = time.monotonic() - start
        cpu = (cpu_seconds(proxy[0]) - before) / elapsed if proxy else None
    rps, pct, non_2xx, errors = (parse_wrk if args.tool == "wrk" else parse_ab)(out)
    if args.verbose:
        print(out)
    return Result(name, loop, rps, pct, non_2xx, errors, cpu, shlex.join(argv))


def table(results: list[Result]) -> str:
    keys = sorted({k for r in results for k in r.percentiles}, key=lambda k: float(k[:-1]))
    head = ["run", "loop", "requests/s", *(f"p{k[:-1]} ms" for k in keys)]
    head += ["non-2xx", "errors", "proxy CPU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for r in results:
        cells = [r.name, r.loop, f"{r.requests_per_s:,.0f}"]
        cells += [f"{r.percentiles[k]:.2f}" if k in r.percentiles else "-" for k in keys]
        cells += [
            str(r.non_2xx),
            str(r.errors),
            f"{r.proxy_cpu:.2f}" if r.proxy_cpu is not None else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def medians(results: list[Result]) -> list[Result]:
    """One row per (direct or proxy, loop): the median of each column over the runs."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.name.split(" #")[0], r.loop), []).append(r)
    out = []
    for (name, loop), rs in groups.items():
        keys = set.intersection(*(set(r.percentiles) for r in rs))
        cpus = [r.proxy_cpu for r in rs if r.proxy_cpu is not None]
        out.append(
            Result(
                f"{name} (median)",
                loop,
                statistics.median(r.requests_per_s for r in rs),
                {k: statistics.median(r.percentiles[k] for r in rs) for k in keys},
                sum(r.non_2xx for r in rs),
                sum(r.errors for r in rs),
                statistics.median(cpus) if cpus else None,
                "",
            )
        )
    return out


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


def build_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--tool", choices=("wrk", "ab"), default="wrk", help="the load tool")
    parser.add_argument(
        "--duration", type=whole_number(1, 3600), default=10, help="seconds per run"
    )
    parser.add_argument(
        "--connections", type=whole_number(1, 10_000), default=32, help="open connections"
    )
    parser.add_argument("--threads", type=whole_number(1, 256), default=1, help="wrk threads")
    parser.add_argument(
        "--body-size", type=whole_number(0, 64 << 20), default=1024, help="upstream response bytes"
    )
    parser.add_argument(
        "--loops",
        type=loop_names,
        default=f"{Loop.ASYNCIO},{Loop.UVLOOP}" if default_loop() == Loop.UVLOOP else Loop.ASYNCIO,
        help="proxy event loops, in order",
    )
    parser.add_argument(
        "--runs", type=whole_number(1, 100), default=1, help="rounds of direct + each loop"
    )
    parser.add_argument(
        "--proxy-core", type=core_list, default="0", help="taskset core list ('' = unpinned)"
    )
    parser.add_argument(
        "--load-core", type=core_list, default="1", help="for the load tool and the upstream"
    )
    parser.add_argument("--verbose", action="store_true", help="print the load tool's output")
    return parser


def main(argv: list[str]) -> int:
    if argv[:1] == ["upstream"]:
        upstream_main(argv[1:])
        return 0
    prog, argv = prog_and_args(argv, Path(sys.argv[0]).name)
    return run_main(prog, lambda: run(build_parser(prog).parse_args(argv), prog), bench_extra=None)


def run(args: argparse.Namespace, prog: str) -> int:
    if shutil.which(args.tool) is None:
        raise UsageError(f"{args.tool} not found (apt-get install wrk apache2-utils)")
    if (args.proxy_core or args.load_core) and shutil.which("taskset") is None:
        raise UsageError("taskset not found (or pass --proxy-core '' --load-core '')")
    loops: list[str] = args.loops

    py = sys.executable
    upstream_argv = pinned(
        args.load_core,
        [py, str(Path(__file__).resolve()), "upstream", "--body-size", str(args.body_size)],
    )
    results = []
    with started(upstream_argv, r"listening on 127\.0\.0\.1:(\d+)") as (_, up_port):
        target = f"http://127.0.0.1:{up_port}/"
        print(f"{prog}: upstream {target} ({shlex.join(upstream_argv)})", flush=True)
        for run in range(1, args.runs + 1):
            results.append(measure(args, f"direct #{run}", "-", target, None))
            print(table(results[-1:]).splitlines()[-1], flush=True)
            for loop in loops:
                proxy_argv = pinned(
                    args.proxy_core, [py, str(PROXY), "--port", "0", "--loop", loop]
                )
                with started(proxy_argv, r"listening on 127\.0\.0\.1:(\d+)") as (proc, port):
                    name = f"proxy #{run}"
                    results.append(measure(args, name, loop, target, (proc.pid, port)))
                    results[-1].command = f"{shlex.join(proxy_argv)}; {results[-1].command}"
                print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    if args.runs > 1:
        print(f"\nMedians of {args.runs} runs:\n")
        print(table(medians(results)))
    print()
    for r in results:
        print(f"{r.name} {r.loop}: {r.command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
