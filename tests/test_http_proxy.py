"""examples/http_proxy.py end to end: the real ``curl`` through the proxy as a subprocess.

The upstreams run in this process on stdlib servers: plain HTTP serving a temp
directory (plus ``/echo``, ``/chunked`` and ``/close`` for the body framings),
and HTTPS with a certificate made by ``openssl`` at test time; WebSocket upgrades
go from a ``websockets`` client to a ``websockets`` echo server. The proxy runs
as ``python examples/http_proxy.py --port 0`` once per event loop and field
parser (``--parser python``, and ``httptools`` where it is installed), with
``--connect-ports`` opened to the test servers' ephemeral ports. Error cases, the
CONNECT tail and upstreams that fail mid-response use raw sockets, so the bytes
(and the resets) on the wire are checked. ``--workers`` is checked through
``/proc``: which process holds each accepted connection, and that none outlives
the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.util
import itertools
import os
import random
import re
import select
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "http_proxy.py"
CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(CURL is None, reason="needs the curl binary (apt-get install curl)")

MAX_HEAD = 8192  # the proxy's --max-head in these tests
TIMEOUT = 10.0  # every socket and subprocess wait in this file
BIG = hashlib.sha256(b"seed").digest() * (2 * 1024 * 1024 // 32)  # 2 MiB, not all one byte
#: More than a stalled client, the proxy's socket and its queues hold together.
HUGE = BIG * 8
CHUNKS = [b"a", bytes(range(256)), b"b" * 4096, BIG[:65536], BIG[65536:70000]]
TRAILER = b"X-Checksum: 12345\r\n"
#: What --connect-ports must allow for CONNECT to the test servers (ephemeral ports).
TEST_CONNECT_PORTS = "443,1024-65535"
UNTIL_CLOSE_BODY = BIG[:300_000]
LOOPS = [
    "asyncio",
    pytest.param(
        "uvloop",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("uvloop") is None, reason="uvloop not installed"
        ),
    ),
]
HAVE_HTTPTOOLS = importlib.util.find_spec("httptools") is not None
needs_websockets = pytest.mark.skipif(
    importlib.util.find_spec("websockets") is None, reason="needs websockets (the test extra)"
)
#: What parses the field lines: both must give the same answers (--parser).
PARSERS = [
    "python",
    pytest.param(
        "httptools",
        marks=pytest.mark.skipif(not HAVE_HTTPTOOLS, reason="httptools not installed"),
    ),
]


def combinations(*choices: Sequence[Any]) -> list[Any]:
    """Every combination of the parameter lists, each with the skip marks of its parts."""
    combos = []
    for combo in itertools.product(*choices):
        values: list[str] = []
        marks: list[Any] = []
        for choice in combo:
            if isinstance(choice, str):
                values.append(choice)
            else:  # a pytest.param
                values.append(choice.values[0])
                marks += choice.marks
        combos.append(pytest.param(tuple(values), marks=marks, id="-".join(values)))
    return combos


#: Each event loop with each parser, for the module-scoped proxy fixture.
LOOP_PARSERS = combinations(LOOPS, PARSERS)


# -- upstream servers ----------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the upstream received it."""

    port: int  # the proxy's end of the upstream connection
    method: str
    path: str
    headers: Message


class Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        self.log: list[Seen] = []
        super().__init__(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def seen(self, path: str) -> list[Seen]:
        return [s for s in self.log if s.path == path]


class Handler(SimpleHTTPRequestHandler):
    """Files from the directory; ``/echo`` (POST), ``/chunked`` and ``/close`` framings."""

    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be seen
    server: Upstream

    def log_message(self, format: str, *args: object) -> None:
        pass

    def record(self) -> None:
        self.server.log.append(Seen(self.client_address[1], self.command, self.path, self.headers))

    def do_HEAD(self) -> None:
        self.record()
        super().do_HEAD()

    def do_GET(self) -> None:
        self.record()
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            for chunk in CHUNKS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n" + TRAILER + b"\r\n")
        elif self.path.startswith("/close"):
            self.send_response(200)  # no length: the body ends when the connection does
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(UNTIL_CLOSE_BODY)
            self.close_connection = True
        else:
            super().do_GET()

    def do_POST(self) -> None:
        self.record()
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                assert self.rfile.read(2) == b"\r\n"
            while self.rfile.readline() not in (b"\r\n", b""):
                pass  # trailer fields
        else:
            body = bytearray(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serving(server: Upstream) -> Iterator[Upstream]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a.txt").write_bytes(b"hello\n")
        (root / "big.bin").write_bytes(BIG)
        (root / "huge.bin").write_bytes(HUGE)
        yield root


@pytest.fixture(scope="module")
def upstream(site: Path) -> Iterator[Upstream]:
    with serving(Upstream(site)) as server:
        yield server


@pytest.fixture(scope="module")
def tls_upstream(site: Path, tls_files: tuple[Path, Path]) -> Iterator[tuple[Upstream, Path]]:
    """An HTTPS upstream for ``localhost``, and the self-signed certificate to trust."""
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = Upstream(site)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server, cert


# -- the proxy -------------------------------------------------------------------------------


@contextlib.contextmanager
def start_proxy(
    *args: str, stderr_pattern: str = "", exit_status: int = 0
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start the example on a free port; yield its process and the port; on exit, stop it.

    On exit (SIGTERM, if it still runs) the exit status must be ``exit_status``
    and stderr must match ``stderr_pattern`` in full (by default: be empty).
    """
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                assert sel.select(TIMEOUT), "the proxy printed no listening address"
            line = proc.stdout.readline().decode()
            match = re.fullmatch(r"http_proxy: listening on \S+:(\d+)\n", line)
            assert match, line
            yield proc, int(match[1])
        finally:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stderr.seek(0)
            errors = stderr.read().decode()
        assert proc.returncode == exit_status, errors
        # No traceback, no unretrieved task exception, nothing unexpected.
        assert re.fullmatch(stderr_pattern, errors), errors


@contextlib.contextmanager
def run_proxy(*args: str, stderr_pattern: str = "") -> Iterator[int]:
    """``start_proxy``, yielding the port only; exit status 0 on SIGTERM."""
    with start_proxy(*args, stderr_pattern=stderr_pattern) as (_, port):
        yield port


@pytest.fixture(scope="module", params=LOOP_PARSERS)
def proxy(request: pytest.FixtureRequest) -> Iterator[int]:
    loop, parser = request.param
    with run_proxy(
        "--loop",
        loop,
        "--parser",
        parser,
        "--max-head",
        str(MAX_HEAD),
        "--connect-ports",
        TEST_CONNECT_PORTS,
    ) as port:
        yield port


def curl(proxy: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``curl`` through the proxy, ignoring any .curlrc (``-q``) and the env's proxy settings."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    assert CURL is not None
    return subprocess.run(
        [CURL, "-q", "-sS", "--max-time", str(TIMEOUT), "-x", f"http://127.0.0.1:{proxy}", *args],
        capture_output=True,
        timeout=TIMEOUT + 5,
        env=env,
    )


def raw_exchange(port: int, data: bytes) -> tuple[bytes, bytes]:
    """Send ``data`` in one write; read to end of stream; (head, body) of the answer.

    A proxy that does not close the connection makes the read time out: that fails.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        answer = bytearray()
        while chunk := sock.recv(65536):
            answer += chunk
    head, sep, body = bytes(answer).partition(b"\r\n\r\n")
    assert sep, answer
    return head, body


def assert_refused(answer: tuple[bytes, bytes], status: int) -> None:
    """A complete error reply with ``status``, announcing the close that followed."""
    head, body = answer
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 %d " % status), head
    assert b"Connection: close" in lines
    assert b"Content-Length: %d" % len(body) in lines
    assert body.startswith(b"%d " % status)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"end of stream after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def read_to_end(sock: socket.socket) -> tuple[bytes, bool]:
    """What arrives until the end of stream; and whether it ended in a reset, not a close."""
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        return bytes(data), True
    return bytes(data), False


def split_answer(answer: bytes) -> tuple[bytes, bytes]:
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep, answer
    return head, body


@contextlib.contextmanager
def raw_upstream_request(
    proxy: int, method: str = "GET", fields: str = "", body: bytes = b""
) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, upstream): a request through the proxy to a raw socket, which read its head.

    The upstream answers by hand, so it can stop anywhere, with a close or a reset.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        listener.settimeout(TIMEOUT)
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        client = stack.enter_context(socket.create_connection(("127.0.0.1", proxy), TIMEOUT))
        head = f"{method} http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n"
        client.sendall(f"{head}{fields}\r\n".encode() + body)
        up = stack.enter_context(listener.accept()[0])
        up.settimeout(TIMEOUT)
        received = bytearray()
        while not received.endswith(b"\r\n\r\n"):
            received += recv_exactly(up, 1)  # the head only: without a body, no reset on close
        yield client, up


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response with a ``Content-Length`` body from ``sock``: (head, body)."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exactly(sock, 1)
    length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    assert length, head
    return bytes(head), recv_exactly(sock, int(length[1]))


# -- plain requests ------------------------------------------------------------------------


def test_gets_small_and_2mib_files_intact(proxy: int, upstream: Upstream) -> None:
    base = f"http://127.0.0.1:{upstream.port}"
    small = curl(proxy, f"{base}/a.txt")
    assert small.returncode == 0, small.stderr
    assert small.stdout == b"hello\n"
    big = curl(proxy, f"{base}/big.bin")
    assert big.returncode == 0, big.stderr
    assert big.stdout == BIG
    missing = curl(proxy, "-w", "%{http_code}", "-o", os.devnull, f"{base}/nope")
    assert missing.stdout == b"404"


def test_request_is_rewritten_to_origin_form_without_hop_by_hop_fields(
    proxy: int, upstream: Upstream
) -> None:
    path = f"/a.txt?rewrite-{proxy}"
    result = curl(
        proxy,
        "-H",
        "Connection: X-Secret",
        "-H",
        "X-Secret: for the proxy only",
        "-H",
        "X-Kept: yes",
        f"http://127.0.0.1:{upstream.port}{path}",
    )
    assert result.stdout == b"hello\n", result.stderr
    (seen,) = upstream.seen(path)
    assert seen.headers.get_all("Host") == [f"127.0.0.1:{upstream.port}"]
    assert seen.headers["X-Kept"] == "yes"
    assert "bytes-handoff" in seen.headers["Via"]
    for gone in ("X-Secret", "Connection", "Proxy-Connection"):
        assert gone not in seen.headers


def test_keep_alive_serves_several_requests_on_one_connection_each_side(
    proxy: int, upstream: Upstream
) -> None:
    paths = [f"/a.txt?keepalive-{proxy}-{i}" for i in range(3)]
    urls = [f"http://127.0.0.1:{upstream.port}{p}" for p in paths]
    result = curl(proxy, "-w", "[%{num_connects}]", *urls)
    assert result.returncode == 0, result.stderr
    # curl opened one connection to the proxy and reused it for the next two.
    assert result.stdout == b"hello\n[1]hello\n[0]hello\n[0]"
    # And the proxy sent all three over one upstream connection.
    ports = {seen.port for p in paths for seen in upstream.seen(p)}
    assert len(ports) == 1, ports


def test_pipelined_requests_answered_in_order_then_closed(proxy: int, upstream: Upstream) -> None:
    first = f"GET http://127.0.0.1:{upstream.port}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n"
    last = (
        f"HEAD http://127.0.0.1:{upstream.port}/big.bin HTTP/1.1\r\n"
        "Host: a\r\nConnection: close\r\n\r\n"
    )
    head, rest = raw_exchange(proxy, (first + last).encode())
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: 6" in head.split(b"\r\n")
    body, sep, second = rest.partition(b"HTTP/1.1 200 ")
    assert body == b"hello\n" and sep
    lines = second.split(b"\r\n")
    assert b"Content-Length: %d" % len(BIG) in lines  # HEAD: the length, and no body
    assert b"Connection: close" in lines
    assert second.endswith(b"\r\n\r\n")


def test_head_has_no_body_and_keeps_the_connection(proxy: int, upstream: Upstream) -> None:
    url = f"http://127.0.0.1:{upstream.port}/big.bin"
    result = curl(proxy, "-I", "-w", "[%{num_connects}]", url, url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"Content-Length: %d" % len(BIG)) == 2
    assert re.findall(rb"\[(\d)\]", result.stdout) == [b"1", b"0"]  # the second reused it


def test_post_with_content_length_and_100_continue(
    proxy: int, upstream: Upstream, tmp_path: Path
) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(BIG)
    path = f"/echo?cl-{proxy}"
    result = curl(
        proxy,
        "--data-binary",
        f"@{body}",
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        "Expect: 100-continue",
        # Without the proxy relaying "100 Continue" curl would wait past --max-time.
        "--expect100-timeout",
        "60",
        f"http://127.0.0.1:{upstream.port}{path}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == BIG
    (seen,) = upstream.seen(path)
    assert seen.headers["Content-Length"] == str(len(BIG))
    assert seen.headers["Expect"] == "100-continue"


def test_post_with_chunked_body(proxy: int, upstream: Upstream, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(BIG[:500_000])
    path = f"/echo?chunked-{proxy}"
    result = curl(
        proxy,
        "--data-binary",
        f"@{body}",
        "-H",
        "Transfer-Encoding: chunked",
        f"http://127.0.0.1:{upstream.port}{path}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == BIG[:500_000]
    (seen,) = upstream.seen(path)
    assert seen.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in seen.headers


def test_chunked_response_relayed_to_http11_and_decoded_for_http10(
    proxy: int, upstream: Upstream
) -> None:
    url = f"http://127.0.0.1:{upstream.port}/chunked"
    relayed = curl(proxy, "-D", "-", "--raw", url)
    head, _, raw_body = relayed.stdout.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head.split(b"\r\n")
    assert raw_body.endswith(b"0\r\n" + TRAILER + b"\r\n")  # chunks and trailer as sent
    decoded = curl(proxy, url)
    assert decoded.stdout == b"".join(CHUNKS), decoded.stderr
    old = curl(proxy, "-0", "-D", "-", url)  # HTTP/1.0: no chunked coding allowed
    head, _, body = old.stdout.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head.split(b"\r\n")
    assert body == b"".join(CHUNKS)


def test_read_to_close_response(proxy: int, upstream: Upstream) -> None:
    result = curl(proxy, "-D", "-", f"http://127.0.0.1:{upstream.port}/close")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert b"Connection: close" in head.split(b"\r\n")
    assert body == UNTIL_CLOSE_BODY


def test_http10_keep_alive(proxy: int, upstream: Upstream) -> None:
    request = (
        f"GET http://127.0.0.1:{upstream.port}/a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", proxy), timeout=TIMEOUT) as sock:
        for _ in range(2):
            sock.sendall(request.encode())
            head = bytearray()
            while not head.endswith(b"\r\n\r\n"):
                head += recv_exactly(sock, 1)
            assert b"Connection: keep-alive" in head
            assert recv_exactly(sock, 6) == b"hello\n"


def test_many_pipelined_requests_with_bodies_answered_in_order(
    proxy: int, upstream: Upstream
) -> None:
    target = f"http://127.0.0.1:{upstream.port}"
    requests = bytearray()
    expected = []
    for i in range(30):
        if i % 3 == 2:
            body = f"body {i} ".encode() * (i + 1)
            requests += f"POST {target}/echo HTTP/1.1\r\nHost: a\r\n".encode()
            requests += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            expected.append(body)
        else:
            requests += f"GET {target}/a.txt?pipelined-{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
            expected.append(b"hello\n")
    requests += f"GET {target}/a.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    expected.append(b"hello\n")
    with socket.create_connection(("127.0.0.1", proxy), timeout=TIMEOUT) as sock:
        sock.sendall(requests)  # one write: the proxy finds the heads already buffered
        for body in expected:
            head, got = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert got == body
        assert sock.recv(1) == b""  # closed after the last, as it asked


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_body_sent_with_the_head_is_relayed_whole_while_the_upstream_connects(
    proxy: int, upstream: Upstream, chunked: bool
) -> None:
    # Far more than the client buffer (--max-head) holds: it fills while the proxy
    # connects upstream, and reading must resume once the body moves on.
    body = BIG[:300_000]
    path = f"/echo?with-head-{chunked}-{proxy}"
    head = f"POST http://127.0.0.1:{upstream.port}{path} HTTP/1.1\r\nHost: a\r\n"
    if chunked:
        pieces = [body[i : i + 50_000] for i in range(0, len(body), 50_000)]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        data = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + framed
    else:
        data = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    with socket.create_connection(("127.0.0.1", proxy), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        _, echoed = read_response(sock)
    assert echoed == body


def test_response_before_the_request_body_is_all_read_closes_after_it(proxy: int) -> None:
    with raw_upstream_request(proxy, "POST", "Content-Length: 100\r\n", b"x" * 10) as (client, up):
        up.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")  # answered early
        head, body = read_response(client)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"no"
        # Neither stream is in step any more: the proxy ends both, cleanly to the client.
        assert read_to_end(client) == (b"", False)


# -- byte for byte ------------------------------------------------------------------------


@dataclass
class Exchange:
    """One client connection on the wire: what the proxy must relay, each way, exactly."""

    sent: bytes  # by the client; {up} is the upstream's address
    forwarded: list[bytes]  # what the upstream must receive, request by request
    answers: list[bytes]  # what it answers to each
    upstream_ends: str  # then it keeps its connection open ("keep"), or "close"s or "reset"s it
    relayed: bytes  # what the client must receive, to the end of the stream
    reset: bool  # whether that end is a reset


#: Framings both ways, interim responses, hop-by-hop fields (named by Connection too),
#: HTTP/1.0 on either side, blanks and obs-text in values: every byte as the proxy sent
#: it before its callback-style rewrite, which had to keep them all.
EXCHANGES = {
    "content-length": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 5\r\n"
            b"Connection: close\r\n\r\nhello"
        ),
        reset=False,
    ),
    "keep-alive-then-close": Exchange(
        sent=(
            b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\n\r\nGET http://{up}/x HTTP/1.1\r\n"
            b"Host: a\r\nConnection: close\r\n\r\n"
        ),
        forwarded=[
            b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n",
            b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n",
        ],
        answers=[
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 5\r\n\r\n"
            b"helloHTTP/1.1 204 No Content\r\nVia: 1.1 bytes-handoff\r\nConnection: close\r\n\r\n"
        ),
        reset=False,
    ),
    "chunked-with-trailer": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\n"
                b"abc\r\n0\r\nX-T: 1\r\n\r\n"
            )
        ],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
        ),
        reset=False,
    ),
    "chunked-to-http10": Exchange(
        sent=b"GET http://{up}/x HTTP/1.0\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                b"X-T: 1\r\n\r\n"
            )
        ],
        upstream_ends="keep",
        relayed=b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nConnection: close\r\n\r\nhello",
        reset=False,
    ),
    "head": Exchange(
        sent=b"HEAD http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        forwarded=[b"HEAD /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 500\r\n"
            b"Connection: close\r\n\r\n"
        ),
        reset=False,
    ),
    "304": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 304 Not Modified\r\nContent-Length: 500\r\nETag: x\r\n\r\n"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 304 Not Modified\r\nETag: x\r\nVia: 1.1 bytes-handoff\r\n"
            b"Content-Length: 500\r\nConnection: close\r\n\r\n"
        ),
        reset=False,
    ),
    "until-close": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 200 OK\r\n\r\nall of it"],
        upstream_ends="close",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nConnection: close\r\n\r\nall of it"
        ),
        reset=False,
    ),
    "until-close-reset": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 200 OK\r\n\r\nall of it"],
        upstream_ends="reset",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nConnection: close\r\n\r\nall of it"
        ),
        reset=True,
    ),
    "connection-named-both-ways": Exchange(
        sent=(
            b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, close\r\n"
            b"X-Secret: s\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n"
            b"Keep-Alive: 1\r\nProxy-Authorization: x\r\nX-Keep: k\r\n\r\n"
        ),
        forwarded=[
            (b"GET /x HTTP/1.1\r\nHost: {up}\r\nX-Keep: k\r\nVia: 1.1 bytes-handoff\r\n\r\n")
        ],
        answers=[
            (
                b"HTTP/1.1 200 OK\r\nConnection: X-Foo, keep-alive\r\nX-Foo: secret\r\n"
                b"X-Bar: ok\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
            )
        ],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nX-Bar: ok\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "post-chunked": Exchange(
        sent=(
            b"POST http://{up}/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-T: y\r\n\r\n"
        ),
        forwarded=[
            (
                b"POST /x HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n"
                b"Via: 1.1 bytes-handoff\r\n\r\n5\r\nhello\r\n0\r\nX-T: y\r\n\r\n"
            )
        ],
        answers=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "100-continue": Exchange(
        sent=(
            b"POST http://{up}/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\nhello"
        ),
        forwarded=[
            (
                b"POST /x HTTP/1.1\r\nHost: {up}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
                b"Via: 1.1 bytes-handoff\r\n\r\nhello"
            )
        ],
        answers=[
            (
                b"HTTP/1.1 100 Continue\r\nX-I: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                b"\r\nok"
            )
        ],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 100 Continue\r\nX-I: 1\r\n\r\nHTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "100-continue-to-http10": Exchange(
        sent=b"POST http://{up}/x HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
        forwarded=[
            (
                b"POST /x HTTP/1.1\r\nHost: {up}\r\nContent-Length: 5\r\n"
                b"Via: 1.1 bytes-handoff\r\n\r\nhello"
            )
        ],
        answers=[(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "equal-lengths": Exchange(
        sent=(
            b"POST http://{up}/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
            b"Content-Length: 2, 2\r\nConnection: close\r\n\r\nhi"
        ),
        forwarded=[
            (
                b"POST /x HTTP/1.1\r\nHost: {up}\r\nContent-Length: 2\r\n"
                b"Via: 1.1 bytes-handoff\r\n\r\nhi"
            )
        ],
        answers=[b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "gzip-then-chunked": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        ],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nTransfer-Encoding: gzip, chunked\r\n"
            b"Connection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        ),
        reset=False,
    ),
    "gzip-until-close": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw"],
        upstream_ends="close",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nTransfer-Encoding: gzip\r\n"
            b"Connection: close\r\n\r\nraw"
        ),
        reset=False,
    ),
    "no-reason-phrase": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 \r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "blanks-and-obs-text": Exchange(
        sent=(
            b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nX-A:   spaced  \t\r\nX-B:\r\n"
            b"X-C: \x80\xff\r\nConnection: close\r\n\r\n"
        ),
        forwarded=[
            (
                b"GET /x HTTP/1.1\r\nHost: {up}\r\nX-A: spaced\r\nX-B: \r\nX-C: \x80\xff\r\n"
                b"Via: 1.1 bytes-handoff\r\n\r\n"
            )
        ],
        answers=[b"HTTP/1.1 200 OK\r\nX-R: v \t\r\nContent-Length: 2\r\n\r\nok"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nX-R: v\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    # Framing, routing and the others RFC 9110 (6.5.1) keeps out of trailers: dropped.
    "forbidden-request-trailer-fields-dropped": Exchange(
        sent=(
            b"POST http://{up}/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\nhost: evil\r\nX-Other: 2\r\n\r\n"
        ),
        forwarded=[
            (
                b"POST /x HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n"
                b"Via: 1.1 bytes-handoff\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"
            )
        ],
        answers=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "forbidden-response-trailer-fields-dropped": Exchange(
        sent=b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                b"Content-LENGTH: 2\r\nX-T: 1\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n"
                b"Trailer: X-T\r\nSet-Cookie: a=b\r\nX-U: 2\r\n\r\n"
            )
        ],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n"
        ),
        reset=False,
    ),
    "websocket-upgrade-answered-200-keeps-the-connection": Exchange(
        # Not switched: an ordinary response, and the request behind it is read next.
        sent=(
            b"GET http://{up}/ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
            b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ),
        forwarded=[
            (
                b"GET /ws HTTP/1.1\r\nHost: {up}\r\nSec-WebSocket-Version: 13\r\n"
                b"Upgrade: websocket\r\nConnection: upgrade\r\nVia: 1.1 bytes-handoff\r\n\r\n"
            ),
            b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n",
        ],
        answers=[
            (
                b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                b"Content-Length: 2\r\n\r\nno"
            ),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n\r\nno"
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "upgrade-to-h2c-dropped": Exchange(
        sent=(
            b"GET http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close"
            b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        ),
        forwarded=[b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "websocket-upgrade-with-a-body-or-from-http10-dropped": Exchange(
        sent=(
            b"POST http://{up}/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nContent-Length: 2\r\n\r\nhi"
            b"GET http://{up}/x HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ),
        forwarded=[
            (
                b"POST /x HTTP/1.1\r\nHost: {up}\r\nContent-Length: 2\r\n"
                b"Via: 1.1 bytes-handoff\r\n\r\nhi"
            ),
            b"GET /x HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n",
        ],
        answers=[
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
    "empty-lines-first-and-query-only": Exchange(
        sent=(b"\r\n\r\nGET http://{up}?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        forwarded=[b"GET /?q=1 HTTP/1.1\r\nHost: {up}\r\nVia: 1.1 bytes-handoff\r\n\r\n"],
        answers=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
        upstream_ends="keep",
        relayed=(
            b"HTTP/1.1 200 OK\r\nVia: 1.1 bytes-handoff\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\nok"
        ),
        reset=False,
    ),
}


@pytest.mark.parametrize("exchange", EXCHANGES.values(), ids=EXCHANGES)
def test_exchange_relayed_byte_for_byte(proxy: int, exchange: Exchange) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        target = b"127.0.0.1:%d" % listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", proxy), timeout=TIMEOUT) as client:
            client.sendall(exchange.sent.replace(b"{up}", target))
            up, _ = listener.accept()
            with up:
                up.settimeout(TIMEOUT)
                for forwarded, answer in zip(exchange.forwarded, exchange.answers, strict=True):
                    expected = forwarded.replace(b"{up}", target)
                    assert recv_exactly(up, len(expected)) == expected
                    up.sendall(answer)
                if exchange.upstream_ends == "reset":
                    up.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                if exchange.upstream_ends != "keep":
                    up.close()
                relayed = read_to_end(client)
    assert relayed == (exchange.relayed, exchange.reset)


# -- CONNECT ---------------------------------------------------------------------------------


def test_https_through_connect(proxy: int, tls_upstream: tuple[Upstream, Path]) -> None:
    server, cert = tls_upstream
    base = f"https://localhost:{server.port}"
    result = curl(proxy, "--cacert", str(cert), f"{base}/big.bin", f"{base}/a.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == BIG + b"hello\n"


def test_connect_forwards_bytes_sent_with_the_head_then_both_ways(proxy: int) -> None:
    tail = b"\x16\x03\x01 a ClientHello in the same packet as the CONNECT head " * 8
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", proxy), timeout=TIMEOUT) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            head = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
            client.sendall(head.encode() + tail)  # one write: one segment on loopback
            server, _ = listener.accept()
            with server:
                server.settimeout(TIMEOUT)
                assert recv_exactly(server, len(tail)) == tail
                reply = b"HTTP/1.1 200 Connection Established\r\n\r\n"
                assert recv_exactly(client, len(reply)) == reply
                server.sendall(b"from upstream")
                assert recv_exactly(client, 13) == b"from upstream"
                client.sendall(b"from client")
                assert recv_exactly(server, 11) == b"from client"
                client.shutdown(socket.SHUT_WR)  # each direction ends on its own
                assert server.recv(1) == b""
                server.sendall(b"after the client's end")
            assert recv_exactly(client, 22) == b"after the client's end"
            assert client.recv(1) == b""


# -- WebSocket upgrades -------------------------------------------------------------------------

#: The handshake of RFC 6455, 1.3, and its frames of 5.7: "Hello", masked and not.
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
WS_FIELDS = f"Upgrade: websocket\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
CLIENT_FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
SERVER_FRAME = b"\x81\x05Hello"
SWITCHING = (
    f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
).encode()
#: SWITCHING as the client gets it.
SWITCHED = (
    f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {WS_ACCEPT}\r\n"
    "Upgrade: websocket\r\nConnection: upgrade\r\nVia: 1.1 bytes-handoff\r\n\r\n"
).encode()


async def websocket_session(proxy: int) -> None:
    """A ``websockets`` client, through the proxy, to a ``websockets`` echo server."""
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.http11 import Request

    class ThroughProxy(ClientConnection):
        """Sends its handshake in absolute form, as a forward proxy needs it."""

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            make_request = self.protocol.connect

            def absolute() -> Request:
                request = make_request()
                request.path = f"http://{request.headers['Host']}{request.path}"
                return request

            self.protocol.connect = absolute  # type: ignore[method-assign]
            await super().handshake(*args, **kwargs)

    served: list[ServerConnection] = []

    async def echo(ws: ServerConnection) -> None:
        served.append(ws)
        async for message in ws:
            if message == "ping me":
                await asyncio.wait_for(await ws.ping(b"from the server"), TIMEOUT)
                await ws.send("ponged")
            else:
                await ws.send(message)

    big = random.Random(1).randbytes(1 << 20)  # 1 MiB that compression cannot shrink
    async with (
        asyncio.timeout(4 * TIMEOUT),
        serve(echo, "127.0.0.1", 0, max_size=1 << 21) as server,
    ):
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}/chat?room=1",
            create_connection=ThroughProxy,
            proxy=None,  # not from the environment: the proxy is host and port below
            host="127.0.0.1",
            port=proxy,
            max_size=1 << 21,
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
        ) as ws:
            assert ws.response is not None
            assert ws.response.headers["Via"] == "1.1 bytes-handoff"
            for message in ("hello", b"\x00\x01 binary \xff", "é" * 1000, big, big[:70000]):
                await ws.send(message)
                assert await ws.recv() == message  # the same type too: str or bytes
            await asyncio.wait_for(await ws.ping(b"from the client"), TIMEOUT)  # its pong
            await ws.send("ping me")
            assert await ws.recv() == "ponged"  # the server's ping had its pong
            await ws.close(1000, "bye")
        # The close handshake went through both ways, then the tunnel ended.
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
        (upstream_ws,) = served
        await asyncio.wait_for(upstream_ws.wait_closed(), TIMEOUT)
        assert upstream_ws.protocol.close_rcvd is not None
        assert (upstream_ws.protocol.close_rcvd.code, upstream_ws.protocol.close_rcvd.reason) == (
            1000,
            "bye",
        )
        request = upstream_ws.request
        assert request is not None and request.path == "/chat?room=1"
        assert request.headers["Host"] == f"127.0.0.1:{port}"
        assert request.headers["Via"] == "1.1 bytes-handoff"
        assert request.headers["Connection"] == "upgrade"


@needs_websockets
def test_websocket_messages_pings_and_close_through_the_proxy(proxy: int) -> None:
    asyncio.run(websocket_session(proxy))


@contextlib.contextmanager
def websocket_upgrade(proxy: int) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, upstream): a WebSocket upgrade switched through the proxy, its heads read.

    The client sends a frame in the same write as its request head, the upstream one in
    the same write as its 101 head: each arrives first, intact.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        listener.settimeout(TIMEOUT)
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        client = stack.enter_context(socket.create_connection(("127.0.0.1", proxy), TIMEOUT))
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = f"GET http://{target}/chat HTTP/1.1\r\nHost: {target}\r\nConnection: Upgrade\r\n"
        client.sendall(f"{head}{WS_FIELDS}\r\n".encode() + CLIENT_FRAME)  # one segment
        up = stack.enter_context(listener.accept()[0])
        up.settimeout(TIMEOUT)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        forwarded = (
            f"GET /chat HTTP/1.1\r\nHost: {target}\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
            "Via: 1.1 bytes-handoff\r\n\r\n"
        ).encode()
        assert recv_exactly(up, len(forwarded)) == forwarded
        # What follows an upgrade request waits for its answer: a request, were it not 101.
        assert select.select([up], [], [], 0.1)[0] == []
        up.sendall(SWITCHING + SERVER_FRAME)  # one segment
        assert recv_exactly(client, len(SWITCHED + SERVER_FRAME)) == SWITCHED + SERVER_FRAME
        assert recv_exactly(up, len(CLIENT_FRAME)) == CLIENT_FRAME
        yield client, up


def test_websocket_frames_sent_right_behind_either_head_go_first_then_both_ways(
    proxy: int,
) -> None:
    with websocket_upgrade(proxy) as (client, up):
        up.sendall(BIG)  # then anything, any size, both ways
        assert recv_exactly(client, len(BIG)) == BIG
        client.sendall(BIG[:100_000])
        assert recv_exactly(up, 100_000) == BIG[:100_000]
        client.shutdown(socket.SHUT_WR)  # each direction ends on its own
        assert up.recv(1) == b""
        up.sendall(b"after the client's end")
        up.close()
        assert recv_exactly(client, 22) == b"after the client's end"
        assert client.recv(1) == b""


def test_websocket_tunnel_ends_after_tunnel_idle() -> None:
    with (
        run_proxy("--tunnel-idle", "0.3", "--connect-ports", TEST_CONNECT_PORTS) as port,
        websocket_upgrade(port) as (client, up),
    ):
        # Both sides silent: the tunnel ends as a broken one, as CONNECT's does.
        assert read_to_end(client) == (b"", True)
        assert up.recv(1) == b""


@pytest.mark.parametrize(
    ("fields", "answer"),
    [
        ("", SWITCHING),
        (WS_FIELDS, SWITCHING.replace(b"websocket", b"h2c")),
        (WS_FIELDS, SWITCHING.replace(b"Upgrade: websocket\r\n", b"")),
        (WS_FIELDS, SWITCHING.replace(b"HTTP/1.1", b"HTTP/1.0")),
        (
            "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
            SWITCHING.replace(b"websocket", b"h2c"),
        ),
    ],
    ids=["unasked", "other-protocol", "no-upgrade-field", "from-http10", "h2c-not-forwarded"],
)
def test_switching_protocols_other_than_to_a_websocket_upgrade_gets_502(
    proxy: int, fields: str, answer: bytes
) -> None:
    fields = f"Connection: Upgrade\r\n{fields}" if fields else ""
    with raw_upstream_request(proxy, fields=fields) as (client, up):
        up.sendall(answer + SERVER_FRAME)
        reply, was_reset = read_to_end(client)
    assert not was_reset
    assert_refused(split_answer(reply), 502)


# -- refusals ----------------------------------------------------------------------------------


def test_head_of_exactly_max_head_passes_one_byte_more_is_431(
    proxy: int, upstream: Upstream
) -> None:
    def head(size: int) -> bytes:
        start = f"GET http://127.0.0.1:{upstream.port}/a.txt HTTP/1.1\r\nHost: a\r\n"
        start += "Connection: close\r\nX-Pad: "
        pad = size - len(start) - 4
        return (start + "p" * pad + "\r\n\r\n").encode()

    assert len(head(MAX_HEAD)) == MAX_HEAD
    ok_head, ok_body = raw_exchange(proxy, head(MAX_HEAD))
    assert ok_head.startswith(b"HTTP/1.1 200 ") and ok_body == b"hello\n"
    assert_refused(raw_exchange(proxy, head(MAX_HEAD + 1)), 431)
    assert_refused(raw_exchange(proxy, head(4 * MAX_HEAD)), 431)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET  http://{up}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://{up}/a.txt HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        b"GET http://{up}/a.txt HTTP/1.1\r\nHost: a\r\nBad : space\r\n\r\n",
        b"GET http://{up}/a.txt HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
        b"GET http://{up}/a.txt HTTP/1.1\r\nHost: a\nX: bare LF\r\n\r\n",
        b"GET http://{up}/a.txt HTTP/1.1\r\n\r\n",
        b"GET http://{up}/a.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST http://{up}/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        b"Content-Length: 6\r\n\r\n",
        b"POST http://{up}/echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST http://{up}/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"GET /a.txt HTTP/1.1\r\nHost: {up}\r\n\r\n",
        b"GET http://user:pw@{up}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT localhost HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"CONNECT localhost:99999 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\r\r\rGET http://{up}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\r\n\r\r\nGET http://{up}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\n\nGET http://{up}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    ids=[
        "no-request-line",
        "double-space",
        "no-colon",
        "space-before-colon",
        "obs-fold",
        "bare-lf",
        "no-host",
        "two-hosts",
        "conflicting-lengths",
        "negative-length",
        "length-and-chunked",
        "origin-form",
        "userinfo",
        "connect-without-port",
        "connect-port-out-of-range",
        "bare-cr-before-request-line",
        "bare-cr-among-empty-lines",
        "bare-lf-before-request-line",
    ],
)
def test_malformed_request_gets_400_and_the_connection_closes(
    proxy: int, upstream: Upstream, request_bytes: bytes
) -> None:
    # The targets are the live upstream: a request forwarded by mistake gets a 200 or a 404.
    data = request_bytes.replace(b"{up}", b"127.0.0.1:%d" % upstream.port)
    assert_refused(raw_exchange(proxy, data), 400)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"BREW http://{up}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        (b"GET https://{up}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        (b"GET ftp://{up}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        (
            b"POST http://{up}/echo HTTP/1.1\r\nHost: a\r\n"
            b"Transfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (b"GET http://{up}/a.txt HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ],
    ids=["unknown-method", "https-absolute-form", "ftp", "gzip-coding", "http2"],
)
def test_unsupported_request_gets_501_or_505_and_closes(
    proxy: int, upstream: Upstream, request_bytes: bytes, status: int
) -> None:
    data = request_bytes.replace(b"{up}", b"127.0.0.1:%d" % upstream.port)
    assert_refused(raw_exchange(proxy, data), status)


def test_unreachable_upstream_gets_502(proxy: int) -> None:
    dead = free_port()
    result = curl(proxy, "-w", "[%{http_code}]", f"http://127.0.0.1:{dead}/")
    assert result.stdout.endswith(b"[502]"), result
    assert b"cannot connect to 127.0.0.1:%d" % dead in result.stdout
    for request in (
        f"GET http://127.0.0.1:{dead}/ HTTP/1.1\r\nHost: a\r\n\r\n",
        f"CONNECT 127.0.0.1:{dead} HTTP/1.1\r\nHost: a\r\n\r\n",
    ):
        assert_refused(raw_exchange(proxy, request.encode()), 502)


def test_idle_and_incomplete_heads_end_in_time(upstream: Upstream) -> None:
    with run_proxy("--idle-timeout", "0.3") as port:
        # A client that sends nothing is let go; one stuck half-way through a head gets 408.
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            assert sock.recv(1) == b""
        assert_refused(raw_exchange(port, b"GET http://127.0.0.1/ HTTP/1.1\r\nHo"), 408)


def test_stalled_exchanges_end_in_time_with_an_error_reply() -> None:
    with run_proxy("--idle-timeout", "0.5") as port:
        with raw_upstream_request(port) as (client, _):
            answer, was_reset = read_to_end(client)  # the upstream never answers
        assert not was_reset
        assert_refused(split_answer(answer), 504)
        with raw_upstream_request(port, "POST", "Content-Length: 100\r\n", b"x" * 10) as (
            client,
            _,
        ):
            answer, was_reset = read_to_end(client)  # the other 90 bytes never come
        assert not was_reset
        # The upstream waits for the body, the proxy for the upstream: the response wait,
        # armed first, ends first (504); the body's own wait would say 408.
        head, body = split_answer(answer)
        status = int(head[9:12])
        assert status in (408, 504), head
        assert_refused((head, body), status)


@pytest.mark.parametrize("loop", LOOPS)
def test_sigterm_with_open_connections_exits_promptly_and_cleanly(
    loop: str, upstream: Upstream
) -> None:
    request = f"GET http://127.0.0.1:{upstream.port}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n"
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        listener.settimeout(TIMEOUT)
        # Its exit checks: exit status 0, no stderr.
        with run_proxy("--loop", loop, "--connect-ports", TEST_CONNECT_PORTS) as port:
            idle = stack.enter_context(socket.create_connection(("127.0.0.1", port), TIMEOUT))
            idle.sendall(request.encode())
            answer = bytearray()
            while not answer.endswith(b"\r\n\r\nhello\n"):
                answer += recv_exactly(idle, 1)  # kept alive, and idle from here on
            tunneled = stack.enter_context(socket.create_connection(("127.0.0.1", port), TIMEOUT))
            target = f"127.0.0.1:{listener.getsockname()[1]}"
            tunneled.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            stack.enter_context(listener.accept()[0])
            established = b"HTTP/1.1 200 Connection Established\r\n\r\n"
            assert recv_exactly(tunneled, len(established)) == established
        # run_proxy's exit checked that SIGTERM ended it (status 0, within TIMEOUT, else it
        # is killed and fails). It left no connection open behind it:
        for sock in (idle, tunneled):
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""


@pytest.mark.parametrize("loop", LOOPS)
def test_client_that_never_reads_then_resets_does_not_stall_the_others(
    loop: str, upstream: Upstream
) -> None:
    huge = f"GET http://127.0.0.1:{upstream.port}/huge.bin HTTP/1.1\r\nHost: a\r\n\r\n"
    small = (
        f"GET http://127.0.0.1:{upstream.port}/a.txt HTTP/1.1\r\nHost: a\r\n"
        "Connection: close\r\n\r\n"
    )
    with run_proxy("--loop", loop) as port:  # its exit checks: exit status 0, no stderr
        with socket.socket() as stalled:
            # Before connecting: the window is agreed on in the handshake.
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.settimeout(TIMEOUT)
            stalled.connect(("127.0.0.1", port))
            stalled.sendall(huge.encode())
            time.sleep(1.5)  # the proxy fills what the client holds, then waits for room
            # Closed lingering 0: a reset, while the proxy's writing to it is paused.
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The others are still served (a proxy stuck on the reset one fails its TIMEOUT).
        head, body = raw_exchange(port, small.encode())
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"hello\n"


# -- trailers, and responses cut short ---------------------------------------------------------

#: A trailer whose bare LFs end the body early for a hop that accepts LF line ends.
SMUGGLING_TRAILER = b"X-T: a\n\nGET /smuggled HTTP/1.1\nHost: evil\n\r\n"


@pytest.mark.parametrize(
    "trailer",
    [
        SMUGGLING_TRAILER,
        b"X-T: a\rGET /smuggled HTTP/1.1\r\n",
        b"GET /smuggled HTTP/1.1\r\n",
        b"X-T: a\r\n folded /smuggled\r\n",
    ],
    ids=["bare-lf", "bare-cr", "no-colon", "obs-fold"],
)
def test_request_trailer_not_like_a_field_line_gets_400_and_is_not_forwarded(
    proxy: int, trailer: bytes
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        head = f"POST http://{target}/ HTTP/1.1\r\nHost: {target}\r\nTransfer-Encoding: chunked"
        with socket.create_connection(("127.0.0.1", proxy), timeout=TIMEOUT) as client:
            client.sendall(head.encode() + b"\r\n\r\n5\r\nhello\r\n0\r\n" + trailer + b"\r\n")
            up, _ = listener.accept()
            with up:
                up.settimeout(TIMEOUT)
                forwarded = bytearray()
                with contextlib.suppress(ConnectionResetError):  # the proxy aborts it
                    while b"smuggled" not in forwarded and (chunk := up.recv(65536)):
                        forwarded += chunk
            assert b"smuggled" not in forwarded
            answer, was_reset = read_to_end(client)
    assert not was_reset
    assert_refused(split_answer(answer), 400)


def test_response_trailer_with_bare_lf_is_not_relayed_and_resets_the_client(proxy: int) -> None:
    with raw_upstream_request(proxy) as (client, up):
        body = b"5\r\nhello\r\n0\r\n"
        up.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        head = bytearray()
        while not head.endswith(b"\r\n\r\n"):
            head += recv_exactly(client, 1)
        assert recv_exactly(client, len(body)) == body  # relayed up to the trailer
        up.sendall(SMUGGLING_TRAILER + b"\r\n")
        assert read_to_end(client) == (b"", True)  # then a reset: nothing of the trailer


@pytest.mark.parametrize(
    ("framing", "sent", "upstream_resets", "client_reset"),
    [
        (b"", b"x" * 1000, True, True),
        (b"", b"x" * 1000, False, False),
        (b"Content-Length: 5000\r\n", b"x" * 1000, False, True),
        (b"Content-Length: 5000\r\n", b"x" * 1000, True, True),
        (b"Transfer-Encoding: chunked\r\n", b"3e8\r\n" + b"x" * 1000 + b"\r\n", False, True),
    ],
    ids=[
        "until-close-then-reset",
        "until-close-then-close-is-complete",
        "length-cut-short",
        "length-then-reset",
        "chunked-cut-short",
    ],
)
def test_response_cut_short_resets_the_client_instead_of_closing(
    proxy: int, framing: bytes, sent: bytes, upstream_resets: bool, client_reset: bool
) -> None:
    with raw_upstream_request(proxy) as (client, up):
        up.sendall(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n" + sent)
        head = bytearray()
        while not head.endswith(b"\r\n\r\n"):
            head += recv_exactly(client, 1)
        # The client has every byte sent before the upstream's end comes.
        assert recv_exactly(client, len(sent)) == sent
        if upstream_resets:
            up.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        up.close()
        assert read_to_end(client) == (b"", client_reset)


def test_request_body_failing_mid_read_to_close_response_resets_the_client(proxy: int) -> None:
    chunked = "Transfer-Encoding: chunked\r\n"
    with raw_upstream_request(proxy, "POST", chunked, b"5\r\nhello\r\n") as (client, up):
        up.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1000)  # read-to-close, and open
        head = bytearray()
        while not head.endswith(b"\r\n\r\n"):
            head += recv_exactly(client, 1)
        assert recv_exactly(client, 1000) == b"x" * 1000
        # The proxy drops the upstream for this: the body's end is not the upstream's.
        client.sendall(b"not a chunk-size line\r\n")
        assert read_to_end(client) == (b"", True)


# -- the two field parsers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """examples/http_proxy.py as a module, for its parsing functions."""
    spec = importlib.util.spec_from_file_location("http_proxy_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


SEED_REQUESTS = [
    b"GET http://a.example:8080/p?q=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: x/1\r\n"
    b"Accept: */*\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
    b"POST http://a/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: t/p\r\n\r\n",
    b"POST http://a/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nProxy-Authorization: x\r\n\r\n",
    b"GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n\r\n",
    b"GET http://a/chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n",
]
SEED_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\nKeep-Alive: 5\r\n\r\n",
    b'HTTP/1.0 304 Not Modified\r\nETag: "x"\r\nConnection: close, ETag\r\n\r\n',
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
]
#: What mutations insert: the bytes a head's grammar turns on, and a few others.
ALPHABET = b' \t\r\n:,;\x00\x01\x7f\x80\xff"aZ0-_/'


def mutated(rng: random.Random, seed: bytes) -> bytes | None:
    """``seed`` with a few bytes inserted, replaced, deleted or repeated; cut as the proxy
    cuts a head (at the first empty line, empty lines before it dropped)."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data))
        op = rng.randrange(4)
        if op == 0:
            data.insert(at, rng.choice(ALPHABET))
        elif op == 1:
            data[at] = rng.choice(ALPHABET)
        elif op == 2:
            del data[at]
        else:
            start = rng.randrange(len(seed))
            data[at:at] = seed[start : start + rng.randint(1, 12)]
    end = data.find(b"\r\n\r\n")
    head = bytes(data[: end + 4]).lstrip(b"\r\n")
    return head if end >= 0 and head else None


@pytest.mark.skipif(not HAVE_HTTPTOOLS, reason="httptools not installed")
@pytest.mark.parametrize("parser", ["httptools", "auto"])
def test_both_parsers_give_the_same_answer_for_every_head(example: ModuleType, parser: str) -> None:
    python_request, python_response = example.field_parsers("python")
    llhttp_request, llhttp_response = example.field_parsers(parser)
    request = example.parse_request(SEED_REQUESTS[0], python_request)
    upgrade = example.parse_request(SEED_REQUESTS[-1], python_request)  # a 101 may answer it
    assert upgrade.upgrade and not request.upgrade

    def outcome(parse: object, *args: object) -> tuple[object, ...]:
        try:
            parsed = parse(*args)  # type: ignore[operator]
        except example.ProxyError as exc:
            return ("refused", exc.status, str(exc))
        return ("parsed", *(getattr(parsed, name) for name in parsed.__slots__))

    rng = random.Random(20240601)
    parsed = 0
    for _ in range(4000):
        seed = rng.choice(SEED_REQUESTS + SEED_RESPONSES)
        head = mutated(rng, seed)
        if head is None:
            continue
        if seed in SEED_REQUESTS:
            python = outcome(example.parse_request, head, python_request)
            llhttp = outcome(example.parse_request, head, llhttp_request)
        else:
            asked = upgrade if b" 101 " in seed else request
            python = outcome(example.parse_response, head, asked, python_response)
            llhttp = outcome(example.parse_response, head, asked, llhttp_response)
        assert python == llhttp, head
        parsed += python[0] == "parsed"
    assert parsed > 500  # not only refusals


# -- workers ---------------------------------------------------------------------------------

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading and /proc are Linux's"
)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, ended and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def holder(client: socket.socket, proxy_port: int, pids: list[int]) -> int:
    """Which of ``pids`` holds the proxy's end of ``client``'s connection."""
    client_port = client.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (proxy_port, client_port):
            inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    raise AssertionError(f"no process of {pids} holds the connection from port {client_port}")


@linux_only
def test_workers_share_the_port_and_sigterm_ends_them_all(upstream: Upstream) -> None:
    request = f"GET http://127.0.0.1:{upstream.port}/a.txt HTTP/1.1\r\nHost: a\r\n\r\n"
    with contextlib.ExitStack() as stack:
        # Its exit checks: SIGTERM to the supervisor, exit status 0, nothing on stderr.
        proc, port = stack.enter_context(start_proxy("--workers", "2"))
        workers = children(proc.pid)
        assert len(workers) == 2
        clients = []
        for _ in range(16):
            client = stack.enter_context(socket.create_connection(("127.0.0.1", port), TIMEOUT))
            client.sendall(request.encode())
            assert read_response(client)[1] == b"hello\n"  # served, and kept open
            clients.append(client)
        # The kernel spread them (2 ** -15 odds that all 16 land on one worker).
        assert {holder(client, port, workers) for client in clients} == set(workers)
    assert not any(alive(pid) for pid in workers)  # stopped and reaped, none orphaned


@linux_only
def test_a_worker_that_dies_stops_the_others() -> None:
    ended = r"http_proxy: worker \d+ ended \(signal SIGKILL\); stopping the others\n"
    with start_proxy("--workers", "3", stderr_pattern=ended, exit_status=1) as (proc, _):
        workers = children(proc.pid)
        os.kill(workers[0], signal.SIGKILL)
        proc.wait(TIMEOUT)
    assert not any(alive(pid) for pid in workers)


@linux_only
def test_workers_stop_by_themselves_when_their_supervisor_is_killed() -> None:
    with start_proxy("--workers", "2", exit_status=-signal.SIGKILL) as (proc, _):
        workers = children(proc.pid)
        proc.kill()
        proc.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)


# -- access control ----------------------------------------------------------------------------


def test_connect_only_to_allowed_ports_others_get_403_without_connecting() -> None:
    request = "CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: a\r\n\r\n"
    established = b"HTTP/1.1 200 Connection Established\r\n\r\n"
    with contextlib.ExitStack() as stack:
        allowed, other = (
            stack.enter_context(socket.create_server(("127.0.0.1", 0))) for _ in range(2)
        )
        other.setblocking(False)
        allowed.settimeout(TIMEOUT)
        allowed_port, other_port = allowed.getsockname()[1], other.getsockname()[1]
        with run_proxy() as port:  # the default: 443 only
            assert_refused(raw_exchange(port, request.format(allowed_port).encode()), 403)
        with run_proxy("--connect-ports", f"443,{allowed_port}") as port:
            assert_refused(raw_exchange(port, request.format(other_port).encode()), 403)
            client = stack.enter_context(socket.create_connection(("127.0.0.1", port), TIMEOUT))
            client.sendall(request.format(allowed_port).encode())
            stack.enter_context(allowed.accept()[0])
            assert recv_exactly(client, len(established)) == established
            client.close()
        with pytest.raises(BlockingIOError):
            other.accept()  # the refused CONNECT never reached it


def test_client_outside_allow_from_is_closed_at_once_without_upstream(upstream: Upstream) -> None:
    path = "/a.txt?outsider"
    request = f"GET http://127.0.0.1:{upstream.port}{path} HTTP/1.1\r\nHost: a\r\n"
    answer = b""
    with (
        run_proxy("--allow-from", "192.0.2.0/24,2001:db8::/32") as port,
        # The reset may come before the request is sent, or even before connect() returns.
        contextlib.suppress(ConnectionResetError, BrokenPipeError),
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(f"{request}Connection: close\r\n\r\n".encode())
        answer = read_to_end(sock)[0]
    assert answer == b""
    assert upstream.seen(path) == []


@pytest.mark.parametrize("networks", ["::ffff:127.0.0.1/128", "192.0.2.0/24,::ffff:127.0.0.0/104"])
def test_allow_from_ipv4_mapped_networks_admit_ipv4_clients(
    upstream: Upstream, networks: str
) -> None:
    # Clients' mapped addresses are matched as IPv4: a mapped network has to be too.
    request = f"GET http://127.0.0.1:{upstream.port}/a.txt HTTP/1.1\r\nHost: a\r\n"
    with run_proxy("--allow-from", networks) as port:
        head, body = raw_exchange(port, f"{request}Connection: close\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"hello\n"


def test_listening_beyond_loopback_warns_while_allow_from_is_loopback_only() -> None:
    warning = (
        r"http_proxy: warning: listening on 0\.0\.0\.0, but --allow-from admits"
        r" loopback clients only\n"
    )
    with run_proxy("--host", "0.0.0.0", stderr_pattern=warning):
        pass
    with run_proxy("--host", "0.0.0.0", "--allow-from", "127.0.0.0/8,192.0.2.0/24"):
        pass  # clients from elsewhere are admitted: no warning


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--port", "99999", "'99999'"),
        ("--port", "-1", "'-1'"),
        ("--port", "http", "'http'"),
        ("--host", "127.0.0.999", "'127.0.0.999'"),
        ("--host", "no such host", "'no such host'"),
        ("--max-head", "10", "'10'"),
        ("--idle-timeout", "-1", "'-1'"),
        ("--idle-timeout", "0", "'0'"),
        ("--connect-timeout", "nan", "'nan'"),
        ("--tunnel-idle", "inf", "'inf'"),
        ("--idle-timeout", "1e-320", "'1e-320'"),
        ("--connect-timeout", "0.0009", "'0.0009'"),
        ("--tunnel-idle", "1e-9", "'1e-9'"),
        ("--allow-from", "10.0.0.0/33", "'10.0.0.0/33'"),
        ("--allow-from", "10.0.0.1/8", "10.0.0.1/8"),
        ("--allow-from", "127.0.0.0/8,nonsense", "'nonsense'"),
        ("--connect-ports", "0", "'0'"),
        ("--connect-ports", "443,https", "'https'"),
        ("--connect-ports", "9000-8000", "'9000-8000'"),
        ("--connect-ports", "", "''"),
        ("--workers", "0", "'0'"),
        ("--workers", "two", "'two'"),
        ("--parser", "fast", "'fast'"),
    ],
)
def test_bad_option_value_is_one_line_naming_it_and_exit_status_2(
    flag: str, value: str, named: str
) -> None:
    result = run_example(f"{flag}={value}")  # "=": "-1" is a value, not an option
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert f"argument {flag}: " in line and named in line, line
    assert result.stdout == ""


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "workers", ["1", pytest.param("2", marks=linux_only)], ids=["1-worker", "2-workers"]
)
def test_port_in_use_is_one_line_and_exit_status_2(loop: str, workers: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_example("--port", str(port), "--loop", loop, "--workers", workers)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"http_proxy.py: error: argument --port: cannot listen on 127.0.0.1:{port}:"
        " address already in use\n"
    )


def test_help_shows_every_default_and_the_access_control() -> None:
    result = run_example("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # as one line, whatever the terminal width
    for default in (
        "(default: 127.0.0.1)",
        "(default: 8080)",
        "(default: 16384)",
        "(default: asyncio)",
        "(default: auto)",
        "(default: 1)",
        "(default: 10.0)",
        "(default: 60.0)",
        "(default: 600.0)",
        "(default: 443)",
        "(default: 127.0.0.0/8,::1/128)",
    ):
        assert default in text
    assert "only clients in --allow-from are served" in text
