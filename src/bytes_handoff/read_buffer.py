"""``HandoffBuffer``: persistent, bounded read state for one stream.

Storage is one ``bytearray`` whose live bytes sit between two offsets
(``_start``, ``_end``). Reads land in the room after ``_end``; splits copy the
frame out and move ``_start`` forward, so splitting ``k`` bytes costs O(k)
whatever else is buffered. The live bytes are moved back to offset 0 only when
a read needs room at the end, which amortises to O(1) per byte read.

One buffer belongs to one task at a time: it is parser state, not a channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._checks import count as _count
from ._checks import positive_int
from .adapters import ByteReader, as_reader
from .errors import BufferIOError, LimitExceeded, SplitOutOfBounds

__all__ = ["HandoffBuffer", "HandoffBufferConfig"]

DEFAULT_READ_RESERVE = 16 * 1024

#: ``read_available``'s reader before the first read: never a real reader.
_NO_READER = object()


@dataclass(frozen=True, slots=True)
class HandoffBufferConfig:
    """Bounds of a :class:`HandoffBuffer`.

    ``max_len`` is the hard cap on buffered bytes; ``read_reserve`` is the most
    one ``read_available`` call asks the reader for.
    """

    max_len: int
    read_reserve: int = DEFAULT_READ_RESERVE

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_len", positive_int(self.max_len, "max_len"))
        object.__setattr__(self, "read_reserve", positive_int(self.read_reserve, "read_reserve"))


def _separator(sub: object) -> bytes:
    """A separator as ``bytes``: one copy, so the remembered search keeps no caller's buffer."""
    if isinstance(sub, int) and not isinstance(sub, bool):
        return bytes((sub,))  # bytes.find(int) semantics; ValueError outside 0..255
    try:
        return bytes(memoryview(sub))  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"the separator must be a bytes-like object, got {type(sub).__name__}"
        ) from None


class HandoffBuffer:
    """A bounded read buffer that peeks, splits owned prefixes and hands its tail on.

    Returned prefixes (``split_prefix``, ``split_prefix_mut``, ``freeze_all``,
    ``take_tail``) are owned: nothing the buffer does later changes them.
    """

    __slots__ = (
        "_adapter",
        "_buf",
        "_end",
        "_max_len",
        "_read_nowait",
        "_reader",
        "_reserve",
        "_scan_at",
        "_scan_sep",
        "_start",
        "_view",
    )

    def __init__(self, max_len: int, read_reserve: int = DEFAULT_READ_RESERVE) -> None:
        cfg = HandoffBufferConfig(max_len, read_reserve)
        self._max_len = cfg.max_len
        self._reserve = cfg.read_reserve
        self._buf = bytearray()
        #: A standing view of ``_buf``: slicing it is the cheapest way to copy
        #: a frame out or hand a reader its spare room.
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        #: The remembered search: no ``_scan_sep`` starts in ``_buf`` before offset
        #: ``max(_start, _scan_at)``, so a parser waiting on a trickling peer
        #: searches each byte about once. Absolute, so consuming bytes never
        #: touches it; compaction shifts it, emptying the buffer resets it.
        self._scan_sep = b""
        self._scan_at = 0
        self._reader: object = _NO_READER
        self._adapter: ByteReader | None = None
        self._read_nowait: Callable[[memoryview], int | None] | None = None

    @classmethod
    def with_config(cls, cfg: HandoffBufferConfig) -> HandoffBuffer:
        """An empty buffer with the bounds of ``cfg``."""
        return cls(cfg.max_len, cfg.read_reserve)

    @classmethod
    def from_tail(
        cls, tail: bytes | bytearray | memoryview, cfg: HandoffBufferConfig
    ) -> HandoffBuffer:
        """A buffer that starts with bytes another parser already read.

        A ``bytearray`` (what :meth:`take_tail` returns) is adopted without a
        copy; other buffers are copied. ``LimitExceeded`` if ``tail`` is longer
        than ``cfg.max_len``.
        """
        n = memoryview(tail).nbytes
        if n > cfg.max_len:
            raise LimitExceeded(attempted=n, limit=cfg.max_len)
        buf = cls.with_config(cfg)
        buf._buf = tail if type(tail) is bytearray else bytearray(tail)
        buf._view = memoryview(buf._buf)
        buf._end = n
        return buf

    # -- inspection ---------------------------------------------------------------------

    def __len__(self) -> int:
        return self._end - self._start

    def __bool__(self) -> bool:
        return self._end != self._start

    def __repr__(self) -> str:
        return (
            f"HandoffBuffer(len={self._end - self._start}, capacity={len(self._buf)},"
            f" max_len={self._max_len}, read_reserve={self._reserve})"
        )

    @property
    def capacity(self) -> int:
        """Bytes of storage allocated (buffered bytes plus spare room)."""
        return len(self._buf)

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def read_reserve(self) -> int:
        return self._reserve

    def peek(self) -> memoryview:
        """A read-only, zero-copy view of the buffered bytes; nothing is consumed.

        The view shows the buffer's own storage, so it is valid only until the
        next call that changes the buffer (a read, split, advance, take or
        reserve); after that it may show other bytes. Copy what must live
        longer (``bytes(view)``) or take it with ``split_prefix``. Release the
        view (``with buf.peek() as v:``) when done.
        """
        return memoryview(self._buf)[self._start : self._end].toreadonly()

    def find(self, sub: bytes, start: int | None = None, end: int | None = None) -> int:
        """Offset of ``sub`` in the buffered bytes (relative to the front), or -1.

        ``start`` and ``end`` work as in ``bytes.find``. Without them, a search
        for the same ``sub`` as last time resumes where that one stopped.
        ``sub`` is any bytes-like object (or a byte value); an empty ``sub``
        raises ``ValueError``, as in :meth:`split_through`: it would match
        everywhere, and a parser looping on it would never end.
        """
        base = self._start
        if type(sub) is not bytes:
            sub = _separator(sub)
        if not sub:
            raise ValueError("the separator must not be empty")
        if start is None and end is None:
            # Hot path: a parser looking for its next delimiter, resuming the last search.
            at = self._scan_at
            if sub is not self._scan_sep and sub != self._scan_sep:
                self._scan_sep = sub
                at = base
            pos = self._buf.find(sub, at if at > base else base, self._end)
            if pos < 0:
                self._scan_at = self._end - len(sub) + 1
                return -1
            self._scan_at = pos
            return pos - base
        if start is None:
            start = 0
        elif type(start) is not int:
            start = _count(start, "start")
        if end is not None and type(end) is not int:
            end = _count(end, "end")
        length = self._end - base
        # Negative offsets count from the end, as in bytes.find: never reach consumed bytes.
        if start < 0:
            start = max(start + length, 0)
        if end is None or end > length:
            end = length
        elif end < 0:
            end = max(end + length, 0)
        pos = self._buf.find(sub, base + start, base + end)
        return pos - base if pos >= 0 else -1

    def startswith(self, prefix: bytes) -> bool:
        """Whether the buffered bytes begin with ``prefix``."""
        return self._buf.startswith(prefix, self._start, self._end)

    # -- room ---------------------------------------------------------------------------

    def reserve_read_capacity(self, additional: int) -> None:
        """Make room for ``additional`` more bytes after the buffered ones.

        ``LimitExceeded(attempted=len + additional, limit=max_len)`` if that
        would pass ``max_len``; nothing changes then.
        """
        if type(additional) is not int:
            additional = _count(additional, "additional")
        if additional < 0:
            raise ValueError(f"additional must be >= 0, got {additional}")
        length = self._end - self._start
        if length + additional > self._max_len:
            raise LimitExceeded(attempted=length + additional, limit=self._max_len)
        self._make_room(additional)

    def _make_room(self, want: int) -> None:
        buf = self._buf
        if len(buf) - self._end >= want:
            return
        start, end = self._start, self._end
        length = end - start
        if len(buf) - length >= want:
            # Enough storage: slide the live bytes to the front (same-size slice
            # assignment, so a held peek() view never blocks it).
            if length:
                buf[0:length] = buf[start:end]
        else:
            grown = max(length + want, min(2 * len(buf), self._max_len))
            new = bytearray(grown)
            if length:
                new[0:length] = self._view[start:end]
            self._buf = new
            self._view = memoryview(new)
        self._scan_at -= start
        self._start = 0
        self._end = length

    # -- reading ------------------------------------------------------------------------

    def _spare(self) -> memoryview:
        """Spare room for one read: ``min(read_reserve, max_len - len)`` bytes (protocol path).

        ``LimitExceeded`` when the buffer is full. Release the view after the read.
        """
        # Hot path: called by the loop before every read of a HandoffProtocol.
        end = self._end
        want = self._max_len - (end - self._start)
        if want > self._reserve:
            want = self._reserve
        elif want <= 0:
            raise LimitExceeded(attempted=end - self._start + 1, limit=self._max_len)
        if len(self._buf) - end < want:
            self._make_room(want)
            end = self._end
        return self._view[end : end + want]

    def _commit(self, n: int) -> None:
        """Account ``n`` bytes a read put into the room :meth:`_spare` handed out."""
        end = self._end
        if (
            type(n) is not int
            or n < 0
            or end + n > len(self._buf)
            or (end + n - self._start > self._max_len)
        ):
            raise ValueError(f"read of {n!r} bytes does not fit the spare room handed out")
        self._end = end + n

    async def read_available(self, reader: object) -> int:
        """Read once from ``reader`` into spare room; return the count, ``0`` at end of stream.

        Asks for at most ``min(read_reserve, max_len - len)`` bytes. A full
        buffer raises ``LimitExceeded(attempted=len + 1, limit=max_len)``
        before reading, so the unread bytes stay in the reader. Reader
        failures raise ``BufferIOError`` chaining the ``OSError``; so does a
        reader that reports a count that is not an int in ``0..len(view)``.
        On any error the buffer holds exactly what it held before.
        """
        # Hot path: adapter cached per reader, read lands straight in spare room.
        length = self._end - self._start
        if length >= self._max_len:
            raise LimitExceeded(attempted=length + 1, limit=self._max_len)
        if reader is not self._reader:
            new_adapter = as_reader(reader)
            self._reader = reader
            self._adapter = new_adapter
            self._read_nowait = getattr(new_adapter, "read_into_nowait", None)
        want = self._max_len - length
        if want > self._reserve:
            want = self._reserve
        if len(self._buf) - self._end < want:
            self._make_room(want)
        end = self._end
        view = self._view[end : end + want]
        try:
            # Bytes already waiting are read without entering a coroutine.
            read_nowait = self._read_nowait
            n = read_nowait(view) if read_nowait is not None else None
            if n is None:
                adapter = self._adapter
                assert adapter is not None
                n = await adapter.read_into(view)
        except OSError as exc:
            raise BufferIOError(exc) from exc
        finally:
            view.release()
        if type(n) is not int or n < 0 or n > want:
            bad = ValueError(
                f"reader {type(reader).__name__} reported {n!r} bytes read into a {want}-byte view"
            )
            raise BufferIOError(bad) from bad
        self._end = end + n
        return n

    # -- taking bytes out -----------------------------------------------------------------

    def split_prefix(self, n: int) -> bytes:
        """Remove and return the first ``n`` bytes as immutable ``bytes`` (one O(n) copy).

        ``SplitOutOfBounds(requested=n, available=len)`` if fewer are buffered.
        """
        # Hot path: one copy of the frame, then an offset bump.
        if type(n) is not int:
            n = _count(n, "n")
        start = self._start
        end = self._end
        stop = start + n
        if n < 0 or stop > end:
            raise SplitOutOfBounds(requested=n, available=end - start)
        out = bytes(self._view[start:stop])
        # _consume(stop), spelled out: the call alone would add ~10% to a 16-byte split.
        if stop == end:
            self._start = self._end = self._scan_at = 0
        else:
            self._start = stop
        return out

    def split_through(self, sep: bytes) -> bytes | None:
        """Remove and return the bytes up to and including the next ``sep``, or ``None``.

        ``None`` means no complete ``sep``-terminated frame is buffered yet
        (nothing changes). The same as ``find`` + ``split_prefix``, in one call;
        an empty ``sep`` raises ``ValueError``.
        """
        # Hot path: a delimiter-framed parser's whole step, one search and one copy.
        if not sep:
            raise ValueError("the separator must not be empty")
        start = self._start
        end = self._end
        at = self._scan_at
        if sep is not self._scan_sep and sep != self._scan_sep:
            self._scan_sep = sep if type(sep) is bytes else bytes(sep)  # keep no caller's buffer
            at = start
        pos = self._buf.find(sep, at if at > start else start, end)
        if pos < 0:
            self._scan_at = end - len(sep) + 1
            return None
        stop = pos + len(sep)
        out = bytes(self._view[start:stop])
        # _consume(stop), spelled out as in split_prefix (hot path).
        if stop == end:
            self._start = self._end = self._scan_at = 0
        else:
            self._start = stop
        return out

    def split_prefix_mut(self, n: int) -> bytearray:
        """Remove and return the first ``n`` bytes as a new ``bytearray`` the caller owns."""
        if type(n) is not int:
            n = _count(n, "n")
        start = self._start
        stop = start + n
        if n < 0 or stop > self._end:
            raise SplitOutOfBounds(requested=n, available=self._end - start)
        out = self._buf[start:stop]
        self._consume(stop)
        return out

    def advance(self, n: int) -> None:
        """Discard the first ``n`` bytes; ``SplitOutOfBounds`` if fewer are buffered."""
        if type(n) is not int:
            n = _count(n, "n")
        start = self._start
        stop = start + n
        if n < 0 or stop > self._end:
            raise SplitOutOfBounds(requested=n, available=self._end - start)
        self._consume(stop)

    def _consume(self, stop: int) -> None:
        """Drop the buffered bytes before offset ``stop`` (``_start <= stop <= _end``).

        The one way bytes leave the front. An emptied buffer starts over at
        offset 0, so the next read gets the whole storage without a compaction,
        and forgets its remembered search (``_scan_at``), which pointed into
        bytes that are gone. ``split_prefix`` and ``split_through`` spell this
        out inline (hot paths); keep them in step with it.
        """
        if stop == self._end:
            self._start = self._end = self._scan_at = 0
        else:
            self._start = stop

    def freeze_all(self) -> bytes:
        """Remove and return everything buffered as immutable ``bytes``.

        Python's ``bytes`` cannot adopt foreign storage, so this is one copy
        of ``len`` bytes; the buffer keeps its storage for the next read.
        """
        out = bytes(self._view[self._start : self._end])
        self._consume(self._end)
        return out

    def take_tail(self) -> bytearray:
        """Remove and return everything buffered as a ``bytearray`` for the next parser mode.

        The storage itself moves to the caller (no copy; this buffer starts
        empty) unless a ``peek()`` view still pins it, in which case the tail
        is copied. Either way the tail is the caller's alone: no view sees it
        and it can grow. Pass the result to :meth:`from_tail` to adopt it as is.
        """
        start, end = self._start, self._end
        buf = self._buf
        self._consume(end)
        if end > start:
            self._view.release()
            try:
                # Trim in place: CPython drops a bytearray's front in O(1) (it
                # moves a start offset), so the tail is never copied. Resizing
                # an exported bytearray raises BufferError; when no trim is due
                # (storage exactly full), drop and restore the last byte so a
                # held view is found the same way.
                if end == len(buf) and start == 0:
                    last = buf[-1]
                    del buf[-1:]
                    buf.append(last)
                else:
                    del buf[end:]
                    del buf[:start]
            except BufferError:
                self._view = memoryview(buf)  # a held peek() view pins the storage: copy
            else:
                self._buf = bytearray()
                self._view = memoryview(self._buf)
                return buf
        return buf[start:end]
