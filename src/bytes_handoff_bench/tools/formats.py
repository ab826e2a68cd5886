"""Numbers for people, one format everywhere: tables, Markdown, chart labels and ticks.

Fixed decimals chosen by magnitude, thousands separators from 1,000 up, never
an exponent (no ``1.37e+03``); byte counts in binary units when they are whole
ones (``16 KiB``); ratios as ``0.93x``. No dependency beyond the standard
library: the tables use it without matplotlib, and :mod:`.plots` formats every
axis with it.
"""

from __future__ import annotations

import math


def decimals_for(value: float) -> int:
    """Decimals that show a value to about three or four significant digits.

    None from 1,000 up (thousands separators instead), one from 100, two from 1,
    and three significant digits below 1 (0.651, 0.0123, 0.000123).
    """
    magnitude = abs(value)
    if not math.isfinite(magnitude) or magnitude == 0 or magnitude >= 1000:
        return 0
    if magnitude >= 100:
        return 1
    if magnitude >= 1:
        return 2
    return min(2 - math.floor(math.log10(magnitude)), 15)


def format_value(value: float | None, decimals: int | None = None) -> str:
    """A number for a table or a chart label: ``1130.0`` -> ``1,130``, ``1.609`` -> ``1.61``.

    Fixed-point with thousands separators, never an exponent; ``n/a`` for
    ``None`` and non-finite values. ``decimals`` overrides :func:`decimals_for`.
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    places = decimals_for(value) if decimals is None else decimals
    if decimals is None and decimals_for(round(value, places)) < places:
        places = decimals_for(round(value, places))  # 99.996 -> 100.0, not 100.00
    text = f"{value:,.{places}f}"
    return "0" if text.strip("-0.,") == "" else text  # no "-0" or "0.00" for a zero


def format_tick(value: float) -> str:
    """An axis tick: as few decimals as the value needs (``80``, ``2.5``, ``1,000``)."""
    if not math.isfinite(value):
        return ""
    text = f"{value:,.{decimals_for(value) + 1}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text.strip("-0.,") == "" else text


def format_ratio(value: float | None) -> str:
    """A ratio to the reference implementation: ``0.93x``; ``n/a`` when there is none."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.2f}x"


def format_bytes(count: int) -> str:
    """A byte count for people: ``64 B``, ``16 KiB`` (16384), ``1 MiB``, ``1,000 B``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size:,} {unit}"
    if count < 10 << 20:
        return f"{count:,} B"
    return f"{count / (1 << 20):,.2f} MiB"
