"""Command-line plumbing shared by the harness and every run tool.

One parser class whose errors are one line and whose ``--help`` shows every
default, ``--version`` and the exit statuses; the argument types; and
:func:`run_main`: the one place that turns a failure into
``<prog>: error: <one line>`` and an exit status:

=====================================  ======  ====================================
raised                                 status  line on stderr
=====================================  ======  ====================================
a package of the bench extra missing   2       ``prog: error: missing ...``
:class:`UsageError` (bad flag/value)   2       ``prog: error: <message>``
other :class:`~.errors.BenchError`     its     ``prog: error: <message>``
:class:`~.processes.RunError`          1       ``prog: error: <message>``
one of ``crashes`` (per tool)          1       ``prog: error: <Type>: <message>``
``KeyboardInterrupt`` (or SIGTERM)     130     ``prog: interrupted``
=====================================  ======  ====================================

The same statuses everywhere (:data:`EXIT_STATUSES`; a tool adds its own,
such as ``check-targets.sh``'s 3 for a missed target), and every ``--help``
ends with them.

The bench extra is needed to run, not to ask: :func:`run_main` checks it once
the command line has been parsed (by the first :class:`OneLineParser` that
parses one), so ``--help`` and ``--version`` answer without it, and a bad
flag is reported as such.

Imports nothing of :mod:`.harness` or :mod:`.tools`, so both use it.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import select
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from .errors import BenchError, MissingExtra, UsageError
from .extras import bench_extra_problem
from .processes import RunError

__all__ = [
    "EXIT_STATUSES",
    "HelpFormatter",
    "OneLineParser",
    "UsageError",
    "cpuset",
    "exit_status_text",
    "finite_number",
    "non_negative_int",
    "non_negative_number",
    "positive_float",
    "positive_int",
    "prog_and_args",
    "run_main",
    "seconds",
    "version_text",
    "whole_number",
]


#: Every program's exit statuses; a program may add its own (``exit_statuses=``).
EXIT_STATUSES: Mapping[int, str] = {
    0: "success",
    1: "a run failed",
    2: "bad usage (a flag, a value or a setting; a missing extra)",
    130: "interrupted (Ctrl-C or SIGTERM)",
    141: "its output closed by the reader (| head)",
}


def exit_status_text(extra: Mapping[int, str] | None = None) -> str:
    """``exit status: 0 success, 1 ..., 130 interrupted ...``: the end of every ``--help``."""
    statuses = {**EXIT_STATUSES, **(extra or {})}
    words = ", ".join(f"{code} {statuses[code]}" for code in sorted(statuses))
    return textwrap.fill(f"exit status: {words}", width=78, subsequent_indent="  ")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help, also for an option without help (``None`` ones
    say theirs); descriptions and epilogs kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)

    def _format_action(self, action: argparse.Action) -> str:
        if (
            action.help is None
            and action.option_strings
            and action.default not in (None, argparse.SUPPRESS)
            and not isinstance(action.default, bool)
        ):
            # argparse prints no help column for an option without help, so no default:
            # give it one that is only the default.
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


def version_text() -> str:
    """``bytes-handoff <version>``: what ``--version`` prints."""
    from bytes_handoff import __version__

    return f"bytes-handoff {__version__}"


class _ExtraCheck:
    """The bench extra check :func:`run_main` arms and the first parse makes."""

    load: tuple[str, ...] | None = None

    @classmethod
    def run(cls) -> None:
        load, cls.load = cls.load, None
        if load is not None:
            problem = bench_extra_problem(load)
            if problem is not None:
                raise MissingExtra(problem)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors raise :class:`UsageError`: one line, exit 2, no usage block.

    Its ``--help`` shows every option's default (:class:`HelpFormatter` unless
    another is given) and ends with the exit statuses (:data:`EXIT_STATUSES`
    and ``exit_statuses``); ``--version`` prints :func:`version_text` (``version=False``:
    no ``--version``). Once a command line is parsed (not for ``--help`` or
    ``--version``, which exit while parsing), the bench extra check that
    :func:`run_main` armed is made.
    """

    def __init__(
        self,
        *args: Any,
        exit_statuses: Mapping[int, str] | None = None,
        version: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        epilog = kwargs.pop("epilog", None)
        kwargs["epilog"] = "\n\n".join(
            part for part in (epilog, exit_status_text(exit_statuses)) if part
        )
        super().__init__(*args, **kwargs)
        if version:
            self.add_argument(
                "--version",
                action="version",
                version=version_text(),
                help="print the version and exit",
            )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed = super().parse_known_args(args, namespace)
        _ExtraCheck.run()
        return parsed

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# -- argument types: each raises argparse.ArgumentTypeError, which the parser turns into
# -- "argument --flag: <message>".


def finite_number(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argument type for ``kind`` that refuses nan and inf (they would switch off limits)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
            if math.isfinite(value):
                return value
            noun = "a finite number"
        except ValueError:
            noun = "an integer" if kind is int else "a number"
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise argparse.ArgumentTypeError(f"expected {noun}, got {shown!r}")

    parse.__name__ = kind.__name__  # argparse names the type in "invalid <name> value"
    return parse


_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def cpuset(text: str) -> str:
    """A ``taskset -c`` CPU list of CPUs this process may use."""
    text = text.strip()
    if not _CPUSET.match(text):
        raise argparse.ArgumentTypeError(f"expected a CPU list like 0 or 0-3,8, got {text!r}")
    available = os.sched_getaffinity(0)
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if first > last:
            raise argparse.ArgumentTypeError(f"bad CPU range {part!r}")
        missing = [c for c in range(first, last + 1) if c not in available]
        if missing:
            cpus = ",".join(str(c) for c in sorted(available))
            raise argparse.ArgumentTypeError(
                f"CPU {missing[0]} in {text!r} is not available here (CPUs: {cpus})"
            )
    return text


def positive_int(text: str) -> int:
    """Digits only, at least 1."""
    if not re.fullmatch(r"\d+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argument type: digits only, from ``low`` to ``high`` (NaN, 1e9, 1.5 and huge refused)."""

    def parse(text: str) -> int:
        digits = text.strip()
        if not re.fullmatch(r"\d{1,18}", digits) or not low <= int(digits) <= high:
            shown = text if len(text) <= 40 else f"{text[:40]}..."
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, got {shown!r}"
            )
        return int(digits)

    parse.__name__ = "whole number"
    return parse


def non_negative_int(text: str) -> int:
    """Digits only."""
    if not re.fullmatch(r"\d+", text.strip()):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """A finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def seconds(high: float) -> Callable[[str], float]:
    """An argument type: a number of seconds above 0 and at most ``high`` (NaN, inf refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 < value <= high:
            shown = text if len(text) <= 40 else f"{text[:40]}..."
            raise argparse.ArgumentTypeError(
                f"expected seconds above 0 and at most {high:g}, got {shown!r}"
            )
        return value

    parse.__name__ = "seconds"
    return parse


def non_negative_number(text: str) -> str:
    """A finite number >= 0, kept as written (stripped): it is passed on as a flag value."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return text.strip()


# -- entry points -----------------------------------------------------------------------


def prog_and_args(argv: Sequence[str] | None, default: str) -> tuple[str, list[str]]:
    """``argv`` (``sys.argv[1:]`` for ``None``); a leading ``--prog NAME`` renames the program.

    The ``bench/*.sh`` scripts pass ``--prog`` so errors name the script the user ran.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--prog"] and len(args) > 1:
        return args[1], args[2:]
    return default, args


def _fail(prog: str, message: str, status: int) -> int:
    """Print ``prog: error: message`` (after what stdout holds) and return ``status``."""
    sys.stdout.flush()
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


#: The status of a program whose output pipe closed under it (128 + SIGPIPE), as a shell reports.
STDOUT_CLOSED = 141


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (``| head``)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _quiet_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush fails no more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run_main(
    prog: str,
    body: Callable[[], int],
    *,
    bench_extra: Sequence[str] | None = (),
    crashes: tuple[type[BaseException], ...] = (),
    interrupted: str = "interrupted",
) -> int:
    """Run ``body`` and return its status, or map its failure to one line and a status.

    ``bench_extra``: check the bench extra, really importing these of its
    modules, once ``body`` has parsed its command line with a
    :class:`OneLineParser` (so ``--help`` and ``--version`` need no extra, and
    nothing runs without it); ``None``: no check. ``crashes``: exception types
    reported as ``<Type>: <message>`` with status 1 instead of a traceback.
    ``interrupted``: the text after ``prog: `` on an interrupt. Standard output
    closed by its reader (``| head``) ends the program quietly with status 141.
    """
    _ExtraCheck.load = None if bench_extra is None else tuple(bench_extra)
    try:
        status = body()
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return status
    except BenchError as exc:  # UsageError and MissingExtra included: their exit_code is 2
        return _fail(prog, str(exc), exc.exit_code)
    except RunError as exc:
        return _fail(prog, str(exc), 1)
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if _stdout_closed():
            _quiet_stdout()  # the reader took what it wanted: no traceback, the shell's status
            return STDOUT_CLOSED
        if isinstance(exc, crashes):  # a socket's, not ours: the body's own failure
            return _fail(prog, f"{type(exc).__name__}: {exc}", 1)
        raise
    except crashes as exc:
        return _fail(prog, f"{type(exc).__name__}: {exc}", 1)
    finally:
        _ExtraCheck.load = None
