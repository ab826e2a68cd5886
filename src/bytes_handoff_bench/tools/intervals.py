"""Confidence intervals for the reports' ratios, and what a target's verdict may say.

The method: a Student t-interval on the logs of the **paired per-round ratios**.

* **Paired by round.** ``--implementation all`` interleaves the implementations
  per run index: round *k* of A and round *k* of B ran back to back, so a noisy
  minute on a shared machine hits both. The ratio A_k / B_k of one round cancels
  most of that common noise; the spread between rounds is what is left, and it
  is what the interval is made of. (Two unpaired means would carry the whole
  between-round swing, 10-20 % here, into the interval.)
* **On logs.** CPU time per byte is a scale: noise multiplies it. The log of a
  ratio is symmetric (A/B and B/A give mirrored intervals, exactly reciprocal
  after ``exp``), and means of logs average ratios as ratios should: the point
  estimate is the geometric mean of the per-round ratios.
* **t, not a bootstrap.** Runs are expensive, so there are few rounds (3 by
  default). A percentile bootstrap of 3 values can never be wider than their
  range, which covers the true ratio far less often than it claims; the t
  quantile with n - 1 degrees of freedom widens the interval by as much as few
  rounds warrant (4.30 standard errors at n = 3 for 95 %), deterministically
  and without a seed. It assumes the rounds are independent and their log
  ratios roughly normal; with a handful of rounds nothing checks that better.

A level that is no ratio (a target on CPU cores) gets the same t-interval on
its plain values (:func:`mean_interval`).

A target's verdict (:func:`verdict`) is ``pass`` only when the whole interval
is on the right side of its limit, ``MISS`` only when the whole of it is on the
wrong side, and ``inconclusive`` otherwise; :func:`runs_needed` estimates how
many rounds would decide it, assuming the observed centre and spread hold.
Fewer than two rounds give no interval, so no verdict but ``inconclusive``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import TypeVar

from bytes_handoff_bench.limits import MAX_RUNS

__all__ = [
    "CONFIDENCE",
    "Estimate",
    "Verdict",
    "format_interval",
    "mean_interval",
    "paired",
    "paired_ratio",
    "runs_needed",
    "t_quantile",
    "verdict",
]

#: Two-sided confidence of every interval the reports print.
CONFIDENCE = 0.95

_K = TypeVar("_K")


# -- Student's t, without scipy --------------------------------------------------------------


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (0.5 < p < 1)."""
    if not 0.5 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):  # bisection: t_cdf is monotonic, 200 halvings reach float precision
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return (lo + hi) / 2.0


# -- estimates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its two-sided confidence interval, from ``n`` rounds.

    ``center`` and ``spread`` are the mean and the sample standard deviation on
    the scale the interval was computed on: the logs for a ratio (``log_scale``),
    the values themselves for a level. ``low``/``high`` are ``None`` below two
    rounds (no spread, no interval).
    """

    value: float
    low: float | None
    high: float | None
    n: int
    center: float
    spread: float | None
    log_scale: bool
    confidence: float = CONFIDENCE

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def on_scale(self, value: float) -> float:
        """``value`` on the scale of ``center`` (its log for a ratio)."""
        return math.log(value) if self.log_scale else value


def _estimate(samples: Sequence[float], log_scale: bool, confidence: float) -> Estimate:
    n = len(samples)
    center = statistics.fmean(samples)

    def back(x: float) -> float:
        return math.exp(x) if log_scale else x

    if n < 2:
        return Estimate(back(center), None, None, n, center, None, log_scale, confidence)
    spread = statistics.stdev(samples)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * spread / math.sqrt(n)
    return Estimate(
        back(center), back(center - half), back(center + half), n, center, spread, log_scale,
        confidence,
    )  # fmt: skip


def paired(mine: Mapping[_K, float], theirs: Mapping[_K, float]) -> list[tuple[float, float]]:
    """``(mine, theirs)`` of every round both have, in ``mine``'s order."""
    return [(value, theirs[key]) for key, value in mine.items() if key in theirs]


def paired_ratio(
    mine: Mapping[_K, float], theirs: Mapping[_K, float], confidence: float = CONFIDENCE
) -> Estimate | None:
    """The ratio ``mine / theirs`` from the rounds both ran (keys: round ids): the geometric
    mean of the per-round ratios and a t-interval on their logs. ``None`` without a round
    both have with positive values."""
    logs = [math.log(a / b) for a, b in paired(mine, theirs) if a > 0 and b > 0]
    if not logs:
        return None
    return _estimate(logs, True, confidence)


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate | None:
    """The mean of ``values`` and its t-interval (a level, not a ratio); ``None`` if empty."""
    if not values:
        return None
    return _estimate(list(values), False, confidence)


# -- verdicts ----------------------------------------------------------------------------------


class Verdict(StrEnum):
    PASS = "pass"
    MISS = "MISS"
    INCONCLUSIVE = "inconclusive"


def verdict(est: Estimate, limit: float, higher_is_better: bool = False) -> Verdict:
    """``pass``: the whole interval meets ``limit`` (``<=``, or ``>=`` for higher is better);
    ``MISS``: none of it does; ``inconclusive``: it straddles the limit, or there is none."""
    if est.low is None or est.high is None:
        return Verdict.INCONCLUSIVE
    if higher_is_better:
        if est.low >= limit:
            return Verdict.PASS
        if est.high < limit:
            return Verdict.MISS
        return Verdict.INCONCLUSIVE
    if est.high <= limit:
        return Verdict.PASS
    if est.low > limit:
        return Verdict.MISS
    return Verdict.INCONCLUSIVE


def runs_needed(est: Estimate, limit: float, cap: int = MAX_RUNS) -> int | None:
    """Rounds after which the interval would no longer straddle ``limit``, if the observed
    centre and spread held: the smallest n with t(n - 1) * spread / sqrt(n) below the
    distance from the centre to the limit. At least the rounds already run; ``None`` when
    it cannot be said (fewer than two rounds, the centre on the limit) or exceeds ``cap``."""
    spread = est.spread
    if spread is None or (est.log_scale and limit <= 0):
        return None
    distance = abs(est.center - est.on_scale(limit))
    if spread == 0:
        return est.n if distance > 0 else None
    if distance == 0:
        return None
    p = 0.5 + est.confidence / 2.0

    # The half-width shrinks monotonically with n: bisect between the rounds run and the cap.
    def decides(n: int) -> bool:
        return t_quantile(p, n - 1) * spread / math.sqrt(n) < distance

    lo = max(est.n, 2)
    if decides(lo):
        return lo
    if not decides(cap):
        return None
    hi = cap
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if decides(mid):
            hi = mid
        else:
            lo = mid
    return hi


def format_interval(est: Estimate | None, decimals: int = 2, suffix: str = "") -> str:
    """``[1.05, 1.21]``; ``[n/a]`` without one (a single round)."""
    if est is None or est.low is None or est.high is None:
        return "[n/a]"
    return f"[{est.low:,.{decimals}f}{suffix}, {est.high:,.{decimals}f}{suffix}]"
