"""The bounds of the harness's numeric flags, shared with the run tools that check them first.

Every number is bounded and checked before anything is allocated (a typo must
not eat the machine). The harness validates against these
(``harness.config``); the run tools use them to refuse a value, or size a
default, before they start any run.
"""

from __future__ import annotations

__all__ = [
    "MAX_BUFFER_BYTES",
    "MAX_CONNECTIONS",
    "MAX_DRIVERS",
    "MAX_DURATION_SECONDS",
    "MAX_FRAME_LEN",
    "MAX_ITERATIONS",
    "MAX_RATE",
    "MAX_ROUTE_FRAMES",
    "MAX_RUNS",
    "MAX_RUN_MEMORY",
    "MAX_TIMEOUT_SECONDS",
    "MAX_TUNNEL_BYTES",
    "MAX_WORKER_THREADS",
    "MAX_WRITE_PENDING_BYTES",
    "MIN_FRAME_LEN",
    "MIN_RSS_GROWTH_SAMPLES",
    "MIN_RSS_GROWTH_SPAN_SECONDS",
    "GiB",
    "MiB",
]

MiB = 1024 * 1024
GiB = 1024 * MiB

#: Stream ids are 4 digits in the frame header (`GET /tenant/NNNN/...`).
MAX_CONNECTIONS = 10_000
#: Drivers of one service (``--drivers``; the service's ``--service-addr``/``--sink-addr``
#: pairs, one per driver): the service listens on each pair's address in every worker.
MAX_DRIVERS = 64
#: Workers are processes; far more than any machine's cores only measures the scheduler.
MAX_WORKER_THREADS = 256
MAX_ROUTE_FRAMES = 1_000_000
#: ``GET /tenant/NNNN``: the shortest frame that still carries the stream id.
MIN_FRAME_LEN = 16
MAX_FRAME_LEN = 1 * MiB
#: Every worker holds the whole tunnel pattern (and a memfd copy of it).
MAX_TUNNEL_BYTES = 1 * GiB
#: --read-reserve, --input-fragment, --duplex-capacity.
MAX_BUFFER_BYTES = 64 * MiB
MAX_WRITE_PENDING_BYTES = 2 * MAX_BUFFER_BYTES
MAX_ITERATIONS = 1_000_000
#: --rate (streams per second, all connections together): far above what one host starts.
MAX_RATE = 1_000_000
#: Runs per cell of the wrapper, the matrix and the two-hosts check.
MAX_RUNS = 10_000
MAX_DURATION_SECONDS = 24 * 3600
#: --startup-timeout-seconds and --idle-timeout-millis: every wait of a run ends.
MAX_TIMEOUT_SECONDS = 3600
#: An RSS growth per minute is reported only when the samples it is fitted to (those after
#: the first 20 %, the warm-up) span at least this long and number at least this many
#: (sampled about once a second: a sustained run of about 15 s). A slope over a shorter
#: span extrapolates noise: two samples 7 ms apart once read as 689 MB/min.
MIN_RSS_GROWTH_SPAN_SECONDS = 10.0
MIN_RSS_GROWTH_SAMPLES = 10
#: What the harness's memory estimate of one run (``BenchConfig.memory_estimate``) may reach.
MAX_RUN_MEMORY = 8 * GiB
