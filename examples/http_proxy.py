"""A forward HTTP/1.1 proxy on the protocol path, with CONNECT tunnels.

Each client connection is a ``HandoffProtocol`` driven by its ``on_data``
callback: every read from the client, and every read from the upstream it
talks to, runs one parse step on the loop, and replies go out through the
client's ``WriteHandoff`` (one ``writelines`` per batch). No task and no
future per request; a wait is a return from the callback, and the next read
(or room in a full write queue, ``pause_until_room``) runs it again. Opening
an upstream connection and a tunnel (``CONNECT``, a WebSocket upgrade) are the
two things that run as tasks. Requests on one connection, pipelined ones
included, are answered in order, one exchange at a time.

The client's ``HandoffBuffer`` is bounded by ``--max-head``: a request head is
split off the buffer once its blank line is there, and a head that fills the
buffer without one is answered ``431``. Plain requests (``GET
http://host:port/path``) go to the upstream in origin form over a kept-alive
upstream connection; bodies are relayed by ``Content-Length``, ``chunked`` or
read-to-close, in bounded pieces. ``CONNECT host:port`` answers ``200`` and
switches to ``tunnel()`` both ways: bytes the client sent right after the head
(a TLS ClientHello in the same read) are still in the buffer and go first; the
rest is spliced kernel to kernel on Linux. Empty lines (CRLF) before a request
line are skipped; a bare CR or LF there gets ``400``, as malformed requests do;
unsupported ones get ``501``/``505``, an upstream that cannot be reached
``502``/``504``; then the connection closes. Every wait is bounded:
``--connect-timeout``, ``--idle-timeout`` (clients, upstream responses, room
to write) and ``--tunnel-idle``; each takes 0.001 seconds or more.

WebSocket upgrades go through too (RFC 6455; no other protocol: an ``Upgrade:
h2c`` is dropped as a hop-by-hop field, as before). A bodiless HTTP/1.1 ``GET``
whose ``Connection`` names ``upgrade`` and whose ``Upgrade`` is ``websocket``
goes upstream with ``Upgrade: websocket`` and ``Connection: upgrade`` (its other
fields filtered as usual, ``Via`` added). A ``101`` answer is accepted only to
such a request and only with ``Upgrade: websocket`` (else ``502``, as a ``101``
to any other request is): its head goes to the client (with ``Via``), and once
it is flushed both directions switch to the two ``tunnel()`` tasks ``CONNECT``
uses, so bytes that came right behind either head (a first frame in the same
read) go first, ``--tunnel-idle`` bounds each direction, and the connection ends
with the tunnel. Any other answer is an ordinary response, and keep-alive goes
on. The upgrade consumes the connection: bytes the client sends behind the
upgrade request wait, unread, for its answer; behind a ``101`` they are the new
protocol's and go to the upstream as they are (a request pipelined there is not
answered by the proxy), behind any other answer they are read as the next
request.

Heads are parsed as bytes, with one pass over the fields. The request and
status lines are always checked by this file's own grammar; the field lines
by ``httptools`` (llhttp, in C) when it is installed (``--parser auto``, the
default, leaves the shortest field blocks to Python, which is faster there;
``pip install httptools``), else by the same grammar in Python (``--parser
python``). Both give the same answers: a head llhttp refuses is parsed again
in Python, which names the error, or accepts it (llhttp refuses a few things
RFC 9112 allows, such as a repeated, equal ``Content-Length``).

Trailer fields of chunked bodies, both ways, are checked like head fields
(CRLF line ends, a token for a name, no control bytes, at most ``--max-head``
bytes in all, 64 KiB for responses) and then relayed: a bare LF in a trailer
could end the body early for the next hop and smuggle a request in. A bad
request trailer gets ``400``. Fields a trailer may not carry (RFC 9110, 6.5.1:
framing such as ``Transfer-Encoding`` and ``Content-Length``, routing such as
``Host``, hop-by-hop, authentication, request modifiers, response controls,
content format; ``NOT_IN_TRAILERS``) are dropped, not refused: the trailer goes
on without them. Once a response has started, a failure (an upstream reset, a
body cut short, a bad chunk or trailer) resets the client connection instead of
closing it: a clean close would make a read-to-close body look complete.

Access control, on by default: only clients in ``--allow-from`` (default
loopback, ``127.0.0.0/8,::1/128``) are served; others are closed at once,
nothing read and nothing connected. IPv4-mapped addresses are IPv4 there, a
client's and the networks' alike (``::ffff:10.0.0.0/104`` is ``10.0.0.0/8``).
``CONNECT`` goes only to the ports in ``--connect-ports`` (default ``443``) and
gets ``403`` elsewhere. Plain
``http://`` requests go to any host and port the proxy can reach, loopback
services included, so admit only clients you trust. Listening beyond loopback
(``--host 0.0.0.0``) while ``--allow-from`` admits only loopback prints a
warning. A bad option value (or an address that cannot be listened on) is
one line on stderr and exit status 2. ``--loop uvloop`` runs it on uvloop.

``--workers N`` (Linux) runs N processes, each with its own event loop and
its own listening socket on the same port (``SO_REUSEPORT``: the kernel
spreads new connections over them). The first process supervises: SIGTERM or
SIGINT to it stops them all; a worker that dies stops the rest, and a worker
whose supervisor dies stops by itself.

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
import json
import math
import os
import re
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from bytes_handoff import (
    HandoffBufferConfig,
    HandoffError,
    HandoffProtocol,
    WriteBackpressure,
    WriteHandoff,
    WriteHandoffConfig,
    tunnel,
)

try:  # optional: the field lines are parsed in C when it is there (pip install httptools)
    import httptools
except ImportError:  # pragma: no cover - exercised where httptools is not installed
    httptools = None  # type: ignore[assignment]

#: Upstream responses: heads up to 64 KiB; bodies move in reads of up to 64 KiB.
UPSTREAM_CFG = HandoffBufferConfig(max_len=64 * 1024, read_reserve=64 * 1024)
#: Longest chunk-size line (with extensions) accepted in a chunked body.
CHUNK_LINE_LIMIT = 4096
#: After an error reply, how long the client's unread input is drained before
#: closing: closing with unread bytes sends a reset that can destroy the reply.
LINGER_SECONDS = 2.0
#: Added to every head the proxy sends on (RFC 9110, 7.6.3).
VIA_LINE = b"Via: 1.1 bytes-handoff\r\n"
#: ``--parser auto``: field lines this long or longer (bytes) go to llhttp, shorter to Python.
LLHTTP_FROM = 160
#: How long a worker has to start listening, and the workers to stop on SIGTERM.
WORKER_START_SECONDS = 30.0
WORKER_STOP_SECONDS = 10.0
#: The shortest timeout a flag takes: shorter ones would end waits before any read.
MIN_SECONDS = 0.001

CHUNKED = -1  # body framing: chunked transfer coding
UNTIL_CLOSE = -2  # body framing: the upstream closes after the body
NEVER = math.inf  # a deadline for nothing

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rb"(" + TOKEN + rb") ([\x21-\x7e]+) HTTP/(\d)\.(\d)\r\n")
STATUS_LINE = re.compile(rb"HTTP/1\.(\d) ([1-9]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?\r\n")
#: Field lines (RFC 9112, 5): a token, a colon right after it, a value without control
#: bytes (HTAB aside), CRLF. Folded lines, a space before the colon, a bare CR or LF:
#: none of them match. FIELD_LINES checks a whole block in one call; FIELD takes each
#: line apart, the value without the blanks around it.
FIELD_LINES = re.compile(rb"(?:" + TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
FIELD = re.compile(
    rb"(" + TOKEN + rb"):[ \t]*"
    rb"((?:[^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?)?)[ \t]*\r\n"
)
ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)")
AUTHORITY = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::(\d{0,5}))?")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r\n")
DIGITS = re.compile(rb"[0-9]{1,18}")

METHODS = frozenset(b"GET HEAD POST PUT DELETE OPTIONS PATCH TRACE CONNECT".split())

# What the one pass over a head's fields does with each name (in lower case): the
# framing and connection fields are read, then dropped with the other hop-by-hop ones
# (RFC 9110, 7.6.1): the proxy writes its own framing, matching what it sends. Names
# not here are forwarded as they are.
HOST, CONNECTION, PROXY_CONNECTION, TRANSFER_ENCODING, CONTENT_LENGTH, UPGRADE, HOP = range(7)
FIELD_ROLES = {
    b"host": HOST,
    b"connection": CONNECTION,
    b"proxy-connection": PROXY_CONNECTION,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"content-length": CONTENT_LENGTH,
    b"keep-alive": HOP,
    b"proxy-authenticate": HOP,
    b"proxy-authorization": HOP,
    b"te": HOP,
    b"upgrade": UPGRADE,  # read for a WebSocket upgrade, then dropped like the others
}
#: What a ``Connection`` field may not remove: the framing the proxy relies on.
PINNED = frozenset((b"host", b"content-length", b"transfer-encoding"))
assert FIELD_ROLES.keys() >= PINNED  # without_named relies on it
#: The one protocol an ``Upgrade`` field is forwarded for (RFC 6455); others are dropped.
WEBSOCKET = b"websocket"
#: What a WebSocket upgrade request and its 101 carry in place of the dropped fields.
UPGRADE_LINES = b"Upgrade: websocket\r\nConnection: upgrade\r\n"
#: Fields a trailer section may not carry (RFC 9110, 6.5.1), in lower case: framing,
#: routing and the hop-by-hop fields (the ones with a role above), then authentication,
#: request modifiers, response controls and what says how to process the content. A
#: next hop that merged a trailer "Content-Length" or "Host" into the head would frame
#: or route the message anew: they are dropped from relayed trailers.
NOT_IN_TRAILERS = frozenset(FIELD_ROLES) | frozenset(
    b"trailer authorization www-authenticate authentication-info proxy-authentication-info"
    b" cookie set-cookie expect max-forwards pragma range if-match if-none-match"
    b" if-modified-since if-unmodified-since if-range cache-control age date expires"
    b" location retry-after vary warning content-encoding content-type content-range".split()
)
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

Fields = list[tuple[bytes, bytes]]
#: Parses the field lines of ``head`` from offset ``start`` to its empty line; a
#: malformed one raises ``ProxyError(status)``.
FieldParser = Callable[[bytes, int, int], Fields]
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
RELAY_ERRORS = (ProxyError, BadFraming, EOFError, TimeoutError, OSError, HandoffError)


@dataclass(frozen=True, slots=True)
class Settings:
    max_head: int
    connect_timeout: float
    idle_timeout: float
    tunnel_idle: float
    connect_ports: tuple[range, ...]  # where CONNECT may go
    allow_from: tuple[Network, ...]  # who is served at all
    request_fields: FieldParser
    response_fields: FieldParser
    client_cfg: HandoffBufferConfig = field(init=False)
    upstream_out_cfg: WriteHandoffConfig = field(init=False)

    def __post_init__(self) -> None:
        cfg = HandoffBufferConfig(max_len=self.max_head, read_reserve=min(self.max_head, 16384))
        object.__setattr__(self, "client_cfg", cfg)
        # Room for the longest request head as one piece, and a body piece behind it.
        out_cfg = WriteHandoffConfig(max_pending_bytes=1024 * 1024 + self.max_head)
        object.__setattr__(self, "upstream_out_cfg", out_cfg)

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
    method: bytes
    minor: int  # HTTP/1.<minor>
    host: str  # to connect to (no brackets)
    port: int
    head: bytes  # what goes upstream (CONNECT: unused)
    framing: int  # body length, CHUNKED, or 0
    keep_alive: bool
    upgrade: bool = False  # a WebSocket upgrade: head carries Upgrade, a 101 may answer


# -- parsing: heads as bytes, one pass over the fields -------------------------------------------


def shown(data: bytes) -> str:
    """``data`` (its start) for an error message."""
    return repr(data[:80].decode("latin-1"))


def python_fields(head: bytes, start: int, status: int) -> Fields:
    """The field lines of ``head`` from ``start`` to its empty line, checked and taken apart."""
    end = len(head) - 2  # the head ends with its empty line
    if FIELD_LINES.fullmatch(head, start, end) is None:
        # Folded lines, a space before the colon, control bytes (a bare CR or LF among
        # them): all refused (RFC 9112, 5). Name the first bad line.
        for line in head[start:end].split(b"\r\n")[:-1]:
            if b"\r" in line or b"\n" in line:
                raise ProxyError(status, "bare CR or LF in the head")
            if FIELD.fullmatch(line + b"\r\n") is None:
                raise ProxyError(status, f"malformed header line {shown(line)}")
        raise ProxyError(status, "malformed header lines")  # not reached: a line is bad
    return FIELD.findall(head, start, end)


class HeadFields:
    """What llhttp reports for one head: httptools calls ``on_header`` once per field."""

    __slots__ = ("complete", "fields")

    def __init__(self) -> None:
        self.fields: Fields = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


def llhttp_fields(
    parser_class: type, shortest: int, head: bytes, start: int, status: int
) -> Fields:
    """``python_fields``, parsed by llhttp; anything it refuses is parsed again in Python.

    llhttp parses the whole head; the request or status line was checked before.
    Field lines shorter than ``shortest`` bytes in all go to ``python_fields``.
    """
    if len(head) - start < shortest:
        return python_fields(head, start, status)
    got = HeadFields()
    try:
        parser_class(got).feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # CONNECT, or an Upgrade field: parsed all the same (parse_request judges it)
    except httptools.HttpParserError:
        # Refused: the Python grammar names the error in the same words, or accepts what
        # llhttp is stricter about (a repeated, equal Content-Length, say).
        return python_fields(head, start, status)
    if not got.complete:
        return python_fields(head, start, status)
    if b" \r\n" in head or b"\t\r\n" in head:
        # llhttp keeps the blanks after a value; the grammar does not count them in.
        return [(name, value.rstrip(b" \t")) for name, value in got.fields]
    return got.fields


def field_parsers(name: str) -> tuple[FieldParser, FieldParser]:
    """(request, response) field parsers for ``--parser``."""
    if name == "python" or (name == "auto" and httptools is None):
        return python_fields, python_fields
    # llhttp costs about 2.5 us a head to set up (and parses the first line again); the
    # regex about 25 ns a byte. So auto leaves short field blocks (a head with a field
    # or two, wrk's and curl's requests) to the regex and longer ones (a browser's,
    # most responses) to llhttp.
    shortest = LLHTTP_FROM if name == "auto" else 0
    return (
        functools.partial(llhttp_fields, httptools.HttpRequestParser, shortest),
        functools.partial(llhttp_fields, httptools.HttpResponseParser, shortest),
    )


def tokens(values: list[bytes]) -> list[bytes]:
    """The comma-separated tokens of a field's values, in lower case."""
    if len(values) == 1 and b"," not in values[0]:  # the usual case: one field, one token
        token = values[0].strip().lower()
        return [token] if token else []
    return [t.strip().lower() for v in values for t in v.split(b",") if t.strip()]


def content_length(values: list[bytes], status: int) -> int:
    value = values[0]
    if len(values) == 1 and value.isdigit() and len(value) <= 18:
        return int(value)  # the usual case: one field, one number
    found = [part.strip() for v in values for part in v.split(b",")]
    # Disagreeing lengths are how requests get smuggled past a proxy: refuse them.
    if len(set(found)) != 1 or not DIGITS.fullmatch(found[0]):
        raise ProxyError(status, f"bad Content-Length {shown(b', '.join(found))}")
    return int(found[0])


def without_named(kept: Fields, connection: list[bytes]) -> Fields:
    """``kept`` less the fields the ``Connection`` tokens name (they are about this hop only).

    Fields with a role are not in ``kept`` any more; the ones a ``Connection`` field
    may not remove (``PINNED``) are among them.
    """
    named = [t for t in connection if t not in FIELD_ROLES]
    if not named:  # "keep-alive", "close": the usual case, nothing more to drop
        return kept
    return [(k, v) for k, v in kept if k.lower() not in named]


def render(first_line: bytes, fields: Fields, extra: list[bytes]) -> bytes:
    """A head: its first line and ``extra`` lines with their CRLF, ``fields`` between."""
    parts = [first_line]
    for name, value in fields:
        parts += (name, b": ", value, b"\r\n")
    parts += extra
    parts.append(b"\r\n")
    return b"".join(parts)


@functools.lru_cache(maxsize=1024)
def parse_authority(authority: bytes, default_port: int | None) -> tuple[str, int]:
    # Cached: a client sends most of its requests to a few hosts.
    match = AUTHORITY.fullmatch(authority)
    if match is None:
        raise ProxyError(400, f"malformed authority {shown(authority)}")
    host, port = match[1].strip(b"[]").decode("ascii"), match[2]
    if not port:
        if default_port is None:
            raise ProxyError(400, f"{shown(authority)} has no port")
        return host, default_port
    if not 0 < int(port) < 65536:
        raise ProxyError(400, f"port out of range in {shown(authority)}")
    return host, int(port)


def parse_request(head: bytes, fields_of: FieldParser) -> Request:
    """The request in ``head`` (through its empty line), and the head that goes upstream."""
    # Hot path: once per request.
    line = REQUEST_LINE.match(head)
    if line is None:
        first = head[: head.find(b"\r\n")]
        raise ProxyError(400, f"malformed request line {shown(first)}")
    method, target, major, minor_digit = line.groups()
    if major != b"1":
        raise ProxyError(505, f"HTTP/{major.decode()}.{minor_digit.decode()} is not spoken here")
    minor = int(minor_digit)
    if method not in METHODS:
        raise ProxyError(501, f"method {shown(method[:40])} is not supported")

    # One pass: note what the proxy needs, keep what it forwards.
    hosts = 0
    connection: list[bytes] = []
    proxy_connection: list[bytes] = []
    te: list[bytes] = []
    lengths: list[bytes] = []
    upgrade: bytes | None = None
    kept: Fields = []
    for name, value in fields_of(head, line.end(), 400):
        role = FIELD_ROLES.get(name.lower())
        if role is None:
            kept.append((name, value))
        elif role == HOST:
            hosts += 1
        elif role == CONNECTION:
            connection.append(value)
        elif role == PROXY_CONNECTION:
            proxy_connection.append(value)
        elif role == TRANSFER_ENCODING:
            te.append(value)
        elif role == CONTENT_LENGTH:
            lengths.append(value)
        elif role == UPGRADE:
            upgrade = value if upgrade is None else upgrade + b"," + value
    if hosts > 1 or (minor >= 1 and not hosts):
        raise ProxyError(400, "an HTTP/1.1 request needs exactly one Host field")
    if connection or proxy_connection:
        connection = tokens(connection)
        conn = connection + tokens(proxy_connection)
        keep_alive = b"close" not in conn if minor >= 1 else b"keep-alive" in conn
    else:
        keep_alive = minor >= 1

    if method == b"CONNECT":
        host, port = parse_authority(target, None)
        return Request(method, minor, host, port, b"", 0, keep_alive)

    absolute = ABSOLUTE.fullmatch(target)
    if absolute is None:
        # Origin form ("/path") or "*": fine for a server, but a proxy cannot route it.
        raise ProxyError(400, f"a proxy needs an absolute URI, got {shown(target)}")
    scheme, authority, path = absolute[1].lower(), absolute[2], absolute[3] or b"/"
    if scheme != b"http":
        raise ProxyError(501, f"{scheme.decode()}:// is not proxied (use CONNECT for https)")
    if b"@" in authority:
        raise ProxyError(400, "credentials in the URI are not forwarded")
    host, port = parse_authority(authority, 80)
    if path.startswith(b"?"):
        path = b"/" + path

    codings = tokens(te) if te else []
    if codings:
        if minor == 0 or lengths:
            raise ProxyError(400, "Transfer-Encoding with HTTP/1.0 or with Content-Length")
        if codings != [b"chunked"]:
            raise ProxyError(501, f"transfer coding {shown(b', '.join(codings))} is not supported")
        framing, framing_field = CHUNKED, b"Transfer-Encoding: chunked\r\n"
    elif lengths:
        framing = content_length(lengths, 400)
        framing_field = b"Content-Length: %d\r\n" % framing
    else:
        framing, framing_field = 0, b""
    if connection:
        kept = without_named(kept, connection)
    # A WebSocket upgrade (RFC 6455, 4.1): a bodiless HTTP/1.1 GET whose Connection names
    # "upgrade" and whose Upgrade is "websocket" alone. Upgrade and Connection go on for it;
    # any other Upgrade (h2c, a list, one on another request) is dropped, as hop-by-hop.
    upgrading = (
        upgrade is not None
        and method == b"GET"
        and minor >= 1
        and not framing
        and b"upgrade" in connection
        and tokens([upgrade]) == [WEBSOCKET]
    )
    # The URI's authority replaces whatever Host the client sent (RFC 9112, 3.2.2).
    upstream_head = render(
        b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, authority),
        kept,
        [framing_field, UPGRADE_LINES, VIA_LINE] if upgrading else [framing_field, VIA_LINE],
    )
    return Request(method, minor, host, port, upstream_head, framing, keep_alive, upgrading)


@dataclass(slots=True)
class Response:
    status: int
    head: bytes  # what goes to the client
    framing: int  # body length, CHUNKED, UNTIL_CLOSE or 0
    decode: bool  # chunked for an HTTP/1.0 client: send the data only
    keep_client: bool  # the client connection stays open after it
    keep_upstream: bool  # so does the upstream connection


def parse_response(head: bytes, req: Request, fields_of: FieldParser) -> Response:
    """The response in ``head``: its framing (RFC 9112, 6.3) and the head the client gets."""
    # Hot path: once per response.
    line = STATUS_LINE.match(head)
    if line is None:
        first = head[: head.find(b"\r\n")]
        raise ProxyError(502, f"malformed status line from upstream {shown(first)}")
    minor_digit, status_digits, reason = line.groups()
    minor, status = int(minor_digit), int(status_digits)
    if not reason:
        reason = REASONS.get(status, "").encode()

    connection: list[bytes] = []
    te: list[bytes] = []
    lengths: list[bytes] = []
    upgrade: bytes | None = None
    kept: Fields = []
    for name, value in fields_of(head, line.end(), 502):
        role = FIELD_ROLES.get(name.lower())
        if role is None:
            kept.append((name, value))
        elif role == CONNECTION:
            connection.append(value)
        elif role == TRANSFER_ENCODING:
            te.append(value)
        elif role == CONTENT_LENGTH:
            lengths.append(value)
        elif role == UPGRADE:
            upgrade = value if upgrade is None else upgrade + b"," + value
    if connection:
        connection = tokens(connection)
        kept = without_named(kept, connection)
    first_line = b"HTTP/1.1 %s %s\r\n" % (status_digits, reason)
    if status < 200:
        if status == 101:
            # Only to a WebSocket upgrade request, from HTTP/1.1, switching to what was asked.
            if not req.upgrade:
                raise ProxyError(502, "upstream switched protocols unasked")
            if minor < 1 or upgrade is None or tokens([upgrade]) != [WEBSOCKET]:
                raise ProxyError(502, "upstream switched to something other than websocket")
            head = render(first_line, kept, [UPGRADE_LINES, VIA_LINE])
            return Response(status, head, 0, False, False, False)
        return Response(status, render(first_line, kept, []), 0, False, True, True)

    codings = tokens(te) if te else []
    length = content_length(lengths, 502) if lengths and not codings else None
    if req.method == b"HEAD" or status in (204, 304):
        framing = 0
    elif codings:
        framing = CHUNKED if codings[-1] == b"chunked" else UNTIL_CLOSE
    else:
        framing = UNTIL_CLOSE if length is None else length
    decode = framing == CHUNKED and req.minor == 0
    keep_client = req.keep_alive and framing != UNTIL_CLOSE and not decode
    keep_upstream = framing != UNTIL_CLOSE and minor >= 1 and b"close" not in connection
    extra = [VIA_LINE]
    if te and not decode:
        # Relayed as it came (a HEAD or 304 answer keeps it as metadata).
        extra += [b"Transfer-Encoding: %s\r\n" % v for v in te]
    elif not te and length is not None:
        extra.append(b"Content-Length: %d\r\n" % length)
    if not keep_client:
        extra.append(b"Connection: close\r\n")
    elif req.minor == 0:
        extra.append(b"Connection: keep-alive\r\n")
    head = render(first_line, kept, extra)
    return Response(status, head, framing, decode, keep_client, keep_upstream)


def error_reply(status: int, detail: str) -> bytes:
    reason = REASONS.get(status, "Error")
    body = f"{status} {reason}: {detail}\n".encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


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


# -- relaying: callback steps that never wait ----------------------------------------------------


class Pipe:
    """One direction of an exchange: pieces taken from ``src``'s buffer, queued on ``out``.

    ``send`` queues a piece when ``out`` has room. When it has not, the piece waits
    here and ``src`` stops being read until ``out`` has room for it
    (``pause_until_room``); then ``src``'s ``on_data`` runs again and ``flush`` sends
    the piece first. At most one piece waits, so memory stays bounded by the queue.
    """

    __slots__ = ("out", "src", "stalled")

    def __init__(self, src: HandoffProtocol, out: WriteHandoff) -> None:
        self.src = src
        self.out = out
        self.stalled: bytes | None = None

    def send(self, data: bytes) -> bool:
        """Queue ``data``; ``False`` if it has to wait for room (stop taking pieces then).

        Only while nothing waits: callers ``flush`` first, so the order holds.
        """
        # Hot path: one call per piece; a piece that fits is queued inline.
        assert self.stalled is None
        try:
            self.out.try_write_fire_and_forget(data)
            return True
        except WriteBackpressure:
            pass  # full, or closed (then pause_until_room raises WriteClosed)
        self.stalled = data
        self.src.pause_until_room(self.out, len(data))
        return False

    def flush(self) -> bool:
        """Send the piece that waited for room, if any; ``False`` if it still has to wait."""
        data = self.stalled
        if data is None:
            return True
        self.stalled = None
        return self.send(data)


def take(src: HandoffProtocol, n: int) -> bytes:
    """The first ``n`` buffered bytes of ``src``, reading resumed if the buffer was full."""
    buf = src.buffer
    if len(buf) < buf.max_len:
        return buf.split_prefix(n)
    # A full buffer paused reading (while the upstream connected, say): bytes taken
    # out outside on_data do not resume it by themselves.
    data = buf.split_prefix(n)
    src.resume_reading()
    return data


def ended(src: HandoffProtocol) -> None:
    """Raise why ``src`` will send nothing more, if it will not: its error, or its end."""
    if src.at_eof:
        if src.exception is not None:
            raise src.exception
        raise EOFError("connection closed in the middle of a message")


def take_line(src: HandoffProtocol, limit: int) -> bytes | None:
    """The next CRLF-terminated line of ``src``'s buffer, ``None`` until it is all there."""
    buf = src.buffer
    pos = buf.find(b"\r\n")
    if pos >= 0:
        if pos + 2 > limit:
            raise BadFraming(f"line over {limit} bytes")
        return take(src, pos + 2)
    if len(buf) >= min(limit, buf.max_len):
        raise BadFraming(f"line over {limit} bytes")
    ended(src)
    return None


class Relay:
    """One message body, moved from a pipe's source buffer into its queue as it arrives.

    ``step()`` moves what is buffered and says whether the body is complete (its
    last piece sent, or waiting in the pipe). It never waits: it returns, and runs
    again on the next read or once the queue has room. Once complete it stays so.
    """

    __slots__ = ("pipe",)

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def step(self) -> bool:
        raise NotImplementedError


class LengthRelay(Relay):
    """A body of a known length (``Content-Length``); 0 is an empty body."""

    __slots__ = ("left",)

    def __init__(self, pipe: Pipe, length: int) -> None:
        super().__init__(pipe)
        self.left = length

    def step(self) -> bool:
        # Hot path: a body that arrived with its head is one split and one send.
        src = self.pipe.src
        buf = src.buffer
        while self.left:
            n = len(buf)
            if not n:
                ended(src)
                return False
            if n > self.left:
                n = self.left
            self.left -= n
            if not self.pipe.send(take(src, n)):
                return not self.left
        return True


class UntilCloseRelay(Relay):
    """A body that ends when the upstream closes its side (no length given)."""

    __slots__ = ()

    def step(self) -> bool:
        src = self.pipe.src
        buf = src.buffer
        if buf and not self.pipe.send(take(src, len(buf))):
            return False
        if not src.at_eof:
            return False
        if src.exception is not None:
            raise src.exception  # a reset is not the end of the body
        return True


class ChunkedRelay(Relay):
    """A chunked body, chunk by chunk, then its trailer fields, checked like head fields.

    ``decode`` sends only the data (for an HTTP/1.0 client); ``limit`` bounds the
    trailer section, as a head is bounded.
    """

    __slots__ = ("decode", "left", "limit", "state")

    SIZE, DATA, DATA_END, TRAILER, DONE = range(5)

    def __init__(self, pipe: Pipe, limit: int, *, decode: bool) -> None:
        super().__init__(pipe)
        self.decode = decode
        self.limit = limit
        self.left = 0  # data bytes still to come in this chunk
        self.state = self.SIZE

    def step(self) -> bool:
        src = self.pipe.src
        buf = src.buffer
        send = self.pipe.send
        relay_framing = not self.decode
        while True:
            state = self.state
            if state == self.SIZE:
                line = take_line(src, CHUNK_LINE_LIMIT)
                if line is None:
                    return False
                match = CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise BadFraming(f"malformed chunk-size line {shown(line[:40])}")
                self.left = int(match[1], 16)
                self.state = self.DATA if self.left else self.TRAILER
                if relay_framing and not send(line):
                    return False
            elif state == self.DATA:
                n = len(buf)
                if not n:
                    ended(src)
                    return False
                if n > self.left:
                    n = self.left
                self.left -= n
                if not self.left:
                    self.state = self.DATA_END
                if not send(take(src, n)):
                    return False
            elif state == self.DATA_END:
                if len(buf) < 2:
                    ended(src)
                    return False
                crlf = take(src, 2)
                if crlf != b"\r\n":
                    raise BadFraming("chunk data not followed by CRLF")
                self.state = self.SIZE
                if relay_framing and not send(crlf):
                    return False
            elif state == self.TRAILER:
                # Trailer fields up to the empty line: bounded like a head, and checked like
                # head fields before they are relayed. A bare LF inside one ("X: a\n\nGET
                # /x ...") would end the body early for a next hop that accepts LF line
                # ends: a smuggled request. Fields a trailer may not carry are dropped.
                line = take_line(src, self.limit)
                if line is None:
                    return False
                if line == b"\r\n":
                    self.state = self.DONE
                else:
                    trailer = FIELD.fullmatch(line)
                    if trailer is None:
                        raise BadFraming(f"malformed trailer line {shown(line)}")
                    self.limit -= len(line)
                    if trailer[1].lower() in NOT_IN_TRAILERS:
                        continue
                if relay_framing and not send(line):
                    return self.state == self.DONE
            else:
                return True


def body_relay(pipe: Pipe, framing: int, limit: int, *, decode: bool = False) -> Relay:
    if framing == CHUNKED:
        return ChunkedRelay(pipe, limit, decode=decode)
    if framing == UNTIL_CLOSE:
        return UntilCloseRelay(pipe)
    return LengthRelay(pipe, framing)


# -- connections ----------------------------------------------------------------------------------


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


async def connect(
    host: str, port: int, settings: Settings, factory: Callable[[], HandoffProtocol]
) -> HandoffProtocol:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(settings.connect_timeout):
            _, proto = await loop.create_connection(factory, host, port)
    except TimeoutError:
        raise ProxyError(504, f"connecting to {host}:{port} timed out") from None
    except OSError as exc:
        raise ProxyError(502, f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    return proto


class UpstreamProtocol(HandoffProtocol):
    """An upstream connection: its reads, and its loss, go to the client connection it serves."""

    def __init__(self, client: ClientConnection) -> None:
        super().__init__(UPSTREAM_CFG, on_data=client.upstream_data)
        self.client = client

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.client.upstream_lost(self)


class Upstream:
    """The upstream connection a client connection talks to, and the pipes both ways."""

    __slots__ = ("host", "out", "port", "proto", "requests", "responses")

    def __init__(
        self, host: str, port: int, proto: HandoffProtocol, client: ClientConnection
    ) -> None:
        self.host = host
        self.port = port
        self.proto = proto
        self.out = WriteHandoff.spawn(proto, client.settings.upstream_out_cfg)
        self.requests = Pipe(client, self.out)  # request heads and bodies
        self.responses = Pipe(proto, client.out)  # responses

    def reusable(self) -> bool:
        # Leftover bytes after a response mean the stream is out of step: never reuse it.
        proto = self.proto
        return not (proto.closed or proto.at_eof or proto.buffer or self.out.closed)

    def close(self) -> None:
        self.out.abort()
        if self.proto.transport is not None:
            self.proto.transport.abort()


# What a client connection is doing.
READING_HEAD = 0  # waiting for (the rest of) the next request head
CONNECTING = 1  # opening the upstream connection for a request
EXCHANGING = 2  # a request going up, its response coming back
TUNNELING = 3  # a CONNECT tunnel (a task) owns the connection
CLOSING = 4  # replies flushed, then closed; what the client still sends is drained


class ClientConnection(HandoffProtocol):
    """One client connection, driven by reads on it and on its upstream connection.

    ``client_data`` runs after every read from the client and ``upstream_data``
    after every read from the upstream; each moves what it can and returns.
    Every wait is bounded by one timer per connection (``on_timer``), with one
    deadline for the client side and one for the upstream side.
    """

    def __init__(self, settings: Settings, server: ProxyServer) -> None:
        super().__init__(settings.client_cfg, on_data=self.client_data)
        self.settings = settings
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.out: WriteHandoff = None  # type: ignore[assignment]  # set in connection_made
        self.upstream: Upstream | None = None
        self.phase = READING_HEAD
        self.req: Request | None = None
        self.body: Relay | None = None  # the request body still being read
        self.reply: Relay | None = None  # the response body; None while its head is awaited
        self.response: Response | None = None
        self.responding = False  # a response head went out: errors can only reset now
        self.task: asyncio.Task[None] | None = None  # connecting, or a tunnel
        # The timer: it fires at timer_at and handles whichever deadline is due by then.
        self.client_deadline = NEVER  # for the client's head or body, or for room upstream
        self.upstream_deadline = NEVER  # for the response, or for room to send it on
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = NEVER

    # -- the connection's life ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.settings.client_allowed(transport.get_extra_info("peername")):
            # Not one of ours: no reply that would tell a scanner a proxy is here, nothing
            # read, no upstream connection.
            self.phase = CLOSING
            reset(self)
            return
        self.out = WriteHandoff.spawn(self)
        self.server.connections.add(self)
        self.arm_client(self.settings.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.server.connections.discard(self)
        self.phase = CLOSING
        self.drop_upstream()
        if self.out is not None:
            self.out.abort()  # nothing more can be written
        if self.task is not None:
            self.task.cancel()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def shut_down(self) -> None:
        """The proxy is stopping: drop both sides now, no flush, no linger."""
        self.phase = CLOSING
        if self.task is not None:
            self.task.cancel()
        self.drop_upstream()
        self.out.abort()
        if self.transport is not None:
            self.transport.close()

    def drop_upstream(self) -> None:
        up = self.upstream
        if up is not None:
            self.upstream = None
            up.close()

    def abort(self) -> None:
        """Drop the upstream and the unsent rest; reset the client connection."""
        self.phase = CLOSING
        self.drop_upstream()
        self.out.abort()
        reset(self)

    def finish(self) -> None:
        """Close cleanly: what is queued goes out, then our side ends; the client's rest is drained.

        Draining what the client still sends until it closes too leaves the kernel no
        unread bytes to answer with a reset; ``LINGER_SECONDS`` bounds it.
        """
        self.phase = CLOSING
        self.drop_upstream()
        self.body = self.reply = None
        self.upstream_deadline = NEVER
        self.out.close()  # the library closes the transport once the client is done too
        self.arm_client(LINGER_SECONDS)
        self.drain()

    def drain(self) -> None:
        buf = self.buffer
        if buf:
            full = len(buf) >= buf.max_len
            buf.advance(len(buf))
            if full:
                self.resume_reading()

    def fail(self, exc: ProxyError) -> None:
        """Answer ``exc`` with its status and close; a reset if a response already started."""
        if self.responding or self.phase == CLOSING:
            self.abort()
            return
        self.drop_upstream()
        try:
            self.out.try_write_fire_and_forget(error_reply(exc.status, str(exc)))
        except HandoffError:
            self.abort()  # the client stopped reading, or is gone
            return
        self.finish()

    def body_failed(self, exc: BaseException) -> None:
        """The request body broke (a bad chunk, the client gone or too slow)."""
        self.body = None
        self.drop_upstream()  # it waits for bytes that will not come: end its exchange now
        if isinstance(exc, ProxyError):
            self.fail(exc)
            return
        status = 408 if isinstance(exc, TimeoutError) else 400
        self.fail(ProxyError(status, f"request body: {describe(exc)}"))

    def upstream_failed(self, exc: BaseException) -> None:
        """The upstream (or the way back to the client) broke before the response was over."""
        req = self.req
        self.drop_upstream()
        if not isinstance(exc, ProxyError):
            status = 504 if isinstance(exc, TimeoutError) else 502
            where = f"{req.host}:{req.port}" if req is not None else "connection"
            exc = ProxyError(status, f"upstream {where}: {describe(exc)}")
        self.fail(exc)

    # -- the timer: one per connection, re-armed lazily ----------------------------------------

    def arm_client(self, seconds: float) -> None:
        self.client_deadline = when = self.loop.time() + seconds
        if when < self.timer_at:
            self.schedule(when)

    def arm_upstream(self) -> None:
        self.upstream_deadline = when = self.loop.time() + self.settings.idle_timeout
        if when < self.timer_at:
            self.schedule(when)

    def schedule(self, when: float) -> None:
        # A later deadline only moves a number: the timer, when it fires, sets itself
        # again for it. So a request costs no timer of its own (asyncio.timeout makes
        # and cancels one per wait).
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        self.timer = self.loop.call_at(when, self.on_timer) if when < NEVER else None

    def on_timer(self) -> None:
        due = self.timer_at
        self.timer = None
        self.timer_at = NEVER
        if self.client_deadline <= due:
            self.client_deadline = NEVER
            self.client_timed_out()
        elif self.upstream_deadline <= due:
            self.upstream_deadline = NEVER
            self.upstream_failed(TimeoutError())
        next_due = min(self.client_deadline, self.upstream_deadline)
        if next_due < self.timer_at:
            self.schedule(next_due)

    def client_timed_out(self) -> None:
        phase = self.phase
        if phase == READING_HEAD:
            if self.buffer:
                self.fail(ProxyError(408, "request head not completed in time"))
            else:
                self.finish()  # an idle keep-alive connection: just close it
        elif phase == EXCHANGING:
            if self.body is not None:
                self.body_failed(TimeoutError())
            else:  # the request head waited for room upstream
                self.upstream_failed(TimeoutError())
        elif phase == CLOSING:
            # The client neither read the rest nor closed: drop it.
            self.out.abort()
            if self.transport is not None:
                self.transport.close()

    # -- requests --------------------------------------------------------------------------------

    def client_data(self, _: HandoffProtocol) -> None:
        """``on_data`` of the client connection: the next request head, or the body being read."""
        # Hot path: once per read from the client.
        phase = self.phase
        if phase == READING_HEAD:
            self.next_request()
        elif phase == EXCHANGING:
            self.pump_body()
        elif phase == CLOSING:
            self.drain()
        # CONNECTING or TUNNELING: what came stays buffered for the upstream.

    def next_request(self) -> None:
        """Start on the next request if its head is all buffered."""
        try:
            head = self.take_head()
            if head is None:
                return
            req = parse_request(head, self.settings.request_fields)
            if req.method == b"CONNECT":
                self.open_tunnel(req)
            else:
                self.forward(req)
        except ProxyError as exc:
            self.fail(exc)

    def take_head(self) -> bytes | None:
        """The next request head (through its empty line); ``None`` while it is incomplete."""
        buf = self.buffer
        limit = self.settings.max_head
        while True:
            pos = buf.find(b"\r\n\r\n")
            if pos < 0:
                if len(buf) >= limit:
                    raise ProxyError(431, f"request head over {limit} bytes")
                if self.at_eof:
                    with buf.peek() as rest:
                        if bytes(rest).strip():
                            raise ProxyError(400, "connection closed inside a request head")
                    self.finish()  # the client is done
                return None
            if pos + 4 > limit:
                raise ProxyError(431, f"request head over {limit} bytes")
            head = take(self, pos + 4)
            if head[0] not in b"\r\n":
                return head
            # Empty lines (CRLF) before a request line are ignored (RFC 9112, 2.2); a bare
            # CR or LF there is not an empty line.
            request = head.lstrip(b"\r\n")
            skipped = len(head) - len(request)
            if head.count(b"\r\n", 0, skipped) * 2 != skipped:
                raise ProxyError(400, "bare CR or LF before the request line")
            if request:
                return request

    def forward(self, req: Request) -> None:
        up = self.upstream
        if up is not None and up.port == req.port and up.host == req.host and up.reusable():
            self.start_exchange(req, up)
            return
        self.drop_upstream()
        self.phase = CONNECTING
        self.client_deadline = NEVER  # connect() has its own timeout
        self.task = self.loop.create_task(self.connect_then_forward(req))

    async def connect_then_forward(self, req: Request) -> None:
        try:
            proto = await connect(
                req.host, req.port, self.settings, functools.partial(UpstreamProtocol, self)
            )
        except ProxyError as exc:
            self.task = None
            self.fail(exc)
            return
        self.task = None
        if self.phase != CONNECTING:  # the client went away meanwhile
            if proto.transport is not None:
                proto.transport.abort()
            return
        self.upstream = Upstream(req.host, req.port, proto, self)
        self.start_exchange(req, self.upstream)

    def start_exchange(self, req: Request, up: Upstream) -> None:
        """Send ``req`` upstream; its body follows as it arrives, the response comes back."""
        # Hot path: once per request.
        self.phase = EXCHANGING
        self.req = req
        self.response = None
        self.reply = None
        self.client_deadline = NEVER
        self.arm_upstream()
        try:
            up.requests.send(req.head)
        except HandoffError as exc:  # the upstream connection broke meanwhile
            self.upstream_failed(exc)
            return
        if req.framing:
            # The body goes up while the response is awaited: the upstream may answer
            # "100 Continue" first, or answer early without reading it.
            self.body = body_relay(up.requests, req.framing, self.settings.max_head)
            self.pump_body()
        else:
            self.body = None

    def pump_body(self) -> None:
        """Move what the client sent of the request body (and a head that waited) upstream."""
        up = self.upstream
        if up is None:
            return
        try:
            if not up.requests.flush():
                self.arm_client(self.settings.idle_timeout)  # bounded wait for room
                return
            body = self.body
            if body is None:
                return  # the request is all sent: what the client sends next waits
            if body.step() and up.requests.stalled is None:
                self.body = None
                self.client_deadline = NEVER
            else:
                self.arm_client(self.settings.idle_timeout)
        except RELAY_ERRORS as exc:
            self.body_failed(exc)

    # -- responses -------------------------------------------------------------------------------

    def upstream_data(self, proto: HandoffProtocol) -> None:
        """``on_data`` of the upstream connection: the response head, then its body."""
        # Hot path: once per read from the upstream.
        up = self.upstream
        if up is None or proto is not up.proto or self.phase != EXCHANGING:
            return  # a kept-alive upstream between requests, or a dropped one
        try:
            if not up.responses.flush():
                self.arm_upstream()
                return
            if self.reply is None and not self.response_head(up):
                return  # not all here: due within --idle-timeout of the request (or a 1xx)
            if self.reply_complete():
                self.response_done()
            else:
                self.arm_upstream()  # the rest of the body, or room for it
        except RELAY_ERRORS as exc:
            self.upstream_failed(exc)

    def reply_complete(self) -> bool:
        """Relay what is buffered of the response body; whether all of it is queued."""
        assert self.reply is not None and self.upstream is not None
        pipe = self.upstream.responses
        return pipe.stalled is None and self.reply.step() and pipe.stalled is None

    def response_head(self, up: Upstream) -> bool:
        """Parse and send on the response head once it is all buffered (interim ones first)."""
        proto = up.proto
        buf = proto.buffer
        req = self.req
        assert req is not None
        while True:
            pos = buf.find(b"\r\n\r\n")
            if pos < 0:
                if len(buf) >= buf.max_len:
                    raise ProxyError(502, "upstream response head too large")
                if proto.at_eof:
                    ended(proto)  # a reset names itself
                    raise ProxyError(502, "upstream closed before a complete response head")
                return False
            resp = parse_response(take(proto, pos + 4), req, self.settings.response_fields)
            if resp.status >= 200:
                break
            if resp.status == 101:  # to a WebSocket upgrade request (parse_response checked)
                self.switch_protocols(up, resp.head)
                return False
            self.arm_upstream()  # the next head is due within --idle-timeout of this one
            # HTTP/1.0 clients never get interim responses.
            if req.minor >= 1 and not up.responses.send(resp.head):
                return False  # the next head is parsed once this one went out
        self.response = resp
        self.responding = True
        self.reply = body_relay(up.responses, resp.framing, buf.max_len, decode=resp.decode)
        up.responses.send(resp.head)
        return True

    def response_done(self) -> None:
        """The response is all queued: keep both connections for the next request, or close."""
        # Hot path: once per request.
        up, resp = self.upstream, self.response
        assert up is not None and resp is not None
        self.reply = self.response = None
        self.upstream_deadline = NEVER
        if self.body is not None:
            # Answered before the request body was all read: neither stream is in step now.
            self.finish()
            return
        if not (resp.keep_upstream and up.reusable()):
            self.drop_upstream()
        if not resp.keep_client:
            self.finish()
            return
        self.phase = READING_HEAD
        self.responding = False
        self.arm_client(self.settings.idle_timeout)
        if self.buffer or self.at_eof:
            self.next_request()  # pipelined: the next head may be buffered already

    def upstream_lost(self, proto: UpstreamProtocol) -> None:
        """An upstream connection is gone: if it was mid-exchange, the exchange failed."""
        up = self.upstream
        if up is None or up.proto is not proto:
            return  # dropped by us already
        if self.phase == EXCHANGING:
            # A clean end was seen by upstream_data (eof_received runs on_data first):
            # what is left is a reset, or the end of a read-to-close body.
            self.upstream_data(proto)
            if self.upstream is up and self.phase == EXCHANGING:
                self.upstream_failed(proto.exception or EOFError("upstream connection lost"))
        else:
            self.drop_upstream()  # an idle kept-alive one: nothing to tell anyone

    # -- CONNECT and WebSocket upgrades: two tunnel() tasks ---------------------------------------

    def switch_protocols(self, up: Upstream, head: bytes) -> None:
        """A ``101`` to a WebSocket upgrade: its head to the client, then a tunnel both ways.

        What either side sent right behind its head (a first frame in the same read) is
        still in its buffer: the tunnel forwards it first. The upstream connection is the
        tunnel's from here on, and the client connection ends with it.
        """
        if up.requests.stalled is not None:  # answered before its request went out
            raise ProxyError(502, "upstream switched protocols before the request was sent")
        self.phase = TUNNELING
        self.responding = True
        self.upstream = None  # the tunnel closes it: upstream_lost leaves it alone now
        self.req = None
        self.client_deadline = self.upstream_deadline = NEVER  # tunnel() bounds its waits
        up.proto.on_data = None
        self.on_data = None
        self.task = self.loop.create_task(self.tunnel_both_ways(up.proto, up.out, head))

    # -- CONNECT ---------------------------------------------------------------------------------

    def open_tunnel(self, req: Request) -> None:
        # A tunnel carries anything (SMTP, SSH, a database protocol), so only the ports it
        # is meant for are open to it; plain requests speak HTTP anyway.
        if not self.settings.connect_allowed(req.port):
            raise ProxyError(403, f"CONNECT to port {req.port} is not allowed")
        self.phase = TUNNELING
        self.client_deadline = NEVER  # tunnel() bounds its own waits
        self.task = self.loop.create_task(self.run_tunnel(req))

    async def run_tunnel(self, req: Request) -> None:
        settings = self.settings
        try:
            proto = await connect(
                req.host, req.port, settings, lambda: HandoffProtocol(UPSTREAM_CFG)
            )
        except ProxyError as exc:
            self.fail(exc)
            return
        await self.tunnel_both_ways(proto, WriteHandoff.spawn(proto), None)

    async def tunnel_both_ways(
        self, proto: HandoffProtocol, up_out: WriteHandoff, switched: bytes | None
    ) -> None:
        """The reply (``200``, or the ``switched`` 101 head), then ``tunnel()`` both ways.

        Each direction ends on its own; once both have, both connections close.
        """
        settings = self.settings
        try:
            self.responding = True
            if switched is None:
                self.out.try_write_fire_and_forget(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                # Queued behind the responses before it, and out (flushed) before any
                # frame: within --idle-timeout, like any wait for the client to take bytes.
                async with asyncio.timeout(settings.idle_timeout):
                    await self.out.write_fire_and_forget(switched)
                    await self.out.flush()
            # Whatever the client sent after the head is still in its buffer (a TLS
            # ClientHello that came in the same read, a first WebSocket frame), and so
            # is what the upstream sent after its 101: tunnel() forwards them first.
            # tunnel() reads both connections from here on (awaitable style), and times
            # each direction on its own, so a one-way transfer ends if its quiet side
            # says nothing for --tunnel-idle seconds.
            self.on_data = None
            idle = settings.tunnel_idle
            directions = [
                asyncio.create_task(tunnel(self.buffer, self, up_out, idle_timeout=idle)),
                asyncio.create_task(tunnel(proto.buffer, proto, self.out, idle_timeout=idle)),
            ]
            try:
                # Each direction ends on its own (half-close); a failure ends both.
                await asyncio.gather(*directions)
            finally:
                for task in directions:
                    task.cancel()
                await asyncio.gather(*directions, return_exceptions=True)
        except RELAY_ERRORS:
            # Either side went away or stalled: a reset says the tunnel broke.
            self.abort()
            return
        finally:
            up_out.abort()
            if proto.transport is not None:
                proto.transport.close()
        self.task = None
        self.phase = CLOSING
        if self.transport is not None:
            self.transport.close()  # both directions ended (tunnel() flushed and shut them)


# -- running --------------------------------------------------------------------------------------


class ProxyServer:
    """The open client connections of one process, to drop them all when it stops."""

    def __init__(self) -> None:
        self.connections: set[ClientConnection] = set()

    def shut_down(self) -> None:
        for conn in list(self.connections):
            conn.shut_down()


class CannotListen(Exception):
    """The address to listen on was refused: in use, not local, or not resolvable."""


def is_loopback(host: str) -> bool:
    ip = ip_of(host)
    return ip is not None and ip.is_loopback


Addresses = list[tuple[str, int]]


def announce(host: str, addresses: Addresses, settings: Settings) -> None:
    """The line that says where the proxy listens, after a warning if it serves nobody there."""
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


async def listen(
    host: str,
    port: int,
    settings: Settings,
    ready: Callable[[Addresses], None],
    *,
    reuse_port: bool = False,
    lifeline: int | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (or, for a worker, its supervisor's end)."""
    loop = asyncio.get_running_loop()
    proxy = ProxyServer()
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server = await loop.create_server(
            lambda: ClientConnection(settings, proxy), host, port, reuse_port=reuse_port or None
        )
    except socket.gaierror as exc:
        raise CannotListen(f"argument --host: cannot resolve {host!r}: {exc.strerror}") from None
    except OSError as exc:
        # In use, or below 1024 without the privilege: the port's fault; else the host's.
        flag = "--port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "--host"
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise CannotListen(f"argument {flag}: cannot listen on {where}: {reason}") from None
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    if lifeline is not None:
        # The supervisor holds the other end: it reads as ended once the supervisor is gone.
        loop.add_reader(lifeline, stop.set)
    ready([sock.getsockname()[:2] for sock in server.sockets])
    try:
        await stop.wait()
    finally:
        # Stop accepting, then drop the open connections (Server.wait_closed would wait
        # for every kept-alive client).
        server.close()
        proxy.shut_down()


# -- workers: N processes on one port -------------------------------------------------------------

LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None


def supervised() -> set[signal.Signals]:
    """The signals the supervisor waits for (a function: Windows has no SIGCHLD)."""
    return {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


def run_worker(
    args: argparse.Namespace,
    settings: Settings,
    loop_factory: LoopFactory,
    port: int,
    report: int,
    lifeline: int,
) -> NoReturn:
    """A worker process (forked): serve on the shared port, say where or why not on ``report``."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, supervised())  # blocked only in the supervisor

    def ready(addresses: Addresses) -> None:
        os.write(report, json.dumps(addresses).encode() + b"\n")

    status = 0
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(listen(args.host, port, settings, ready, reuse_port=True, lifeline=lifeline))
    except CannotListen as exc:
        os.write(report, b"!" + str(exc).encode() + b"\n")
        status = 2
    except BaseException:
        traceback.print_exc()  # a bug: say where, then end this worker (the others stop too)
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # never back into the supervisor's code


def read_report(fd: int) -> str:
    """A worker's one-line report: JSON addresses, or ``!`` and why it cannot listen."""
    data = b""
    deadline = time.monotonic() + WORKER_START_SECONDS
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "!a worker did not start in time"
        chunk = os.read(fd, 4096)
        if not chunk:
            return "!a worker exited while starting"
        data += chunk
    return data.decode()


def stop_workers(pids: set[int]) -> None:
    """SIGTERM to every worker; wait for them, and SIGKILL the ones that do not end in time."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WORKER_STOP_SECONDS
    while pids:
        for pid in list(pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pids.discard(pid)
        if pids and time.monotonic() > deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = math.inf
        if pids:
            time.sleep(0.01)


def supervise(
    args: argparse.Namespace,
    settings: Settings,
    loop_factory: LoopFactory,
    fail: Callable[[str], NoReturn],
) -> None:
    """Start ``args.workers`` workers on one port; stop them all on SIGTERM or SIGINT."""
    # The supervisor takes its signals with sigwait, never in a handler: blocked before
    # the first fork, they wait as pending until it asks (the workers unblock them).
    signals = supervised()
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    lifeline, keep_alive = os.pipe()  # the workers watch one end; this process holds the other
    workers: set[int] = set()
    port = args.port
    try:
        for _ in range(args.workers):
            report_from, report_to = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(report_from)
                os.close(keep_alive)
                run_worker(args, settings, loop_factory, port, report_to, lifeline)
            os.close(report_to)
            workers.add(pid)
            report = read_report(report_from)
            os.close(report_from)
            if report.startswith("!"):
                fail(report[1:].strip())  # the finally below stops the others
            addresses = [tuple(address) for address in json.loads(report)]
            port = addresses[0][1]  # --port 0: the first worker picked it, the others share it
        announce(args.host, addresses, settings)
        while True:
            sig = signal.sigwait(signals)
            if sig != signal.SIGCHLD:
                return  # SIGINT or SIGTERM: stop them all, exit 0
            for pid in list(workers):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    workers.discard(pid)
                    print(
                        f"http_proxy: worker {pid} ended ({describe_status(status)});"
                        " stopping the others",
                        file=sys.stderr,
                        flush=True,
                    )
                    sys.exit(1)
    finally:
        stop_workers(workers)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


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


def worker_count(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,3}", text) or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process count from 1 to 256")
    return int(text)


def seconds(text: str) -> float:
    # 0 or less would end every wait at once, and so would a tiny one (1e-320: every wait
    # times out before its first read); nan and inf would never end them.
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= MIN_SECONDS):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds, {MIN_SECONDS} or more"
        )
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
    nets: list[Network] = []
    for part in text.split(","):
        try:
            net = ipaddress.ip_network(part.strip())
        except ValueError as exc:  # it names the part: "'10.0.0.0/33' does not appear ..."
            raise argparse.ArgumentTypeError(f"{exc} (CIDR like 10.0.0.0/8 or ::1/128)") from None
        mapped = net.network_address.ipv4_mapped if net.version == 6 else None
        if mapped is not None:
            # Clients' IPv4-mapped addresses are matched as IPv4 (ip_of): so are these
            # (::ffff:127.0.0.1/128 is 127.0.0.1/32). A network whose address is mapped
            # is /96 or longer (its host bits are zero).
            net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
        nets.append(net)
    return tuple(nets)


def parser() -> OneLineParser:
    p = OneLineParser(
        description="A forward HTTP/1.1 proxy with CONNECT tunnels and WebSocket upgrades.",
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
        "--parser",
        choices=("auto", "httptools", "python"),
        default="auto",
        help="what parses header fields: httptools (C) where it is installed and faster"
        " (auto: all but the shortest), httptools always, or Python",
    )
    p.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N",
        help="processes sharing the port (SO_REUSEPORT, Linux), each with its own loop",
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
        help="a tunnel direction (CONNECT, WebSocket) silent this long ends the tunnel",
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
    if args.parser == "httptools" and httptools is None:
        args_parser.error("--parser httptools needs httptools (pip install httptools)")
    if args.workers > 1 and not (hasattr(os, "fork") and hasattr(socket, "SO_REUSEPORT")):
        args_parser.error("argument --workers: more than 1 needs fork and SO_REUSEPORT (Linux)")
    request_fields, response_fields = field_parsers(args.parser)
    settings = Settings(
        args.max_head,
        args.connect_timeout,
        args.idle_timeout,
        args.tunnel_idle,
        args.connect_ports,
        args.allow_from,
        request_fields,
        response_fields,
    )
    loop_factory = None
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            args_parser.error("--loop uvloop needs uvloop (pip install uvloop)")
        loop_factory = uvloop.new_event_loop
    if args.workers > 1:
        supervise(args, settings, loop_factory, args_parser.error)
        return
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(
                listen(
                    args.host,
                    args.port,
                    settings,
                    functools.partial(announce, args.host, settings=settings),
                )
            )
    except CannotListen as exc:
        args_parser.error(str(exc))


if __name__ == "__main__":
    main()
