"""Length-prefixed frames whose header arrives before the payload.

Each frame is a 4-byte big-endian length followed by that many payload bytes.
The sender sends each header on its own and waits until the receiver has
parsed it; only then does the payload follow, in small pieces. The receiver
reserves room for the announced payload, keeps reading, and splits the frame
off as one owned ``bytes`` object once all of it is buffered.

Run: ``python examples/length_prefix.py``
"""

from __future__ import annotations

import asyncio
import socket

from bytes_handoff import HandoffBuffer

HEADER = 4
PAYLOADS = [b"first frame", b"", b"a frame that arrives in pieces", b"last"]


async def sender(sock: socket.socket, parsed_headers: asyncio.Queue[int]) -> None:
    loop = asyncio.get_running_loop()
    for payload in PAYLOADS:
        await loop.sock_sendall(sock, len(payload).to_bytes(HEADER, "big"))
        # The receiver has this header, and nothing of the payload yet.
        assert await parsed_headers.get() == len(payload)
        for i in range(0, len(payload), 7):
            await loop.sock_sendall(sock, payload[i : i + 7])
    sock.shutdown(socket.SHUT_WR)


async def receiver(sock: socket.socket, parsed_headers: asyncio.Queue[int]) -> list[bytes]:
    buf = HandoffBuffer(max_len=4096, read_reserve=256)
    frames: list[bytes] = []
    size: int | None = None  # payload length of the frame being assembled
    while True:
        if size is None and len(buf) >= HEADER:
            size = int.from_bytes(buf.peek()[:HEADER], "big")
            print(f"header: {size}-byte payload announced, {len(buf) - HEADER} bytes of it here")
            buf.reserve_read_capacity(max(0, HEADER + size - len(buf)))
            parsed_headers.put_nowait(size)
        if size is not None and len(buf) >= HEADER + size:
            buf.advance(HEADER)
            frames.append(buf.split_prefix(size))
            print(f"frame:  {frames[-1]!r}")
            size = None
            continue
        if await buf.read_available(sock) == 0:
            assert size is None and not buf, "stream ended inside a frame"
            return frames


async def main() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.setblocking(False)
        parsed_headers: asyncio.Queue[int] = asyncio.Queue()
        frames, _ = await asyncio.gather(
            receiver(ours, parsed_headers), sender(theirs, parsed_headers)
        )
    assert frames == PAYLOADS, frames
    print(f"length_prefix: {len(frames)} frames, each header parsed before its payload was sent")


if __name__ == "__main__":
    asyncio.run(main())
