"""Fault-injection soak: the library's safety contract while proxies die and peers reset.

The harness measures healthy streams; this checks what the library promises when
streams break: no byte is lost or changed on a stream that completes, every
broken stream ends (no hang) with a named cause, a peer reset never takes the
proxy down, and a long-lived proxy's memory stays flat.

Processes, all on 127.0.0.1, each in its own process group with the run's token
in its command line (so the end-of-run check can find any that survived):

* **services** (``--services``, default 2) share one port with ``SO_REUSEPORT``
  and proxy every accepted stream with the library (:mod:`.service`). Service 0
  is never killed: its memory over the whole run is the leak check
  (:mod:`.memory`). The others are SIGKILLed at random times and restarted at
  once, so new connections land on the live ones.
* **the driver** runs waves of ``--connections`` streams until
  ``--duration-seconds`` pass, injects client and sink resets and stalls, and
  verifies every byte (:mod:`.driver`).
* **the orchestrator** starts them, kills and restarts services, samples their
  RSS, kills and reaps every child at the end (:mod:`.orchestrator`) and
  classifies every stream into the verdict (:mod:`.summary`).

A stream ends as ``verified`` (exact length, every byte checked) or in a named
category: ``client_reset``, ``sink_reset``, ``sink_stall_reset``, ``proxy_killed``,
``connect_refused``.
``corrupted`` (wrong bytes), ``hang`` (not ended within ``--hang-seconds``),
``proxy_crashed`` (its proxy died without being killed) and ``unexplained``
(broken with no injected cause) fail the soak.

Exit status: 0 pass, 1 fail (or interrupted), 2 bad usage.

The modules: :mod:`.config` (``SoakConfig``, the categories, the flags' limits),
:mod:`.service`, :mod:`.driver`, :mod:`.orchestrator`, :mod:`.memory` (the leak
gate and its samplers), :mod:`.summary` (the per-category lines and the
``key=value`` verdict), :mod:`.cli` (flags, the output folder, the children's
entry). ``python -m bytes_handoff_bench.soak`` (``bench/run-fault-soak.sh``)
runs it. The soak reuses the harness in-process (its workload and verifier, its
proxy implementations, listeners, connects and event loops); neither the
harness nor the tools import it.
"""
