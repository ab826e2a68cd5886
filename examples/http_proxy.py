"""A forward HTTP/1.1 proxy on the protocol path, with CONNECT tunnels.

Each client connection is a ``HandoffProtocol`` whose ``HandoffBuffer`` is
bounded by ``--max-head``: a request head is split off the buffer once its
blank line is there, and a head that fills the buffer without one is answered
``431``. Plain requests (``GET http://host:port/path``) go to the upstream in
origin form over a kept-alive upstream connection; bodies are relayed by
``Content-Length``, ``chunked`` or read-to-close, in bounded pieces, and every
response goes back through the client's ``WriteHandoff``. ``CONNECT
host:port`` answers ``200`` and switches to ``tunnel()`` both ways: bytes the
client sent right after the head (a TLS ClientHello in the same read) are
still in the buffer and go first; the rest is spliced kernel to kernel on
Linux. Malformed requests get ``400``, unsupported ones ``501``/``505``, an
upstream that cannot be reached ``502``/``504``; then the connection closes.
Every wait is bounded: ``--connect-timeout``, ``--idle-timeout`` (clients,
upstream responses, room to write) and ``--tunnel-idle``.

Trailer fields of chunked bodies, both ways, are checked like head fields
(CRLF line ends, a token for a name, no control bytes, at most ``--max-head``
bytes in all, 64 KiB for responses) and then relayed: a bare LF in a trailer
could end the body early for the next hop and smuggle a request in. A bad
request trailer gets ``400``. Once a response has started, a failure (an
upstream reset, a body cut short, a bad chunk or trailer) resets the client
connection instead of closing it: a clean close would make a read-to-close
body look complete.

Access control, on by default: only clients in ``--allow-from`` (default
loopback, ``127.0.0.0/8,::1/128``) are served; others are closed at once,
nothing read and nothing connected. ``CONNECT`` goes only to the ports in
``--connect-ports`` (default ``443``) and gets ``403`` elsewhere. Plain
``http://`` requests go to any host and port the proxy can reach, loopback
services included, so admit only clients you trust. Listening beyond loopback
(``--host 0.0.0.0``) while ``--allow-from`` admits only loopback prints a
warning. A bad option value (or an address that cannot be listened on) is
one line on stderr and exit status 2. ``--loop uvloop`` runs it on uvloop.

Run: ``python examples/http_proxy.py --port 8080``, then
``curl -x http://127.0.0.1:8080 http://example.org/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import ipaddress
import math
import os
import re
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from typing import NoReturn

from bytes_handoff import (
    HandoffBufferConfig,
    HandoffError,
    HandoffProtocol,
    WriteBackpressure,
    WriteHandoff,
    open_handoff_connection,
    start_handoff_server,
    tunnel,
)

#: Upstream responses: heads up to 64 KiB; bodies move in reads of up to 64 KiB.
UPSTREAM_CFG = HandoffBufferConfig(max_len=64 * 1024, read_reserve=64 * 1024)
#: Longest chunk-size line (with extensions) accepted in a chunked body.
CHUNK_LINE_LIMIT = 4096
#: After an error reply, how long the client's unread input is drained before
#: closing: closing with unread bytes sends a reset that can destroy the reply.
LINGER_SECONDS = 2.0
VIA = "1.1 bytes-handoff"

CHUNKED = -1  # body framing: chunked transfer coding
UNTIL_CLOSE = -2  # body framing: the upstream closes after the body

TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rf"({TOKEN}) ([\x21-\x7e]+) HTTP/(\d)\.(\d)")
STATUS_LINE = re.compile(r"HTTP/1\.(\d) ([1-9]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
HEADER_LINE = re.compile(rf"({TOKEN}):[ \t]*(.*?)[ \t]*")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)")
AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::(\d{0,5}))?")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r\n")

METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"}
#: Fields about one connection, never forwarded (RFC 9110, 7.6.1). The framing
#: fields are dropped too: the proxy writes its own, matching what it sends.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "upgrade",
    "transfer-encoding",
    "content-length",
}
#: What a ``Connection`` field may not remove: the framing the proxy relies on.
PINNED = {"host", "content-length", "transfer-encoding"}
REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

Fields = list[tuple[str, str]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyError(Exception):
    """A failure the proxy answers with ``status`` (if no response started), then closes."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class BadFraming(ValueError):
    """A chunked body that breaks its syntax: relaying on could desynchronize the next hop."""


#: What a relay can fail with: a peer that closed or broke mid-message, a wait
#: that timed out, a buffer or write queue that gave up.
RELAY_ERRORS = (
    ProxyError,
    BadFraming,
    EOFError,
    TimeoutError,
    OSError,
    HandoffError,
    asyncio.LimitOverrunError,
)


@dataclass(frozen=True, slots=True)
class Settings:
    max_head: int
    connect_timeout: float
    idle_timeout: float
    tunnel_idle: float
    connect_ports: tuple[range, ...]  # where CONNECT may go
    allow_from: tuple[Network, ...]  # who is served at all

    def connect_allowed(self, port: int) -> bool:
        return any(port in ports for ports in self.connect_ports)

    def client_allowed(self, peer: object) -> bool:
        # peername is (host, port) or (host, port, flowinfo, scope_id); None if already gone.
        if not isinstance(peer, tuple):
            return False
        ip = ip_of(peer[0])
        return ip is not None and any(ip in net for net in self.allow_from)


@dataclass(slots=True)
class Request:
    method: str
    minor: int  # HTTP/1.<minor>
    host: str  # to connect to (no brackets)
    port: int
    head: bytes  # what goes upstream (CONNECT: unused)
    framing: int  # body length, CHUNKED, or 0
    keep_alive: bool


# -- parsing --------------------------------------------------------------------------------------


def parse_field(line: str) -> tuple[str, str] | None:
    """``(name, value)`` of one field line (without its CRLF); ``None`` if it is malformed."""
    match = HEADER_LINE.fullmatch(line)
    # Folded lines, a space before the colon, control bytes (a bare CR or LF among
    # them): all refused (RFC 9112, 5).
    if match is None or BAD_VALUE.search(match[2]):
        return None
    return match[1], match[2]


def parse_fields(lines: list[str], status: int) -> Fields:
    fields = []
    for line in lines:
        field = parse_field(line)
        if field is None:
            raise ProxyError(status, f"malformed header line {line[:80]!r}")
        fields.append(field)
    return fields


def values(fields: Fields, name: str) -> list[str]:
    return [value for key, value in fields if key.lower() == name]


def tokens(fields: Fields, name: str) -> list[str]:
    return [t.strip().lower() for v in values(fields, name) for t in v.split(",") if t.strip()]


def content_length(fields: Fields, status: int) -> int | None:
    found = [part.strip() for v in values(fields, "content-length") for part in v.split(",")]
    if not found:
        return None
    # Disagreeing lengths are how requests get smuggled past a proxy: refuse them.
    if len(set(found)) != 1 or not re.fullmatch(r"\d{1,18}", found[0]):
        raise ProxyError(status, f"bad Content-Length {', '.join(found)[:80]!r}")
    return int(found[0])


def forwardable(fields: Fields) -> Fields:
    named = set(tokens(fields, "connection")) - PINNED
    drop = HOP_BY_HOP | named | {"host"}
    return [(k, v) for k, v in fields if k.lower() not in drop]


def render(first_line: str, fields: Fields, extra: list[str]) -> bytes:
    lines = [first_line, *(f"{k}: {v}" for k, v in fields), *extra, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def parse_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    match = AUTHORITY.fullmatch(authority)
    if match is None:
        raise ProxyError(400, f"malformed authority {authority[:80]!r}")
    host, port = match[1], match[2]
    if not port:
        if default_port is None:
            raise ProxyError(400, f"{authority[:80]!r} has no port")
        return host.strip("[]"), default_port
    if not 0 < int(port) < 65536:
        raise ProxyError(400, f"port out of range in {authority[:80]!r}")
    return host.strip("[]"), int(port)


def parse_request(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")[:-2]  # the head ends with an empty line
    if any("\n" in line or "\r" in line for line in lines):
        raise ProxyError(400, "bare CR or LF in the head")
    match = REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ProxyError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, major, minor = match[1], match[2], int(match[3]), int(match[4])
    if major != 1:
        raise ProxyError(505, f"HTTP/{major}.{minor} is not spoken here")
    if method not in METHODS:
        raise ProxyError(501, f"method {method[:40]!r} is not supported")
    fields = parse_fields(lines[1:], 400)
    hosts = values(fields, "host")
    if len(hosts) > 1 or (minor >= 1 and not hosts):
        raise ProxyError(400, "an HTTP/1.1 request needs exactly one Host field")
    conn = tokens(fields, "connection") + tokens(fields, "proxy-connection")
    keep_alive = "close" not in conn if minor >= 1 else "keep-alive" in conn

    if method == "CONNECT":
        host, port = parse_authority(target, None)
        return Request(method, minor, host, port, b"", 0, keep_alive)

    absolute = ABSOLUTE.fullmatch(target)
    if absolute is None:
        # Origin form ("/path") or "*": fine for a server, but a proxy cannot route it.
        raise ProxyError(400, f"a proxy needs an absolute URI, got {target[:80]!r}")
    scheme, authority, path = absolute[1].lower(), absolute[2], absolute[3] or "/"
    if scheme != "http":
        raise ProxyError(501, f"{scheme}:// is not proxied (use CONNECT for https)")
    if "@" in authority:
        raise ProxyError(400, "credentials in the URI are not forwarded")
    host, port = parse_authority(authority, 80)
    if path.startswith("?"):
        path = "/" + path

    te = tokens(fields, "transfer-encoding")
    if te:
        if minor == 0 or values(fields, "content-length"):
            raise ProxyError(400, "Transfer-Encoding with HTTP/1.0 or with Content-Length")
        if te != ["chunked"]:
            raise ProxyError(501, f"transfer coding {', '.join(te)[:80]!r} is not supported")
        framing, framing_field = CHUNKED, ["Transfer-Encoding: chunked"]
    else:
        length = content_length(fields, 400)
        framing = length or 0
        framing_field = [] if length is None else [f"Content-Length: {length}"]
    # The URI's authority replaces whatever Host the client sent (RFC 9112, 3.2.2).
    upstream_head = render(
        f"{method} {path} HTTP/1.1",
        [("Host", authority), *forwardable(fields)],
        [*framing_field, f"Via: {VIA}"],
    )
    return Request(method, minor, host, port, upstream_head, framing, keep_alive)


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    minor: int
    fields: Fields


def parse_response(head: bytes) -> Response:
    lines = head.decode("latin-1").split("\r\n")[:-2]
    match = STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProxyError(502, f"malformed status line from upstream {lines[0][:80]!r}")
    status = int(match[2])
    reason = match[3] or REASONS.get(status, "")
    return Response(status, reason, int(match[1]), parse_fields(lines[1:], 502))


def response_framing(resp: Response, method: str) -> int:
    """The response body's length, ``CHUNKED`` or ``UNTIL_CLOSE`` (RFC 9112, 6.3)."""
    if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
        return 0
    te = tokens(resp.fields, "transfer-encoding")
    if te:
        return CHUNKED if te[-1] == "chunked" else UNTIL_CLOSE
    length = content_length(resp.fields, 502)
    return UNTIL_CLOSE if length is None else length


def error_reply(status: int, detail: str) -> bytes:
    reason = REASONS.get(status, "Error")
    body = f"{status} {reason}: {detail}\n".encode()
    head = render(
        f"HTTP/1.1 {status} {reason}",
        [],
        [
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ],
    )
    return head + body


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address; IPv4-mapped IPv6 (how a dual-stack socket sees IPv4) as IPv4."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# -- relaying -------------------------------------------------------------------------------------


async def send(out: WriteHandoff, data: bytes, timeout: float) -> None:
    try:
        out.try_write_fire_and_forget(data)  # room now (the usual case): no wait, no timer
    except WriteBackpressure:
        # A peer that stops reading fills the queue; it gets `timeout` seconds to make room.
        async with asyncio.timeout(timeout):
            await out.write_fire_and_forget(data)


async def fill(src: HandoffProtocol, timeout: float) -> None:
    """Wait for more bytes in ``src.buffer``; ``EOFError`` if the peer ends mid-message."""
    async with asyncio.timeout(timeout):
        if await src.read_available() == 0:
            raise EOFError("connection closed in the middle of a message")


async def relay_exactly(src: HandoffProtocol, out: WriteHandoff, n: int, timeout: float) -> None:
    buf = src.buffer
    while n:
        if not buf:
            await fill(src, timeout)
        take = min(n, len(buf))
        n -= take
        await send(out, buf.split_prefix(take), timeout)


async def read_line(src: HandoffProtocol, limit: int, timeout: float) -> bytes:
    async with asyncio.timeout(timeout):
        return await src.read_until(b"\r\n", min(limit, src.buffer.max_len))


async def relay_chunked(
    src: HandoffProtocol, out: WriteHandoff, timeout: float, limit: int, *, decode: bool
) -> None:
    """Relay one chunked body; ``decode`` sends only the data (for an HTTP/1.0 client)."""
    while True:
        line = await read_line(src, CHUNK_LINE_LIMIT, timeout)
        match = CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise BadFraming(f"malformed chunk-size line {line[:40]!r}")
        size = int(match[1], 16)
        if not decode:
            await send(out, line, timeout)
        if size == 0:
            break
        await relay_exactly(src, out, size, timeout)
        async with asyncio.timeout(timeout):
            crlf = await src.read_exactly(2)
        if crlf != b"\r\n":
            raise BadFraming("chunk data not followed by CRLF")
        if not decode:
            await send(out, crlf, timeout)
    # Trailer fields up to the empty line: bounded like a head, and checked like head
    # fields before they are relayed. A bare LF inside one ("X: a\n\nGET /x ...") would
    # end the body early for a next hop that accepts LF line ends: a smuggled request.
    total = 0
    while (line := await read_line(src, limit - total, timeout)) != b"\r\n":
        total += len(line)
        if parse_field(line[:-2].decode("latin-1")) is None:
            raise BadFraming(f"malformed trailer line {line[:80]!r}")
        if not decode:
            await send(out, line, timeout)
    if not decode:
        await send(out, line, timeout)


async def relay_until_close(src: HandoffProtocol, out: WriteHandoff, timeout: float) -> None:
    buf = src.buffer
    while True:
        if buf:
            await send(out, buf.freeze_all(), timeout)
        async with asyncio.timeout(timeout):
            if await src.read_available() == 0:
                return


async def relay_body(
    src: HandoffProtocol,
    out: WriteHandoff,
    framing: int,
    timeout: float,
    limit: int,
    *,
    decode: bool = False,
) -> None:
    if framing == CHUNKED:
        await relay_chunked(src, out, timeout, limit, decode=decode)
    elif framing == UNTIL_CLOSE:
        await relay_until_close(src, out, timeout)
    else:
        await relay_exactly(src, out, framing, timeout)


# -- connections ----------------------------------------------------------------------------------


async def connect(host: str, port: int, settings: Settings) -> HandoffProtocol:
    try:
        async with asyncio.timeout(settings.connect_timeout):
            return await open_handoff_connection(host, port, config=UPSTREAM_CFG)
    except TimeoutError:
        raise ProxyError(504, f"connecting to {host}:{port} timed out") from None
    except OSError as exc:
        raise ProxyError(502, f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None


def reset(proto: HandoffProtocol) -> None:
    """Close ``proto``'s connection with a TCP reset, so its peer sees an error, not an end."""
    transport = proto.transport
    if transport is None or proto.closed:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # abort() alone only drops what the transport holds: the kernel would still send
        # the bytes it has queued and then a FIN, a clean end. Lingering 0 sends an RST.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclass(slots=True)
class Upstream:
    key: tuple[str, int]
    proto: HandoffProtocol
    out: WriteHandoff
    dropped: bool = False  # closed by us, not by the upstream

    def reusable(self) -> bool:
        # Leftover bytes after a response mean the stream is out of step: never reuse it.
        proto = self.proto
        return not (proto.closed or proto.at_eof or proto.buffer or self.out.closed)

    def close(self) -> None:
        self.dropped = True
        self.out.abort()
        if self.proto.transport is not None:
            self.proto.transport.abort()


class ClientConnection:
    """One client connection: its requests in order, and the upstream they currently use."""

    def __init__(self, proto: HandoffProtocol, settings: Settings) -> None:
        self.proto = proto
        self.out = WriteHandoff.spawn(proto)
        self.settings = settings
        self.upstream: Upstream | None = None
        self.responding = False  # a response head went out: errors can only close now
        self.linger = True  # drain the client's input before closing

    async def serve(self) -> None:
        try:
            while await self.one_request():
                pass
        except ProxyError as exc:
            if self.responding:
                # Mid-response (or mid-tunnel): a clean close would make a body cut
                # short look complete (read-to-close framing); a reset says it is not.
                self.abort()
                return
            with contextlib.suppress(*RELAY_ERRORS):
                await send(self.out, error_reply(exc.status, str(exc)), LINGER_SECONDS)
        except RELAY_ERRORS:
            # A peer went away or stalled (the client, or a tunnel's either side).
            self.abort()
            return
        except BaseException:
            # Shutting down (cancelled), or a bug: drop both sides now, no flush, no linger.
            self.drop_upstream()
            self.out.abort()
            raise
        await self.finish()

    def abort(self) -> None:
        """Drop the upstream and the unsent rest; reset the client connection."""
        self.drop_upstream()
        self.out.abort()
        reset(self.proto)

    async def finish(self) -> None:
        self.drop_upstream()
        proto = self.proto
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                await self.out.aclose()  # flush, then end our side
                # Drain what the client still sends until it closes too, so the
                # kernel has no unread bytes to answer with a reset.
                while self.linger and not proto.closed:
                    proto.buffer.advance(len(proto.buffer))
                    if await proto.read_available() == 0:
                        break
        except RELAY_ERRORS:
            self.out.abort()

    async def read_head(self) -> bytes | None:
        """The next request head (through its empty line), or ``None`` when the client is done."""
        proto, settings = self.proto, self.settings
        self.responding = False
        while True:
            try:
                async with asyncio.timeout(settings.idle_timeout):
                    head = await proto.read_until(b"\r\n\r\n", settings.max_head)
            except asyncio.LimitOverrunError:
                raise ProxyError(431, f"request head over {settings.max_head} bytes") from None
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    raise ProxyError(400, "connection closed inside a request head") from None
                return None
            except TimeoutError:
                if proto.buffer:
                    raise ProxyError(408, "request head not completed in time") from None
                return None  # an idle keep-alive connection: just close it
            # Empty lines before a request line are ignored (RFC 9112, 2.2).
            head = head.lstrip(b"\r\n")
            if head:
                return head

    async def one_request(self) -> bool:
        """Serve one request; whether the connection stays open for another."""
        head = await self.read_head()
        if head is None:
            return False
        req = parse_request(head)
        if req.method == "CONNECT":
            # A tunnel carries anything (SMTP, SSH, a database protocol), so only the
            # ports it is meant for are open to it; plain requests speak HTTP anyway.
            if not self.settings.connect_allowed(req.port):
                raise ProxyError(403, f"CONNECT to port {req.port} is not allowed")
            await self.open_tunnel(req)
            return False
        return await self.forward(req)

    async def upstream_for(self, req: Request) -> Upstream:
        key = (req.host, req.port)
        up = self.upstream
        if up is not None and up.key == key and up.reusable():
            return up
        self.drop_upstream()
        proto = await connect(req.host, req.port, self.settings)
        self.upstream = Upstream(key, proto, WriteHandoff.spawn(proto))
        return self.upstream

    async def forward(self, req: Request) -> bool:
        timeout = self.settings.idle_timeout
        up = await self.upstream_for(req)
        body_read = asyncio.Event()
        pump: asyncio.Task[None] | None = None
        try:
            await send(up.out, req.head, timeout)
            if req.framing:
                # The body goes up while the response is awaited: the upstream may
                # answer "100 Continue" first, or answer early without reading it.
                pump = asyncio.create_task(self.pump_body(req, up, body_read))
            keep_alive = await self.relay_response(req, up)
            if pump is not None:
                if body_read.is_set():
                    await asyncio.wait({pump}, timeout=timeout)  # queueing its last piece
                if not pump.done() or pump.cancelled() or pump.exception() is not None:
                    # Answered before the body was read: neither stream is in step now.
                    keep_alive = False
                    self.drop_upstream()
            return keep_alive
        except RELAY_ERRORS as exc:
            raise self.failure(exc, pump, req) from None
        finally:
            if pump is not None:
                pump.cancel()

    def failure(
        self, exc: BaseException, pump: asyncio.Task[None] | None, req: Request
    ) -> ProxyError:
        """The status that names what broke: the client's body, or the upstream."""
        self.drop_upstream()
        if pump is not None and pump.done() and not pump.cancelled():
            bad = pump.exception()
            if bad is not None:
                status = 408 if isinstance(bad, TimeoutError) else 400
                return ProxyError(status, f"request body: {describe(bad)}")
        if isinstance(exc, ProxyError):
            return exc
        status = 504 if isinstance(exc, TimeoutError) else 502
        return ProxyError(status, f"upstream {req.host}:{req.port}: {describe(exc)}")

    def drop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    async def pump_body(self, req: Request, up: Upstream, body_read: asyncio.Event) -> None:
        settings = self.settings
        try:
            await relay_body(
                self.proto, up.out, req.framing, settings.idle_timeout, settings.max_head
            )
        except RELAY_ERRORS:
            # The upstream waits for bytes that will not come: end its exchange now.
            up.close()
            raise
        body_read.set()

    async def relay_response(self, req: Request, up: Upstream) -> bool:
        timeout = self.settings.idle_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    head = await up.proto.read_until(b"\r\n\r\n", UPSTREAM_CFG.max_len)
            except asyncio.IncompleteReadError:
                raise ProxyError(502, "upstream closed before a complete response head") from None
            except asyncio.LimitOverrunError:
                raise ProxyError(502, "upstream response head too large") from None
            resp = parse_response(head)
            if resp.status >= 200:
                break
            if resp.status == 101:
                raise ProxyError(502, "upstream switched protocols unasked")
            if req.minor >= 1:  # HTTP/1.0 clients never get interim responses
                interim = render(
                    f"HTTP/1.1 {resp.status} {resp.reason}", forwardable(resp.fields), []
                )
                await send(self.out, interim, timeout)

        framing = response_framing(resp, req.method)
        decode = framing == CHUNKED and req.minor == 0
        keep_client = req.keep_alive and framing != UNTIL_CLOSE and not decode
        keep_upstream = (
            framing != UNTIL_CLOSE
            and resp.minor >= 1
            and "close" not in tokens(resp.fields, "connection")
        )
        extra = [f"Via: {VIA}"]
        te = values(resp.fields, "transfer-encoding")
        if te and not decode:
            # Relayed as it came (a HEAD or 304 answer keeps it as metadata).
            extra += [f"Transfer-Encoding: {v}" for v in te]
        elif not te and (length := content_length(resp.fields, 502)) is not None:
            extra.append(f"Content-Length: {length}")
        if not keep_client:
            extra.append("Connection: close")
        elif req.minor == 0:
            extra.append("Connection: keep-alive")
        head = render(f"HTTP/1.1 {resp.status} {resp.reason}", forwardable(resp.fields), extra)
        self.responding = True
        await send(self.out, head, timeout)
        await relay_body(up.proto, self.out, framing, timeout, UPSTREAM_CFG.max_len, decode=decode)
        if framing == UNTIL_CLOSE and up.dropped:
            # pump_body dropped the upstream (the request body failed): the "end" of
            # this read-to-close body may be that drop, not the upstream's end.
            raise ProxyError(502, "upstream dropped in the middle of its response")
        if not (keep_upstream and up.reusable()):
            self.drop_upstream()
        return keep_client

    async def open_tunnel(self, req: Request) -> None:
        settings = self.settings
        proto = await connect(req.host, req.port, settings)
        up_out = WriteHandoff.spawn(proto)
        self.linger = False  # the tunnel forwards the client's bytes to the end
        try:
            self.responding = True
            await send(self.out, b"HTTP/1.1 200 Connection Established\r\n\r\n", LINGER_SECONDS)
            # Whatever the client sent after the head is still in its buffer (a TLS
            # ClientHello that came in the same read): tunnel() forwards it first.
            # tunnel() times each direction on its own, so a one-way transfer ends if
            # its quiet side says nothing for --tunnel-idle seconds.
            idle = settings.tunnel_idle
            directions = [
                asyncio.create_task(
                    tunnel(self.proto.buffer, self.proto, up_out, idle_timeout=idle)
                ),
                asyncio.create_task(tunnel(proto.buffer, proto, self.out, idle_timeout=idle)),
            ]
            try:
                # Each direction ends on its own (half-close); a failure ends both.
                await asyncio.gather(*directions)
            finally:
                for task in directions:
                    task.cancel()
                await asyncio.gather(*directions, return_exceptions=True)
        finally:
            up_out.abort()
            if proto.transport is not None:
                proto.transport.close()


async def handle(settings: Settings, proto: HandoffProtocol) -> None:
    assert proto.transport is not None
    if not settings.client_allowed(proto.transport.get_extra_info("peername")):
        # Not one of ours: no reply that would tell a scanner a proxy is here, nothing
        # read, no upstream connection.
        reset(proto)
        return
    await ClientConnection(proto, settings).serve()


# -- running --------------------------------------------------------------------------------------


class CannotListen(Exception):
    """The address to listen on was refused: in use, not local, or not resolvable."""


def is_loopback(host: str) -> bool:
    ip = ip_of(host)
    return ip is not None and ip.is_loopback


async def listen(host: str, port: int, settings: Settings) -> None:
    config = HandoffBufferConfig(
        max_len=settings.max_head, read_reserve=min(settings.max_head, 16384)
    )
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server = await start_handoff_server(
            functools.partial(handle, settings), host, port, config=config
        )
    except socket.gaierror as exc:
        raise CannotListen(f"argument --host: cannot resolve {host!r}: {exc.strerror}") from None
    except OSError as exc:
        # In use, or below 1024 without the privilege: the port's fault; else the host's.
        flag = "--port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "--host"
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise CannotListen(f"argument {flag}: cannot listen on {where}: {reason}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    addresses = [sock.getsockname() for sock in server.sockets]
    if all(net.is_loopback for net in settings.allow_from) and not all(
        is_loopback(address[0]) for address in addresses
    ):
        # Not refused (a container's port mapping needs 0.0.0.0), but nobody else
        # will be served: say so, or it looks like a network problem.
        print(
            f"http_proxy: warning: listening on {host}, but --allow-from admits"
            " loopback clients only",
            file=sys.stderr,
            flush=True,
        )
    print(f"http_proxy: listening on {addresses[0][0]}:{addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        # Stop accepting; open connections are cancelled when the runner closes
        # (Server.wait_closed would wait for every kept-alive client).
        server.close()


# -- arguments: each bad value is one line naming its flag, exit status 2 ------------------------


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), still with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help; the description and epilog as written."""


#: A host name (RFC 1123 labels); "127.0.0.999" matches too, see listen_host.
HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def listen_host(text: str) -> str:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(text)
        return text
    # A top-level domain is never all digits (RFC 3696, 2): "127.0.0.999" is a broken
    # address, not a name to send to DNS (where the lookup could hang).
    if not HOST_NAME.fullmatch(text) or text.rstrip(".").rpartition(".")[2].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or a host name")
    return text


def port_number(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", text) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def head_limit(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", text) or not 1024 <= int(text) <= 1024 * 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count from 1024 to 1048576")
    return int(text)


def seconds(text: str) -> float:
    # 0 or less would end every wait at once; nan and inf would never end them.
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def port_list(text: str) -> tuple[range, ...]:
    ranges = []
    for part in text.split(","):
        match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", part.strip())
        low, high = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
        if not 1 <= low <= high <= 65535:
            where = "" if part == text else f" in {text!r}"
            raise argparse.ArgumentTypeError(
                f"{part!r}{where} is not a port (1 to 65535) or a range like 8000-8999"
            )
        ranges.append(range(low, high + 1))
    return tuple(ranges)


def networks(text: str) -> tuple[Network, ...]:
    nets = []
    for part in text.split(","):
        try:
            nets.append(ipaddress.ip_network(part.strip()))
        except ValueError as exc:  # it names the part: "'10.0.0.0/33' does not appear ..."
            raise argparse.ArgumentTypeError(f"{exc} (CIDR like 10.0.0.0/8 or ::1/128)") from None
    return tuple(nets)


def parser() -> OneLineParser:
    p = OneLineParser(
        description="A forward HTTP/1.1 proxy with CONNECT tunnels.",
        epilog=(
            "Access control: only clients in --allow-from are served (others are closed at\n"
            "once); CONNECT reaches only --connect-ports (others get 403). Plain http://\n"
            "requests go to any host and port, loopback services included: admit only\n"
            "clients you trust. Listening beyond loopback with a loopback-only --allow-from\n"
            "prints a warning."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--host", type=listen_host, default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--port", type=port_number, default=8080, help="port to listen on; 0 picks a free one"
    )
    p.add_argument(
        "--max-head",
        type=head_limit,
        default=16 * 1024,
        metavar="BYTES",
        help="request head limit (1024 to 1048576); a longer head gets 431",
    )
    p.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop to run on"
    )
    p.add_argument(
        "--connect-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="longest wait to connect to an upstream (then 504)",
    )
    p.add_argument(
        "--idle-timeout",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="longest wait for a client, an upstream response, or room to write",
    )
    p.add_argument(
        "--tunnel-idle",
        type=seconds,
        default=600.0,
        metavar="SECONDS",
        help="a CONNECT tunnel direction silent this long ends the tunnel",
    )
    p.add_argument(
        "--connect-ports",
        type=port_list,
        default="443",
        metavar="PORTS",
        help="ports CONNECT may reach, like 443,8443,9000-9100; others get 403",
    )
    p.add_argument(
        "--allow-from",
        type=networks,
        default="127.0.0.0/8,::1/128",
        metavar="CIDRS",
        help="client networks served, like 127.0.0.0/8,10.0.0.0/8; others are closed at once",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args_parser = parser()
    args = args_parser.parse_args(argv)
    settings = Settings(
        args.max_head,
        args.connect_timeout,
        args.idle_timeout,
        args.tunnel_idle,
        args.connect_ports,
        args.allow_from,
    )
    loop_factory = None
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            args_parser.error("--loop uvloop needs uvloop (pip install uvloop)")
        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(listen(args.host, args.port, settings))
    except CannotListen as exc:
        args_parser.error(str(exc))


if __name__ == "__main__":
    main()
