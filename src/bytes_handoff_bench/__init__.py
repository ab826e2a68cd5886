"""The stream harness: complete client -> proxy -> sink streams through the library and baselines.

Installed with the ``bench`` extra (``pip install 'bytes-handoff[bench]'``);
it uses only the public API of :mod:`bytes_handoff`. Two groups, the fault
soak beside them, and a few modules all share:

* :mod:`.harness` -- one harness process: ``config`` (flags, validation),
  ``workload`` (stream bytes, sink verification), ``implementations`` (the
  proxies, by name), ``transports`` (sockets, duplex pipes, lean client and
  sink), ``workers`` (event-loop worker processes), ``roles`` (integrated,
  tcp-service, tcp-driver: one function each), ``supervisor`` (a role's
  tasks, failures, signals and shutdown), ``metrics`` (CPU, latency, RSS),
  ``output`` (the
  key=value report), ``cli``. Run it as
  ``python -m bytes_handoff_bench`` or ``bytes-handoff-bench``.
* :mod:`.tools` -- what drives runs from outside, behind the ``bench/*.sh``
  scripts: ``wrapper`` (repeated runs, split processes, artifacts),
  ``split``, ``artifacts``, ``report`` (comparison table and plot),
  ``matrix`` (table, ratio heatmaps, ns/B plots), ``plots`` (every chart, in
  one style), ``formats`` (numbers for people), ``profilers``, ``targets``,
  ``two_hosts`` (the split roles in two network namespaces), ``micro`` (the
  micro-benchmark baseline), ``library_ab`` (two library revisions side by
  side in one process). They never import :mod:`.harness`
  (nor it them): they start it as a program, ask it before any run with its
  ``--preflight`` (its flags, and what it says of each cell's arguments), and
  read its key=value files.
* :mod:`.soak` -- the fault soak (``bench/run-fault-soak.sh``, ``python -m
  bytes_handoff_bench.soak``): ``config``, ``service``, ``driver``,
  ``orchestrator``, ``memory`` (the leak gate), ``summary``, ``cli``. It runs
  the harness's proxies, workload and verifier in its own processes, so it
  imports :mod:`.harness` (never :mod:`.tools`); neither group imports it.
* Shared, importing none of them: ``names`` (roles, transports,
  implementations, scenarios, completion modes, loops; imports nothing of the
  project), ``defaults`` (the default workload, one set for the harness and
  the wrapper), ``limits`` (the bounds of the numeric flags), ``cli_common`` (the
  one-line-error parser, argument types, ``--version``, exit statuses),
  ``errors``, ``extras`` (the one-line missing-extra check, the default
  loop), ``ports``, ``processes``.

``tests/bench/test_layout.py`` checks these walls, and that the modules import
each other without a cycle.

In-process use::

    from bytes_handoff_bench.harness.cli import config_from_args
    from bytes_handoff_bench.harness.roles import run_bench

    outcome = run_bench(config_from_args(["--connections", "4"]))
"""
