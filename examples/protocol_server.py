"""A line-routing server on the protocol path: ``create_server`` with ``HandoffProtocol``.

Two servers, one per consumption style, answer the same client:

* callback: ``on_data`` runs on the loop after every read and routes each
  complete line as an owned chunk through a ``WriteHandoff`` (no task per read);
* awaitable: ``start_handoff_server`` runs a handler per connection that
  ``await``s ``read_until`` and writes replies the same way.

Run: ``python examples/protocol_server.py``
"""

from __future__ import annotations

import asyncio

from bytes_handoff import (
    HandoffBufferConfig,
    HandoffProtocol,
    WriteHandoff,
    open_handoff_connection,
    start_handoff_server,
)

CFG = HandoffBufferConfig(max_len=4096, read_reserve=1024)
REQUESTS = [b"GET /a\n", b"GET /b\n", b"PUT /c\n"]


class Router(HandoffProtocol):
    """Callback style: every complete line goes back upper-cased, in order."""

    def __init__(self) -> None:
        super().__init__(CFG, on_data=self.route)
        self.out: WriteHandoff | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.out = WriteHandoff.spawn(self)  # drains into this connection's transport

    def route(self, proto: HandoffProtocol) -> None:
        assert self.out is not None
        while (line := self.buffer.split_through(b"\n")) is not None:
            self.out.try_write_fire_and_forget(line.upper())  # owned bytes: safe to queue
        if self.at_eof:
            self.out.close()  # write what is queued, then end the stream


async def awaitable_handler(proto: HandoffProtocol) -> None:
    """Awaitable style: one task per connection, ``read_until`` with StreamReader semantics."""
    async with WriteHandoff.spawn(proto) as out:
        while True:
            try:
                line = await proto.read_until(b"\n")
            except asyncio.IncompleteReadError as end:
                assert end.partial == b"", "a request without its newline"
                return
            await out.write_fire_and_forget(b"OK " + line)


async def ask(port: int) -> list[bytes]:
    """A client on the same protocol path: send the requests, read every reply line."""
    proto = await open_handoff_connection("127.0.0.1", port, config=CFG)
    async with WriteHandoff.spawn(proto) as out:
        for request in REQUESTS:
            await out.write_fire_and_forget(request)
    replies = []
    while True:
        try:
            replies.append(await proto.read_until(b"\n"))
        except asyncio.IncompleteReadError:
            break
    await proto.wait_closed()
    return replies


async def main() -> None:
    loop = asyncio.get_running_loop()
    callback_server = await loop.create_server(Router, "127.0.0.1", 0)
    awaitable_server = await start_handoff_server(awaitable_handler, "127.0.0.1", 0, config=CFG)
    async with asyncio.timeout(10), callback_server, awaitable_server:
        upper = await ask(callback_server.sockets[0].getsockname()[1])
        ok = await ask(awaitable_server.sockets[0].getsockname()[1])
    for line in upper + ok:
        print(f"reply: {line!r}")
    assert upper == [r.upper() for r in REQUESTS]
    assert ok == [b"OK " + r for r in REQUESTS]
    print(f"protocol_server: {len(upper)} callback and {len(ok)} awaitable replies, in order")


if __name__ == "__main__":
    asyncio.run(main())
