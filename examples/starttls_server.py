"""An SMTP-shaped server that upgrades its connections to TLS in place (STARTTLS).

    python examples/starttls_server.py --cert cert.pem --key key.pem --port 8025
    openssl s_client -starttls smtp -connect 127.0.0.1:8025 -crlf -quiet

It greets with ``220``, answers ``EHLO`` (offering ``STARTTLS`` until TLS is
on), ``NOOP``, ``QUIT``, and ``MAIL FROM:`` only over TLS (``530`` before).
After ``220 Ready to start TLS`` the handler calls ``proto.start_tls()`` on
the same connection: a client that sent its ClientHello in the same packet
as ``STARTTLS`` (the bytes already in ``proto.buffer``) gets its handshake,
because the TLS layer reads the buffered bytes before the socket. Those
bytes are read as TLS, never as commands: plaintext pipelined after
``STARTTLS`` fails the handshake (the STARTTLS command-injection bug,
CVE-2011-0411, cannot happen). A failed handshake is one log line; only that
connection closes. SIGINT or SIGTERM stops the server (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl

from bytes_handoff import (
    HandoffBufferConfig,
    HandoffProtocol,
    TLSHandshakeError,
    WriteHandoff,
    start_handoff_server,
)

#: The longest command line (RFC 5321 says 512 with the CRLF).
MAX_LINE = 512
log = logging.getLogger("starttls_server")


async def session(proto: HandoffProtocol, tls_context: ssl.SSLContext) -> None:
    out = WriteHandoff.spawn(proto)
    await out.write(b"220 localhost ESMTP bytes-handoff\r\n")
    over_tls = False
    while True:
        try:
            line = await proto.read_until(b"\r\n", max_bytes=MAX_LINE)
        except asyncio.IncompleteReadError:
            break  # the client left
        except asyncio.LimitOverrunError:
            await out.write(b"500 5.5.2 Line too long\r\n")
            break
        verb, _, argument = line[:-2].partition(b" ")
        verb = verb.upper()
        if verb in (b"EHLO", b"HELO"):
            extensions = [b"PIPELINING"] if over_tls else [b"PIPELINING", b"STARTTLS"]
            lines = [b"localhost greets " + argument, *extensions]
            replies = [b"250-" + text + b"\r\n" for text in lines[:-1]]
            await out.write(b"".join(replies) + b"250 " + lines[-1] + b"\r\n")
        elif verb == b"STARTTLS" and not over_tls:
            await out.write(b"220 2.0.0 Ready to start TLS\r\n")
            try:
                # The reply goes out in plaintext first (flush=out); what the client sent
                # after STARTTLS, already in proto.buffer, is the handshake's first read.
                await proto.start_tls(tls_context, server_side=True, flush=out)
            except TLSHandshakeError as exc:
                log.warning("starttls_server: %s", exc)
                out.abort()
                return
            over_tls = True  # the client starts over with EHLO (RFC 3207)
        elif verb == b"MAIL" and not over_tls:
            await out.write(b"530 5.7.0 Must issue a STARTTLS command first\r\n")
        elif verb == b"MAIL":
            ssl_object = proto.transport.get_extra_info("ssl_object") if proto.transport else None
            version = ssl_object.version() if ssl_object else "?"
            await out.write(b"250 2.1.0 Sender OK over " + version.encode() + b"\r\n")
        elif verb == b"NOOP":
            await out.write(b"250 2.0.0 OK\r\n")
        elif verb == b"QUIT":
            await out.write(b"221 2.0.0 Bye\r\n")
            break
        else:
            await out.write(b"502 5.5.2 Command not recognized\r\n")
    await out.aclose()  # over TLS: close_notify, then close


async def serve(host: str, port: int, tls_context: ssl.SSLContext) -> None:
    config = HandoffBufferConfig(max_len=16 * 1024, read_reserve=4096)
    server = await start_handoff_server(
        lambda proto: session(proto, tls_context), host, port, config=config
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    address = server.sockets[0].getsockname()
    print(f"starttls_server: listening on {address[0]}:{address[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8025, help="port to listen on (0: any free one)")
    p.add_argument("--cert", required=True, help="PEM certificate chain")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_context.load_cert_chain(args.cert, args.key)
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port, tls_context))


if __name__ == "__main__":
    main()
