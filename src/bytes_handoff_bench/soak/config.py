"""One soak's knobs (:class:`SoakConfig`), the stream categories and the flags' limits."""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from pathlib import Path

from ..harness.config import BenchConfig
from ..names import Completion, Implementation, Loop, Transport
from ..output_paths import write_output

MIB = 1024 * 1024
#: The library's two paths and the proxies that use them: raw sockets (``handoff``,
#: the buffered tunnel loop; ``handoff_splice``, ``tunnel()``) and the protocol path
#: (``HandoffProtocol`` transports, callback style or awaited tickets).
LIBRARY_PATHS = {
    "socket": (Implementation.HANDOFF, Implementation.HANDOFF_SPLICE),
    "protocol": (Implementation.HANDOFF_PROTOCOL,),
}
#: Client write sizes, one drawn per stream: a prime (frames and the marker split at
#: odd offsets), about one MSS, one full proxy read.
FRAGMENTS = (97, 1448, 16384)
#: Send buffer of the proxy's sink sockets and receive buffer of the sink: small, so
#: a proxy cannot push a whole stream into kernel buffers ahead of a slow sink, and
#: a sink reset meets a proxy that is still writing (the write-side error path).
SOCKET_BUFFER = 16 * 1024
#: Stream ids cycle through the 4-digit space; ids of consecutive waves never collide
#: as long as a wave is at most a quarter of it.
MAX_CONNECTIONS = 2500
#: --rss-limit-mib-per-min above this checks nothing (a GiB a second).
MAX_RSS_SLOPE_MIB_PER_MIN = 60 * 1024
#: The leak gate's limits above these check nothing.
MAX_HEAP_LIMIT_BYTES_PER_STREAM = 1024 * 1024
MAX_OBJECTS_LIMIT_PER_STREAM = 1024.0
#: Named categories; the last three fail the soak whenever they occur.
CATEGORIES = (
    "verified",
    "client_reset",
    "sink_reset",
    "sink_stall_reset",
    "proxy_killed",
    "connect_refused",
    "corrupted",
    "hang",
    "proxy_crashed",
    "unexplained",
)
FAILURE_CATEGORIES = ("corrupted", "hang", "proxy_crashed", "unexplained")
#: The RSS gate (when asked for) needs this many samples of service 0 (a shorter run
#: reports, not gates).
MIN_RSS_SAMPLES = 20
#: After a wave's clients end, the sink must be idle this long: a proxy's sink
#: connection still in the listen backlog gets accepted (and attributed) in time.
SINK_QUIET_SECONDS = 0.25


@dataclass(frozen=True)
class SoakConfig:
    """Every knob of one soak; children get it as JSON."""

    duration_seconds: float = 60.0
    connections: int = 128
    services: int = 2
    seed: int = 0
    kill_interval_seconds: float = 4.0
    client_reset_rate: float = 0.05
    sink_reset_rate: float = 0.05
    #: Streams whose sink stops reading (the proxy's writes fill and pause) for
    #: ``stall_seconds``, then resets: the fault that once froze the protocol path.
    sink_stall_reset_rate: float = 0.05
    stall_seconds: float = 1.0
    #: Which library path the services proxy with: "socket", "protocol" or "both"
    #: (drawn per stream).
    library_path: str = "both"
    hang_seconds: float = 30.0
    #: The leak gate (see :mod:`.memory`): growth of service 0's live heap per
    #: stream it served, sampled by the service itself whenever no stream is open,
    #: after a full collection (``steady_slope``).
    heap_limit_bytes_per_stream: float = 256.0
    py_blocks_limit_per_stream: float = 0.5
    gc_objects_limit_per_stream: float = 0.1
    #: Service 0's RSS slope is reported; it gates only when this is given. RSS keeps
    #: the heap's high-water mark (the peak of streams open at once, up to a whole
    #: wave while its peer is dead) and moves in steps with it: not a leak figure.
    rss_limit_mib_per_min: float | None = None
    #: Calibration only (a hidden flag): every service keeps a ``bytes`` object of
    #: this size per stream, a leak the gate must fail.
    inject_leak_bytes: int = 0
    route_frames: int = 64
    frame_len: int = 63
    tunnel_bytes: int = 256 * 1024
    read_reserve: int = 16 * 1024
    loop: str = Loop.UVLOOP  # a str: children get the config as JSON
    service_cores: str | None = None
    driver_cores: str | None = None

    @property
    def variants(self) -> list[tuple[Implementation, Completion]]:
        """The proxy variants the services draw from."""
        paths = LIBRARY_PATHS if self.library_path == "both" else [self.library_path]
        return [(i, c) for path in paths for i in LIBRARY_PATHS[path] for c in Completion]

    def bench_config(
        self,
        implementation: Implementation = Implementation.HANDOFF,
        completion: Completion = Completion.TICKET,
    ) -> BenchConfig:
        """The harness configuration the workload, the proxy functions and the event
        loop (``workers.run_loop``) read."""
        return BenchConfig(
            transport=Transport.TCP,
            implementation=implementation,
            completion=completion,
            connections=self.connections,
            route_frames=self.route_frames,
            frame_len=self.frame_len,
            tunnel_bytes=self.tunnel_bytes,
            read_reserve=self.read_reserve,
            loop=Loop(self.loop),
        ).validate()


def error_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def write_json(path: Path, data: object) -> None:
    """Atomically (a new file renamed over it: ``output_paths``), so a reader or a SIGKILL
    never leaves half a file; never through a symlink."""
    write_output(path, json.dumps(data, indent=1), path.name)
