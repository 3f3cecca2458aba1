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
    assert binomial_greater(d, n, rate) == pytest.approx(float(exact), rel=1e-9, abs=0)
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


# -- exact values: what each function answers at its edges ------------------------------------------------------

# (candidate, reference, p-value) with the p-values of scipy.stats.mannwhitneyu(alternative="greater",
# method="asymptotic", use_continuity=True) on the same samples expanded from the histograms (scipy 1.17)
RANK_CASES = []
for _seed, _p in ((0, 0.9226688548583094), (1, 0.7809711139155973), (2, 0.2733679548745555),
                  (3, 0.6430857268443304), (4, 0.8713274908759288)):  # fmt: skip
    _rng = random.Random(_seed)
    _rng.randrange(20, 40)
    _a = [_rng.randrange(20, 40) + _seed % 3 for _ in range(_rng.randrange(10, 60))]
    _b = [_rng.randrange(20, 40) for _ in range(_rng.randrange(10, 60))]
    RANK_CASES.append(({str(x): _a.count(x) for x in set(_a)}, {str(x): _b.count(x) for x in set(_b)}, _p))


@pytest.mark.parametrize(("candidate", "reference", "expected"), RANK_CASES)
def test_the_rank_test_gives_scipys_p_value_with_ties_and_continuity(candidate, reference, expected):
    assert mann_whitney_greater(candidate, reference) == pytest.approx(expected, rel=1e-12, abs=0)


def test_the_rank_test_without_samples_or_spread_says_nothing():
    assert mann_whitney_greater({}, {"3": 5}) == 1.0 and mann_whitney_greater({"3": 5}, {}) == 1.0
    assert mann_whitney_greater({"3": 5}, {"3": 7}) == 1.0  # every value tied: no variance, no evidence
    assert mann_whitney_greater({"9": 1}, {"2": 1}) == 0.5  # one against one: the continuity correction cancels it


def test_exact_tails_at_their_edges():
    assert fisher_greater(0, 10, 0, 10) == 1.0  # nothing differs: no evidence
    assert fisher_greater(0, 0, 0, 0) == 1.0  # nothing compared
    assert fisher_greater(1, 10, 0, 10) == pytest.approx(
        0.5, rel=1e-12
    )  # the one difference fell on the candidate's side: a coin's toss
    assert fisher_greater(0, 1, 3, 6) == 1.0  # a sum that rounds past 1 is still a probability
    assert fisher_greater(8, 11, 0, 11) == pytest.approx(fisher_by_sums(8, 11, 0, 11), rel=1e-12, abs=0)
    assert binomial_greater(0, 10, 0.3) == 1.0
    assert binomial_greater(3, 3, 0.5) == pytest.approx(0.125, rel=1e-12, abs=0)  # the last term counts
    assert binomial_greater(2, 3, 0.5) == pytest.approx(0.5, rel=1e-12, abs=0)
    assert binomial_greater(1, 17, 0.9) == 1.0


def test_the_minimum_effect_needs_both_thresholds():
    assert not exceeds(Fraction(1, 2), Fraction(2, 5), 0, 20)  # 10 points over, the absolute threshold is 20
    assert exceeds(Fraction(1, 2), Fraction(2, 5), 0, 5)
    assert not exceeds(Fraction(1, 2), Fraction(1, 2), 0, 0)


def test_field_verdicts_carry_their_p_value_and_their_reason():
    s = Settings(min_samples=10)
    assert field_verdict(3, 9, 0, 10, True, s) == ("learning", 1.0)
    assert field_verdict(0, 10, 0, 10, True, s) == ("same", 1.0)
    verdict, p = field_verdict(1, 10, 0, 10, True, s)
    assert verdict == "noise" and p == pytest.approx(
        0.5, rel=1e-12, abs=0
    )  # over the minimum effect, far from confident
    assert field_verdict(0, 10, 1, 10, True, s) == ("noise", 1.0)  # only the baseline differs
    assert field_verdict(10, 10, 10, 10, True, s) == ("noise", 1.0)  # as noisy as the baseline
    # without a baseline, the baseline arm's counts are not noise: every difference of the candidate counts
    verdict, p = field_verdict(10, 10, 10, 10, False, s)
    assert verdict == "regression" and p == pytest.approx(0.0003**10, rel=1e-9, abs=0)  # AbsoluteThreshold's rate
    # rates under the minimum effect are noise, whatever the counts; counts are not rates
    assert field_verdict(50, 100, 45, 100, True, s) == ("noise", 1.0)
    verdict, p = field_verdict(30, 100, 1, 100, True, s)
    assert verdict == "regression" and p == pytest.approx(fisher_by_sums(30, 100, 1, 100), rel=1e-9, abs=0)
    # p 0.00052 is under 1 - 99.9 % for one field, over it when two fields share that level
    assert field_verdict(8, 11, 0, 11, True, s) == ("regression", fisher_greater(8, 11, 0, 11))
    assert field_verdict(8, 11, 0, 11, True, s, tested=2)[0] == "noise"


def test_buckets_and_percentiles_are_exact():
    assert [bucket(x) for x in (0.00001, 0.0000100001, 0.001, 0.0011, 0.01)] == ["0", "1", "49", "50", "73"]
    two = {"5": 1, "10": 1}  # "10" sorts before "5" as text: the order is numeric
    assert percentile_ms(two, 0.0) == 0.016 and percentile_ms(two, 0.5) == 0.026 and percentile_ms(two, 1.0) == 0.026
    assert percentile_ms({"30": 3}, 0.99) == 0.174  # three decimals of a ms
    assert percentile_ms({}, 0.5) is None


def test_latency_verdicts_report_both_sides_and_how_much_slower():
    s = Settings(min_samples=10, latency_threshold=20)
    fast, slow = {"40": 30}, {"50": 30}
    assert latency_verdict(slow, {"40": 9}, s) == {
        "verdict": "learning", "p_value": 1.0, "slower_p50": None, "slower_p99": None,
        "candidate": {"n": 30, "p50_ms": 1.174, "p99_ms": 1.174},
        "reference": {"n": 9, "p50_ms": 0.453, "p99_ms": 0.453},
    }  # fmt: skip
    slower = latency_verdict(slow, fast, s)
    assert slower["verdict"] == "slower" and slower["p_value"] < 1e-6
    assert (slower["slower_p50"], slower["slower_p99"]) == (159.2, 159.2)  # from the shown p50s, 1.174 / 0.453
    assert slower["candidate"] == {"n": 30, "p50_ms": 1.174, "p99_ms": 1.174}
    assert slower["reference"] == {"n": 30, "p50_ms": 0.453, "p99_ms": 0.453}
    barely = latency_verdict({"41": 30}, fast, s)  # 10 % slower: certain, but under LatencyThreshold
    assert barely["verdict"] == "not_slower" and barely["p_value"] < 1e-6 and barely["slower_p50"] == 9.9
    assert latency_verdict(fast, slow, s)["verdict"] == "not_slower"
    assert latency_verdict({"50": 10}, {"40": 10}, s)["verdict"] == "slower"  # MinSamples on each side is enough
    # 136 % slower at p50 on ten samples a side, but p 0.057: not confident, so not slower
    unsure = latency_verdict({"40": 4, "50": 6}, {"40": 5, "41": 5}, s)
    assert unsure["verdict"] == "not_slower" and unsure["slower_p50"] == 135.7 and 0.05 < unsure["p_value"] < 0.06
    # exactly LatencyThreshold slower is not more than it
    assert (
        latency_verdict({"42": 30}, fast, Settings(min_samples=10, latency_threshold=21.0))["verdict"] == "not_slower"
    )
    # p99 is the 99th percentile, not the maximum: one sample in 200 is above it
    assert latency_verdict({"40": 199, "60": 1}, fast, s)["candidate"] == {"n": 200, "p50_ms": 0.453, "p99_ms": 0.453}
    assert latency_verdict(fast, {"40": 199, "60": 1}, s)["reference"] == {"n": 200, "p50_ms": 0.453, "p99_ms": 0.453}


def test_the_verdicts_settings_come_from_the_compare_section():
    from wsgimirror.compare.verdicts import settings_of
    from wsgimirror.config.model import CompareSettings

    got = settings_of(CompareSettings(relative_threshold=11.5, absolute_threshold=2.5, min_samples=7,
                                      confidence=0.95, latency_threshold=33.0, added_fields="regression"))  # fmt: skip
    assert got == Settings(11.5, 2.5, 7, 0.95, 33.0, "regression")
