"""Content routing, then a raw tunnel that keeps the bytes already read.

A proxy reads a client stream of request lines. Each complete line is a safe
prefix: it is split off as its own owned ``bytes`` object and routed. A line
that has only partly arrived ("GE") is left in the buffer until the rest comes.
At the ``TUNNEL`` line the proxy switches to raw mode: ``take_tail()`` hands
the bytes it already read past the marker to a fresh buffer (``from_tail``),
and everything from there on is forwarded upstream through a ``WriteHandoff``
without losing a byte.

Run: ``python examples/content_routing.py``
"""

from __future__ import annotations

import asyncio

from bytes_handoff import (
    DuplexStream,
    HandoffBuffer,
    HandoffBufferConfig,
    WriteHandoff,
    duplex_pair,
)

CFG = HandoffBufferConfig(max_len=4096, read_reserve=512)
MARKER = b"TUNNEL\n"
RAW = bytes(range(256)) * 4  # opaque tunnel payload


async def client(stream: DuplexStream, proxy_waiting: asyncio.Event) -> None:
    await stream.write(b"GET /a\nGET /b\nGE")  # ends inside a token
    await proxy_waiting.wait()
    await stream.write(b"T /c\n" + MARKER + RAW[:100])  # marker and raw bytes in one read
    await stream.write(RAW[100:])
    stream.shutdown_write()


async def proxy(
    downstream: DuplexStream, upstream: DuplexStream, proxy_waiting: asyncio.Event
) -> list[bytes]:
    buf = HandoffBuffer.with_config(CFG)
    routed: list[bytes] = []
    # Routing mode: hand on complete lines only.
    while True:
        newline = buf.find(b"\n")
        if newline < 0:
            if buf:
                print(f"waiting: incomplete token {bytes(buf.peek())!r}")
                proxy_waiting.set()
            if await buf.read_available(downstream) == 0:
                raise ConnectionError("stream ended before the tunnel marker")
            continue
        line = buf.split_prefix(newline + 1)
        if line == MARKER:
            break
        print(f"routed: {line!r}")
        routed.append(line)

    # Raw mode: the next parser adopts the tail that routing already read.
    raw = HandoffBuffer.from_tail(buf.take_tail(), CFG)
    print(f"tunnel: switching with {len(raw)} bytes already read")
    async with WriteHandoff.spawn(upstream) as handoff:
        while raw or await raw.read_available(downstream):
            await handoff.write_fire_and_forget(raw.freeze_all())
    return routed


async def sink(stream: DuplexStream) -> bytes:
    received = bytearray()
    while chunk := await stream.read():
        received += chunk
    return bytes(received)


async def main() -> None:
    client_end, proxy_down = duplex_pair(capacity=256)
    proxy_up, sink_end = duplex_pair(capacity=256)
    proxy_waiting = asyncio.Event()
    routed, tunneled, _ = await asyncio.gather(
        proxy(proxy_down, proxy_up, proxy_waiting),
        sink(sink_end),
        client(client_end, proxy_waiting),
    )
    assert routed == [b"GET /a\n", b"GET /b\n", b"GET /c\n"], routed
    assert tunneled == RAW, len(tunneled)
    print(
        f"content_routing: routed {len(routed)} requests, tunneled {len(tunneled)} raw bytes intact"
    )


if __name__ == "__main__":
    asyncio.run(main())
