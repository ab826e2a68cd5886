"""What TLS through ``proto.start_tls()`` costs next to ``ssl=`` at connect time.

    .venv/bin/python bench/tls_upgrade_cost.py [--mib 64] [--runs 5] [--loops asyncio,uvloop]

A ``HandoffProtocol`` echo server (awaitable style, ``WriteHandoff`` back)
moves ``--mib`` MiB each way over loopback, per run, in two setups:

* ``ssl=``: TLS set up by the loop at accept (``create_server(ssl=...)``:
  asyncio's or uvloop's own TLS transport);
* ``start_tls``: plain TCP, a ``STARTTLS`` line, then ``proto.start_tls()``
  (the library's ``ssl.MemoryBIO`` layer).

The client runs in a subprocess (asyncio streams on uvloop), so the server
process's CPU time (``time.process_time``, from the end of the handshake to
the end of the echo) is the server's alone. It prints, per loop and setup,
the median bytes (both directions) per CPU-second and the ratio; the two
setups alternate run by run, so drift hits both alike. Timings vary with
the machine and from run to run: nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bytes_handoff_bench.certs import make_certificate

CHUNK = 64 * 1024


# -- the client (a subprocess) --------------------------------------------------------------------


async def client(port: int, setup: str, size: int, cafile: str) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    if setup == "ssl=":
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\r\n")
        assert await reader.readuntil(b"\r\n") == b"220 go\r\n"
        await writer.start_tls(ctx, server_hostname="localhost")
    chunk = os.urandom(CHUNK)

    async def send() -> None:
        for _ in range(size // CHUNK):
            writer.write(chunk)
            await writer.drain()

    sending = asyncio.ensure_future(send())
    received = 0
    while received < size:
        data = await reader.read(1 << 20)
        assert data, f"end of stream after {received} bytes"
        received += len(data)
    await sending
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass


# -- the server ------------------------------------------------------------------------------------


async def one_run(setup: str, size: int, cert: Path, key: Path) -> float:
    """Server CPU seconds for one connection's echo of ``size`` bytes each way."""
    from bytes_handoff import HandoffProtocol, WriteHandoff, start_handoff_server

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    cpu: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def echo(proto: HandoffProtocol) -> None:
        out = WriteHandoff.spawn(proto)
        if setup == "start_tls":
            assert await proto.read_until(b"\r\n") == b"STARTTLS\r\n"
            await out.write(b"220 go\r\n")
            await proto.start_tls(server_ctx, server_side=True, flush=out)
        start = time.process_time()
        moved = 0
        while moved < size:
            n = await proto.read_available()
            assert n, "end of stream too early"
            moved += n
            await out.write_fire_and_forget(proto.buffer.freeze_all())
        await out.flush()
        cpu.set_result(time.process_time() - start)
        await out.aclose()

    ssl_arg = server_ctx if setup == "ssl=" else None
    server = await start_handoff_server(echo, "127.0.0.1", 0, ssl=ssl_arg)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--client", str(port), setup, str(size), str(cert)
    )
    async with server:
        seconds = await cpu
        await proc.wait()
    if proc.returncode:
        sys.exit(f"tls_upgrade_cost: the client failed ({proc.returncode})")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=64, help="MiB each way per run")
    p.add_argument("--runs", type=int, default=5, help="runs per loop and setup")
    p.add_argument("--loops", default="asyncio,uvloop", help="comma-separated event loops")
    p.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        import uvloop

        port, setup, size, cafile = args.client
        uvloop.run(client(int(port), setup, int(size), cafile))
        return
    size = args.mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as folder:
        cert, key = make_certificate(Path(folder))
        print(f"{args.mib} MiB each way, {args.runs} runs; server bytes (both ways) per CPU-second")
        print(f"{'loop':8} {'setup':10} {'median MiB/CPU-s':>17} {'runs (MiB/CPU-s)'}")
        for loop_name in args.loops.split(","):
            factory = None
            if loop_name == "uvloop":
                import uvloop

                factory = uvloop.new_event_loop
            rates: dict[str, list[float]] = {"ssl=": [], "start_tls": []}
            for _ in range(args.runs):
                for setup, got in rates.items():  # interleaved: drift hits both alike
                    with asyncio.Runner(loop_factory=factory) as runner:
                        seconds = runner.run(one_run(setup, size, cert, key))
                    got.append(2 * args.mib / seconds)
            medians = {setup: statistics.median(got) for setup, got in rates.items()}
            for setup, got in rates.items():
                runs = " ".join(f"{r:.0f}" for r in got)
                print(f"{loop_name:8} {setup:10} {medians[setup]:17.0f} {runs}", flush=True)
            ratio = medians["start_tls"] / medians["ssl="]
            print(f"{loop_name:8} start_tls / ssl= = {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
