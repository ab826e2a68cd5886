"""The intervals behind every ratio of the reports and every verdict of check-targets:
synthetic per-round figures, no harness run."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from bytes_handoff_bench.tools.intervals import (
    Estimate,
    Verdict,
    format_interval,
    mean_interval,
    paired,
    paired_ratio,
    runs_needed,
    t_quantile,
    verdict,
)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.7062),
        (0.975, 2, 4.3027),
        (0.975, 4, 2.7764),
        (0.975, 9, 2.2622),
        (0.975, 29, 2.0452),
        (0.95, 5, 2.0150),
        (0.995, 3, 5.8409),
        (0.975, 100_000, 1.9600),
    ],
)
def test_t_quantile_matches_the_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-4)


def test_rounds_are_paired_by_their_id() -> None:
    mine = {"1": 2.0, "2": 4.0, "3": 9.0, "4": 1.0}
    theirs = {"3": 3.0, "1": 1.0, "2": 2.0}  # no round 4: it pairs with nothing
    assert paired(mine, theirs) == [(2.0, 1.0), (4.0, 2.0), (9.0, 3.0)]
    est = paired_ratio(mine, theirs)
    assert est is not None and est.n == 3
    assert est.value == pytest.approx(math.exp((math.log(2) * 2 + math.log(3)) / 3))
    assert paired_ratio({"1": 1.0}, {"2": 1.0}) is None


#: Per-round ns/B that swing together between rounds, as a shared host makes them.
BASE = [1.0, 2.0, 1.5, 1.2, 1.8]


def rounds(factors: list[float]) -> tuple[dict[int, float], dict[int, float]]:
    mine = {k: b * f for k, (b, f) in enumerate(zip(BASE, factors, strict=True))}
    return mine, dict(enumerate(BASE))


def test_a_clear_pass() -> None:
    est = paired_ratio(*rounds([0.80, 0.82, 0.79, 0.81, 0.80]))
    assert est is not None and est.high is not None and est.low is not None
    assert est.high < 0.85 and verdict(est, 1.0) is Verdict.PASS
    assert runs_needed(est, 1.0) == 5  # already decided: the rounds run


def test_a_clear_miss() -> None:
    est = paired_ratio(*rounds([1.30, 1.25, 1.32, 1.28, 1.27]))
    assert est is not None and est.low is not None and est.low > 1.2
    assert verdict(est, 1.05) is Verdict.MISS


def test_an_overlap_is_inconclusive_and_says_how_many_runs_would_decide() -> None:
    est = paired_ratio(*rounds([1.02, 0.95, 1.08, 0.99, 1.06]))
    assert est is not None and est.low is not None and est.high is not None
    assert est.low < 1.05 < est.high
    assert verdict(est, 1.05) is Verdict.INCONCLUSIVE
    needed = runs_needed(est, 1.05)
    assert needed is not None and needed > est.n
    # With the observed centre and spread, that many rounds decide it and one fewer does not.
    assert verdict(with_rounds(est, needed), 1.05) is not Verdict.INCONCLUSIVE
    assert verdict(with_rounds(est, needed - 1), 1.05) is Verdict.INCONCLUSIVE


def with_rounds(est: Estimate, n: int) -> Estimate:
    """``est`` as if its centre and spread had come from ``n`` rounds."""
    assert est.spread is not None
    half = t_quantile(0.975, n - 1) * est.spread / math.sqrt(n)
    return replace(est, n=n, low=math.exp(est.center - half), high=math.exp(est.center + half))


def test_runs_needed_when_it_cannot_be_said() -> None:
    on_the_limit = paired_ratio({1: 1.0, 2: 1.1, 3: 0.9}, {1: 1.0, 2: 1.0, 3: 1.0})
    assert on_the_limit is not None
    assert runs_needed(on_the_limit, on_the_limit.value) is None  # centre on the limit
    assert runs_needed(on_the_limit, on_the_limit.value * 1.000001) is None  # beyond the cap
    one = paired_ratio({1: 2.0}, {1: 1.0})
    assert one is not None and one.value == 2.0 and one.low is None and one.n == 1
    assert verdict(one, 1.05) is Verdict.INCONCLUSIVE  # no interval, no verdict
    assert runs_needed(one, 1.05) is None
    assert format_interval(one) == "[n/a]"


def test_identical_rounds_give_a_point_interval() -> None:
    est = paired_ratio({1: 3.0, 2: 6.0}, {1: 2.0, 2: 4.0})
    assert est is not None and est.low == pytest.approx(1.5) and est.high == pytest.approx(1.5)
    assert verdict(est, 1.5) is Verdict.PASS and verdict(est, 1.4) is Verdict.MISS
    assert format_interval(est) == "[1.50, 1.50]"


def test_a_ratio_and_its_inverse_have_reciprocal_intervals() -> None:
    mine, theirs = rounds([1.02, 0.95, 1.08, 0.99, 1.06])
    ab, ba = paired_ratio(mine, theirs), paired_ratio(theirs, mine)
    assert ab is not None and ba is not None and ab.low is not None and ba.high is not None
    assert ab.value * ba.value == pytest.approx(1.0)
    assert ab.low * ba.high == pytest.approx(1.0)


def test_a_level_higher_is_better() -> None:
    cores = mean_interval([0.99, 0.98, 0.99])
    assert cores is not None and not cores.log_scale
    assert verdict(cores, 0.85, higher_is_better=True) is Verdict.PASS
    low = mean_interval([0.40, 0.45, 0.42])
    assert low is not None and verdict(low, 0.85, higher_is_better=True) is Verdict.MISS
    near = mean_interval([0.80, 0.90, 0.86])
    assert near is not None and verdict(near, 0.85, higher_is_better=True) is Verdict.INCONCLUSIVE
    needed = runs_needed(near, 0.85)
    assert needed is not None and needed > 3
    assert mean_interval([]) is None
