"""The workload: what a client sends on connection ``conn``, and how a sink checks it.

Per connection: ``route_frames`` frames of ``frame_len`` bytes plus ``\\n``, each
starting with ``GET /tenant/{id:04}/object/{frame:08}`` (cut to ``frame_len``)
padded with ``x``; then ``TUNNEL\\n``; then ``tunnel_bytes`` opaque bytes, byte
``i`` = ``(id + i) % 251``. The stream id is the connection's index plus the first
of the workload's ``stream_ids`` (0 without them): several drivers of one service
send disjoint ids (``--driver-index``), and a sink refuses an id not among its own.

The tunnel is never materialised per connection: it is a slice of one periodic
pattern (``PERIOD`` repeating), starting at ``id % PERIOD``. Clients send
slices of it (or ``sendfile`` it from a memfd); sinks compare received chunks
with slices of it.
"""

from __future__ import annotations

import os

from ..errors import VerificationError
from .config import BenchConfig

__all__ = ["MARKER", "PERIOD", "StreamVerifier", "Workload"]

MARKER = b"TUNNEL\n"
PERIOD = 251
#: ``GET /tenant/NNNN``: the shortest frame (16 bytes) still carries the stream id.
_ID_PREFIX = b"GET /tenant/"
_ID_LEN = len(_ID_PREFIX) + 4


def periodic(length: int) -> bytes:
    """``bytes(k % PERIOD for k in range(length))``, built without a per-byte loop."""
    reps = length // PERIOD + 1
    return (bytes(range(PERIOD)) * reps)[:length]


class Workload:
    """The bytes of every stream of one run, generated once and shared.

    ``prefix(conn)`` (route frames + marker) is cached per stream id; the tunnel
    is ``pattern[id % PERIOD :][:tunnel_bytes]``.
    """

    def __init__(
        self, cfg: BenchConfig, max_chunk: int = 64 * 1024, stream_ids: range | None = None
    ) -> None:
        self.route_frames = cfg.route_frames
        self.frame_len = cfg.frame_len
        self.tunnel_bytes = cfg.tunnel_bytes
        self.prefix_len = cfg.prefix_len
        self.total = cfg.bytes_per_connection
        #: Long enough for the whole tunnel (clients) and for any received chunk (sinks).
        self.pattern = periodic(PERIOD * 2 + max(cfg.tunnel_bytes, max_chunk))
        #: The ids of this workload's streams (``BenchConfig.stream_ids``): connection
        #: ``conn`` sends id ``stream_ids[conn]`` and a sink accepts only these. ``None``:
        #: id = connection, any 4-digit id accepted (the fault soak numbers its own).
        self.stream_ids = stream_ids
        self.id_offset = stream_ids.start if stream_ids is not None else 0
        self._prefixes: dict[int, bytes] = {}
        self._memfd: int | None = None

    def stream_id(self, conn: int) -> int:
        """The id that connection ``conn``'s streams carry."""
        return self.id_offset + conn

    def frame(self, conn: int, index: int) -> bytes:
        """Route frame ``index`` of stream ``conn``, newline included."""
        head = f"GET /tenant/{self.id_offset + conn:04}/object/{index:08}".encode()
        head = head[: self.frame_len]
        return head.ljust(self.frame_len, b"x") + b"\n"

    def prefix(self, conn: int) -> bytes:
        """Everything before the tunnel bytes: the route frames and ``TUNNEL\\n``."""
        out = self._prefixes.get(conn)
        if out is None:
            out = b"".join(self.frame(conn, i) for i in range(self.route_frames)) + MARKER
            self._prefixes[conn] = out
        return out

    def tunnel_base(self, conn: int) -> int:
        """Offset in ``pattern`` of tunnel byte 0 of stream ``conn``."""
        return (self.id_offset + conn) % PERIOD

    def stream_bytes(self, conn: int) -> bytes:
        """The whole stream as one object (tests and slow paths only)."""
        base = self.tunnel_base(conn)
        return self.prefix(conn) + self.pattern[base : base + self.tunnel_bytes]

    def memfd(self) -> int:
        """A memfd holding ``pattern``, for ``os.sendfile`` of tunnel bytes (created once)."""
        if self._memfd is None:
            fd = os.memfd_create("bytes-handoff-bench-tunnel", os.MFD_CLOEXEC)
            view = memoryview(self.pattern)
            while view:
                view = view[os.write(fd, view) :]
            self._memfd = fd
        return self._memfd

    def close(self) -> None:
        if self._memfd is not None:
            os.close(self._memfd)
            self._memfd = None


class StreamVerifier:
    """Checks one received stream incrementally: identity, every byte, exact length.

    ``feed(buf, n)`` checks ``buf[:n]``, the next bytes of the stream; the
    caller reuses ``buf``. Mismatches raise ``VerificationError`` naming the
    stream and the offset of the first wrong byte.
    """

    __slots__ = ("_head", "_pattern", "_prefix", "_wl", "base", "conn", "expected_conn", "pos")

    _prefix: memoryview

    def __init__(self, wl: Workload, expected_conn: int | None = None) -> None:
        self._wl = wl
        self._pattern = memoryview(wl.pattern)
        self.expected_conn = expected_conn
        self.conn = -1
        self.pos = 0
        self.base = 0
        self._prefix = memoryview(b"")
        self._head: bytearray | None = None

    @property
    def name(self) -> str:
        if self.conn < 0:
            return "unidentified stream"
        return f"stream {self._wl.stream_id(self.conn):04}"

    def feed(self, buf: bytearray, n: int) -> None:
        # Hot path: at most two memcmp-backed startswith calls per chunk, no copies.
        if self.conn < 0:
            self._identify(buf, n)
            return
        pos = self.pos
        off = 0
        plen = self._wl.prefix_len
        if pos < plen:
            k = min(n, plen - pos)
            if not buf.startswith(self._prefix[pos : pos + k], 0, k):
                self._mismatch(buf, 0, k)
            pos += k
            off = k
        if off < n:
            k = n - off
            if pos + k > self._wl.total:
                raise VerificationError(
                    f"{self.name}: {pos + k - self._wl.total} bytes beyond the expected"
                    f" {self._wl.total} (first extra byte at offset {self._wl.total})"
                )
            t = (self.base + pos - plen) % PERIOD
            if not buf.startswith(self._pattern[t : t + k], off, n):
                self.pos = pos
                self._mismatch(buf, off, n)
            pos += k
        self.pos = pos

    def _identify(self, buf: bytearray, n: int) -> None:
        """Slow path, once per stream: learn the stream id from ``GET /tenant/NNNN``."""
        head = self._head
        if head is None:
            if n >= _ID_LEN:
                self._set_conn(buf[:_ID_LEN])
                self.feed(buf, n)
                return
            head = self._head = bytearray()
        head += memoryview(buf)[:n]
        if len(head) >= _ID_LEN:
            self._head = None
            self._set_conn(head[:_ID_LEN])
            self.feed(head, len(head))

    def _set_conn(self, first: bytearray) -> None:
        digits = first[len(_ID_PREFIX) :]
        if not first.startswith(_ID_PREFIX) or not digits.isdigit():
            raise VerificationError(
                f"unidentified stream: first bytes {bytes(first)!r} are not a route frame"
                f" (expected {_ID_PREFIX!r} and 4 digits)"
            )
        stream_id = int(digits)
        wl = self._wl
        if wl.stream_ids is not None and stream_id not in wl.stream_ids:
            ids = wl.stream_ids
            raise VerificationError(
                f"stream {stream_id:04}: not one of this sink's stream ids ({ids.start:04} to"
                f" {ids.stop - 1:04}): another driver's stream, or one the service mixed up"
            )
        conn = stream_id - wl.id_offset
        if self.expected_conn is not None and conn != self.expected_conn:
            raise VerificationError(
                f"stream {wl.stream_id(self.expected_conn):04}: received the bytes of stream"
                f" {stream_id:04}"
            )
        self.conn = conn
        self.base = self._wl.tunnel_base(conn)
        self._prefix = memoryview(self._wl.prefix(conn))

    def _mismatch(self, buf: bytearray, lo: int, hi: int) -> None:
        """Slow path: find the first wrong byte of ``buf[lo:hi]`` and raise."""
        expected = self._wl.stream_bytes(self.conn)
        start = self.pos
        for i in range(lo, hi):
            want = expected[start + i - lo]
            if buf[i] != want:
                raise VerificationError(
                    f"{self.name}: wrong byte at offset {start + i - lo}:"
                    f" expected 0x{want:02x}, got 0x{buf[i]:02x}"
                )
        raise VerificationError(f"{self.name}: mismatch near offset {start}")  # unreachable

    def finish(self) -> None:
        """At end of stream: raise unless exactly the expected byte count arrived."""
        if self.conn < 0:
            got = len(self._head) if self._head is not None else 0
            raise VerificationError(f"unidentified stream: ended after {got} bytes")
        if self.pos != self._wl.total:
            raise VerificationError(
                f"{self.name}: ended after {self.pos} of {self._wl.total} bytes"
            )

    @property
    def done(self) -> bool:
        return self.conn >= 0 and self.pos == self._wl.total
