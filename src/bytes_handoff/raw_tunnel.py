"""Forward the rest of a stream once a parser switches to raw tunnel mode.

``await tunnel(buf, source, handoff)`` first hands the bytes the parser already
read (``buf``'s tail) to ``handoff``, then forwards everything else ``source``
sends until end of stream, and finally closes ``handoff`` (flush + shut the
write side). On Linux, when both ends are plain sockets -- raw sockets, or the
TCP transports of a :class:`~bytes_handoff.HandoffProtocol` and the protocol a
handoff writes to -- the rest moves kernel to kernel with ``os.splice`` through
a pipe: no byte enters Python. Elsewhere (TLS, the duplex, asyncio streams,
other platforms) it copies: one read, one owned chunk.

The tunnel owns ``handoff`` from the call on: other producers must have
finished submitting (their queued chunks are written first, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import AsyncIterator, Coroutine

from .adapters import (
    SocketWriter,
    as_reader,
    check_plain_nonblocking,
    wait_readable,
    wait_writable,
)
from .errors import BufferIOError, WriteClosed, WriteIOError
from .protocol import HandoffProtocol, TransportWriter
from .read_buffer import HandoffBuffer
from .write_queue import WriteHandoff

__all__ = ["splice_supported", "tunnel"]

#: Pipe size asked for; the kernel may give less (``/proc/sys/fs/pipe-max-size``).
PIPE_SIZE = 1024 * 1024


def splice_supported() -> bool:
    """Whether this platform has ``os.splice`` (Linux, Python >= 3.10)."""
    return hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")


def _plain_transport_socket(proto: HandoffProtocol) -> socket.socket | None:
    """The TCP/Unix socket under ``proto``'s transport, or ``None`` (TLS, pipes, closed)."""
    transport = proto.transport
    if transport is None or proto.closed or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    return sock  # type: ignore[no-any-return]


async def tunnel(
    buf: HandoffBuffer,
    source: object,
    handoff: WriteHandoff,
    *,
    splice: bool = True,
    idle_timeout: float | None = None,
) -> int:
    """Forward ``buf``'s tail, then all of ``source``, into ``handoff``; return the byte count.

    ``source`` is what ``buf`` reads from (a socket, a stream, a duplex end) or
    the :class:`~bytes_handoff.HandoffProtocol` whose ``buffer`` is ``buf``.
    Every byte taken from ``buf`` or read from ``source`` is forwarded, in
    order, whatever its size: pieces larger than the handoff's byte budget go
    as several chunks. What is refused (a closed ``handoff``, a TLS or
    blocking socket, an unsupported ``source``) is refused before anything is
    taken, so the tail is still in ``buf``. A protocol source is read by the
    tunnel from the call on (its ``on_data`` cleared, reading resumed if it was
    paused); on the splice path its transport is left paused: close it afterwards. Closing or
    aborting either protocol's transport meanwhile ends the tunnel, as does
    ``handoff`` failing while the source is quiet.

    ``splice=False`` forces the copy path. ``idle_timeout`` (seconds) bounds
    every wait, on both ends: for the source to send, for the destination to
    take more, and for the final flush (at most the handoff's byte budget);
    ``TimeoutError`` if one passes, with the handoff aborted. Reader failures
    raise ``BufferIOError``, writer failures ``WriteIOError`` (chaining the
    ``OSError``) on every path; the handoff is closed either way.
    """
    sink = handoff.writer
    src_sock: socket.socket | None = None
    dst_sock: socket.socket | None = None
    reader: object = None
    # Refuse before taking anything, so a refused call loses no byte.
    if isinstance(source, HandoffProtocol):
        if source.buffer is not buf:
            raise ValueError("tunnel() from a HandoffProtocol takes that protocol's own buffer")
        if splice and splice_supported() and isinstance(sink, TransportWriter):
            src_sock = _plain_transport_socket(source)
            dst_sock = _plain_transport_socket(sink.protocol)
    elif (
        splice
        and splice_supported()
        and isinstance(source, socket.socket)
        and (isinstance(sink, SocketWriter))
    ):
        check_plain_nonblocking(source)
        check_plain_nonblocking(sink.sock)
        src_sock, dst_sock = source, sink.sock
    else:
        reader = as_reader(source)
    if handoff.closed:
        raise handoff.error or WriteClosed()
    spliced = src_sock is not None and dst_sock is not None
    src_proto = source if isinstance(source, HandoffProtocol) else None
    dst_proto = sink.protocol if isinstance(sink, TransportWriter) else None
    if src_proto is not None:
        # The tunnel reads it now: a parser's callback would take the wake-ups of its reads.
        src_proto.on_data = None
    try:
        if src_proto is not None and spliced:
            src_proto.pause_reading()  # from here on the socket's bytes are spliced, not read
        moving = _move(buf, src_proto, dst_proto, reader, handoff, src_sock, dst_sock, idle_timeout)
        # A close of either protocol's transport, or the handoff failing, ends it early.
        total = await _until_lost(moving, src_proto, dst_proto, handoff)
    except WriteClosed:
        handoff.abort()
        # The handoff closed under us because its writer failed: raise that failure
        # (it chains the writer's OSError), not the refusal it caused.
        error = handoff.error
        if error is not None:
            raise error from error.error
        raise
    except BaseException:
        handoff.abort()
        raise
    async with asyncio.timeout(idle_timeout):
        await handoff.aclose()  # cancelled by the timeout, it aborts
    return total


async def _move(
    buf: HandoffBuffer,
    src_proto: HandoffProtocol | None,
    dst_proto: HandoffProtocol | None,
    reader: object,
    handoff: WriteHandoff,
    src_sock: socket.socket | None,
    dst_sock: socket.socket | None,
    idle_timeout: float | None,
) -> int:
    """The tail, then the rest: spliced when both sockets are given, else copied."""
    total = 0
    if buf:
        tail = buf.freeze_all()
        total += len(tail)
        await _forward(handoff, tail, idle_timeout)
    if src_sock is not None and dst_sock is not None:
        # Everything queued must reach the sink before spliced bytes do.
        async with asyncio.timeout(idle_timeout):
            await handoff.flush()
        if src_proto is not None:
            assert dst_proto is not None
            total += await _splice_transports(
                src_proto, dst_proto, src_sock, dst_sock, idle_timeout
            )
        else:
            total += await _splice(src_sock, dst_sock, idle_timeout)
    elif src_proto is not None:
        src_proto.resume_reading()  # the tunnel reads it now, whoever paused it before
        total += await _copy_protocol(src_proto, handoff, idle_timeout)
    else:
        total += await _copy(buf, reader, handoff, idle_timeout)
    return total


async def _drained(proto: HandoffProtocol) -> None:
    """Wait until ``proto``'s transport has handed every buffered byte to its socket."""
    transport = proto.transport
    assert transport is not None
    if not transport.get_write_buffer_size():
        return
    low, high = transport.get_write_buffer_limits()
    # With both marks at 0 the transport pauses us while anything is buffered and
    # resumes us exactly when its buffer is empty.
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        while transport.get_write_buffer_size():
            if proto.closed or transport.is_closing():
                # Closed under us: it flushes (or drops) its buffer on its own now, and
                # _writable() would return at once: looping on it would freeze the loop.
                raise WriteIOError(proto.exception or _aborted("destination"))
            if proto._write_paused:
                await proto._writable()
            else:
                await asyncio.sleep(0.001)
    finally:
        if not proto.closed and not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)


def _check_source(proto: HandoffProtocol) -> None:
    """``BufferIOError`` if ``proto``'s connection was lost other than by the peer's end."""
    proto._raise_if_failed()
    if proto.closed and not proto._eof_from_peer:
        raise BufferIOError(_aborted("source"))  # closed here: not the end of the stream


async def _splice_transports(
    src_proto: HandoffProtocol,
    dst_proto: HandoffProtocol,
    src_sock: socket.socket,
    dst_sock: socket.socket,
    idle_timeout: float | None,
) -> int:
    """Splice between two transports' sockets until end of stream, an error, or a close.

    The splice runs on duplicated descriptors, which the loop watches apart from
    the (paused) transports. A duplicate keeps the kernel socket open, so a
    ``close()`` or ``abort()`` of either transport alone would not close its
    connection: it ends the splice here (``_until_lost``), and the duplicates,
    by then the last descriptors, close with it, so the peer sees the close.
    """
    _check_source(src_proto)
    if src_proto.at_eof:
        return 0  # the peer ended before the switch: nothing left to splice
    async with asyncio.timeout(idle_timeout):
        await _drained(dst_proto)  # the transport's own buffer goes before spliced bytes
    _check_source(src_proto)
    async with _dup(src_sock) as src, _dup(dst_sock) as dst:
        return await _splice(src, dst, idle_timeout)


async def _until_lost(
    work: Coroutine[object, object, int],
    src_proto: HandoffProtocol | None,
    dst_proto: HandoffProtocol | None,
    handoff: WriteHandoff,
) -> int:
    """``await work``, ended early by either protocol's lost connection or a failed handoff.

    A wait on one end of a tunnel does not notice the other end's transport
    closing, nor the handoff failing while the source is quiet; without this a
    tunnel would outlive them.
    """
    protos = [p for p in (src_proto, dst_proto) if p is not None]
    task = asyncio.ensure_future(work)
    closing = [asyncio.ensure_future(p.wait_closed()) for p in protos]
    writer = handoff._task  # ends only when the handoff fails or is aborted meanwhile
    try:
        await asyncio.wait([task, writer, *closing], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in closing:
            fut.cancel()
        if not task.done():
            task.cancel()
            # Let it unregister its waits before the caller closes their descriptors.
            await asyncio.wait([task])
    if not task.cancelled():
        return task.result()  # its own end wins over a close seen at the same time
    if src_proto is not None and src_proto.closed:
        raise BufferIOError(src_proto.exception or _aborted("source"))
    if dst_proto is not None and dst_proto.closed:
        raise WriteIOError(dst_proto.exception or _aborted("destination"))
    raise handoff.error or WriteClosed("write handoff closed mid-tunnel")


def _aborted(end: str) -> OSError:
    return ConnectionAbortedError(errno.ECONNABORTED, f"{end} transport closed mid-tunnel")


@contextlib.asynccontextmanager
async def _dup(sock: socket.socket) -> AsyncIterator[socket.socket]:
    """A second descriptor of a transport's socket: the loop watches it apart from the transport."""
    try:
        dup = socket.socket(fileno=os.dup(sock.fileno()))
    except OSError as exc:  # EMFILE, or the socket closed meanwhile
        raise BufferIOError(exc) from exc
    try:
        dup.setblocking(False)
        yield dup
    finally:
        dup.close()


async def _copy_protocol(
    proto: HandoffProtocol, handoff: WriteHandoff, idle_timeout: float | None
) -> int:
    total = 0
    buf = proto.buffer
    while True:
        async with asyncio.timeout(idle_timeout):
            n = await proto.read_available()
        if n == 0:
            _check_source(proto)
            return total
        total += len(buf)
        await _forward(handoff, buf.freeze_all(), idle_timeout)


async def _forward(handoff: WriteHandoff, data: bytes, idle_timeout: float | None) -> None:
    """Queue ``data`` in chunks no larger than the handoff's byte budget (no copies).

    Each wait for room is a wait for the destination to take bytes: bounded
    by ``idle_timeout``.
    """
    budget = handoff.config.max_pending_bytes
    if len(data) <= budget:
        async with asyncio.timeout(idle_timeout):
            await handoff.write_fire_and_forget(data)
        return
    with memoryview(data) as view:
        for i in range(0, len(data), budget):
            async with asyncio.timeout(idle_timeout):
                await handoff.write_fire_and_forget(view[i : i + budget])


async def _copy(
    buf: HandoffBuffer, reader: object, handoff: WriteHandoff, idle_timeout: float | None
) -> int:
    total = 0
    while True:
        async with asyncio.timeout(idle_timeout):
            n = await buf.read_available(reader)
        if n == 0:
            return total
        total += n
        await _forward(handoff, buf.freeze_all(), idle_timeout)


async def _splice(src: socket.socket, dst: socket.socket, idle_timeout: float | None) -> int:
    # Hot path: two splice(2) calls per pipe-full; Python only waits for readiness.
    import fcntl  # Linux only, like splice: importing the package must work everywhere

    try:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:  # EMFILE, ENFILE: reported like the reader's own failure
        raise BufferIOError(exc) from exc
    try:
        try:
            chunk = fcntl.fcntl(wfd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        except OSError:
            chunk = 64 * 1024
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        src_fd, dst_fd = src.fileno(), dst.fileno()
        total = 0
        while True:
            if src.gettimeout() != 0.0 or dst.gettimeout() != 0.0:
                # Switched to blocking since the call: splice would freeze the loop.
                check_plain_nonblocking(src)
                check_plain_nonblocking(dst)
            try:
                n = os.splice(src_fd, wfd, chunk, flags=flags)
            except (BlockingIOError, InterruptedError):
                async with asyncio.timeout(idle_timeout):
                    await wait_readable(src)
                continue
            except OSError as exc:
                raise BufferIOError(exc) from exc
            if n == 0:
                return total
            total += n
            while n:
                try:
                    n -= os.splice(rfd, dst_fd, n, flags=flags)
                except (BlockingIOError, InterruptedError):
                    async with asyncio.timeout(idle_timeout):
                        await wait_writable(dst)
                except OSError as exc:
                    raise WriteIOError(exc) from exc
    finally:
        os.close(rfd)
        os.close(wfd)
