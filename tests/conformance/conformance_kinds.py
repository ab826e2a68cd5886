"""Every reader and writer kind the library supports, in one shape for the conformance suite.

A kind opens one connection and hands back an :class:`Endpoint`: the library's
end (a ``HandoffBuffer`` with its read step, a ``WriteHandoff``, a local close
and abort) and the test's :class:`Peer` (send, receive, half-close, reset).
Giving a new adapter the whole contract is adding one factory to :data:`KINDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

import bytes_handoff.anyio_streams  # noqa: F401  (registers the anyio adapters)
from bytes_handoff import (
    HandoffBuffer,
    HandoffBufferConfig,
    HandoffProtocol,
    WriteHandoff,
    WriteHandoffConfig,
    build_proxy_header_v2,
    duplex_pair,
    open_handoff_connection,
    parse_proxy_header,
    start_handoff_server,
    stop_waiting,
    tunnel,
)

#: The library end's read bound: small, so that a full buffer is reached soon.
MAX_LEN = 16 * 1024
#: The library end's write queue: small, so that a peer that does not read stops it soon.
WRITE_CFG = WriteHandoffConfig(max_items=64, max_pending_bytes=64 * 1024)
#: Kernel buffers on every socket the kinds make.
SOCKET_BUFFER = 16 * 1024

Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


def shrink(sock: socket.socket) -> None:
    """Small kernel buffers, so that back-pressure reaches the library within a few KiB."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)


def abort_transport(transport: Any) -> None:
    """``transport.abort()``, unless its connection is gone: asyncio's transports fail
    there (their loop is already dropped) when ``close()`` ended them first."""
    try:
        sock = transport.get_extra_info("socket")
    except AttributeError:  # asyncio's TLS transport, once its connection ended
        return
    if sock is None or sock.fileno() >= 0:
        transport.abort()


def linger_zero(sock: socket.socket) -> None:
    """Closing ``sock`` now sends a reset, not an orderly end of stream."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- the peer: the test's end of the connection ----------------------------------------------


class Peer:
    """The other end of a connection, driven by the test.

    Its own operations run as tasks it tracks, so that a reset or close first
    ends them: a socket must never close under a wait the loop still holds.
    """

    half_close = True  # whether it can end its sending and keep receiving

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel its own pending operations and wait until they ended."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks))

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def recv(self) -> bytes:
        """Some bytes; ``b""`` at end of stream; ``ConnectionError`` on a reset."""
        raise NotImplementedError

    async def shut_write(self) -> None:
        raise NotImplementedError

    async def reset(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def recv_all(self) -> tuple[bytes, bool]:
        """Everything until end of stream or a reset: ``(bytes, whether it ended cleanly)``."""
        out = bytearray()
        try:
            while chunk := await self.recv():
                out += chunk
        except (ConnectionError, ssl.SSLError, OSError):
            return bytes(out), False
        return bytes(out), True


class SocketPeer(Peer):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv(self) -> bytes:
        return await asyncio.get_running_loop().sock_recv(self.sock, 65536)

    async def shut_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    async def reset(self) -> None:
        await self.stop()
        if self.sock.fileno() >= 0:
            linger_zero(self.sock)
        self.sock.close()

    async def close(self) -> None:
        await self.stop()
        self.sock.close()


class StreamPeer(Peer):
    """A peer over asyncio streams: the TLS kinds' peer."""

    half_close = False  # TLS has no half-close

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> bytes:
        return await self.reader.read(65536)

    async def shut_write(self) -> None:
        raise AssertionError("a TLS peer cannot half-close")

    async def reset(self) -> None:
        await self.stop()
        sock = self.writer.get_extra_info("socket")
        if sock is not None and sock.fileno() >= 0:
            linger_zero(sock)
        abort_transport(self.writer.transport)

    async def close(self) -> None:
        await self.stop()
        self.writer.close()  # close_notify, then wait for the other side's
        # Shielded: a cancelled wait_closed() cancels the writer's own close future.
        closing = asyncio.shield(self.writer.wait_closed())
        try:
            async with asyncio.timeout(1):
                await closing
        except TimeoutError:
            abort_transport(self.writer.transport)  # a side that does not read never answers
        except (ConnectionError, ssl.SSLError):
            pass


class DuplexPeer(Peer):
    def __init__(self, end: Any) -> None:
        super().__init__()
        self.end = end

    async def send(self, data: bytes) -> None:
        await self.end.write(data)

    async def recv(self) -> bytes:
        return bytes(await self.end.read(65536))

    async def shut_write(self) -> None:
        self.end.shutdown_write()

    async def reset(self) -> None:  # an in-memory pipe has no reset: its nearest is a drop
        await self.stop()
        self.end.close()

    async def close(self) -> None:
        await self.stop()
        self.end.close()


# -- the library's end ---------------------------------------------------------------------------


@dataclass
class Endpoint:
    """One connection of a kind, from the library's side, and its peer."""

    kind: str
    buf: HandoffBuffer
    read: Callable[[], Awaitable[int]]  # one read step: the bytes added, 0 at end of stream
    out: WriteHandoff
    close: Callable[[], Awaitable[None]]  # the kind's ordinary local close
    abort: Callable[[], Awaitable[None]]  # the kind's local abort (a reset where it has one)
    peer: Peer
    #: Makes the kind's own callback raise on the next bytes (None: the kind has no callback).
    break_callback: Callable[[], None] | None = None
    #: The kind's own tasks (a tunnel relay): they must end too.
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


Kind = Callable[[Any], contextlib.AbstractAsyncContextManager[Endpoint]]


@contextlib.asynccontextmanager
async def _listener() -> AsyncIterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    shrink(listener)  # accepted sockets inherit it, before the window is agreed
    listener.setblocking(False)
    with listener:
        yield listener


async def _connected_socket(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket()
    shrink(sock)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    return sock


def _address(server: asyncio.AbstractServer) -> tuple[str, int]:
    return server.sockets[0].getsockname()[:2]  # type: ignore[attr-defined,no-any-return]


@contextlib.asynccontextmanager
async def socket_kind(request: Any) -> AsyncIterator[Endpoint]:
    """A raw non-blocking TCP socket: ``recv_into`` reads, ``sendmsg`` writes."""
    loop = asyncio.get_running_loop()
    async with _listener() as listener:
        peer_sock = await _connected_socket(listener.getsockname())
        sock, _ = await loop.sock_accept(listener)
    sock.setblocking(False)
    out = WriteHandoff.spawn(sock, WRITE_CFG)

    async def close() -> None:
        # The documented way to close a socket the library may be waiting on.
        out.abort()
        stop_waiting(sock)
        sock.close()

    async def abort() -> None:
        if sock.fileno() >= 0:
            linger_zero(sock)
        await close()

    buf = HandoffBuffer(MAX_LEN)
    peer = SocketPeer(peer_sock)
    try:
        yield Endpoint("socket", buf, lambda: buf.read_available(sock), out, close, abort, peer)
    finally:
        await peer.close()
        await close()


async def _protocol_endpoint(kind: str, proto: HandoffProtocol, peer: Peer) -> Endpoint:
    assert proto.transport is not None
    transport = proto.transport

    async def close() -> None:
        transport.close()

    async def abort() -> None:
        abort_transport(transport)

    def break_callback() -> None:
        def boom(_: HandoffProtocol) -> None:
            raise RuntimeError("on_data failed (injected)")

        proto.on_data = boom

    return Endpoint(
        kind,
        proto.buffer,
        proto.read_available,
        WriteHandoff.spawn(proto, WRITE_CFG),
        close,
        abort,
        peer,
        break_callback,
    )


@contextlib.asynccontextmanager
async def _protocol_server(
    ssl_context: ssl.SSLContext | None,
) -> AsyncIterator[tuple[asyncio.AbstractServer, asyncio.Queue[HandoffProtocol]]]:
    accepted: asyncio.Queue[HandoffProtocol] = asyncio.Queue()

    class Accepted(HandoffProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            accepted.put_nowait(self)

    cfg = HandoffBufferConfig(max_len=MAX_LEN, read_reserve=4096)
    loop = asyncio.get_running_loop()
    async with _listener() as listener:
        server = await loop.create_server(lambda: Accepted(cfg), sock=listener, ssl=ssl_context)
        try:
            yield server, accepted
        finally:
            await _close_server(server)


async def _close_server(server: asyncio.AbstractServer) -> None:
    server.close()
    async with asyncio.timeout(5):
        await server.wait_closed()


async def _close_transport(proto: HandoffProtocol) -> None:
    if proto.transport is not None and not proto.closed:
        abort_transport(proto.transport)
    async with asyncio.timeout(5):
        await proto.wait_closed()


@contextlib.asynccontextmanager
async def protocol_kind(request: Any) -> AsyncIterator[Endpoint]:
    """The protocol path over plain TCP: the loop reads into the buffer; writes go to the
    transport with ``writelines``."""
    async with _protocol_server(None) as (server, accepted):
        peer = SocketPeer(await _connected_socket(_address(server)))
        proto = await accepted.get()
        try:
            yield await _protocol_endpoint("protocol", proto, peer)
        finally:
            await peer.close()
            await _close_transport(proto)


async def _tls_peer(address: tuple[str, int], client_ctx: ssl.SSLContext) -> StreamPeer:
    sock = socket.socket()
    shrink(sock)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    reader, writer = await asyncio.open_connection(
        sock=sock, ssl=client_ctx, server_hostname="localhost"
    )
    return StreamPeer(reader, writer)


@contextlib.asynccontextmanager
async def protocol_tls_kind(request: Any) -> AsyncIterator[Endpoint]:
    """The protocol path over TLS (``ssl=`` on ``create_server``)."""
    client_ctx, server_ctx = request.getfixturevalue("tls_contexts")
    async with _protocol_server(server_ctx) as (server, accepted):
        peer = await _tls_peer(_address(server), client_ctx)
        proto = await accepted.get()
        try:
            yield await _protocol_endpoint("protocol-tls", proto, peer)
        finally:
            await peer.close()
            await _close_transport(proto)


@contextlib.asynccontextmanager
async def protocol_starttls_kind(request: Any) -> AsyncIterator[Endpoint]:
    """The protocol path upgraded in place: plain TCP, a ``STARTTLS`` line, then
    ``proto.start_tls()`` while the peer starts TLS on its asyncio stream."""
    client_ctx, server_ctx = request.getfixturevalue("tls_contexts")
    async with _protocol_server(None) as (server, accepted):
        sock = await _connected_socket(_address(server))
        reader, writer = await asyncio.open_connection(sock=sock)
        peer = StreamPeer(reader, writer)
        writer.write(b"STARTTLS\r\n")
        proto = await accepted.get()
        try:
            assert await proto.read_until(b"\r\n") == b"STARTTLS\r\n"
            upgrading = asyncio.ensure_future(proto.start_tls(server_ctx, server_side=True))
            await writer.start_tls(client_ctx, server_hostname="localhost")
            await upgrading
            yield await _protocol_endpoint("protocol-starttls", proto, peer)
        finally:
            await peer.close()
            await _close_transport(proto)


@contextlib.asynccontextmanager
async def protocol_proxy_header_kind(request: Any) -> AsyncIterator[Endpoint]:
    """The protocol path after a PROXY v2 header, sent in one segment with the first
    line: the header is parsed off the buffer and the line read from what it left."""
    async with _protocol_server(None) as (server, accepted):
        sock = await _connected_socket(_address(server))
        peer = SocketPeer(sock)
        header = build_proxy_header_v2(("192.0.2.1", 40000), ("198.51.100.7", 443))
        await peer.send(header + b"HELLO\r\n")
        proto = await accepted.get()
        try:
            parsed = None
            while parsed is None:
                parsed = parse_proxy_header(proto.buffer)
                if parsed is None:
                    assert await proto.read_available() > 0, "peer ended inside the header"
            assert parsed.source is not None and parsed.source[1] == 40000
            assert await proto.read_until(b"\r\n") == b"HELLO\r\n"
            yield await _protocol_endpoint("protocol-proxy-header", proto, peer)
        finally:
            await peer.close()
            await _close_transport(proto)


@contextlib.asynccontextmanager
async def protocol_adopted_kind(request: Any) -> AsyncIterator[Endpoint]:
    """A connection first read by a plain ``asyncio.Protocol`` up to a ``SWITCH`` line, then
    adopted by a fresh ``HandoffProtocol`` with the bytes that protocol had left over."""
    adopted: asyncio.Queue[HandoffProtocol] = asyncio.Queue()
    cfg = HandoffBufferConfig(max_len=MAX_LEN, read_reserve=4096)

    class LineFirst(asyncio.Protocol):
        def __init__(self) -> None:
            self.head = b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.head += data
            line, sep, tail = self.head.partition(b"\r\n")
            if sep:
                assert line == b"SWITCH"
                proto = HandoffProtocol(cfg)
                proto.adopt(self.transport, tail)
                adopted.put_nowait(proto)

    loop = asyncio.get_running_loop()
    async with _listener() as listener:
        server = await loop.create_server(LineFirst, sock=listener)
        try:
            sock = await _connected_socket(_address(server))
            peer = SocketPeer(sock)
            await peer.send(b"SWITCH\r\nHELLO\r\n")  # the tail in the switch's own segment
            async with asyncio.timeout(5):
                proto = await adopted.get()
            try:
                assert await proto.read_until(b"\r\n") == b"HELLO\r\n"
                yield await _protocol_endpoint("protocol-adopted", proto, peer)
            finally:
                await peer.close()
                await _close_transport(proto)
        finally:
            await _close_server(server)


@contextlib.asynccontextmanager
async def streams_kind(request: Any) -> AsyncIterator[Endpoint]:
    """asyncio streams: a ``StreamReader`` read with one copy, a ``StreamWriter`` written."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    async with _listener() as listener:
        server = await asyncio.start_server(on_connect, sock=listener)
        try:
            peer = SocketPeer(await _connected_socket(_address(server)))
            reader, writer = await accepted.get()

            async def close() -> None:
                writer.close()

            async def abort() -> None:
                abort_transport(writer.transport)

            buf = HandoffBuffer(MAX_LEN)
            out = WriteHandoff.spawn(writer, WRITE_CFG)
            try:
                yield Endpoint(
                    "streams", buf, lambda: buf.read_available(reader), out, close, abort, peer
                )
            finally:
                await peer.close()
                abort_transport(writer.transport)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await writer.wait_closed()
        finally:
            await _close_server(server)


@contextlib.asynccontextmanager
async def duplex_kind(request: Any) -> AsyncIterator[Endpoint]:
    """The in-memory duplex pipe."""
    local, remote = duplex_pair(SOCKET_BUFFER)

    async def close() -> None:
        local.close()

    buf = HandoffBuffer(MAX_LEN)
    out = WriteHandoff.spawn(local, WRITE_CFG)
    peer = DuplexPeer(remote)
    try:
        yield Endpoint("duplex", buf, lambda: buf.read_available(local), out, close, close, peer)
    finally:
        await peer.close()
        local.close()


async def _anyio_endpoint(kind: str, stream: Any, peer: Peer) -> Endpoint:
    async def close() -> None:
        # A TLS stream's close_notify exchange fails while another task reads
        # (BusyResourceError) or the peer still sends (SSLError); anyio then closes
        # it forcefully and raises: what its user gets, not the library's doing.
        with contextlib.suppress(anyio.BusyResourceError, anyio.BrokenResourceError, ssl.SSLError):
            await stream.aclose()

    async def abort() -> None:
        raw = stream.extra(SocketAttribute.raw_socket)
        if raw.fileno() >= 0:
            linger_zero(raw)
        await anyio.aclose_forcefully(stream)

    buf = HandoffBuffer(MAX_LEN)
    out = WriteHandoff.spawn(stream, WRITE_CFG)
    return Endpoint(kind, buf, lambda: buf.read_available(stream), out, close, abort, peer)


@contextlib.asynccontextmanager
async def anyio_kind(request: Any) -> AsyncIterator[Endpoint]:
    """An anyio ``SocketStream`` (``receive`` / ``send``)."""
    loop = asyncio.get_running_loop()
    async with _listener() as listener:
        host, port = listener.getsockname()[:2]
        connecting = asyncio.ensure_future(anyio.connect_tcp(host, port))
        peer_sock, _ = await loop.sock_accept(listener)
        stream = await connecting
    shrink(stream.extra(SocketAttribute.raw_socket))
    peer_sock.setblocking(False)
    peer = SocketPeer(peer_sock)
    try:
        yield await _anyio_endpoint("anyio", stream, peer)
    finally:
        await peer.close()
        await anyio.aclose_forcefully(stream)


@contextlib.asynccontextmanager
async def anyio_tls_kind(request: Any) -> AsyncIterator[Endpoint]:
    """An anyio ``TLSStream`` over TCP, the peer a TLS server on asyncio streams."""
    client_ctx, server_ctx = request.getfixturevalue("tls_contexts")
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    async with _listener() as listener:
        server = await asyncio.start_server(on_connect, sock=listener, ssl=server_ctx)
        try:
            host, port = _address(server)
            tcp = await anyio.connect_tcp(host, port)
            shrink(tcp.extra(SocketAttribute.raw_socket))
            stream = await TLSStream.wrap(tcp, hostname="localhost", ssl_context=client_ctx)
            peer = StreamPeer(*await accepted.get())
            try:
                yield await _anyio_endpoint("anyio-tls", stream, peer)
            finally:
                await peer.close()
                await anyio.aclose_forcefully(stream)
        finally:
            await _close_server(server)


def _tunnel_kind(splice: bool) -> Kind:
    @contextlib.asynccontextmanager
    async def kind(request: Any) -> AsyncIterator[Endpoint]:
        """The connection after a ``tunnel()`` switch: the peer reaches the library's end
        through a relay that reads a head, then tunnels both ways (the tail kept)."""

        async def relay(client: HandoffProtocol) -> None:
            head = await client.read_until(b"\n")
            assert head == b"TUNNEL\n", head
            target = await open_handoff_connection(sock=await _connected_socket(_address(server)))
            try:
                ends = [
                    asyncio.ensure_future(tunnel(a.buffer, a, WriteHandoff.spawn(b), splice=splice))
                    for a, b in ((client, target), (target, client))
                ]
                relays.extend(ends)
                # A failure on one side ends both: a proxy does not keep half a broken tunnel.
                await asyncio.wait(ends, return_when=asyncio.FIRST_EXCEPTION)
                failed = any(not end.done() or end.cancelled() or end.exception() for end in ends)
            except BaseException:
                failed = True
                raise
            finally:
                for proto in (client, target):
                    if proto.transport is None:
                        continue
                    if failed:
                        abort_transport(proto.transport)
                    else:  # both ends done: what the transports still buffer goes out
                        proto.transport.close()
                for end in relays:
                    end.cancel()

        relays: list[asyncio.Task[Any]] = []
        async with _protocol_server(None) as (server, accepted), _listener() as listener:
            relay_server = await start_handoff_server(relay, sock=listener)
            try:
                peer = SocketPeer(await _connected_socket(_address(relay_server)))
                await peer.send(b"TUNNEL\n")
                proto = await accepted.get()
                name = "tunnel-splice" if splice else "tunnel-copy"
                endpoint = await _protocol_endpoint(name, proto, peer)
                endpoint.tasks = relays
                try:
                    yield endpoint
                finally:
                    await peer.close()
                    await _close_transport(proto)
                    if relays:
                        async with asyncio.timeout(5):
                            await asyncio.wait(relays)
            finally:
                await _close_server(relay_server)

    return kind


@dataclass(frozen=True)
class KindSpec:
    """How to open a kind, and which states and faults apply to it."""

    open: Kind
    half_close: bool = True  # its peer can end sending and keep receiving (not TLS)
    callback: bool = False  # a library callback runs on every read (the protocol path)


#: Every kind of reader and writer, by the name tests show.
KINDS: dict[str, KindSpec] = {
    "socket": KindSpec(socket_kind),
    "protocol": KindSpec(protocol_kind, callback=True),
    "protocol-tls": KindSpec(protocol_tls_kind, half_close=False, callback=True),
    "protocol-starttls": KindSpec(protocol_starttls_kind, half_close=False, callback=True),
    "protocol-proxy-header": KindSpec(protocol_proxy_header_kind, callback=True),
    "protocol-adopted": KindSpec(protocol_adopted_kind, callback=True),
    "streams": KindSpec(streams_kind),
    "duplex": KindSpec(duplex_kind),
    "anyio": KindSpec(anyio_kind),
    "anyio-tls": KindSpec(anyio_tls_kind, half_close=False),
    "tunnel-splice": KindSpec(_tunnel_kind(splice=True), callback=True),
    "tunnel-copy": KindSpec(_tunnel_kind(splice=False), callback=True),
}
