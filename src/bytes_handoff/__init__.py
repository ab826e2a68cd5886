"""bytes_handoff: owned byte buffers across async I/O boundaries.

* :class:`HandoffBuffer` -- persistent, bounded read state for one stream:
  peek, split owned prefixes, hand the already-read tail to the next parser.
* :class:`WriteHandoff` -- a bounded, owned, batched write queue in front of
  one writer, with backpressure and optional completion tickets.
* :func:`duplex_pair` -- an in-memory bounded byte pipe for tests and benches.
* :class:`HandoffProtocol` -- the same buffer as an ``asyncio.BufferedProtocol``'s
  storage, for ``create_server`` / ``create_connection`` (TLS included);
  ``WriteHandoff.spawn(protocol)`` drains into its transport.
* ``HandoffProtocol.start_tls`` / ``hand_over`` / ``adopt`` -- switch an open
  connection to TLS (STARTTLS, the bytes already read first) or to another
  protocol, keeping the buffered tail.
* :func:`tunnel` -- forward the rest of a stream after a parser switches to
  raw mode, kernel to kernel (``splice``) where both ends are Linux sockets.
* :func:`parse_proxy_header` -- take a PROXY protocol header (v1 or v2) off a
  buffer's front, leaving the connection's first bytes for the next parser.
"""

from ._types import BytesLike
from .adapters import (
    ByteReader,
    ByteWriter,
    as_reader,
    as_writer,
    register_reader,
    register_writer,
    stop_waiting,
)
from .duplex import DuplexStream, duplex_pair
from .errors import (
    BackpressureReason,
    BufferIOError,
    ByteBudgetExceeded,
    HandoffBufferError,
    HandoffError,
    LimitExceeded,
    SplitOutOfBounds,
    WriteBackpressure,
    WriteClosed,
    WriteError,
    WriteIOError,
)
from .protocol import (
    HandoffProtocol,
    TransportWriter,
    open_handoff_connection,
    start_handoff_server,
)
from .proxy_protocol import (
    NO_PROXY_HEADER,
    NoProxyHeader,
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderError,
    ProxySSL,
    ProxyTLV,
    ProxyTransport,
    build_proxy_header_v1,
    build_proxy_header_v2,
    parse_proxy_header,
)
from .raw_tunnel import splice_supported, tunnel
from .read_buffer import HandoffBuffer, HandoffBufferConfig
from .tls import TLSHandshakeError, TLSTransport
from .write_queue import WriteHandoff, WriteHandoffConfig, WriteTicket

__version__ = "0.1.0"

__all__ = [
    "NO_PROXY_HEADER",
    "BackpressureReason",
    "BufferIOError",
    "ByteBudgetExceeded",
    "ByteReader",
    "ByteWriter",
    "BytesLike",
    "DuplexStream",
    "HandoffBuffer",
    "HandoffBufferConfig",
    "HandoffBufferError",
    "HandoffError",
    "HandoffProtocol",
    "LimitExceeded",
    "NoProxyHeader",
    "ProxyCommand",
    "ProxyFamily",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxySSL",
    "ProxyTLV",
    "ProxyTransport",
    "SplitOutOfBounds",
    "TLSHandshakeError",
    "TLSTransport",
    "TransportWriter",
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
    "build_proxy_header_v1",
    "build_proxy_header_v2",
    "duplex_pair",
    "open_handoff_connection",
    "parse_proxy_header",
    "register_reader",
    "register_writer",
    "splice_supported",
    "start_handoff_server",
    "stop_waiting",
    "tunnel",
]


def __getattr__(name: str) -> object:
    # ``bytes_handoff.BufferError``: the deprecated old name of HandoffBufferError.
    from .errors import _renamed

    try:
        return _renamed(name, stacklevel=2)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
