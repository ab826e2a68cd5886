"""The stream harness: complete client -> proxy -> sink streams through the library and baselines.

Run it as ``python -m bytes_handoff.bench`` or ``bytes-handoff-bench``
(``--help`` lists the flags). In-process use::

    from bytes_handoff.bench.cli import config_from_args
    from bytes_handoff.bench.roles import run_bench

    outcome = run_bench(config_from_args(["--connections", "4"]))

Modules: ``config`` (flags, validation), ``workload`` (stream bytes, sink
verification), ``implementations`` (the proxies, by name), ``transports``
(sockets, duplex pipes, lean client and sink), ``workers`` (event-loop worker
processes), ``roles`` (integrated, tcp-service, tcp-driver), ``metrics``
(CPU, latency, RSS), ``output`` (the key=value report), ``cli``.
"""
