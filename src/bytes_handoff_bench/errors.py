"""The harness's own failures, and the exit code each one maps to."""

from __future__ import annotations

__all__ = [
    "BenchError",
    "Interrupted",
    "MissingExtra",
    "ProtocolError",
    "UsageError",
    "VerificationError",
]


class BenchError(Exception):
    """A run failed (a stream errored, a proxy failed, a wait timed out): exit 1."""

    exit_code = 1


class UsageError(BenchError):
    """The command line or its environment is wrong (bad value, address in use): exit 2."""

    exit_code = 2


class MissingExtra(BenchError):
    """A package of the bench extra cannot be imported: exit 2, as bad usage.

    Not a :class:`UsageError`: the harness's ``--preflight`` reports those per
    argument list, while a missing extra stops it as it stops a run.
    """

    exit_code = 2


class Interrupted(BenchError):
    """A SIGINT (Ctrl-C) or SIGTERM stopped the run: exit 130, as every program here."""

    exit_code = 130


class VerificationError(BenchError):
    """The sink received bytes that differ from what the client sent."""


class ProtocolError(BenchError):
    """The client's stream did not follow the workload's framing."""
