"""``--tls``: the run's TLS contexts, the STARTTLS preamble, and the TLS client and sink.

With ``--tls`` both legs of every stream run TLS: the driver's clients connect
to the proxy with TLS, and the proxy connects to the sink with TLS. Every TLS
server (the proxy's inbound side, the sink) presents the run's certificate and
every TLS client (the driver's clients, the proxy's outbound side) trusts that
certificate and nothing else (no host name check: the certificate is the
trust anchor, so a given one needs no name of this host).

``--tls-mode`` says how a leg becomes TLS:

* ``accept``: from the first byte (``ssl=`` given to the loop at accept and at
  connect, or ``ssl.SSLSocket`` here);
* ``starttls``: plain TCP, then the line :data:`PREAMBLE`, and the client's
  ClientHello right behind it in the same burst (no reply is awaited: the
  server keeps what it read past the line and starts TLS with it). The
  proxy's side is the library's ``HandoffProtocol.start_tls()``.

The client and the sink stay cheap as on plain TCP: non-blocking
``ssl.SSLSocket`` objects (TLS in C, straight on the socket), driven by the
loop's reader and writer callbacks; no asyncio TLS transport of their own. A
client sends its stream in ``--input-fragment`` writes (one TLS record each,
records of at most 16 KiB), then its close_notify, and is done when the proxy
has ended its side. The sink decrypts into its reused buffer, verifies every
plaintext byte as on plain TCP, and takes the proxy's close_notify (or a TCP
close after the bytes) as the end of the stream; the exact byte count is
checked either way, so a cut-short stream fails.

The contexts are made once per process (:func:`tls_setup`): the forked
workers make their own.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bytes_handoff.adapters import stop_waiting, wait_readable, wait_writable

from ..errors import BenchError, UsageError, VerificationError
from ..names import TlsMode
from .config import BenchConfig
from .transports import AcceptingSink, send_plan
from .workload import StreamVerifier, Workload

__all__ = [
    "PREAMBLE",
    "SERVER_NAME",
    "Negotiated",
    "TlsClient",
    "TlsSetup",
    "TlsSink",
    "client_ssl",
    "load_contexts",
    "server_ssl",
    "tls_setup",
]

#: The plaintext line before TLS in ``--tls-mode starttls``.
PREAMBLE = b"STARTTLS\n"
#: The name every TLS client sends (SNI). Not checked: the certificate is the trust anchor.
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class TlsSetup:
    """One process's TLS for the run: the mode and the two contexts."""

    mode: TlsMode
    #: What the proxy's inbound side and the sink present.
    server: ssl.SSLContext
    #: What the clients and the proxy's outbound side connect with.
    client: ssl.SSLContext


def load_contexts(cert: str, key: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for ``cert``/``key``; a one-line ``UsageError`` if they do
    not load."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # the certificate itself is the trust anchor
    client.verify_mode = ssl.CERT_REQUIRED
    client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a given leaf may be trusted alone
    try:
        server.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--tls-cert/--tls-key: cannot load {cert} and {key}: {exc}") from None
    try:
        client.load_verify_locations(cafile=cert)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--tls-cert: cannot trust {cert}: {exc}") from None
    return server, client


_SETUPS: dict[tuple[int, str, str, TlsMode], TlsSetup] = {}


def tls_setup(cfg: BenchConfig) -> TlsSetup | None:
    """This process's :class:`TlsSetup` for ``cfg``; ``None`` without ``--tls``.

    ``run_bench`` has put the certificate's paths into ``cfg`` by then (given or made).
    """
    if not cfg.tls:
        return None
    if cfg.tls_cert is None or cfg.tls_key is None:
        raise BenchError("--tls: no certificate for this run (run_bench makes one)")
    key = (os.getpid(), cfg.tls_cert, cfg.tls_key, cfg.tls_mode)
    setup = _SETUPS.get(key)
    if setup is None:
        server, client = load_contexts(cfg.tls_cert, cfg.tls_key)
        setup = _SETUPS[key] = TlsSetup(cfg.tls_mode, server, client)
    return setup


def server_ssl(setup: TlsSetup | None) -> dict[str, Any]:
    """The keyword arguments that make the loop end TLS on an accepted connection
    (``create_server``, ``connect_accepted_socket``): none without ``--tls``."""
    if setup is None:
        return {}
    if setup.mode != TlsMode.ACCEPT:
        raise BenchError(f"ssl= at accept is --tls-mode {TlsMode.ACCEPT}, not {setup.mode}")
    return {"ssl": setup.server}


def client_ssl(setup: TlsSetup | None) -> dict[str, Any]:
    """The keyword arguments that make the loop start TLS on a connection it makes
    (``create_connection``, ``open_connection``): none without ``--tls``."""
    if setup is None:
        return {}
    if setup.mode != TlsMode.ACCEPT:
        raise BenchError(f"ssl= at connect is --tls-mode {TlsMode.ACCEPT}, not {setup.mode}")
    return {"ssl": setup.client, "server_hostname": SERVER_NAME}


@dataclass
class Negotiated:
    """The TLS versions and ciphers this process's clients and sinks saw (``tls_version``,
    ``tls_cipher`` in the report)."""

    versions: set[str] = field(default_factory=set)
    ciphers: set[str] = field(default_factory=set)

    def record(self, tls: ssl.SSLSocket) -> None:
        version, cipher = tls.version(), tls.cipher()
        if version is not None:
            self.versions.add(version)
        if cipher is not None:
            self.ciphers.add(cipher[0])


async def _handshake(tls: ssl.SSLSocket) -> None:
    while True:
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            await wait_readable(tls)
        except ssl.SSLWantWriteError:
            await wait_writable(tls)


class TlsClient:
    """Sends one stream over TLS on a connected socket, then close_notify.

    The same face as :class:`~.transports.TcpClient` (``start``, ``pos``,
    ``close``): ``start()`` returns what finishes once the proxy has ended its
    side too, or fails with the error.
    """

    def __init__(
        self,
        sock: socket.socket,
        wl: Workload,
        conn: int,
        fragment: int,
        setup: TlsSetup,
        negotiated: Negotiated,
    ) -> None:
        self.sock = sock
        self.tls: ssl.SSLSocket | None = None
        self.wl = wl
        self.conn = conn
        self.fragment = fragment
        self.setup = setup
        self.negotiated = negotiated
        self.pos = 0
        self.stage = "connect"

    async def start(self) -> None:
        try:
            await self._stream()
        except (OSError, ssl.SSLError) as exc:  # SSLError is an OSError; named for the reader
            raise BenchError(
                f"client of stream {self.conn:04}: TLS {self.stage} failed after {self.pos}"
                f" bytes: {exc}"
            ) from exc

    async def _stream(self) -> None:
        setup = self.setup
        if setup.mode == TlsMode.STARTTLS:
            self.stage = "preamble"
            # A fresh connection's send buffer takes the line at once; the ClientHello
            # follows it without waiting for a reply (pipelined).
            if self.sock.send(PREAMBLE) != len(PREAMBLE):
                raise BenchError(f"client of stream {self.conn:04}: the STARTTLS line was cut")
        self.stage = "handshake"
        tls = self.tls = setup.client.wrap_socket(
            self.sock, server_side=False, do_handshake_on_connect=False, server_hostname=SERVER_NAME
        )
        await _handshake(tls)
        self.negotiated.record(tls)
        self.stage = "send"
        wl = self.wl
        prefix = memoryview(wl.prefix(self.conn))
        pattern = memoryview(wl.pattern)
        base = wl.tunnel_base(self.conn)
        plen = wl.prefix_len
        total = wl.total
        fragment = self.fragment
        pos = 0
        # Hot path: one TLS write (one record up to 16 KiB) per fragment. A write the socket
        # could not take is retried with the same bytes, as OpenSSL requires.
        while pos < total:
            end = send_plan(pos, total, plen, fragment)
            if pos < plen:
                view = prefix[pos:end]
            else:
                t = base + pos - plen
                view = pattern[t : t + end - pos]
            while True:
                try:
                    pos += tls.send(view)
                    break
                except ssl.SSLWantWriteError:
                    await wait_writable(tls)
                except ssl.SSLWantReadError:
                    await wait_readable(tls)
            self.pos = pos
        self.stage = "close_notify"
        # Our close_notify, then the proxy's (its side ended): the stream is handed over.
        while True:
            try:
                tls.unwrap()
                return
            except ssl.SSLWantReadError:
                await wait_readable(tls)
            except ssl.SSLWantWriteError:
                await wait_writable(tls)
            except OSError:
                return  # a TCP close (or reset) after everything was sent ends it too

    def close(self) -> None:
        sock = self.tls if self.tls is not None else self.sock
        stop_waiting(sock)  # uvloop aborts on closing a descriptor it still watches
        sock.close()


class _SinkConn:
    """One connection of a :class:`TlsSink`: its socket, what it is waiting for, its stream."""

    __slots__ = ("head", "reading", "sock", "tls", "verifier", "writing")

    def __init__(self, sock: socket.socket, verifier: StreamVerifier) -> None:
        self.sock = sock
        self.tls: ssl.SSLSocket | None = None
        self.verifier = verifier
        self.head = b""  # the STARTTLS line so far
        self.reading = False  # a reader callback is registered
        self.writing = False


class TlsSink(AcceptingSink[_SinkConn]):
    """Accepts TLS streams on a listening socket and verifies each one's plaintext.

    The accept loop and closing are :class:`~.transports.TcpSink`'s; one receive
    buffer serves every connection; ``bytes_seen`` counts plaintext.
    """

    def __init__(
        self,
        listener: socket.socket,
        wl: Workload,
        on_done: Callable[[StreamVerifier], None],
        on_error: Callable[[BaseException], None],
        bufsize: int,
        setup: TlsSetup,
        negotiated: Negotiated,
    ) -> None:
        super().__init__(listener, wl, on_done, on_error, bufsize)
        self._view = memoryview(self._buf)
        self._setup = setup
        self._negotiated = negotiated

    def _accepted(self, sock: socket.socket) -> None:
        conn = _SinkConn(sock, StreamVerifier(self._wl))
        self._conns[sock.fileno()] = conn
        if self._setup.mode == TlsMode.STARTTLS:
            self._watch(conn, self._preamble)
        else:
            self._start_tls(conn)

    def _watch(
        self, conn: _SinkConn, callback: Callable[[_SinkConn], None], *, write: bool = False
    ) -> None:
        """Call ``callback(conn)`` when the socket is readable (or writable), and only then."""
        fd = conn.sock.fileno()
        if write:
            if conn.reading:
                conn.reading = False
                self._loop.remove_reader(fd)
            conn.writing = True
            self._loop.add_writer(fd, callback, conn)
        else:
            if conn.writing:
                conn.writing = False
                self._loop.remove_writer(fd)
            conn.reading = True
            self._loop.add_reader(fd, callback, conn)

    def _unwatch(self, conn: _SinkConn) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        if conn.reading:
            conn.reading = False
            self._loop.remove_reader(fd)
        if conn.writing:
            conn.writing = False
            self._loop.remove_writer(fd)

    def _preamble(self, conn: _SinkConn) -> None:
        # Exactly the line's length: what follows it (the ClientHello) stays in the socket.
        try:
            data = conn.sock.recv(len(PREAMBLE) - len(conn.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(conn, BenchError(f"sink: reading the STARTTLS line failed: {exc}"))
            return
        conn.head += data
        if not data or not PREAMBLE.startswith(conn.head):
            got = "end of stream" if not data else repr(conn.head)
            self._fail(conn, BenchError(f"sink: expected {PREAMBLE!r} before TLS, got {got}"))
        elif len(conn.head) == len(PREAMBLE):
            self._unwatch(conn)
            self._start_tls(conn)

    def _start_tls(self, conn: _SinkConn) -> None:
        self._unwatch(conn)  # the descriptor moves to the TLS socket (same number)
        try:
            conn.tls = self._setup.server.wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError) as exc:
            self._fail(conn, BenchError(f"sink: TLS setup failed: {exc}"))
            return
        conn.sock = conn.tls
        self._handshake(conn)

    def _handshake(self, conn: _SinkConn) -> None:
        tls = conn.tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, self._handshake)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, self._handshake, write=True)
            return
        except OSError as exc:
            self._fail(conn, BenchError(f"sink: TLS handshake failed: {exc}"))
            return
        self._negotiated.record(tls)
        self._watch(conn, self._readable)
        self._readable(conn)  # records that came with the handshake's last flight

    def _readable(self, conn: _SinkConn) -> None:
        # Hot path: fill the reused buffer with records (one per recv_into), verify once.
        tls = conn.tls
        assert tls is not None
        verifier = conn.verifier
        buf = self._buf
        view = self._view
        size = len(buf)
        while True:
            n = 0
            ended = False
            try:
                while n < size:
                    got = tls.recv_into(view[n:])
                    if not got:
                        ended = True  # the proxy's close_notify (or its TCP close)
                        break
                    n += got
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError as exc:
                self._fail(
                    conn,
                    BenchError(
                        f"sink: {verifier.name}: TLS read failed at offset {verifier.pos + n}:"
                        f" {exc}"
                    ),
                )
                return
            if n:
                self.bytes_seen += n
                try:
                    verifier.feed(buf, n)
                except VerificationError as exc:
                    self._fail(conn, exc)
                    return
            if ended:
                self._finish(conn)
                return
            if n < size or not tls.pending():
                return  # drained: the loop calls again when the socket has more

    def _finish(self, conn: _SinkConn) -> None:
        tls = conn.tls
        assert tls is not None
        try:
            tls.unwrap()  # our close_notify back; the proxy's came, so this completes now
        except (OSError, ValueError):
            pass  # the proxy closed already, or the socket cannot take it: nothing is lost
        self._drop(conn)
        try:
            conn.verifier.finish()
        except VerificationError as exc:
            self._on_error(exc)
            return
        self._on_done(conn.verifier)

    def _fail(self, conn: _SinkConn, error: BaseException) -> None:
        self._drop(conn)
        self._on_error(error)

    def _drop(self, conn: _SinkConn) -> None:
        fd = conn.sock.fileno()
        self._unwatch(conn)
        if fd >= 0:
            self._conns.pop(fd, None)
        conn.sock.close()
