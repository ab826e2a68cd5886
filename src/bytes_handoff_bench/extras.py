"""Is the ``bench`` extra installed? Checked by every harness entry point before a run.

The library core is standard-library only; a run of the harness needs the
``bench`` extra (``pip install 'bytes-handoff[bench]'``). Without it, each
entry point (``python -m bytes_handoff_bench``, ``bytes-handoff-bench`` and
the modules behind ``bench/*.sh``) answers ``--help`` and ``--version``, and
for anything else prints one line and exits 2 before it starts anything
(``cli_common.run_main``)::

    bytes-handoff-bench: error: missing hdrhistogram: install the bench extra: \
pip install 'bytes-handoff[bench]'

(one line; broken here to fit).

``uvloop`` is the one optional member: without it the default loop is
``asyncio`` (:func:`default_loop`) and only ``--loop uvloop`` is refused,
in one line (:func:`require_loop`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

from .errors import UsageError
from .names import Loop

__all__ = [
    "BENCH_EXTRA_HINT",
    "EXIT_MISSING",
    "MICRO_EXTRA_HINT",
    "REQUIRED",
    "bench_extra_problem",
    "check_bench_extra",
    "default_loop",
    "missing_packages",
    "require_loop",
]

BENCH_EXTRA_HINT = "install the bench extra: pip install 'bytes-handoff[bench]'"
#: What the micro-benchmark tools (the criterion script, the library A/B) need.
MICRO_EXTRA_HINT = "install the micro extra: pip install 'bytes-handoff[micro]'"
EXIT_MISSING = 2

#: (module, package name as pip knows it) that every entry point needs.
REQUIRED: tuple[tuple[str, str], ...] = (
    ("hdrh", "hdrhistogram"),
    ("rich", "rich"),
    ("matplotlib", "matplotlib"),
)


def _importable(module: str, load: bool) -> bool:
    """Present (``find_spec``, nothing run) or, with ``load``, really importable.

    Loading is for modules the caller imports anyway; the others are only
    looked up, so a harness process does not pay for matplotlib (0.3 s) or
    carry rich in its measured RSS.
    """
    try:
        if load:
            importlib.import_module(module)
            return True
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        return False


def missing_packages(
    required: Sequence[tuple[str, str]] = REQUIRED, load: Sequence[str] = ()
) -> list[str]:
    """The package names of ``required`` that cannot be imported (``load``: really imported)."""
    return [package for module, package in required if not _importable(module, module in load)]


def bench_extra_problem(load: Sequence[str] = ()) -> str | None:
    """``None`` when the bench extra is there; else ``missing <packages>: <hint>``."""
    missing = missing_packages(load=load)
    if not missing:
        return None
    return f"missing {', '.join(missing)}: {BENCH_EXTRA_HINT}"


def check_bench_extra(prog: str, load: Sequence[str] = ()) -> int | None:
    """``None`` when the bench extra is there; else print one line and return 2."""
    problem = bench_extra_problem(load)
    if problem is None:
        return None
    sys.stdout.flush()
    print(f"{prog}: error: {problem}", file=sys.stderr)
    return EXIT_MISSING


def default_loop() -> Loop:
    """``uvloop`` when it is importable, else ``asyncio``."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return Loop.ASYNCIO
    return Loop.UVLOOP


def require_loop(loop: str | None, flag: str = "--loop") -> None:
    """``UsageError`` (one line) when ``loop`` is ``uvloop`` and uvloop cannot be imported."""
    if loop == Loop.UVLOOP and not _importable("uvloop", load=True):
        raise UsageError(f"{flag} uvloop: uvloop is not installed; {BENCH_EXTRA_HINT}")
