"""Several producers share one writer through a bounded ``WriteHandoff``.

Each producer submits owned ``bytes`` chunks and gets a ``WriteTicket`` back;
awaiting the ticket says that chunk was handed to the writer in full. The queue
is small on purpose, so producers wait for room (backpressure) and the output
still keeps each producer's order. A non-waiting ``try_write`` that is refused
gives its bytes back instead of dropping them.

Run: ``python examples/write_handoff.py``
"""

from __future__ import annotations

import asyncio

from bytes_handoff import (
    DuplexStream,
    WriteBackpressure,
    WriteHandoff,
    WriteHandoffConfig,
    WriteTicket,
    duplex_pair,
)

PRODUCERS = 3
CHUNKS_EACH = 10


async def produce(handoff: WriteHandoff, name: str) -> int:
    """Submit chunks, then wait for every ticket; return the bytes written."""
    tickets: list[WriteTicket] = []
    submitted = 0
    for i in range(CHUNKS_EACH):
        chunk = f"{name}:{i};".encode()  # owned by the handoff from here on
        tickets.append(await handoff.write(chunk))  # waits while the queue is full
        submitted += len(chunk)
    for ticket in tickets:
        await ticket  # raises the WriteError that ended the chunk, if any
    return submitted


async def collect(stream: DuplexStream) -> bytes:
    received = bytearray()
    while chunk := await stream.read():
        received += chunk
    return bytes(received)


async def main() -> None:
    ours, peer = duplex_pair(capacity=32)
    collecting = asyncio.create_task(collect(peer))
    cfg = WriteHandoffConfig(max_items=4, max_pending_bytes=64)
    async with WriteHandoff.spawn(ours, cfg) as handoff:
        # A refused non-waiting write hands the very same bytes back.
        chunk = b"x" * 65
        try:
            handoff.try_write(chunk)
        except WriteBackpressure as refused:
            assert refused.into_bytes() is chunk
            print(f"refused: {refused} (bytes given back)")
        names = [f"p{n}" for n in range(PRODUCERS)]
        written = await asyncio.gather(*(produce(handoff, name) for name in names))
    # Leaving `async with` flushed the queue and shut the write side: the peer saw EOF.
    output = await collecting

    records = [r.split(":") for r in output.decode().split(";")[:-1]]
    for name in names:
        assert [int(i) for who, i in records if who == name] == list(range(CHUNKS_EACH))
    assert len(output) == sum(written)
    print(
        f"write_handoff: {PRODUCERS} producers wrote {len(records)} chunks ({len(output)} bytes),"
        " every ticket completed, each producer's order kept"
    )


if __name__ == "__main__":
    asyncio.run(main())
