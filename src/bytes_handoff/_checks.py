"""Argument checks shared by the library's constructors and calls: one message per mistake."""

from __future__ import annotations

import operator
import sys

__all__ = ["count", "positive_int"]


def positive_int(value: object, name: str) -> int:
    """``value`` as an ``int`` in ``1..sys.maxsize`` for a bound named ``name``.

    ``TypeError`` for a float (``1.5``, NaN, inf), a ``bool``, a ``str`` or
    anything else without ``__index__``; ``ValueError`` out of range.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        got = f"{type(value).__name__} {value!r:.40}"
        raise TypeError(f"{name} must be an int, got {got}") from None
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}")
    if n > sys.maxsize:
        raise ValueError(f"{name} must be at most {sys.maxsize}, got {n}")
    return n


def count(n: object, name: str) -> int:
    """``n`` as an ``int`` (anything with ``__index__``), else ``TypeError`` naming its type."""
    try:
        return operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(n).__name__}") from None
