"""The default workload of a harness run, defined once.

``bytes-handoff-bench`` (``harness/config.BenchConfig`` and the flags of
``harness/cli``) and ``bench/run-stream-harness.sh`` (``tools/wrapper``,
which passes on only the flags it was given) both read these, so the two
run the same workload unless told otherwise. The run tools with a workload
of their own (the matrix, the profilers, the published targets) take from
here what they share and say in their ``--help`` where they differ.

Imports only :mod:`.names`, so the harness and the tools can both use it.
"""

from __future__ import annotations

from .names import Completion, Implementation, Scenario, Transport

__all__ = [
    "COMPLETION",
    "CONNECTIONS",
    "DUPLEX_CAPACITY",
    "DURATION_SECONDS",
    "FRAME_LEN",
    "IDLE_TIMEOUT_MILLIS",
    "IMPLEMENTATION",
    "ITERATIONS",
    "MAX_LAG_MILLIS",
    "RATE_TOLERANCE",
    "READ_RESERVE",
    "ROUTE_FRAMES",
    "SCENARIO",
    "STARTUP_TIMEOUT_SECONDS",
    "TRANSPORT",
    "TUNNEL_BYTES",
    "WORKER_THREADS",
    "WRITE_PENDING_BYTES",
]

TRANSPORT = Transport.DUPLEX
IMPLEMENTATION = Implementation.HANDOFF
SCENARIO = Scenario.FRAGMENTED
COMPLETION = Completion.TICKET
#: Event-loop worker processes.
WORKER_THREADS = 1
#: Concurrent streams per wave.
CONNECTIONS = 16
#: Routed frames per stream before the tunnel marker.
ROUTE_FRAMES = 64
#: A route frame's length without its newline (a frame is 64 bytes with it).
FRAME_LEN = 63
#: Opaque bytes per stream after the marker.
TUNNEL_BYTES = 1024 * 1024
#: The most bytes one proxy read may fill.
READ_RESERVE = 16 * 1024
#: The write budget; 0 means ``2 * READ_RESERVE``.
WRITE_PENDING_BYTES = 0
#: Capacity of each in-memory pipe (duplex transport).
DUPLEX_CAPACITY = 64 * 1024
#: Connection waves.
ITERATIONS = 1
#: 0: run ``ITERATIONS`` waves; above 0: repeat waves this long.
DURATION_SECONDS = 0.0
#: Open loop (``--rate``): an achieved rate this fraction or more below the offered one
#: means the run fell behind.
RATE_TOLERANCE = 0.05
#: Open loop: a stream that cannot start within this many milliseconds of its scheduled
#: time is not started; the schedule has slipped past the bound and the run fell behind.
MAX_LAG_MILLIS = 1000
#: A ``tcp-service`` ends this long after its last stream. Every split run waits this
#: long after its driver is done before the service reports, so it is kept short.
IDLE_TIMEOUT_MILLIS = 1000
#: Wait for the first connection / the service; also the no-progress limit.
STARTUP_TIMEOUT_SECONDS = 60.0
