"""``WriteBatch``: the chunks of one vectored write, tracked byte by byte until written.

Pure bookkeeping, no I/O and no event loop: a drainer takes a batch from the
front of the queue, offers ``unwritten()`` to the writer, and reports each
count the writer returns with ``advance(n)``; a writer failure ends the batch
with ``fail()``. Chunks complete (and their tickets resolve) strictly in order.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar

from ._types import BytesLike
from .errors import WriteError

__all__ = ["Completion", "WriteBatch"]


class Completion(Protocol):
    """What a batch resolves when its chunk is over (a ``WriteTicket``)."""

    def _resolve(self, error: WriteError | None) -> None: ...


T = TypeVar("T", bound=Completion)


class WriteBatch(Generic[T]):
    """Chunks being written front to back, with one optional ticket per chunk.

    ``left`` is the count of bytes not yet written; the batch is over exactly
    when it reaches 0 (empty chunks complete with the chunks around them).
    Chunks before ``first`` are complete; ``chunks[first]`` may be a view of
    the unwritten end of a partly written chunk.
    """

    __slots__ = ("chunks", "first", "left", "ticketed", "tickets")

    def __init__(
        self, chunks: list[BytesLike], tickets: list[T | None], *, left: int, ticketed: int
    ) -> None:
        self.chunks = chunks
        self.tickets = tickets
        self.left = left
        #: How many of ``tickets`` are not ``None`` (0: advancing skips the tickets).
        self.ticketed = ticketed
        self.first = 0

    @classmethod
    def take(
        cls,
        chunks: deque[BytesLike],
        tickets: deque[T | None],
        *,
        queued_bytes: int,
        queued_tickets: int,
        max_items: int,
        max_bytes: int,
    ) -> WriteBatch[T]:
        """Move the next batch off the front of the queue (``chunks`` and ``tickets``).

        At most ``max_items`` chunks, and no chunk after the total reached
        ``max_bytes``; always at least one chunk when the queue has one.
        ``queued_bytes`` and ``queued_tickets`` are the queue's totals, so the
        usual case, the whole queue, is taken without counting. Every chunk
        must have ``len(chunk)`` equal to its size in bytes.
        """
        # Hot path: once per batch.
        if len(chunks) <= max_items and queued_bytes <= max_bytes:
            # The whole queue fits (the usual case): move it in one step.
            batch = cls(list(chunks), list(tickets), left=queued_bytes, ticketed=queued_tickets)
            chunks.clear()
            tickets.clear()
            return batch
        taken: list[BytesLike] = []
        taken_tickets: list[T | None] = []
        size = 0
        ticketed = 0
        while chunks and len(taken) < max_items and size < max_bytes:
            data = chunks.popleft()
            ticket = tickets.popleft()
            taken.append(data)
            taken_tickets.append(ticket)
            size += len(data)
            if ticket is not None:
                ticketed += 1
        return cls(taken, taken_tickets, left=size, ticketed=ticketed)

    def unwritten(self) -> list[BytesLike]:
        """The chunks still to write, the first one possibly a view of its unwritten end."""
        first = self.first
        return self.chunks[first:] if first else self.chunks

    def advance(self, n: int) -> int:
        """Account ``n`` written bytes (``0 <= n <= left``); return how many chunks completed.

        Completed chunks resolve their tickets in order; a chunk written in
        part is replaced by a view of its unwritten end, so the next
        ``unwritten()`` resumes at the exact byte.
        """
        # Hot path: once per write call.
        chunks = self.chunks
        first = self.first
        self.left -= n
        if self.left == 0:
            # The whole (rest of the) batch went out in one write.
            done = len(chunks)
        else:
            done = first
            count = len(chunks)
            while done < count and n >= len(chunks[done]):
                n -= len(chunks[done])
                done += 1
            if n:
                chunks[done] = memoryview(chunks[done])[n:]
        if self.ticketed:
            tickets = self.tickets
            for i in range(first, done):
                ticket = tickets[i]
                if ticket is not None:
                    ticket._resolve(None)
        self.first = done
        return done - first

    def fail(self, error: WriteError | None, closed: WriteError) -> None:
        """End the batch unwritten, resolving every unfinished chunk's ticket.

        The chunk being written gets ``error`` (``closed`` when ``None``);
        every later one gets ``closed``.
        """
        tickets = self.tickets
        first = self.first
        for i in range(first, len(tickets)):
            ticket = tickets[i]
            if ticket is not None:
                ticket._resolve(error if (i == first and error) else closed)
        self.first = len(tickets)
        self.left = 0
