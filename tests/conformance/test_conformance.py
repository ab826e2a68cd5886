"""The safety contract on every reader and writer kind, in every state, under every fault.

Each test opens one connection of a kind (``conformance_kinds.KINDS``), drives
it into a state, injects a fault, and checks the contract:

* every operation in flight (a read, a producer waiting for room, every
  ticket, the final ``aclose()``) ends within :data:`BOUND`, with a result or
  one of the errors the contract names, never another exception;
* no byte lost, duplicated or reordered: what the library read is a prefix of
  what the peer sent, what the peer received a prefix of what the library
  accepted; after a fault that spares the connection (cancellation, an outer
  timeout) the rest of the exchange completes exactly;
* ``pending_bytes >= 0`` and ``len(buf) <= max_len``;
* no descriptor leaked (``/proc/self/fd``);
* the loop is never blocked (the suite-wide heartbeat in ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
from conformance_kinds import KINDS, MAX_LEN, Endpoint

from bytes_handoff import HandoffError, WriteError

#: How long any operation may take to end once its fault is injected.
BOUND = 5.0
#: The library's writes: pieces of this size, one in four with a ticket.
PIECE = 8 * 1024
#: A producer that accepted this much without pausing means the state was never reached.
WRITE_CEILING = 32 * 1024 * 1024

STATES = ["idle-read", "full-buffer", "paused-write", "half-closed"]
FAULTS = [
    "peer-reset",
    "peer-close",
    "local-close",
    "local-abort",
    "cancel",
    "timeout",
    "callback-raises",
]
#: Faults after which the connection is still usable: the exchange must complete.
SPARING = {"cancel", "timeout"}


def pattern(n: int, seed: int) -> bytes:
    period = bytes((seed + i * 7) % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]


def cases() -> Iterator[Any]:
    for kind, spec in KINDS.items():
        for state in STATES:
            for fault in FAULTS:
                if state == "half-closed" and not spec.half_close:
                    continue  # TLS cannot half-close
                if fault == "callback-raises" and (
                    not spec.callback or state in ("full-buffer", "half-closed")
                ):
                    continue  # no callback, or no read left to run it on
                if fault in SPARING and state == "full-buffer":
                    continue  # nothing of the library's waits there: a full buffer refuses
                yield pytest.param(kind, state, fault, id=f"{kind}-{state}-{fault}")


def same(got: bytes | bytearray, want: bytes | bytearray, what: str) -> None:
    """``got == want``, or an error saying where they part (payloads are too long to diff)."""
    if got == want:
        return
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    where = f"they differ at byte {at}" if at is not None else "one is a prefix of the other"
    raise AssertionError(f"{what}: {len(got)} bytes where {len(want)} were sent; {where}")


def open_fds() -> int:
    """Sockets and pipes this process holds (uvloop opens ``/dev/null`` once per loop)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor
            continue
        count += target.startswith(("socket:", "pipe:"))
    return count


class Exchange:
    """One connection's traffic both ways, with what each side sent and took."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.sent = bytearray()  # every byte the peer was asked to send, in order
        self.got = bytearray()  # every byte the library side took out of its buffer
        self.accepted: list[bytes] = []  # chunks the library accepted for writing, in order
        self.tickets: list[Any] = []
        self.local: list[asyncio.Task[Any]] = []  # the library-side work in flight
        self.deadlines: list[asyncio.Timeout] = []
        self.peer_sending: asyncio.Task[Any] | None = None

    # -- the peer ---------------------------------------------------------------

    def peer_send(self, data: bytes) -> asyncio.Task[Any]:
        self.sent += data
        self.peer_sending = self.ep.peer.start(self.ep.peer.send(data))
        return self.peer_sending

    # -- the library side -------------------------------------------------------

    def in_flight(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run ``work`` under an outer timeout that the ``timeout`` fault makes expire."""

        async def bounded() -> Any:
            async with asyncio.timeout(None) as deadline:
                self.deadlines.append(deadline)
                return await work

        task = asyncio.ensure_future(bounded())
        self.local.append(task)
        return task

    def take(self) -> None:
        buf = self.ep.buf
        self.got += buf.split_prefix(len(buf))
        assert len(buf) <= MAX_LEN

    async def read_exactly(self, n: int) -> None:
        while len(self.got) < n:
            assert await self.ep.read() > 0, "end of stream before the bytes sent"
            assert len(self.ep.buf) <= MAX_LEN
            self.take()

    async def read_to_eof(self) -> None:
        while await self.ep.read():
            assert len(self.ep.buf) <= MAX_LEN
            self.take()

    async def produce(self) -> None:
        """Write until stopped; every accepted chunk is recorded before the next is offered."""
        out, seed = self.ep.out, 0
        while sum(map(len, self.accepted)) < WRITE_CEILING:
            chunk = pattern(PIECE, seed)
            seed += 1
            if seed % 4:
                await out.write_fire_and_forget(chunk)
            else:
                self.tickets.append(await out.write(chunk))
            self.accepted.append(chunk)

    async def until_writes_stall(self) -> None:
        """Wait until the producer has accepted nothing for 50 ms: writing is paused."""
        producer = self.local[-1]
        last, still = -1, 0
        while still < 5:
            await asyncio.sleep(0.01)
            assert not producer.done(), producer
            count = len(self.accepted)
            still = still + 1 if count == last else 0
            last = count


async def reach(ex: Exchange, state: str) -> None:
    ep = ex.ep
    if state == "idle-read":
        await ex.peer_send(pattern(3000, 1))
        await ex.read_exactly(3000)
        ex.in_flight(ep.read())
        await asyncio.sleep(0.02)
    elif state == "full-buffer":
        ex.peer_send(pattern(8 * MAX_LEN + 1, 2))  # far more than fits: the peer blocks
        while len(ep.buf) < MAX_LEN:
            assert await ep.read() > 0
        assert len(ep.buf) == MAX_LEN
    elif state == "paused-write":
        ex.in_flight(ex.produce())
        await ex.until_writes_stall()
    elif state == "half-closed":
        await ex.peer_send(pattern(3000, 3))
        await ep.peer.shut_write()
        await ex.read_to_eof()
        assert ex.got == ex.sent
        ex.in_flight(ex.produce())
        await ex.until_writes_stall()
    else:
        raise AssertionError(state)


async def inject(ex: Exchange, fault: str) -> None:
    ep = ex.ep
    if fault == "peer-reset":
        await ep.peer.reset()
    elif fault == "peer-close":
        await ep.peer.close()
    elif fault == "local-close":
        await ep.close()
    elif fault == "local-abort":
        await ep.abort()
    elif fault == "cancel":
        for task in ex.local:
            task.cancel()
    elif fault == "timeout":
        loop = asyncio.get_running_loop()
        for deadline in ex.deadlines:
            deadline.reschedule(loop.time())
    elif fault == "callback-raises":
        assert ep.break_callback is not None
        ep.break_callback()
        ex.peer_send(b"!")
    else:
        raise AssertionError(fault)


def check_outcome(task: asyncio.Task[Any], fault: str) -> None:
    """A task in flight ended with a result or an error the contract names for ``fault``."""
    assert task.done(), task
    if task.cancelled():
        assert fault == "cancel", f"cancelled by nobody: {task}"
        return
    exc = task.exception()
    if exc is None or isinstance(exc, HandoffError):
        return
    if isinstance(exc, TimeoutError) and fault == "timeout":
        return
    raise AssertionError(f"{fault}: ended with {type(exc).__name__}: {exc}") from exc


async def settle(ex: Exchange, fault: str) -> None:
    """Every operation in flight ends within BOUND; the handoff closes within BOUND."""
    ep = ex.ep
    async with asyncio.timeout(BOUND):
        if ex.local:
            await asyncio.wait(ex.local)
        for task in ex.local:
            check_outcome(task, fault)
        for ticket in ex.tickets:
            if fault not in SPARING:
                try:
                    await ticket
                except WriteError:
                    pass
    assert ep.out.pending_bytes >= 0
    assert len(ep.buf) <= MAX_LEN


async def finish_sparing(ex: Exchange, state: str) -> None:
    """After a fault that spares the connection, the rest of the exchange is exact."""
    ep = ex.ep
    async with asyncio.timeout(BOUND * 2):
        if state == "idle-read":
            more = pattern(5000, 4)
            sending = ex.peer_send(more)
            await ex.read_exactly(len(ex.sent))
            await sending
            same(ex.got, ex.sent, "the library read")
        receiving = ep.peer.start(ep.peer.recv_all())
        await ep.out.aclose()  # flush and shut: the peer sees the end of stream
        received, clean = await receiving
        assert clean
        same(received, b"".join(ex.accepted), "the peer received")


async def check_prefixes(ex: Exchange, fault: str) -> None:
    """After a fault that ends the connection, each side holds a prefix of what was sent."""
    ep = ex.ep
    ex.take()
    assert ex.sent.startswith(ex.got), "the library read bytes the peer never sent"
    async with asyncio.timeout(BOUND):
        try:
            await ep.out.aclose()
        except WriteError:
            pass
        assert ep.out.closed
        if fault not in ("peer-reset", "peer-close"):
            received, _clean = await ep.peer.start(ep.peer.recv_all())
            assert b"".join(ex.accepted).startswith(received), "the peer got bytes out of order"
        if ex.peer_sending is not None:
            await asyncio.wait([ex.peer_sending])


@pytest.mark.parametrize(("kind", "state", "fault"), list(cases()))
@pytest.mark.asyncio
async def test_contract(kind: str, state: str, fault: str, request: pytest.FixtureRequest) -> None:
    gc.collect()
    fds = open_fds()
    async with asyncio.timeout(60):
        async with KINDS[kind].open(request) as ep:
            ex = Exchange(ep)
            await reach(ex, state)
            await inject(ex, fault)
            await settle(ex, fault)
            if fault in SPARING:
                await finish_sparing(ex, state)
            else:
                await check_prefixes(ex, fault)
        for task in ep.tasks:
            assert task.done(), f"the kind's own task outlived its connection: {task}"
    for _ in range(3):  # libuv closes handles on its next iterations
        await asyncio.sleep(0)
    gc.collect()
    assert open_fds() == fds, "a descriptor leaked"
