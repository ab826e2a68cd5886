"""Forward the rest of a stream once a parser switches to raw tunnel mode.

``await tunnel(buf, source, handoff)`` first hands the bytes the parser already
read (``buf``'s tail) to ``handoff``, then forwards everything else ``source``
sends until end of stream, and finally closes ``handoff`` (flush + shut the
write side). When ``source`` is a socket and ``handoff`` writes to a socket on
Linux, the rest moves kernel to kernel with ``os.splice`` through a pipe: no
byte enters Python. Elsewhere it falls back to the buffered copy path
(``read_available`` + ``freeze_all`` + ``write_fire_and_forget``).

The tunnel owns ``handoff`` from the call on: other producers must have
finished submitting (their queued chunks are written first, in order).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket

from .adapters import (
    SocketWriter,
    as_reader,
    check_plain_nonblocking,
    wait_readable,
    wait_writable,
)
from .errors import BufferIOError, WriteClosed, WriteIOError
from .read_buffer import HandoffBuffer
from .write_queue import WriteHandoff

__all__ = ["splice_supported", "tunnel"]

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: Pipe size asked for; the kernel may give less (``/proc/sys/fs/pipe-max-size``).
PIPE_SIZE = 1024 * 1024


def splice_supported() -> bool:
    """Whether this platform has ``os.splice`` (Linux, Python >= 3.10)."""
    return hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")


async def tunnel(
    buf: HandoffBuffer,
    source: object,
    handoff: WriteHandoff,
    *,
    splice: bool = True,
    idle_timeout: float | None = None,
) -> int:
    """Forward ``buf``'s tail, then all of ``source``, into ``handoff``; return the byte count.

    Every byte taken from ``buf`` or read from ``source`` is forwarded, in
    order, whatever its size: pieces larger than the handoff's byte budget go
    as several chunks. What is refused (a closed ``handoff``, a TLS or
    blocking socket, an unsupported ``source``) is refused before anything is
    taken, so the tail is still in ``buf``.

    ``splice=False`` forces the buffered copy path. ``idle_timeout`` (seconds)
    bounds each wait for the source; ``TimeoutError`` if it passes. Reader
    failures raise ``BufferIOError``, writer failures ``WriteIOError``
    (chaining the ``OSError``) on both paths; the handoff is closed either way.
    """
    spliced = (
        splice
        and splice_supported()
        and isinstance(source, socket.socket)
        and isinstance(handoff.writer, SocketWriter)
    )
    # Refuse before taking anything, so a refused call loses no byte.
    reader = None
    if spliced:
        assert isinstance(source, socket.socket) and isinstance(handoff.writer, SocketWriter)
        check_plain_nonblocking(source)
        check_plain_nonblocking(handoff.writer.sock)
    else:
        reader = as_reader(source)
    if handoff.closed:
        raise handoff.error or WriteClosed()
    total = 0
    try:
        if buf:
            tail = buf.freeze_all()
            total += len(tail)
            await _forward(handoff, tail)
        if spliced:
            # Everything queued must reach the sink before spliced bytes do.
            await handoff.flush()
            assert isinstance(source, socket.socket) and isinstance(handoff.writer, SocketWriter)
            total += await _splice(source, handoff.writer.sock, idle_timeout)
        else:
            total += await _copy(buf, reader, handoff, idle_timeout)
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
    await handoff.aclose()
    return total


async def _forward(handoff: WriteHandoff, data: bytes) -> None:
    """Queue ``data`` in chunks no larger than the handoff's byte budget (no copies)."""
    budget = handoff.config.max_pending_bytes
    if len(data) <= budget:
        await handoff.write_fire_and_forget(data)
        return
    with memoryview(data) as view:
        for i in range(0, len(data), budget):
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
        await _forward(handoff, buf.freeze_all())


async def _splice(src: socket.socket, dst: socket.socket, idle_timeout: float | None) -> int:
    # Hot path: two splice(2) calls per pipe-full; Python only waits for readiness.
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            chunk = fcntl.fcntl(wfd, _F_SETPIPE_SZ, PIPE_SIZE)
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
                    await wait_writable(dst)
                except OSError as exc:
                    raise WriteIOError(exc) from exc
    finally:
        os.close(rfd)
        os.close(wfd)
