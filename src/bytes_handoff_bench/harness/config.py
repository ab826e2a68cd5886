"""One run's configuration: the CLI flags, validated, with the derived values."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import defaults
from ..errors import UsageError
from ..limits import (
    MAX_BUFFER_BYTES,
    MAX_CONNECTIONS,
    MAX_DRIVERS,
    MAX_DURATION_SECONDS,
    MAX_FRAME_LEN,
    MAX_ITERATIONS,
    MAX_RATE,
    MAX_ROUTE_FRAMES,
    MAX_RUN_MEMORY,
    MAX_TIMEOUT_SECONDS,
    MAX_TUNNEL_BYTES,
    MAX_WORKER_THREADS,
    MAX_WRITE_PENDING_BYTES,
    MIN_FRAME_LEN,
    GiB,
)
from ..names import (
    FRAME_BUDGET,
    Completion,
    Loop,
    Role,
    Scenario,
    TlsMode,
    Transport,
    tls_refusal,
    transports_of,
)
from ..output_paths import check_output_file

__all__ = ["SINK_BUFFER", "Addr", "BenchConfig", "parse_addr"]

Addr = tuple[str, int]

#: Sink receive buffer (reused): large reads keep the sink cheap.
SINK_BUFFER = 256 * 1024


def parse_addr(text: str, flag: str) -> Addr:
    """``HOST:PORT`` -> ``(host, port)``; a ``UsageError`` naming ``flag`` otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"{flag}: expected HOST:PORT (port 0-65535), got {text!r}")
    return host.strip("[]"), int(port_text)


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of one run, validated by :meth:`validate`; see ``cli.build_parser``.

    The defaults are :mod:`bytes_handoff_bench.defaults`, which the run tools read too.
    """

    transport: Transport = defaults.TRANSPORT
    role: Role = Role.INTEGRATED
    #: A :class:`~bytes_handoff_bench.names.Implementation`, or the name of one registered
    #: beside them (``implementations.register``).
    implementation: str = defaults.IMPLEMENTATION
    scenario: Scenario = defaults.SCENARIO
    completion: Completion = defaults.COMPLETION
    worker_threads: int = defaults.WORKER_THREADS
    connections: int = defaults.CONNECTIONS
    route_frames: int = defaults.ROUTE_FRAMES
    frame_len: int = defaults.FRAME_LEN
    tunnel_bytes: int = defaults.TUNNEL_BYTES
    input_fragment_flag: int | None = None
    read_reserve: int = defaults.READ_RESERVE
    write_pending_bytes_flag: int = defaults.WRITE_PENDING_BYTES
    duplex_capacity: int = defaults.DUPLEX_CAPACITY
    iterations: int = defaults.ITERATIONS
    duration_seconds: float = defaults.DURATION_SECONDS
    service_addr: Addr | None = None
    sink_addr: Addr | None = None
    #: tcp-service: the (``--service-addr``, ``--sink-addr``) pairs after the first, one per
    #: further driver: what arrives on a pair's service address goes to its sink.
    extra_routes: tuple[tuple[Addr, Addr], ...] = ()
    #: tcp-driver: how many drivers share the load (``--drivers``), and which one this is.
    drivers: int = 1
    driver_index: int = 0
    ready_file: str | None = None
    idle_timeout_millis: int = defaults.IDLE_TIMEOUT_MILLIS
    loop: Loop = Loop.ASYNCIO
    startup_timeout_seconds: float = defaults.STARTUP_TIMEOUT_SECONDS
    rss_samples: str | None = None
    #: Open loop: ``--rate`` (streams per second) or ``--rate-mib`` (MiB per second, turned
    #: into streams per second); neither: closed loop (waves).
    rate_flag: float | None = None
    rate_mib_flag: float | None = None
    rate_tolerance_flag: float | None = None
    max_lag_millis_flag: int | None = None
    #: ``--tls``: the client -> proxy and proxy -> sink legs run TLS (``harness/tls.py``).
    tls: bool = False
    tls_mode_flag: TlsMode | None = None
    #: ``--tls-cert``/``--tls-key``: PEM files; ``None`` with ``--tls``: made for the run.
    tls_cert: str | None = None
    tls_key: str | None = None

    # -- derived ------------------------------------------------------------------------

    @property
    def open_loop(self) -> bool:
        """Streams start on a clock (``--rate``/``--rate-mib``), not when the last one ended."""
        return self.rate_flag is not None or self.rate_mib_flag is not None

    @property
    def offered_streams_per_sec_all_drivers(self) -> float:
        """The open-loop rate in streams per second (``--rate``, or ``--rate-mib`` divided
        by the bytes of one stream), all ``--drivers`` together; 0 in a closed-loop run."""
        if self.rate_flag is not None:
            return self.rate_flag
        if self.rate_mib_flag is not None:
            return self.rate_mib_flag * 2**20 / self.bytes_per_connection
        return 0.0

    @property
    def offered_streams_per_sec(self) -> float:
        """What this process offers: its share (``1 / --drivers``) of the open-loop rate."""
        return self.offered_streams_per_sec_all_drivers / self.drivers

    @property
    def stream_ids(self) -> range:
        """The stream ids this process's clients send and its sinks accept: ``--connections``
        ids from ``--driver-index x --connections`` on, so that no two drivers of one
        service share an id (the first route frame carries it: ``GET /tenant/NNNN``)."""
        first = self.driver_index * self.connections
        return range(first, first + self.connections)

    @property
    def routes(self) -> list[tuple[Addr, Addr]]:
        """tcp-service: every (service address, sink address) pair, one per driver."""
        if self.service_addr is None or self.sink_addr is None:
            return []
        return [(self.service_addr, self.sink_addr), *self.extra_routes]

    @property
    def scheduled_streams(self) -> int:
        """Open loop: the streams on the schedule: ``--rate`` x ``--duration-seconds``
        (at least 1), or ``--iterations`` x ``--connections`` when there is no duration."""
        if self.duration_seconds > 0:
            return max(1, round(self.offered_streams_per_sec * self.duration_seconds))
        return self.iterations * self.connections

    @property
    def rate_tolerance(self) -> float:
        if self.rate_tolerance_flag is None:
            return defaults.RATE_TOLERANCE
        return self.rate_tolerance_flag

    @property
    def max_lag_millis(self) -> int:
        if self.max_lag_millis_flag is None:
            return defaults.MAX_LAG_MILLIS
        return self.max_lag_millis_flag

    @property
    def tls_mode(self) -> TlsMode:
        """How the legs become TLS (``--tls-mode``, default ``accept``)."""
        return self.tls_mode_flag or TlsMode.ACCEPT

    @property
    def input_fragment(self) -> int:
        """Client write size: the flag, else 64 (fragmented) or ``read_reserve`` (coalesced)."""
        if self.input_fragment_flag is not None:
            return self.input_fragment_flag
        return 64 if self.scenario == Scenario.FRAGMENTED else self.read_reserve

    @property
    def write_pending_bytes(self) -> int:
        """The write budget: the flag, or ``2 * read_reserve`` when it is 0."""
        return self.write_pending_bytes_flag or 2 * self.read_reserve

    @property
    def prefix_len(self) -> int:
        """Route frames plus the ``TUNNEL\\n`` marker."""
        return self.route_frames * (self.frame_len + 1) + 7

    @property
    def bytes_per_connection(self) -> int:
        return self.prefix_len + self.tunnel_bytes

    @property
    def idle_timeout_seconds(self) -> float:
        return self.idle_timeout_millis / 1000.0

    def memory_estimate(self) -> tuple[int, int]:
        """Bytes a run holds at most: ``(per connection, per worker)``, generously.

        Per connection: the route frames (cached by the client's and the sink's
        worker), the proxy's read buffer and write budget, a sink buffer, and on
        duplex the two in-memory pipes. Per worker: the tunnel pattern (built
        through one temporary copy) and its memfd copy.
        """
        reserve = max(SINK_BUFFER, self.read_reserve)
        per_connection = (
            2 * self.prefix_len
            + reserve
            + self.frame_len
            + 1
            + reserve
            + self.write_pending_bytes
            + (2 * self.duplex_capacity if self.transport == Transport.DUPLEX else 0)
        )
        per_worker = 3 * (max(self.tunnel_bytes, reserve) + 512)
        return per_connection, per_worker

    # -- validation ---------------------------------------------------------------------

    def validate(self) -> BenchConfig:
        """Return ``self`` if consistent, else raise ``UsageError`` naming the flag.

        The implementation's name is the parser's to check (its choices are the
        registry); here only what the name implies: its transports and frame budget.
        """

        def at_least(flag: str, value: float, low: float) -> None:
            if not value >= low:  # NaN fails too
                raise UsageError(f"{flag} must be at least {low}, got {value}")

        def at_most(flag: str, value: float, high: float, why: str = "") -> None:
            if not value <= high:
                raise UsageError(f"{flag} must be at most {high}{why}, got {value}")

        named: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("--transport", self.transport, tuple(Transport)),
            ("--role", self.role, tuple(Role)),
            ("--scenario", self.scenario, tuple(Scenario)),
            ("--completion", self.completion, tuple(Completion)),
            ("--loop", self.loop, tuple(Loop)),
        )
        for flag, value, choices in named:
            if value not in choices:
                raise UsageError(f"{flag}: {value!r} is not one of {', '.join(choices)}")
        transports = transports_of(self.implementation)
        if self.transport not in transports:
            raise UsageError(
                f"--implementation {self.implementation} runs on --transport"
                f" {' or '.join(transports)}, not {self.transport}"
            )
        at_least("--worker-threads", self.worker_threads, 1)
        at_most("--worker-threads", self.worker_threads, MAX_WORKER_THREADS)
        at_least("--connections", self.connections, 1)
        at_most("--connections", self.connections, MAX_CONNECTIONS, " (4-digit stream ids)")
        if self.route_frames < 1:
            raise UsageError(
                f"--route-frames must be at least 1 (the sink identifies a stream by its first"
                f" frame), got {self.route_frames}"
            )
        at_most("--route-frames", self.route_frames, MAX_ROUTE_FRAMES)
        at_least("--frame-len", self.frame_len, MIN_FRAME_LEN)
        at_most("--frame-len", self.frame_len, MAX_FRAME_LEN, " (1 MiB)")
        at_least("--tunnel-bytes", self.tunnel_bytes, 0)
        at_most("--tunnel-bytes", self.tunnel_bytes, MAX_TUNNEL_BYTES, " (1 GiB)")
        for flag, size in (
            ("--read-reserve", self.read_reserve),
            ("--input-fragment", self.input_fragment),
            ("--duplex-capacity", self.duplex_capacity),
        ):
            at_least(flag, size, 1)
            at_most(flag, size, MAX_BUFFER_BYTES, " (64 MiB)")
        at_least("--iterations", self.iterations, 1)
        at_most("--iterations", self.iterations, MAX_ITERATIONS)
        for flag, seconds in (
            ("--duration-seconds", self.duration_seconds),
            ("--startup-timeout-seconds", self.startup_timeout_seconds),
        ):
            if not math.isfinite(seconds):
                raise UsageError(f"{flag} must be a finite number, got {seconds}")
        at_least("--duration-seconds", self.duration_seconds, 0)
        at_most("--duration-seconds", self.duration_seconds, MAX_DURATION_SECONDS, " (24 h)")
        at_least("--idle-timeout-millis", self.idle_timeout_millis, 1)
        at_most(
            "--idle-timeout-millis", self.idle_timeout_millis, MAX_TIMEOUT_SECONDS * 1000, " (1 h)"
        )
        at_least("--startup-timeout-seconds", self.startup_timeout_seconds, 0.001)
        at_most(
            "--startup-timeout-seconds", self.startup_timeout_seconds, MAX_TIMEOUT_SECONDS, " (1 h)"
        )
        at_least("--write-pending-bytes", self.write_pending_bytes_flag, 0)
        at_most(
            "--write-pending-bytes",
            self.write_pending_bytes_flag,
            MAX_WRITE_PENDING_BYTES,
            " (128 MiB)",
        )
        self._validate_drivers()
        self._validate_rate()
        self._validate_tls()
        per_connection, per_worker = self.memory_estimate()
        total = self.connections * per_connection + self.worker_threads * per_worker
        if total > MAX_RUN_MEMORY:
            raise UsageError(
                f"this run would hold about {total / GiB:.1f} GiB ({self.connections} connections"
                f" x {per_connection} bytes + {self.worker_threads} workers x {per_worker} bytes),"
                f" more than the {MAX_RUN_MEMORY // GiB} GiB limit: lower --connections,"
                " --route-frames, --frame-len, --tunnel-bytes or the buffer sizes"
            )
        if self.write_pending_bytes_flag and self.write_pending_bytes_flag < self.read_reserve:
            raise UsageError(
                f"--write-pending-bytes ({self.write_pending_bytes_flag}) must be 0"
                f" or at least --read-reserve ({self.read_reserve})"
            )
        if self.implementation in FRAME_BUDGET and (self.frame_len + 1 > self.write_pending_bytes):
            # A routed frame is one owned chunk; WriteHandoff refuses a chunk larger than
            # its whole budget (ByteBudgetExceeded), so say so before the run starts.
            raise UsageError(
                f"--frame-len {self.frame_len} (+1 for the newline) exceeds the write budget"
                f" of {self.write_pending_bytes} bytes: raise --write-pending-bytes"
            )
        if self.transport == Transport.DUPLEX and self.role != Role.INTEGRATED:
            raise UsageError(f"--role {self.role} needs --transport tcp (duplex is in-process)")
        if self.role == Role.TCP_SERVICE and (self.service_addr is None or self.sink_addr is None):
            raise UsageError("--role tcp-service needs --service-addr and --sink-addr")
        if self.role == Role.TCP_DRIVER:
            if self.service_addr is None or self.sink_addr is None:
                raise UsageError("--role tcp-driver needs --service-addr and --sink-addr")
            if self.service_addr[1] == 0:
                raise UsageError("--service-addr: the driver needs the service's concrete port")
        if self.role == Role.TCP_SERVICE and any(sink[1] == 0 for _, sink in self.routes):
            raise UsageError("--sink-addr: the service needs the sink's concrete port")
        for flag, path in (("--ready-file", self.ready_file), ("--rss-samples", self.rss_samples)):
            if path is not None:
                # A device or FIFO is written through; a link, a folder, a block device or
                # a folder that takes no file is refused here, before anything runs.
                check_output_file(path, flag)
        return self

    def _validate_drivers(self) -> None:
        """Several drivers, one service: the driver's share and ids, the service's pairs."""
        if self.extra_routes and self.role != Role.TCP_SERVICE:
            raise UsageError(
                "--service-addr and --sink-addr are given once, except to --role tcp-service"
                " (one pair per driver)"
            )
        if 1 + len(self.extra_routes) > MAX_DRIVERS:
            raise UsageError(
                f"--role tcp-service takes at most {MAX_DRIVERS} --service-addr/--sink-addr"
                f" pairs (one per driver), got {1 + len(self.extra_routes)}"
            )
        if (self.drivers, self.driver_index) != (1, 0) and self.role != Role.TCP_DRIVER:
            raise UsageError(
                "--drivers and --driver-index are for --role tcp-driver (several drivers, one"
                " service; the service takes one --service-addr/--sink-addr pair per driver)"
            )
        if not 1 <= self.drivers <= MAX_DRIVERS:
            raise UsageError(f"--drivers must be from 1 to {MAX_DRIVERS}, got {self.drivers}")
        if not 0 <= self.driver_index < self.drivers:
            raise UsageError(
                f"--driver-index must be from 0 to --drivers - 1 ({self.drivers - 1}),"
                f" got {self.driver_index}"
            )
        if self.drivers * self.connections > MAX_CONNECTIONS:
            raise UsageError(
                f"--drivers {self.drivers} x --connections {self.connections} ="
                f" {self.drivers * self.connections} stream ids, more than {MAX_CONNECTIONS}"
                " (4-digit stream ids, no two drivers sharing one)"
            )

    def _validate_tls(self) -> None:
        """``--tls`` and its flags: TCP, an implementation with a TLS form in the mode asked,
        and one certificate both processes of a split run trust (given, not made)."""
        given = (
            ("--tls-mode", self.tls_mode_flag),
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
        )
        if not self.tls:
            for flag, value in given:
                if value is not None:
                    raise UsageError(f"{flag} needs --tls")
            return
        if self.tls_mode not in tuple(TlsMode):
            raise UsageError(f"--tls-mode: {self.tls_mode!r} is not one of {', '.join(TlsMode)}")
        if self.transport != Transport.TCP:
            raise UsageError(
                f"--tls needs --transport tcp (TLS runs on sockets; {self.transport} is in-memory)"
            )
        why = tls_refusal(self.implementation, self.tls_mode)
        if why is not None:
            raise UsageError(f"--tls: --implementation {self.implementation} {why}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together: give both, or neither")
        if self.tls_cert is None and self.role != Role.INTEGRATED:
            raise UsageError(
                f"--role {self.role} with --tls needs --tls-cert and --tls-key: the service"
                " and the driver must share one certificate (run-stream-harness.sh makes one"
                " and passes it to both)"
            )

    def _validate_rate(self) -> None:
        """The open-loop flags: one rate, finite and bounded, for a role that has clients."""
        if not self.open_loop:
            for flag, value in (
                ("--rate-tolerance", self.rate_tolerance_flag),
                ("--max-lag-millis", self.max_lag_millis_flag),
            ):
                if value is not None:
                    raise UsageError(f"{flag} needs --rate or --rate-mib (an open-loop run)")
            return
        if self.rate_flag is not None and self.rate_mib_flag is not None:
            raise UsageError("--rate and --rate-mib are one setting: give one of them")
        if self.role == Role.TCP_SERVICE:
            raise UsageError(
                "--rate paces the clients, and --role tcp-service has none: give it to the"
                " tcp-driver (the service serves whatever arrives)"
            )
        flag = "--rate" if self.rate_flag is not None else "--rate-mib"
        given = self.rate_flag if self.rate_flag is not None else self.rate_mib_flag
        assert given is not None
        if not (math.isfinite(given) and given > 0):
            raise UsageError(f"{flag} must be above 0, got {given}")
        rate = self.offered_streams_per_sec_all_drivers
        if rate > MAX_RATE:
            raise UsageError(f"{flag} asks for {rate:g} streams/s, more than {MAX_RATE:,}")
        schedule = self.scheduled_streams / self.offered_streams_per_sec
        if schedule > MAX_DURATION_SECONDS:
            raise UsageError(
                f"{flag} {given:g}: {self.scheduled_streams} streams would take {schedule:g} s"
                f" to start, more than {MAX_DURATION_SECONDS} (24 h): raise the rate or give"
                " --duration-seconds"
            )
        tolerance = self.rate_tolerance
        if not 0 <= tolerance < 1:
            raise UsageError(
                f"--rate-tolerance must be at least 0 and below 1 (a fraction), got {tolerance}"
            )
        lag = self.max_lag_millis
        if not 1 <= lag <= MAX_TIMEOUT_SECONDS * 1000:
            raise UsageError(
                f"--max-lag-millis must be from 1 to {MAX_TIMEOUT_SECONDS * 1000} (1 h), got {lag}"
            )
