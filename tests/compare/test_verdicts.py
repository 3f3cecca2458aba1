"""Verdicts that respect sample sizes: the exact tests against independent sums, learning, and the latency test."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from wsgimirror.compare.verdicts import (
    Settings,
    binomial_greater,
    bucket,
    exceeds,
    field_verdict,
    fisher_greater,
    latency_verdict,
    mann_whitney_greater,
    percentile_ms,
)


def fisher_by_sums(d1: int, n1: int, d0: int, n0: int) -> float:
    """P(X >= d1) of the hypergeometric, summed exactly with integers."""
    total, differing = n1 + n0, d1 + d0
    tail = range(d1, min(n1, differing) + 1)
    ways = sum(math.comb(differing, x) * math.comb(total - differing, n1 - x) for x in tail)
    return ways / math.comb(total, n1)


@pytest.mark.parametrize(
    ("d1", "n1", "d0", "n0"), [(3, 3, 0, 3), (14, 36, 9, 36), (20, 80, 0, 80), (1, 8, 0, 4), (40, 40, 38, 40),
                               (5, 200, 1, 20), (0, 10, 0, 10)],
)  # fmt: skip
def test_fishers_exact_test_matches_the_hypergeometric_sum(d1, n1, d0, n0):
    assert fisher_greater(d1, n1, d0, n0) == pytest.approx(fisher_by_sums(d1, n1, d0, n0), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("d", "n", "rate"), [(2, 10, 0.0003), (1, 10, 0.0003), (30, 100, 0.25), (0, 5, 0.5)])
def test_the_binomial_tail_matches_its_sum(d, n, rate):
    exact = sum(math.comb(n, x) * Fraction(rate) ** x * (1 - Fraction(rate)) ** (n - x) for x in range(d, n + 1))
    assert binomial_greater(d, n, rate) == pytest.approx(float(exact), rel=1e-9)
    assert binomial_greater(3, 10, 0.0) == 0.0 and binomial_greater(3, 10, 1.0) == 1.0


def test_the_minimum_effect_is_exact_where_floating_point_is_not():
    """r = 1/1 against s = 2/3 is exactly 20 % relative; in floating point 20.000000000000004, and it passed 20 %."""
    r, s = 1 / 1, 2 / 3
    assert (r - s) / (r + s) * 100 > 20
    assert not exceeds(Fraction(1, 1), Fraction(2, 3), 20, 0.03)
    assert exceeds(Fraction(61, 100), Fraction(40, 100), 20, 0.03)
    assert not exceeds(Fraction(3, 10000), Fraction(0), 20, 0.03)  # 0.03 %: not over the absolute threshold
    assert exceeds(Fraction(4, 10000), Fraction(0), 20, 0.03)
    assert not exceeds(Fraction(1, 10), Fraction(2, 10), 0, 0)


SETTINGS = Settings(min_samples=10)


def test_before_the_minimum_sample_on_either_side_the_verdict_is_learning():
    assert field_verdict(9, 9, 0, 9, True, SETTINGS)[0] == "learning"  # everything differs, nine of each: learning
    assert field_verdict(10, 10, 0, 9, True, SETTINGS)[0] == "learning"  # the baseline is short
    assert field_verdict(10, 10, 0, 0, False, SETTINGS)[0] == "regression"  # no baseline to wait for
    assert field_verdict(10, 10, 0, 10, True, SETTINGS)[0] == "regression"


def test_a_random_status_scattered_around_the_same_rate_is_noise():
    """The endpoint answering 500 one time in five: 38.9 % against 25.0 % of 36 passed Diffy's 20 % threshold."""
    verdict, p = field_verdict(14, 36, 9, 36, True, SETTINGS)
    assert verdict == "noise" and p > 0.05


def test_a_baseline_sampled_at_a_tenth_needs_a_larger_effect_for_the_same_confidence():
    full = fisher_greater(12, 100, 4, 100)
    tenth = fisher_greater(12, 100, 0, 10)
    assert tenth > full  # the same rates are less certain against a smaller baseline
    assert field_verdict(12, 100, 0, 10, True, SETTINGS)[0] == "noise"
    assert field_verdict(60, 100, 0, 10, True, SETTINGS)[0] == "regression"


def test_null_endpoints_are_flagged_at_most_at_the_confidence_level():
    """Both arms drawn from one rate, twenty fields an endpoint: the level is shared among an endpoint's differing
    fields, so at 99.9 % at most one endpoint in a thousand is flagged; two hundred show none."""
    from wsgimirror.compare.analysis import Analysis

    rng = random.Random(7)
    flagged = 0
    for _ in range(200):
        analysis = Analysis()
        rates = [rng.choice([0.0, 0.05, 0.2, 0.5, 0.9, 1.0]) for _ in range(20)]
        for _ in range(rng.choice([10, 30, 100])):
            for baseline in (False, True):
                found = [(f"body.f{n}", "value") for n, rate in enumerate(rates) if rng.random() < rate]
                analysis.record("GET /x", baseline, found, 0, True)
        flagged += analysis.snapshot(SETTINGS)["by_endpoint"]["GET /x"]["regression"]
    assert flagged == 0


def histogram(values_ms: list[float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values_ms:
        key = bucket(value / 1000)
        out[key] = out.get(key, 0) + 1
    return out


def test_percentiles_of_a_histogram_are_within_ten_percent():
    values = [float(v) for v in range(1, 101)]
    p50, p99 = percentile_ms(histogram(values), 0.5), percentile_ms(histogram(values), 0.99)
    assert 51 <= p50 <= 51 * 1.1 and 100 <= p99 <= 110
    assert percentile_ms({}, 0.5) is None and bucket(0.000001) == "0"


def test_the_rank_test_tells_a_slower_candidate_from_the_same_one():
    rng = random.Random(3)
    reference = histogram([rng.gauss(10, 1) for _ in range(200)])
    same = histogram([rng.gauss(10, 1) for _ in range(200)])
    slower = histogram([rng.gauss(14, 1) for _ in range(200)])
    assert mann_whitney_greater(slower, reference) < 1e-12
    assert mann_whitney_greater(same, reference) > 0.01
    assert mann_whitney_greater(reference, slower) > 0.99
    verdict = latency_verdict(slower, reference, SETTINGS)
    assert verdict["verdict"] == "slower" and 30 <= verdict["slower_p50"] <= 50
    assert latency_verdict(same, reference, SETTINGS)["verdict"] == "not_slower"
    a_bit = histogram([rng.gauss(10.8, 1) for _ in range(2000)])  # significant, but under the 20 % threshold
    assert latency_verdict(a_bit, reference, SETTINGS)["verdict"] == "not_slower"
    assert latency_verdict(histogram([50.0] * 9), reference, SETTINGS)["verdict"] == "learning"
