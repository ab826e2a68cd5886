"""Incremental line parsing with a partial tail.

A client sends newline-terminated lines in fragments that ignore line
boundaries. The server reads whatever has arrived into one ``HandoffBuffer``,
splits off every complete line as its own owned ``bytes`` object, and leaves a
partial line in the buffer until the rest arrives. At end of stream the
unterminated tail is taken as it is.

Run: ``python examples/line_protocol.py``
"""

from __future__ import annotations

import asyncio

from bytes_handoff import DuplexStream, HandoffBuffer, duplex_pair

# Fragments as the network might deliver them: lines split anywhere.
FRAGMENTS = [b"HELLO wor", b"ld\nSECOND", b" line\nthi", b"rd\n", b"partial tail"]


async def client(stream: DuplexStream) -> None:
    for fragment in FRAGMENTS:
        await stream.write(fragment)
        await asyncio.sleep(0)  # let the server see each fragment on its own
    stream.shutdown_write()


async def read_lines(stream: DuplexStream) -> tuple[list[bytes], bytes]:
    """Return the complete lines and the unterminated tail."""
    buf = HandoffBuffer(max_len=1024, read_reserve=64)
    lines: list[bytes] = []
    while True:
        # Split off every complete line that is already buffered.
        while (newline := buf.find(b"\n")) >= 0:
            lines.append(buf.split_prefix(newline + 1))
        if await buf.read_available(stream) == 0:  # end of stream
            return lines, buf.freeze_all()


async def main() -> None:
    server_end, client_end = duplex_pair(capacity=16)
    sending = asyncio.create_task(client(client_end))
    lines, tail = await read_lines(server_end)
    await sending

    assert lines == [b"HELLO world\n", b"SECOND line\n", b"third\n"], lines
    assert tail == b"partial tail", tail
    for line in lines:
        print(f"line: {line!r}")
    print(f"tail: {tail!r}")
    print(f"line_protocol: {len(lines)} complete lines and a {len(tail)}-byte partial tail")


if __name__ == "__main__":
    asyncio.run(main())
