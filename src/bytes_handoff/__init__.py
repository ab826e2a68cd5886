"""bytes_handoff: owned byte buffers across async I/O boundaries.

* :class:`HandoffBuffer` -- persistent, bounded read state for one stream:
  peek, split owned prefixes, hand the already-read tail to the next parser.
* :class:`WriteHandoff` -- a bounded, owned, batched write queue in front of
  one writer, with backpressure and optional completion tickets.
* :func:`duplex_pair` -- an in-memory bounded byte pipe for tests and benches.
* :func:`tunnel` -- forward the rest of a stream after a parser switches to
  raw mode, kernel to kernel (``splice``) where both ends are Linux sockets.
"""

from ._types import BytesLike
from .adapters import ByteReader, ByteWriter, as_reader, as_writer, register_reader, register_writer
from .duplex import DuplexStream, duplex_pair
from .errors import (
    BackpressureReason,
    BufferError,
    BufferIOError,
    ByteBudgetExceeded,
    HandoffError,
    LimitExceeded,
    SplitOutOfBounds,
    WriteBackpressure,
    WriteClosed,
    WriteError,
    WriteIOError,
)
from .raw_tunnel import splice_supported, tunnel
from .read_buffer import HandoffBuffer, HandoffBufferConfig
from .write_queue import WriteHandoff, WriteHandoffConfig, WriteTicket

__version__ = "0.1.0"

__all__ = [
    "BackpressureReason",
    "BufferError",
    "BufferIOError",
    "ByteBudgetExceeded",
    "ByteReader",
    "ByteWriter",
    "BytesLike",
    "DuplexStream",
    "HandoffBuffer",
    "HandoffBufferConfig",
    "HandoffError",
    "LimitExceeded",
    "SplitOutOfBounds",
    "WriteBackpressure",
    "WriteClosed",
    "WriteError",
    "WriteHandoff",
    "WriteHandoffConfig",
    "WriteIOError",
    "WriteTicket",
    "__version__",
    "as_reader",
    "as_writer",
    "duplex_pair",
    "register_reader",
    "register_writer",
    "splice_supported",
    "tunnel",
]
