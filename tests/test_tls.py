"""``HandoffProtocol.start_tls``: TLS on an open connection, the bytes already read first.

The peer is either asyncio's own TLS (``StreamWriter.start_tls``, ``ssl=`` at
connect) or :class:`BioClient`, a client on ``ssl.MemoryBIO`` that controls
exactly which bytes go out in which write (a ClientHello in the same write as
``STARTTLS``, half a ClientHello, garbage, a TCP close without close_notify).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bytes_handoff import (
    BufferIOError,
    HandoffBufferConfig,
    HandoffError,
    HandoffProtocol,
    TLSHandshakeError,
    TLSTransport,
    WriteHandoff,
    WriteHandoffConfig,
    open_handoff_connection,
)
from bytes_handoff.tls import CIPHERTEXT_READ, RECORD

WAIT = 10.0
Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


def pattern(n: int, seed: int = 0) -> bytes:
    period = bytes((seed + i * 7) % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]


class BioClient:
    """A TLS client on memory BIOs over asyncio streams: every byte on the wire is chosen."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext
    ) -> None:
        self.reader, self.writer = reader, writer
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.plain = bytearray()  # plaintext decrypted, not yet returned by recv

    def client_hello(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self.outgoing.read()

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLCertVerificationError:
                self.writer.write(self.outgoing.read())  # the alert, as a real client sends
                raise
            except ssl.SSLWantReadError:
                pass
            self.writer.write(self.outgoing.read())
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionResetError("server closed during the handshake")
            self.incoming.write(data)
        self.writer.write(self.outgoing.read())

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.writer.write(self.outgoing.read())

    async def recv(self, n: int) -> bytes:
        """Exactly ``n`` plaintext bytes."""
        while len(self.plain) < n:
            with contextlib.suppress(ssl.SSLWantReadError):
                while chunk := self.tls.read(65536):
                    self.plain += chunk
            if len(self.plain) >= n:
                break
            data = await self.reader.read(65536)
            assert data, f"end of stream after {len(self.plain)} of {n} bytes"
            self.incoming.write(data)
        out = bytes(self.plain[:n])
        del self.plain[:n]
        return out

    async def recv_to_close(self) -> tuple[bytes, str]:
        """Everything until the server's close_notify (``"close_notify"``) or TCP end."""
        while True:
            try:
                while chunk := self.tls.read(65536):
                    self.plain += chunk
                return bytes(self.plain), "close_notify"
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return bytes(self.plain), "close_notify"
            data = await self.reader.read(65536)
            if not data:
                return bytes(self.plain), "eof"
            self.incoming.write(data)

    def close_notify(self) -> None:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()
        self.writer.write(self.outgoing.read())


@contextlib.asynccontextmanager
async def server(
    config: HandoffBufferConfig | None = None,
) -> AsyncIterator[tuple[asyncio.Queue[HandoffProtocol], int]]:
    """A plain TCP server of ``HandoffProtocol``s, each put on the queue when connected."""
    accepted: asyncio.Queue[HandoffProtocol] = asyncio.Queue()
    every: list[HandoffProtocol] = []

    class Accepted(HandoffProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            every.append(self)
            accepted.put_nowait(self)

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Accepted(config), "127.0.0.1", 0)
    try:
        yield accepted, srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        for proto in every:
            if proto.transport is not None:
                proto.transport.abort()
        await srv.wait_closed()


@contextlib.asynccontextmanager
async def starttls_pair(
    contexts: Contexts, config: HandoffBufferConfig | None = None
) -> AsyncIterator[tuple[HandoffProtocol, BioClient]]:
    """A server protocol that read ``STARTTLS\\r\\n``, and a client whose ClientHello came in
    the same write."""
    client_ctx, _ = contexts
    async with server(config) as (accepted, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = BioClient(reader, writer, client_ctx)
        writer.write(b"STARTTLS\r\n" + client.client_hello())
        proto = await accepted.get()
        try:
            assert await proto.read_until(b"\r\n") == b"STARTTLS\r\n"
            yield proto, client
        finally:
            writer.close()
            if proto.transport is not None:
                proto.transport.abort()
            await proto.wait_closed()


async def upgrade(proto: HandoffProtocol, client: BioClient, contexts: Contexts) -> None:
    _, server_ctx = contexts
    await asyncio.gather(proto.start_tls(server_ctx, server_side=True), client.handshake())


async def echo(proto: HandoffProtocol, out: WriteHandoff) -> int:
    """Echo plaintext until end of stream; the count."""
    total = 0
    while n := await proto.read_available():
        total += n
        await out.write_fire_and_forget(proto.buffer.freeze_all())
    await out.aclose()
    return total


# -- the handshake reads the bytes already buffered ---------------------------------------------


@pytest.mark.asyncio
async def test_a_client_hello_in_the_same_write_as_starttls_is_the_handshake_s_first_read(
    tls_contexts: Contexts,
) -> None:
    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts) as (proto, client):
        assert len(proto.buffer) > 0  # the ClientHello sits behind the line
        await upgrade(proto, client, tls_contexts)
        assert isinstance(proto.transport, TLSTransport)
        assert proto.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
        assert proto.transport.get_extra_info("peername") is not None  # the socket's own keys
        echoing = asyncio.ensure_future(echo(proto, WriteHandoff.spawn(proto)))
        payload = pattern(3 * 1024 * 1024 + 17)
        client.send(payload)
        assert await client.recv(len(payload)) == payload
        client.close_notify()  # end of stream for the server: the echo ends and closes
        assert await echoing == len(payload)
        assert await client.recv_to_close() == (b"", "close_notify")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
async def test_client_side_start_tls_against_asyncio_s_tls_server(
    tls_contexts: Contexts, tls_files: tuple[Path, Path], version: ssl.TLSVersion
) -> None:
    """The client side, TLS 1.2 and 1.3 (post-handshake session tickets read and dropped)."""
    client_ctx = ssl.create_default_context(cafile=str(tls_files[0]))
    client_ctx.maximum_version = version
    _, server_ctx = tls_contexts

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readuntil(b"\n") == b"STARTTLS\n"
        writer.write(b"go ahead\n")
        await writer.drain()
        await writer.start_tls(server_ctx)
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv:
        proto = await open_handoff_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        out = WriteHandoff.spawn(proto)
        await out.write(b"STARTTLS\n")
        assert await proto.read_until(b"\n") == b"go ahead\n"
        await proto.start_tls(client_ctx, server_side=False, server_hostname="localhost")
        assert proto.transport is not None
        assert proto.transport.get_extra_info("ssl_object").version() == version.name.replace(
            "v1_", "v1."
        )
        assert proto.transport.get_extra_info("peercert")["subject"]
        for size in (1, 100, RECORD, 3 * RECORD + 3):
            data = pattern(size, size)
            await out.write(data)
            assert await proto.read_exactly(size) == data
        await out.aclose()  # close_notify and close
        await proto.wait_closed()
        assert proto.exception is None


@pytest.mark.asyncio
async def test_plaintext_queued_before_the_switch_goes_first_and_later_writes_are_encrypted(
    tls_contexts: Contexts,
) -> None:
    client_ctx, server_ctx = tls_contexts
    async with asyncio.timeout(WAIT), server() as (accepted, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        proto = await accepted.get()
        out = WriteHandoff.spawn(proto, WriteHandoffConfig(max_items=8))
        proto.pause_writing()  # the transport is full: the replies stay queued in `out`
        for i in range(5):
            out.try_write_fire_and_forget(b"250-line %d\r\n" % i)
        out.try_write_fire_and_forget(b"220 ready\r\n")
        asyncio.get_running_loop().call_later(0.05, proto.resume_writing)
        upgrading = asyncio.ensure_future(proto.start_tls(server_ctx, server_side=True, flush=out))
        await asyncio.sleep(0)
        await out.write(b"after the switch\n")  # accepted while the switch runs: encrypted
        plain = await reader.readuntil(b"220 ready\r\n")
        assert plain == b"".join(b"250-line %d\r\n" % i for i in range(5)) + b"220 ready\r\n"
        await writer.start_tls(client_ctx, server_hostname="localhost")
        await upgrading
        assert await reader.readexactly(17) == b"after the switch\n"
        writer.write(b"ping\n")
        assert await proto.read_until(b"\n") == b"ping\n"
        await out.aclose()
        assert await reader.read() == b""  # close_notify: end of stream for the client
        writer.close()


@pytest.mark.asyncio
async def test_writes_to_the_transport_during_the_handshake_are_encrypted_after_it(
    tls_contexts: Contexts,
) -> None:
    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts) as (proto, client):
        upgrading = asyncio.ensure_future(proto.start_tls(tls_contexts[1], server_side=True))
        await asyncio.sleep(0)
        assert proto.transport is not None
        assert proto._write_paused  # a WriteHandoff waits for the handshake
        proto.transport.write(b"early ")
        proto.transport.writelines([b"and ", memoryview(b"batched\n")])
        await asyncio.gather(upgrading, client.handshake())
        assert not proto._write_paused
        assert await client.recv(18) == b"early and batched\n"


@pytest.mark.asyncio
async def test_the_callback_style_upgrades_from_on_data_and_reads_plaintext_after(
    tls_contexts: Contexts,
) -> None:
    """``on_data`` parses lines up to STARTTLS, leaves the ClientHello behind it buffered and
    upgrades in a task; after the switch it gets plaintext."""
    client_ctx, server_ctx = tls_contexts
    lines: list[bytes] = []
    upgraded: list[asyncio.Task[None]] = []

    class Server(HandoffProtocol):
        def __init__(self) -> None:
            super().__init__(on_data=self.step)

        def step(self, proto: HandoffProtocol) -> None:
            while not upgraded and (line := self.buffer.split_through(b"\r\n")) is not None:
                lines.append(line)
                if line == b"STARTTLS\r\n":  # what follows is ciphertext: no more lines
                    upgraded.append(
                        asyncio.ensure_future(self.start_tls(server_ctx, server_side=True))
                    )
            if upgraded and upgraded[0].done() and self.buffer:
                lines.append(self.buffer.freeze_all())

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Server, "127.0.0.1", 0)
    async with asyncio.timeout(WAIT), srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
        client = BioClient(reader, writer, client_ctx)
        writer.write(b"EHLO x\r\nSTARTTLS\r\n" + client.client_hello())
        await client.handshake()
        await upgraded[0]
        client.send(b"hello over TLS\r\n")
        while b"".join(lines[2:]) != b"hello over TLS\r\n":
            await asyncio.sleep(0.01)
        assert lines[:2] == [b"EHLO x\r\n", b"STARTTLS\r\n"]
        writer.close()


# -- failures end cleanly --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_plaintext_after_starttls_fails_the_handshake_and_closes(
    tls_contexts: Contexts,
) -> None:
    """Commands pipelined after STARTTLS are read as TLS, never as commands (CVE-2011-0411)."""
    _, server_ctx = tls_contexts
    async with asyncio.timeout(WAIT), server() as (accepted, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        proto = await accepted.get()
        assert await proto.read_until(b"\r\n") == b"STARTTLS\r\n"
        with pytest.raises(TLSHandshakeError) as failed:
            await proto.start_tls(server_ctx, server_side=True)
        assert isinstance(failed.value.error, ssl.SSLError)
        assert "TLS handshake failed" in str(failed.value)
        await proto.wait_closed()
        assert isinstance(proto.exception, ssl.SSLError)
        with pytest.raises(BufferIOError):
            await proto.read_available()
        assert await reader.read() == b""
        writer.close()


@pytest.mark.asyncio
async def test_a_client_that_rejects_the_certificate_fails_the_server_handshake(
    tls_contexts: Contexts,
) -> None:
    untrusting = ssl.create_default_context()  # the system CAs: the test certificate is unknown
    async with asyncio.timeout(WAIT), starttls_pair((untrusting, tls_contexts[1])) as pair:
        proto, client = pair
        results = await asyncio.gather(
            proto.start_tls(tls_contexts[1], server_side=True),
            client.handshake(),
            return_exceptions=True,
        )
        assert isinstance(results[0], TLSHandshakeError), results
        assert isinstance(results[1], ssl.SSLCertVerificationError), results
        await proto.wait_closed()


@pytest.mark.asyncio
async def test_a_silent_peer_times_the_handshake_out_and_the_connection_closes(
    tls_contexts: Contexts,
) -> None:
    async with asyncio.timeout(WAIT), server() as (accepted, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\r\n")
        proto = await accepted.get()
        await proto.read_until(b"\r\n")
        with pytest.raises(TLSHandshakeError) as failed:
            await proto.start_tls(tls_contexts[1], server_side=True, handshake_timeout=0.2)
        assert isinstance(failed.value.error, TimeoutError)
        assert "0.2 s" in str(failed.value)
        await proto.wait_closed()
        assert await reader.read() == b""
        writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_peer_that_leaves_mid_handshake_fails_it(tls_contexts: Contexts, how: str) -> None:
    client_ctx, server_ctx = tls_contexts
    async with asyncio.timeout(WAIT), server() as (accepted, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        hello = BioClient(reader, writer, client_ctx).client_hello()
        writer.write(b"STARTTLS\r\n" + hello[: len(hello) // 2])
        await writer.drain()
        proto = await accepted.get()
        await proto.read_until(b"\r\n")
        upgrading = asyncio.ensure_future(proto.start_tls(server_ctx, server_side=True))
        await asyncio.sleep(0.05)
        if how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()
        with pytest.raises(TLSHandshakeError) as failed:
            await upgrading
        assert isinstance(failed.value.error, ConnectionError | ssl.SSLError)
        await proto.wait_closed()


@pytest.mark.asyncio
async def test_cancelling_the_handshake_closes_the_connection(tls_contexts: Contexts) -> None:
    async with asyncio.timeout(WAIT), server() as (accepted, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\r\n")
        proto = await accepted.get()
        await proto.read_until(b"\r\n")
        upgrading = asyncio.ensure_future(proto.start_tls(tls_contexts[1], server_side=True))
        await asyncio.sleep(0.05)
        upgrading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upgrading
        await proto.wait_closed()
        assert await reader.read() == b""
        writer.close()


@pytest.mark.asyncio
async def test_a_tcp_close_without_close_notify_after_the_handshake_is_end_of_stream(
    tls_contexts: Contexts,
) -> None:
    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts) as (proto, client):
        await upgrade(proto, client, tls_contexts)
        client.send(b"last words")
        client.writer.write_eof()  # FIN, no close_notify
        assert await proto.read_until(b"words") == b"last words"
        assert await proto.read_available() == 0
        await proto.wait_closed()  # TLS cannot half-close: the transport closed after it
        assert proto.exception is None


@pytest.mark.asyncio
async def test_a_reset_after_the_handshake_fails_the_reader(tls_contexts: Contexts) -> None:
    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts) as (proto, client):
        await upgrade(proto, client, tls_contexts)
        reading = asyncio.ensure_future(proto.read_available())
        await asyncio.sleep(0.02)
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.writer.transport.abort()
        with pytest.raises(BufferIOError):
            await reading


@pytest.mark.asyncio
async def test_garbage_after_the_handshake_fails_the_connection(tls_contexts: Contexts) -> None:
    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts) as (proto, client):
        await upgrade(proto, client, tls_contexts)
        client.writer.write(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # a record that fails its MAC
        with pytest.raises(BufferIOError) as failed:
            await proto.read_available()
        assert isinstance(failed.value.error, ssl.SSLError)
        await proto.wait_closed()


@pytest.mark.asyncio
async def test_a_protocol_with_no_room_fails_the_connection_instead_of_spinning(
    tls_contexts: Contexts,
) -> None:
    class NoRoom(asyncio.BufferedProtocol):
        lost: asyncio.Future[Exception | None]

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.lost = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint: int) -> bytearray:
            return bytearray()

        def buffer_updated(self, nbytes: int) -> None:
            raise AssertionError("no room was given")

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost.set_result(exc)

    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts) as (proto, client):
        await upgrade(proto, client, tls_contexts)
        target = NoRoom()
        proto.hand_over(target)
        client.send(b"data")
        assert isinstance(await target.lost, RuntimeError)


# -- bounds ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_full_buffer_stops_reading_the_socket_so_the_incoming_bio_stays_bounded(
    tls_contexts: Contexts,
) -> None:
    cfg = HandoffBufferConfig(max_len=16 * 1024, read_reserve=4096)
    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts, cfg) as (proto, client):
        await upgrade(proto, client, tls_contexts)
        tls = proto.transport
        assert isinstance(tls, TLSTransport)
        payload = pattern(8 * 1024 * 1024, 3)
        client.send(payload)  # far more than the buffer, the BIO and the kernel hold
        sending = asyncio.ensure_future(client.writer.drain())
        await asyncio.sleep(0.3)  # nobody reads: the buffer fills, the socket is not read
        assert len(proto.buffer) == cfg.max_len
        assert not tls.is_reading()
        assert tls._in.pending <= CIPHERTEXT_READ + RECORD + 256
        got = bytearray()
        while len(got) < len(payload):
            assert await proto.read_available() > 0
            assert len(proto.buffer) <= cfg.max_len
            assert tls._in.pending <= CIPHERTEXT_READ + RECORD + 256
            got += proto.buffer.freeze_all()
        await sending
        assert got == payload


# -- arguments and state are checked at the call -----------------------------------------------


@pytest.mark.asyncio
async def test_bad_arguments_are_refused_at_the_call_and_the_connection_stays_plaintext(
    tls_contexts: Contexts,
) -> None:
    client_ctx, server_ctx = tls_contexts
    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts) as (proto, client):
        raw = proto.transport
        buffered = len(proto.buffer)
        bad: list[tuple[type[Exception], dict[str, object]]] = [
            (TypeError, {"ssl_context": "ctx", "server_side": True}),
            (TypeError, {"ssl_context": server_ctx, "server_side": 1}),
            (TypeError, {"ssl_context": client_ctx, "server_side": False, "server_hostname": 1}),
            (ValueError, {"ssl_context": client_ctx, "server_side": False}),  # no host name
            (ValueError, {"ssl_context": server_ctx, "server_side": True, "server_hostname": "x"}),
            (ValueError, {"ssl_context": server_ctx, "server_side": True, "handshake_timeout": 0}),
            (TypeError, {"ssl_context": server_ctx, "server_side": True, "handshake_timeout": "1"}),
            (ValueError, {"ssl_context": server_ctx, "server_side": True, "flush": object()}),
        ]
        for error, kwargs in bad:
            with pytest.raises(error):
                await proto.start_tls(**kwargs)  # type: ignore[arg-type]
        reading = asyncio.ensure_future(proto.read_until(b"never"))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="another task"):
            await proto.start_tls(server_ctx, server_side=True)
        reading.cancel()
        with pytest.raises(RuntimeError, match="no transport"):
            await HandoffProtocol().start_tls(server_ctx, server_side=True)
        assert proto.transport is raw and len(proto.buffer) == buffered  # nothing changed
        await upgrade(proto, client, tls_contexts)  # and it still upgrades
        with pytest.raises(RuntimeError, match="already runs TLS"):
            await proto.start_tls(server_ctx, server_side=True)
        client.send(b"ok\n")
        assert await proto.read_until(b"\n") == b"ok\n"


def test_the_handshake_error_names_its_cause_and_survives_pickling() -> None:
    error = TLSHandshakeError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
    assert str(error) == "TLS handshake failed: [SSL: WRONG_VERSION_NUMBER] wrong version number"
    assert isinstance(error, HandoffError) and error.__cause__ is error.error
    clone = pickle.loads(pickle.dumps(error))
    assert (type(clone), str(clone), repr(clone.error)) == (
        TLSHandshakeError,
        str(error),
        repr(error.error),
    )
    assert str(TLSHandshakeError(TimeoutError())) == "TLS handshake failed: TimeoutError"


@pytest.mark.asyncio
async def test_tls_transport_refuses_half_close_and_closes_with_close_notify(
    tls_contexts: Contexts,
) -> None:
    async with asyncio.timeout(WAIT), starttls_pair(tls_contexts) as (proto, client):
        await upgrade(proto, client, tls_contexts)
        tls = proto.transport
        assert tls is not None and not tls.can_write_eof()
        with pytest.raises(NotImplementedError):
            tls.write_eof()
        tls.write(b"bye\n")
        tls.close()
        assert tls.is_closing()
        tls.write(b"dropped")  # after close: dropped, as asyncio's transports do
        assert await client.recv_to_close() == (b"bye\n", "close_notify")
        await proto.wait_closed()
