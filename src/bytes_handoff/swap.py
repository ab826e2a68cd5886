"""Hand a connection to another protocol with the bytes already read, and take one over.

``proto.hand_over(target)`` gives ``proto``'s transport and buffered tail to
``target``, an ``asyncio.Protocol`` (the tail arrives as one
``data_received``) or an ``asyncio.BufferedProtocol`` (the tail is copied into
its ``get_buffer`` room, in as many rounds as it takes). A sans-I/O object
(h11, wsproto, h2: ``receive_data(bytes)``) is driven by a small
``asyncio.Protocol`` that feeds it. ``proto.adopt(transport, tail)`` is the
reverse: a fresh :class:`~bytes_handoff.HandoffProtocol` takes over a
transport another protocol read from, with the bytes it had left.

Either way the new protocol gets ``connection_made(transport)``, then the
tail, exactly once and before anything read later (the switch runs without
yielding to the loop, so no read can come between), then reading resumes
unless it paused meanwhile; if the peer had already ended its stream it gets
``eof_received()`` after the tail. The tail counts as one read: it is
delivered whole even if the new protocol pauses reading while taking it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from ._types import BytesLike
from .errors import LimitExceeded

if TYPE_CHECKING:
    from .protocol import HandoffProtocol

__all__ = ["adopt", "hand_over"]


def _check_target(target: object) -> None:
    if not isinstance(target, asyncio.Protocol | asyncio.BufferedProtocol):
        raise TypeError(
            "the new protocol must be an asyncio.Protocol or asyncio.BufferedProtocol"
            f" (drive a sans-I/O object from a Protocol's data_received), got"
            f" {type(target).__name__}"
        )


def _check_fits(target: object, size: int) -> None:
    """A ``HandoffProtocol`` target: fresh, and room for the tail (nothing moved otherwise)."""
    from .protocol import HandoffProtocol

    if isinstance(target, HandoffProtocol):
        if target.transport is not None or target.closed:
            raise ValueError("the new HandoffProtocol already has a connection")
        room = target.buffer.max_len - len(target.buffer)
        if size > room:
            raise LimitExceeded(attempted=len(target.buffer) + size, limit=target.buffer.max_len)


def hand_over(proto: HandoffProtocol, target: asyncio.BaseProtocol) -> asyncio.Transport:
    """Give ``proto``'s transport and buffered tail to ``target``; see
    :meth:`HandoffProtocol.hand_over`."""
    _check_target(target)
    if target is proto:
        raise ValueError("a protocol cannot hand its connection to itself")
    transport = proto.transport
    if transport is None:
        raise RuntimeError("the protocol has no transport (not connected, or handed over)")
    if proto.closed or transport.is_closing():
        raise RuntimeError("the connection is closed")
    if proto._reader_waiting is not None:
        raise RuntimeError("another task is reading from this protocol")
    _check_fits(target, len(proto.buffer))
    eof = proto._eof_from_peer
    tail = proto.buffer.take_tail()
    proto._unseen = 0
    # proto lets go: its readers see end of stream, writes through it fail, and
    # start_handoff_server no longer closes the transport when its handler returns.
    proto.connection_lost(None)
    proto.transport = None
    _attach(transport, target, tail, eof)
    return transport


def adopt(
    proto: HandoffProtocol, transport: asyncio.BaseTransport, tail: BytesLike, eof: bool = False
) -> None:
    """Make ``proto`` the protocol of ``transport``, ``tail`` first, then end of stream if
    ``eof``; see :meth:`HandoffProtocol.adopt`."""
    # Duck-typed: uvloop's transports implement asyncio.Transport without subclassing it.
    if not all(hasattr(transport, name) for name in ("set_protocol", "is_closing", "abort")):
        raise TypeError(f"transport must be an asyncio transport, got {type(transport).__name__}")
    if type(eof) is not bool:
        raise TypeError(f"eof must be a bool, got {type(eof).__name__}")
    try:
        view = memoryview(tail)
    except TypeError:
        raise TypeError(f"tail must be a bytes-like object, got {type(tail).__name__}") from None
    with view:
        if transport.is_closing():
            raise RuntimeError("the transport is closing")
        _check_fits(proto, view.nbytes)
        data = bytes(view)  # owned: the previous protocol may reuse its buffer
    _attach(cast(asyncio.Transport, transport), proto, data, eof)


def _attach(
    transport: asyncio.Transport,
    target: asyncio.BaseProtocol,
    tail: BytesLike,
    eof: bool,
) -> None:
    """``target`` takes ``transport``: connection_made, the tail, reading on (or EOF)."""
    transport.set_protocol(target)
    if not eof and not transport.is_reading():
        # Nothing is read before this function returns to the loop: the tail comes first.
        transport.resume_reading()
    try:
        target.connection_made(transport)
        if len(tail):
            if isinstance(target, asyncio.BufferedProtocol):
                _feed(target, tail)
            else:
                assert isinstance(target, asyncio.Protocol)
                target.data_received(bytes(tail))
        if eof and not target.eof_received():  # type: ignore[attr-defined]
            transport.close()
    except BaseException:
        transport.abort()  # as a transport does when a protocol callback fails
        raise


def _feed(target: asyncio.BufferedProtocol, tail: BytesLike) -> None:
    """Copy ``tail`` into ``target``'s own room, as the loop would deliver reads."""
    with memoryview(tail) as src:
        data = src.cast("B") if src.format != "B" or src.ndim != 1 else src
        pos, end = 0, data.nbytes
        while pos < end:
            with memoryview(target.get_buffer(end - pos)) as room, room.cast("B") as flat:
                n = min(flat.nbytes, end - pos)
                if n <= 0:
                    raise RuntimeError(
                        f"{type(target).__name__}.get_buffer() gave no room for the tail"
                    )
                flat[:n] = data[pos : pos + n]
            target.buffer_updated(n)
            pos += n
