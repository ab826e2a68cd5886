"""Every name the harness and its run tools share, defined once.

The harness's flags, the key=value files and the run tools' folder names all
spell these values; a ``StrEnum`` member *is* its string (``Role.TCP_SERVICE
== "tcp-service"``), so it goes into argparse ``choices``, f-strings and CSV
files unchanged. This module imports nothing else from the project, so both
the in-process harness and the tools that drive it from outside can use it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FLOOR",
    "FRAME_BUDGET",
    "REPORT_ORDER",
    "TCP_ONLY",
    "TLS_MODES",
    "Completion",
    "Implementation",
    "Loop",
    "Role",
    "Scenario",
    "TlsMode",
    "Transport",
    "implementations_for",
    "tls_refusal",
    "transports_of",
]


class Transport(StrEnum):
    """How client, proxy and sink are joined."""

    DUPLEX = "duplex"
    TCP = "tcp"


class Role(StrEnum):
    """What one harness process does."""

    INTEGRATED = "integrated"
    TCP_SERVICE = "tcp-service"
    TCP_DRIVER = "tcp-driver"


class Scenario(StrEnum):
    """How the client's bytes arrive at the proxy."""

    FRAGMENTED = "fragmented"
    COALESCED = "coalesced"


class Completion(StrEnum):
    """Whether the proxy waits for each routed frame's write to finish."""

    TICKET = "ticket"
    FIRE_AND_FORGET = "fire_and_forget"


class Loop(StrEnum):
    """The event loop a worker runs."""

    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


class TlsMode(StrEnum):
    """How a ``--tls`` run's two legs (client -> proxy, proxy -> sink) become TLS."""

    #: TLS from the first byte: ``ssl=`` on the accepted and the connecting socket.
    ACCEPT = "accept"
    #: Plain TCP, one plaintext line (``STARTTLS``) with the ClientHello pipelined behind
    #: it, then the library's ``HandoffProtocol.start_tls()`` on both legs.
    STARTTLS = "starttls"


class Implementation(StrEnum):
    """The proxies, in the one order of everything that lists them: ``--implementation all``
    runs them so, and the per-run lines, the summary lines, the comparison table and chart
    and the matrix list them so. ``handoff`` (the reference of every ratio) and
    ``handoff_splice`` first, then the library's protocol path, then the baselines, and
    last ``floor``: the cheapest service the loop allows, the reference every report
    measures the others (and the harness's own service, ``raw_protocol``) against."""

    HANDOFF = "handoff"
    HANDOFF_SPLICE = "handoff_splice"
    HANDOFF_PROTOCOL = "handoff_protocol"
    MANUAL_VEC = "manual_vec"
    RAW_COPY = "raw_copy"
    MANUAL_PROTOCOL = "manual_protocol"
    RAW_PROTOCOL = "raw_protocol"
    FLOOR = "floor"


#: Implementations that need real sockets (splice, or asyncio's create_server).
TCP_ONLY = frozenset(
    {
        Implementation.HANDOFF_SPLICE,
        Implementation.HANDOFF_PROTOCOL,
        Implementation.MANUAL_PROTOCOL,
        Implementation.RAW_PROTOCOL,
        Implementation.FLOOR,
    }
)

#: The reference line of every report: a bare ``create_server`` copy, no harness code on its
#: hot path (``harness/floor.py``); the reports show each implementation's ns/B against it.
FLOOR = Implementation.FLOOR

#: Implementations that queue each routed frame as one owned chunk in a byte-budgeted
#: ``WriteHandoff``: a frame plus its newline must fit the write budget.
FRAME_BUDGET = frozenset(
    {Implementation.HANDOFF, Implementation.HANDOFF_SPLICE, Implementation.HANDOFF_PROTOCOL}
)

#: The order of comparison tables and charts: the run order (one order everywhere).
REPORT_ORDER: tuple[Implementation, ...] = tuple(Implementation)


#: What ``--tls`` means for each implementation, per :class:`TlsMode`: the ones listed run it.
#: ``accept``: the protocol path and ``floor`` give ``ssl=`` to ``create_server`` /
#: ``connect_accepted_socket`` and ``create_connection``; the asyncio-streams baselines
#: open their streams with ``ssl=``. ``starttls``: the library's ``start_tls()`` only.
TLS_MODES: dict[str, frozenset[TlsMode]] = {
    Implementation.HANDOFF_PROTOCOL: frozenset({TlsMode.ACCEPT, TlsMode.STARTTLS}),
    Implementation.MANUAL_VEC: frozenset({TlsMode.ACCEPT}),
    Implementation.RAW_COPY: frozenset({TlsMode.ACCEPT}),
    Implementation.MANUAL_PROTOCOL: frozenset({TlsMode.ACCEPT}),
    Implementation.RAW_PROTOCOL: frozenset({TlsMode.ACCEPT}),
    Implementation.FLOOR: frozenset({TlsMode.ACCEPT}),
}

#: Why an implementation has no TLS at all.
_NO_TLS: dict[str, str] = {
    Implementation.HANDOFF: "reads and writes the raw sockets (recv_into, sendmsg), which carry"
    " no TLS (the library's socket adapters refuse a TLS socket): its TLS form is"
    " handoff_protocol",
    Implementation.HANDOFF_SPLICE: "tunnels with splice, kernel to kernel: each TLS connection"
    " has its own keys, so ciphertext spliced from one to the other means nothing (TLS is"
    " never spliced): its TLS form is handoff_protocol",
}


def tls_refusal(implementation: str, mode: str) -> str | None:
    """Why ``implementation`` cannot run with ``--tls`` in ``mode``, in words that follow its
    name; ``None`` when it can."""
    modes = TLS_MODES.get(implementation)
    if modes is None:
        return _NO_TLS.get(implementation, "has no TLS form")
    if mode in modes:
        return None
    return (
        f"has no --tls-mode {mode}: starttls is the library's start_tls(), which keeps the"
        " bytes pipelined after the plaintext line (asyncio's loop.start_tls() cannot be given"
        f" them), and only handoff_protocol has it; {implementation} runs --tls-mode"
        f" {' or '.join(sorted(modes))}"
    )


def transports_of(implementation: str) -> tuple[Transport, ...]:
    """The transports ``implementation`` runs on (both for a name not listed here)."""
    if implementation in TCP_ONLY:
        return (Transport.TCP,)
    return tuple(Transport)


def implementations_for(
    transport: Transport | str | None = None, tls_mode: TlsMode | str | None = None
) -> list[Implementation]:
    """The implementations that run on ``transport`` (all of them for ``None``), and with
    ``tls_mode`` in that TLS mode (``None``: without TLS), in run order."""
    return [
        impl
        for impl in Implementation
        if (transport is None or transport in transports_of(impl))
        and (tls_mode is None or tls_refusal(impl, tls_mode) is None)
    ]
