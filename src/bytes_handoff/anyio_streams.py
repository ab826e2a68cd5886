"""anyio byte streams as readers and writers (anyio's asyncio backend).

Importing this module registers :class:`AnyioReader` for every
``anyio.abc.ByteReceiveStream`` and :class:`AnyioWriter` for every
``anyio.abc.ByteSendStream`` (TCP and Unix streams, ``TLSStream``,
``BufferedByteReceiveStream``, ``StapledByteStream``, your own), so after
``import bytes_handoff.anyio_streams`` the stream itself can be passed to
``HandoffBuffer.read_available``, ``as_reader`` / ``as_writer`` and
``WriteHandoff.spawn``. The core package never imports anyio; only this module
does, and only users who have anyio import it.

anyio's ``receive()`` returns a new ``bytes`` (there is no ``receive_into``),
so every read is copied once into the buffer's spare room. Errors become the
``OSError`` a socket adapter would raise, chained to anyio's exception, so
``read_available`` wraps them in ``BufferIOError`` and ``WriteHandoff`` in
``WriteIOError``, as for every other reader and writer:

* ``EndOfStream`` is end of stream (``read_into`` returns ``0``, every time);
* ``BrokenResourceError`` keeps the transport's own error kind when anyio
  chained one (``ConnectionResetError``, ``BrokenPipeError``...), else it is
  ``ConnectionResetError`` on the read side and ``BrokenPipeError`` on the
  write side;
* ``ClosedResourceError`` (this side closed the stream) is ``OSError(EBADF)``,
  as on a closed socket;
* anything else (``BusyResourceError``: two tasks reading one stream) is a
  programming error and passes through unchanged.

Cancellation (``anyio.fail_after``, ``move_on_after``, ``task.cancel()``)
leaves a ``HandoffBuffer`` as it was: nothing is awaited between
``receive()`` returning and the bytes being stored, so a read either stores
what anyio returned or never took it from the stream.
"""

from __future__ import annotations

import errno
import weakref
from collections.abc import Sequence

try:
    import anyio
    from anyio.abc import ByteReceiveStream, ByteSendStream
except ModuleNotFoundError as exc:
    if exc.name != "anyio":
        raise
    raise ModuleNotFoundError(
        "bytes_handoff.anyio_streams needs the anyio package, which is not installed:"
        " install the anyio extra with pip install 'bytes-handoff[anyio]'"
        " (from a clone: pip install '.[anyio]')",
        name="anyio",
    ) from None

from ._types import BytesLike
from .adapters import register_reader, register_writer

__all__ = ["AnyioReader", "AnyioWriter"]

#: About the most bytes one ``AnyioWriter`` send joins (see ``write_some``).
SEND_BYTES = 128 * 1024


def _os_error(exc: Exception, broken_errno: int) -> OSError:
    """The ``OSError`` for anyio's ``ClosedResourceError`` / ``BrokenResourceError``."""
    if isinstance(exc, anyio.ClosedResourceError):
        return OSError(errno.EBADF, "anyio stream is closed")
    cause = exc.__cause__
    if isinstance(cause, OSError) and type(cause).__module__ == "builtins" and cause.errno:
        # The transport's own error: OSError(errno, ...) picks its subclass again
        # (ConnectionResetError for ECONNRESET...). ssl errors are left out: their
        # errno is an SSL error code, not a system one.
        return OSError(cause.errno, cause.strerror or str(cause))
    return OSError(broken_errno, f"anyio stream is broken: {exc!r}")


class _Excess:
    """Bytes a stream returned beyond what was asked, kept per stream until read.

    Kept by stream, not by adapter: a parser that moves on (``take_tail`` into
    a new ``HandoffBuffer``, ``tunnel()``) reads the same stream through a new
    adapter, and must get these bytes first. Streams are held weakly; one that
    cannot be (unhashable) is held by id while bytes are pending.
    """

    def __init__(self) -> None:
        self._weak: weakref.WeakKeyDictionary[object, memoryview] = weakref.WeakKeyDictionary()
        self._by_id: dict[int, tuple[object, memoryview]] = {}
        #: Whether any bytes are pending at all: the one check on the hot path.
        self.any = False

    def take(self, stream: object, view: memoryview) -> int | None:
        """Move pending bytes of ``stream`` into ``view``; ``None`` if it has none."""
        if _hashable(stream):
            pending = self._weak.get(stream)
        else:
            entry = self._by_id.get(id(stream))
            pending = entry[1] if entry is not None else None
        if pending is None:
            return None
        n = min(len(view), len(pending))
        view[:n] = pending[:n]
        self.put(stream, pending[n:])
        return n

    def put(self, stream: object, pending: memoryview) -> None:
        if _hashable(stream):
            if pending:
                self._weak[stream] = pending
            else:
                self._weak.pop(stream, None)
        elif pending:
            self._by_id[id(stream)] = (stream, pending)
        else:
            self._by_id.pop(id(stream), None)
        self.any = bool(self._weak) or bool(self._by_id)


def _hashable(obj: object) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


_EXCESS = _Excess()


class AnyioReader:
    """Reads an anyio ``ByteReceiveStream``: one ``receive(len(view))``, copied into the view.

    A stream that returns more than it was asked for (anyio's contract lets
    ``max_bytes`` be a hint) loses nothing: the excess is kept for that stream
    and served first by the next read from it, through this reader or any
    other (a new buffer after ``take_tail``, ``tunnel()``).
    """

    __slots__ = ("_receive", "_stream")

    def __init__(self, stream: ByteReceiveStream) -> None:
        self._stream = stream
        self._receive = stream.receive  # bound once: one attribute lookup less per read

    @property
    def stream(self) -> ByteReceiveStream:
        """The wrapped stream."""
        return self._stream

    async def read_into(self, view: memoryview) -> int:
        # Hot path: one receive, one copy into the buffer's spare room, no await after it.
        want = len(view)
        if want == 0:
            return 0  # anyio refuses max_bytes=0
        if _EXCESS.any and (n := _EXCESS.take(self._stream, view)) is not None:
            return n
        try:
            data = await self._receive(want)
        except anyio.EndOfStream:
            return 0
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise _os_error(exc, errno.ECONNRESET) from exc
        n = len(data)
        if n > want:
            view[:want] = data[:want]
            _EXCESS.put(self._stream, memoryview(data)[want:])
            return want
        view[:n] = data
        return n


class AnyioWriter:
    """Writes a batch to an anyio ``ByteSendStream``: small chunks joined, one ``send`` per call.

    Each call sends a prefix of whole chunks, about :data:`SEND_BYTES` at most
    (a larger chunk goes alone, uncopied), and reports exactly that prefix once
    ``send`` returned: the stream took every byte of it (anyio's TCP stream
    returns once the kernel did). The handoff calls again for the rest. A
    ``send`` that fails or is cancelled reports nothing, so the handoff fails
    that prefix's tickets rather than claim bytes it cannot vouch for.
    """

    __slots__ = ("_send", "_stream")

    #: Joining makes a batch of many chunks cost a few sends, not one each.
    max_batch_items = 1024

    def __init__(self, stream: ByteSendStream) -> None:
        self._stream = stream
        self._send = stream.send

    @property
    def stream(self) -> ByteSendStream:
        """The wrapped stream."""
        return self._stream

    async def write_some(self, chunks: Sequence[BytesLike]) -> int:
        # Hot path: one send per call. Each anyio send costs a loop turn, a
        # transport write (a syscall) and, as anyio's TCP stream keeps no write
        # buffer, a wait until the kernel took it all (over TLS, also a record
        # of its own). Measured on loopback: a send per 100-byte chunk is 40-70x
        # slower than one joined send; past ~128 KiB joining stops paying (the
        # copy grows while a large send waits in the transport's buffer anyway).
        first = chunks[0]
        if len(chunks) == 1 or len(first) >= SEND_BYTES:
            data = first if type(first) is bytes else bytes(first)  # send() takes bytes
        elif sum(map(len, chunks)) <= SEND_BYTES:
            data = b"".join(chunks)  # the usual case: the whole batch in one send
        else:
            # A prefix of whole chunks of about SEND_BYTES, with at least one non-empty
            # chunk in it: a send of nothing would report 0 bytes written.
            size = len(first)
            end = 1
            while end < len(chunks) and (size == 0 or size + len(chunks[end]) <= SEND_BYTES):
                size += len(chunks[end])
                end += 1
            data = b"".join(chunks[:end]) if end > 1 else bytes(first)
        try:
            await self._send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise _os_error(exc, errno.EPIPE) from exc
        return len(data)

    async def shutdown(self) -> None:
        """Send end of stream: ``send_eof()`` where the stream has it, else ``aclose()``.

        TLS streams cannot half-close (anyio raises ``NotImplementedError``), so
        they are closed, as ``StreamWriterAdapter`` closes a transport without
        ``write_eof``. anyio's TLS close waits for the peer's ``close_notify``,
        reading the stream itself: the peer must close too (cancelling
        ``WriteHandoff.aclose()`` stops the wait), and no other task may be
        reading the stream then. A stream the peer already broke has nothing
        left to signal.
        """
        stream = self._stream
        send_eof = getattr(stream, "send_eof", None)
        try:
            if send_eof is not None:
                try:
                    await send_eof()
                    return
                except NotImplementedError:
                    pass
            await stream.aclose()
        except anyio.BrokenResourceError:
            pass
        except anyio.ClosedResourceError as exc:
            raise _os_error(exc, errno.EPIPE) from exc


register_reader(ByteReceiveStream, AnyioReader)
register_writer(ByteSendStream, AnyioWriter)
