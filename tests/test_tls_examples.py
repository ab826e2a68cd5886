"""examples/starttls_server.py and examples/tls_front.py end to end, driven by real clients.

Each example runs as ``python examples/NAME.py --port 0`` once per event loop,
with a certificate made by openssl at test time (``tls_files``). Clients:
``openssl s_client -starttls smtp``, ``curl --haproxy-protocol``, and a Python
client on ``ssl.MemoryBIO`` that sends its ClientHello in the same write as
the bytes before it (``STARTTLS\\r\\n``, a PROXY header): the case
``loop.start_tls()`` cannot serve.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import selectors
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bytes_handoff import build_proxy_header_v1, build_proxy_header_v2

ROOT = Path(__file__).resolve().parent.parent
CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
TIMEOUT = 10.0
LOOPS = ["asyncio", "uvloop"]
BIG = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)  # 1 MiB, not all one byte

needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl binary")
needs_curl = pytest.mark.skipif(CURL is None, reason="needs the curl binary")


@contextlib.contextmanager
def run_example(name: str, *args: str, stderr_pattern: str = "") -> Iterator[int]:
    """Start ``examples/NAME`` on a free port; yield the port; stop it (SIGTERM: exit 0).

    Its stderr must match ``stderr_pattern`` in full (by default: be empty).
    """
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / name), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                assert sel.select(TIMEOUT), f"{name} printed no listening address"
            line = proc.stdout.readline().decode()
            match = re.fullmatch(rf"{name[:-3]}: listening on \S+:(\d+)\n", line)
            assert match, line
            yield int(match[1])
        finally:
            proc.terminate()
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stderr.seek(0)
            errors = stderr.read().decode()
        assert proc.returncode == 0, errors
        assert re.fullmatch(stderr_pattern, errors), errors


class BioClient:
    """A blocking TLS client on memory BIOs: it decides which bytes go out in which send."""

    def __init__(self, sock: socket.socket, cafile: Path) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        ctx = ssl.create_default_context(cafile=str(cafile))
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def client_hello(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self.outgoing.read()

    def handshake(self, already_read: bytes = b"") -> None:
        """Finish the handshake; ``already_read`` is ciphertext read with the plaintext."""
        self.incoming.write(already_read)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                assert data, "the server closed during the handshake"
                self.incoming.write(data)
        self.sock.sendall(self.outgoing.read())

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def recv_to_close(self) -> bytes:
        """Plaintext until the server's close_notify."""
        out = bytearray()
        while True:
            try:
                while chunk := self.tls.read(65536):
                    out += chunk
                return bytes(out)  # b"": close_notify
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return bytes(out)
            data = self.sock.recv(65536)
            assert data, "TCP end of stream without close_notify"
            self.incoming.write(data)


def read_reply(sock: socket.socket, pending: bytearray) -> bytes:
    """One SMTP reply (every line of a multi-line one), plaintext; the rest stays pending."""
    while True:
        match = re.search(rb"(?m)^\d{3} [^\r\n]*\r\n", pending)
        if match:
            reply = bytes(pending[: match.end()])
            del pending[: match.end()]
            return reply
        data = sock.recv(65536)
        assert data, f"end of stream; had {bytes(pending)!r}"
        pending += data


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


# -- starttls_server.py ------------------------------------------------------------------------

#: What the server may log: a handshake that failed because plaintext followed STARTTLS.
HANDSHAKE_FAILURES = r"(starttls_server: TLS handshake failed: [^\n]*\n)*"


@pytest.fixture(scope="module", params=LOOPS)
def smtp(request: pytest.FixtureRequest, tls_files: tuple[Path, Path]) -> Iterator[int]:
    cert, key = tls_files
    with run_example(
        "starttls_server.py",
        *("--cert", str(cert), "--key", str(key), "--loop", request.param),
        stderr_pattern=HANDSHAKE_FAILURES,
    ) as port:
        yield port


@needs_openssl
def test_openssl_s_client_starttls_smtp(smtp: int, tls_files: tuple[Path, Path]) -> None:
    assert OPENSSL is not None
    proc = subprocess.run(
        [OPENSSL, "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{smtp}", "-crlf",
         "-quiet", "-CAfile", str(tls_files[0]), "-verify_return_error",
         "-servername", "localhost"],
        input=b"EHLO client\nMAIL FROM:<a@example.com>\nNOOP\nQUIT\n",
        capture_output=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "verify return:1" in proc.stderr.decode()
    assert "250-localhost greets client\r\n250 PIPELINING\r\n" in out  # no STARTTLS over TLS
    assert "250 2.1.0 Sender OK over TLSv1.3\r\n250 2.0.0 OK\r\n221 2.0.0 Bye\r\n" in out


@pytest.mark.parametrize("pipelined", ["hello-after-starttls", "everything-in-one-send"])
def test_a_client_hello_in_the_same_send_as_starttls_gets_its_handshake(
    smtp: int, tls_files: tuple[Path, Path], pipelined: str
) -> None:
    with connect(smtp) as sock:
        client = BioClient(sock, tls_files[0])
        pending = bytearray()
        if pipelined == "everything-in-one-send":  # before the greeting even arrived
            sock.sendall(b"EHLO me\r\nMAIL FROM:<a@b.c>\r\nSTARTTLS\r\n" + client.client_hello())
            assert read_reply(sock, pending).startswith(b"220 localhost ESMTP")
            assert read_reply(sock, pending).endswith(b"250 STARTTLS\r\n")
            assert read_reply(sock, pending).startswith(b"530 5.7.0")  # MAIL needs TLS
        else:
            assert read_reply(sock, pending).startswith(b"220 localhost ESMTP")
            sock.sendall(b"EHLO me\r\n")
            assert read_reply(sock, pending).endswith(b"250 STARTTLS\r\n")
            sock.sendall(b"STARTTLS\r\n" + client.client_hello())
        assert read_reply(sock, pending) == b"220 2.0.0 Ready to start TLS\r\n"
        client.handshake(bytes(pending))  # the server's first flight may follow the 220
        client.send(b"EHLO me\r\nMAIL FROM:<a@b.c>\r\nQUIT\r\n")
        assert client.recv_to_close() == (
            b"250-localhost greets me\r\n250 PIPELINING\r\n"
            b"250 2.1.0 Sender OK over TLSv1.3\r\n221 2.0.0 Bye\r\n"
        )


def test_plaintext_after_starttls_is_read_as_tls_never_as_a_command(smtp: int) -> None:
    """CVE-2011-0411: a command injected after STARTTLS must not run after the upgrade."""
    with connect(smtp) as sock:
        pending = bytearray()
        assert read_reply(sock, pending).startswith(b"220 ")
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        assert read_reply(sock, pending) == b"220 2.0.0 Ready to start TLS\r\n"
        rest = bytearray(pending)
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                rest += data
        assert b"250" not in rest and b"530" not in rest  # the handshake failed; no reply


# -- tls_front.py ------------------------------------------------------------------------------


class Backend(socketserver.BaseRequestHandler):
    """A tiny HTTP/1.1 backend: an optional PROXY v1 line, a request head, then its answer
    naming the client (from the PROXY line) and the path; ``/big`` answers 1 MiB."""

    def handle(self) -> None:
        self.request.settimeout(TIMEOUT)
        f = self.request.makefile("rb")
        first = f.readline()
        client = "unknown"
        if first.startswith(b"PROXY "):
            _, _, src, _dst, sport, _dport = first.split()
            client = f"{src.decode()}:{sport.decode()}"
            first = f.readline()
        while f.readline() not in (b"\r\n", b"\n", b""):
            pass
        path = first.split()[1].decode()
        body = BIG if path == "/big" else f"backend: {path} for {client}\n".encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        self.request.sendall(head.encode() + body)


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Backend) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.server_address[1]
        server.shutdown()


#: What the front may log: the malformed header test's connection.
FRONT_FAILURES = r"(tls_front: [^\n]*ProxyHeaderError[^\n]*\n)*"


@pytest.fixture(scope="module", params=LOOPS)
def front(
    request: pytest.FixtureRequest, tls_files: tuple[Path, Path], backend: int
) -> Iterator[int]:
    cert, key = tls_files
    with run_example(
        "tls_front.py",
        *("--cert", str(cert), "--key", str(key), "--backend", f"127.0.0.1:{backend}"),
        *("--send-proxy", "--loop", request.param),
        stderr_pattern=FRONT_FAILURES,
    ) as port:
        yield port


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-q", "-sS", "--max-time", str(TIMEOUT), "--noproxy", "*", *args],
        capture_output=True,
        timeout=TIMEOUT + 5,
    )


@needs_curl
@pytest.mark.parametrize("haproxy", [True, False], ids=["haproxy-protocol", "no-header"])
def test_curl_through_the_front_with_and_without_a_proxy_header(
    front: int, tls_files: tuple[Path, Path], haproxy: bool
) -> None:
    flags = ["--haproxy-protocol"] if haproxy else []
    cafile = ["--cacert", str(tls_files[0])]
    small = curl(*flags, *cafile, f"https://localhost:{front}/hello")
    assert small.returncode == 0, small.stderr
    assert re.fullmatch(rb"backend: /hello for 127\.0\.0\.1:\d+\n", small.stdout), small.stdout
    big = curl(*flags, "-k", f"https://127.0.0.1:{front}/big")
    assert big.returncode == 0, big.stderr
    assert big.stdout == BIG


@pytest.mark.parametrize("version", [1, 2])
def test_a_proxy_header_and_a_client_hello_in_one_send(
    front: int, tls_files: tuple[Path, Path], version: int
) -> None:
    source, destination = ("203.0.113.7", 4242), ("198.51.100.1", 443)
    build = build_proxy_header_v1 if version == 1 else build_proxy_header_v2
    with connect(front) as sock:
        client = BioClient(sock, tls_files[0])
        sock.sendall(build(source, destination) + client.client_hello())  # one segment
        client.handshake()
        client.send(b"GET /one-send HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = client.recv_to_close()
    assert answer.endswith(b"\r\n\r\nbackend: /one-send for 203.0.113.7:4242\n"), answer


def test_a_malformed_proxy_header_closes_only_that_connection(front: int) -> None:
    with connect(front) as sock:
        sock.sendall(b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n")
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(65536) == b""
