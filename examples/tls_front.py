"""A TLS front: plain TCP in, an optional PROXY header, TLS ended here, bytes relayed to a backend.

    python examples/tls_front.py --cert cert.pem --key key.pem --backend 127.0.0.1:8080 --port 8443
    curl --haproxy-protocol -k https://127.0.0.1:8443/

Each connection may start with a PROXY protocol header (version 1 or 2, as a
load balancer in front sends it: ``--proxy-header optional``, the default;
``required``; ``off``). The client's ClientHello often comes in the same
segment as the header: ``parse_proxy_header`` takes exactly the header off
``proto.buffer`` and leaves the ClientHello there, and ``proto.start_tls()``
reads the buffered bytes before the socket, so the handshake gets them.
Then it connects to ``--backend`` and relays plaintext both ways with
``tunnel()``; with ``--send-proxy`` the backend first gets a PROXY v1 line
naming the original client (from the header, else the socket).

Accept PROXY headers only from senders you trust (a load balancer): anyone
who can reach the port can claim any client address, and ``optional`` mode
guesses, which the PROXY spec advises against on untrusted ports. A failed
connection is one line on stderr; SIGINT or SIGTERM stops the front (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
from dataclasses import dataclass

from bytes_handoff import (
    HandoffBufferConfig,
    HandoffError,
    HandoffProtocol,
    ProxyHeader,
    WriteHandoff,
    build_proxy_header_v1,
    open_handoff_connection,
    parse_proxy_header,
    start_handoff_server,
    tunnel,
)

log = logging.getLogger("tls_front")


@dataclass(frozen=True)
class Settings:
    tls: ssl.SSLContext
    backend: tuple[str, int]
    proxy_header: str  # "optional", "required" or "off"
    send_proxy: bool
    timeout: float = 10.0  # the PROXY header, the TLS handshake, the backend's connect
    idle: float = 60.0  # a relay with no bytes either way for this long is closed


async def read_proxy_header(proto: HandoffProtocol, required: bool) -> ProxyHeader | None:
    """The PROXY header at the connection's start, or ``None`` when there is none."""
    while (header := parse_proxy_header(proto.buffer, required=required)) is None:
        if not await proto.read_available():
            raise ConnectionResetError("the client left before its PROXY header ended")
    # What followed the header (a ClientHello, most likely) is still in proto.buffer.
    return header if isinstance(header, ProxyHeader) else None


def client_addresses(proto: HandoffProtocol, header: ProxyHeader | None) -> tuple[object, object]:
    """(source, destination) of the original connection: the header's, else the socket's."""
    if header is not None and isinstance(header.source, tuple):
        return header.source, header.destination
    assert proto.transport is not None
    peer = proto.transport.get_extra_info("peername")
    local = proto.transport.get_extra_info("sockname")
    return tuple(peer[:2]), tuple(local[:2])


async def front(proto: HandoffProtocol, settings: Settings) -> None:
    async with asyncio.timeout(settings.timeout):
        header = None
        if settings.proxy_header != "off":
            header = await read_proxy_header(proto, settings.proxy_header == "required")
        source, destination = client_addresses(proto, header)
        # The ClientHello may already be buffered behind the header: it goes first.
        await proto.start_tls(settings.tls, server_side=True)
        backend = await open_handoff_connection(*settings.backend)
    if settings.send_proxy:
        assert backend.transport is not None
        backend.transport.write(build_proxy_header_v1(source, destination))  # type: ignore[arg-type]
    await relay(proto, backend, settings.idle)


async def relay(client: HandoffProtocol, backend: HandoffProtocol, idle: float) -> None:
    """Both directions until both end; a failure of either aborts both connections."""
    up = asyncio.ensure_future(
        tunnel(client.buffer, client, WriteHandoff.spawn(backend), idle_timeout=idle)
    )
    down = asyncio.ensure_future(
        tunnel(backend.buffer, backend, WriteHandoff.spawn(client), idle_timeout=idle)
    )
    try:
        await asyncio.wait([up, down], return_when=asyncio.FIRST_EXCEPTION)
    finally:
        # The backend's answer all reached the client's transport: close, so it goes out.
        # TLS has no half-close, so the client side then ends too (up fails: expected).
        answered = down.done() and not down.cancelled() and down.exception() is None
        for task in (up, down):
            task.cancel()
        for proto in (client, backend):
            if proto.transport is not None:
                if answered:
                    proto.transport.close()
                else:
                    proto.transport.abort()
        await asyncio.gather(up, down, return_exceptions=True)


async def handle(proto: HandoffProtocol, settings: Settings) -> None:
    try:
        await front(proto, settings)
    except (HandoffError, OSError, TimeoutError) as exc:
        transport = proto.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        log.warning("tls_front: %s: %s: %s", peer, type(exc).__name__, exc)


async def serve(host: str, port: int, settings: Settings) -> None:
    # The buffer holds a PROXY header (v2: up to 64 KiB) and then plaintext.
    config = HandoffBufferConfig(max_len=80 * 1024, read_reserve=16 * 1024)
    server = await start_handoff_server(
        lambda proto: handle(proto, settings), host, port, config=config
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    address = server.sockets[0].getsockname()
    print(f"tls_front: listening on {address[0]}:{address[1]}", flush=True)
    async with server:
        await stop.wait()


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8443, help="port to listen on (0: any free one)")
    p.add_argument("--cert", required=True, help="PEM certificate chain")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--backend", type=host_port, required=True, help="HOST:PORT to relay to")
    p.add_argument("--proxy-header", choices=("optional", "required", "off"), default="optional")
    p.add_argument("--send-proxy", action="store_true", help="PROXY v1 line to the backend")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    settings = Settings(tls, args.backend, args.proxy_header, args.send_proxy)
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port, settings))


if __name__ == "__main__":
    main()
