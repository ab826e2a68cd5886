"""The package's exceptions: one base class, a read-side and a write-side family.

Every error that is about a size carries the numbers as attributes and states
them in its message, so a log line alone says what went wrong.
"""

from __future__ import annotations

import enum

from ._types import BytesLike

__all__ = [
    "BackpressureReason",
    "BufferIOError",
    "ByteBudgetExceeded",
    "HandoffBufferError",
    "HandoffError",
    "LimitExceeded",
    "SplitOutOfBounds",
    "WriteBackpressure",
    "WriteClosed",
    "WriteError",
    "WriteIOError",
]


class HandoffError(Exception):
    """Base class of every exception raised by ``bytes_handoff``."""


# -- read side ----------------------------------------------------------------


class HandoffBufferError(HandoffError):
    """A read-side error of :class:`~bytes_handoff.HandoffBuffer`.

    Its old name, ``BufferError``, shadowed Python's built-in ``BufferError``;
    the old name still works, with a ``DeprecationWarning``, until the next
    release.
    """


class LimitExceeded(HandoffBufferError):
    """Buffering ``attempted`` bytes would pass the buffer's ``limit`` (``max_len``)."""

    def __init__(self, attempted: int, limit: int) -> None:
        self.attempted = attempted
        self.limit = limit
        super().__init__(f"buffer limit exceeded: {attempted} bytes attempted, limit is {limit}")

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        return (type(self), (self.attempted, self.limit))


class SplitOutOfBounds(HandoffBufferError):
    """A split or advance asked for ``requested`` bytes with only ``available`` buffered."""

    def __init__(self, requested: int, available: int) -> None:
        self.requested = requested
        self.available = available
        super().__init__(f"split out of bounds: {requested} bytes requested, {available} available")

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        return (type(self), (self.requested, self.available))


class BufferIOError(HandoffBufferError):
    """The reader failed; its error is chained as ``__cause__`` and kept in ``error``.

    ``error`` is the reader's ``OSError``, or a ``ValueError`` when the reader
    broke its contract (reported a count that is not an int in
    ``0..len(view)``).
    """

    def __init__(self, error: Exception) -> None:
        self.error = error
        super().__init__(f"read failed: {error!r}")
        self.__cause__ = error

    def __reduce__(self) -> tuple[type, tuple[Exception]]:
        return (type(self), (self.error,))


# -- write side ---------------------------------------------------------------


class WriteError(HandoffError):
    """A write-side error of :class:`~bytes_handoff.WriteHandoff`."""


class WriteClosed(WriteError):
    """The handoff is closed (by ``close()`` or an earlier writer failure)."""

    def __init__(self, message: str = "write handoff is closed") -> None:
        super().__init__(message)


class ByteBudgetExceeded(WriteError):
    """One chunk of ``attempted`` bytes is larger than the whole budget ``limit``.

    Raised at once by ``write()``: waiting could never make room for it.
    """

    def __init__(self, attempted: int, limit: int) -> None:
        self.attempted = attempted
        self.limit = limit
        super().__init__(
            f"chunk of {attempted} bytes exceeds the write budget of {limit} pending bytes"
        )

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        return (type(self), (self.attempted, self.limit))


class WriteIOError(WriteError):
    """The writer failed; its error is chained as ``__cause__`` and kept in ``error``.

    ``error`` is the writer's ``OSError``, any other exception the writer
    raised, or a ``ValueError`` when it broke its contract (reported a count
    that is not an int in ``1..offered``, or ``0`` from ``write_some``).
    """

    def __init__(self, error: Exception) -> None:
        self.error = error
        super().__init__(f"write failed: {error!r}")
        self.__cause__ = error

    def __reduce__(self) -> tuple[type, tuple[Exception]]:
        return (type(self), (self.error,))


class BackpressureReason(enum.Enum):
    """Why :meth:`WriteHandoff.try_write` refused a chunk."""

    CLOSED = "closed"
    QUEUE_FULL = "queue_full"
    BYTE_BUDGET_EXCEEDED = "byte_budget_exceeded"


class WriteBackpressure(WriteError):
    """A non-waiting write was refused; the rejected bytes are given back.

    ``attempted`` and ``limit`` are set for ``BYTE_BUDGET_EXCEEDED`` (pending
    bytes after the write, and the budget) and ``QUEUE_FULL`` (items after the
    write, and ``max_items``); both are ``None`` for ``CLOSED``.
    """

    def __init__(
        self,
        reason: BackpressureReason,
        data: BytesLike,
        attempted: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.reason = reason
        self.attempted = attempted
        self.limit = limit
        self._data = data
        if reason is BackpressureReason.CLOSED:
            message = "write refused: handoff is closed"
        elif reason is BackpressureReason.QUEUE_FULL:
            message = f"write refused: queue full ({attempted} items attempted, limit {limit})"
        else:
            message = (
                f"write refused: byte budget exceeded ({attempted} pending bytes attempted,"
                f" limit {limit})"
            )
        super().__init__(message)

    def into_bytes(self) -> BytesLike:
        """Return the rejected chunk, exactly the object that was passed in."""
        return self._data


def _renamed(name: str, stacklevel: int) -> type[HandoffError]:
    """The class behind a deprecated name; ``AttributeError`` for any other name."""
    # Kept outside __all__, so that ``import *`` no longer shadows the builtin.
    if name != "BufferError":
        raise AttributeError(name)
    import warnings

    warnings.warn(
        "bytes_handoff.BufferError is deprecated; use HandoffBufferError "
        "(the old name shadows Python's built-in BufferError)",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )
    return HandoffBufferError


def __getattr__(name: str) -> object:
    try:
        return _renamed(name, stacklevel=2)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
