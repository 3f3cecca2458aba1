"""Verdicts that respect sample sizes: a field regresses only when the candidate differs more than the noise, by
more than a minimum effect, with statistical confidence; latency is judged apart, by a rank test.

**Fields.** With d1 of n1 candidate comparisons differing in a field and d0 of n0 baseline comparisons
(the noise), the field is:

- ``learning`` while either arm has fewer than ``MinSamples`` comparisons (the baseline arm counts when
  the route has a baseline, however rarely it is sampled): never a regression yet;
- a ``regression`` when r = d1/n1 exceeds s = d0/n0 by Diffy's minimum effect (relative: (r - s) / (r + s)
  over ``RelativeThreshold`` %, absolute: r - s over ``AbsoluteThreshold`` %) *and* the excess is
  significant: the one-sided p-value is below 1 - ``Confidence``, shared among the endpoint's differing
  fields (Bonferroni: an endpoint of twenty noisy fields is no likelier to be flagged by chance than one).
  With a baseline, Fisher's exact test (the hypergeometric tail: exact at any sample size, and it accounts
  for a small baseline by itself: a baseline sampled at 10 % gives a larger p-value for the same rates).
  Without one, the binomial tail of d1 against the absolute threshold as the noise rate: the app's own
  answers are the only reference;
- else ``noise`` (differs, within the noise or not significantly beyond it), or ``same``.

Effects are compared in exact integer arithmetic where it matters: 20.000000000000004 % is not over 20 %.

**Latency.** Each endpoint's latencies are kept as histograms (buckets 10 % apart, so they add up across
processes): the app's own time to answer, the candidates' and the baseline's round trips. The candidate is
``slower`` when a one-sided Mann-Whitney U test (normal approximation with ties, as Kayenta judges canaries)
says its latencies are larger than the reference's (the baseline's when it has ``MinSamples``, else the
app's) with ``Confidence``, and its median by more than ``LatencyThreshold`` %; ``learning`` before
``MinSamples`` on each side. The app's time is measured in-process, a mirror's over the network: against
the app, a candidate pays the network's time too, which the threshold must absorb; a baseline has none of
that bias.
"""

from __future__ import annotations

import math
import typing as t
from fractions import Fraction

if t.TYPE_CHECKING:
    from ..config.model import CompareSettings

LEARNING, REGRESSION, NOISE, SAME = "learning", "regression", "noise", "same"
SLOWER, NOT_SLOWER = "slower", "not_slower"

BUCKET_STEP = 1.1  # a latency histogram's buckets are 10 % apart
BUCKET_FLOOR_MS = 0.01  # bucket 0 holds everything up to 10 µs


def exceeds(r: Fraction, s: Fraction, relative: float, absolute: float) -> bool:
    """Diffy's minimum effect, exactly: r > s, (r - s) / (r + s) > relative %, r - s > absolute %."""
    if r <= s:
        return False
    rel, ab = Fraction(str(relative)), Fraction(str(absolute))
    return (r - s) * 100 > rel * (r + s) and (r - s) * 100 > ab


def fisher_greater(d1: int, n1: int, d0: int, n0: int) -> float:
    """One-sided p-value of Fisher's exact test that arm 1's rate exceeds arm 0's: P(X >= d1), X the count of
    arm 1 among the d1 + d0 differing comparisons drawn without replacement (hypergeometric)."""
    total, differing = n1 + n0, d1 + d0
    top = min(n1, differing)
    if d1 > top or total == 0:
        return 1.0
    base = _lchoose(total, n1)
    p = 0.0
    for x in range(d1, top + 1):
        term = math.exp(_lchoose(differing, x) + _lchoose(total - differing, n1 - x) - base)
        p += term
        if x > d1 and term < p * 1e-12:  # past the mode the terms only shrink
            break
    return min(1.0, p)


def binomial_greater(d: int, n: int, rate: float) -> float:
    """One-sided p-value P(X >= d) for X ~ Binomial(n, rate)."""
    if d <= 0:
        return 1.0
    if rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    lp, lq = math.log(rate), math.log1p(-rate)
    p = 0.0
    for x in range(d, n + 1):
        term = math.exp(_lchoose(n, x) + x * lp + (n - x) * lq)
        p += term
        if x > d and term < p * 1e-12:
            break
    return min(1.0, p)


def _lchoose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


class Settings(t.NamedTuple):
    """What a verdict depends on (from the ``Compare`` section)."""

    relative: float = 20.0
    absolute: float = 0.03
    min_samples: int = 10
    confidence: float = 0.999
    latency_threshold: float = 20.0
    added_fields: str = "report"  # or "regression": an added key or header regresses like a removed one


def settings_of(compare: CompareSettings) -> Settings:
    """The verdicts' settings of a ``Compare`` section."""
    return Settings(compare.relative_threshold, compare.absolute_threshold, compare.min_samples,
                    compare.confidence, compare.latency_threshold, compare.added_fields)  # fmt: skip


def field_verdict(d1: int, n1: int, d0: int, n0: int, baseline: bool, settings: Settings, tested: int = 1
                  ) -> tuple[str, float]:  # fmt: skip
    """The verdict of one field and its p-value (1.0 when no test was made). ``tested``: how many fields of the
    endpoint are tested at once; the level 1 - ``Confidence`` is shared among them (Bonferroni), so that an
    endpoint with many noisy fields is no likelier to be flagged by chance than one with a single field."""
    if n1 < settings.min_samples or (baseline and n0 < settings.min_samples):
        return LEARNING, 1.0
    if d1 == 0 and d0 == 0:
        return SAME, 1.0
    r = Fraction(d1, n1)
    s = Fraction(d0, n0) if baseline and n0 else Fraction(0)
    if not exceeds(r, s, settings.relative, settings.absolute):
        return NOISE, 1.0
    p = fisher_greater(d1, n1, d0, n0) if baseline else binomial_greater(d1, n1, settings.absolute / 100)
    return (REGRESSION if p < (1 - settings.confidence) / max(1, tested) else NOISE), p


# -- latency --------------------------------------------------------------------------------------------------

Histogram = t.Dict[str, int]  # bucket index (as text: it crosses JSON) -> count


def bucket(seconds: float) -> str:
    ms = seconds * 1000
    if ms <= BUCKET_FLOOR_MS:
        return "0"
    return str(int(math.log(ms / BUCKET_FLOOR_MS, BUCKET_STEP)) + 1)


def bucket_ms(index: int) -> float:
    """A bucket's upper bound in ms."""
    return BUCKET_FLOOR_MS * BUCKET_STEP**index


def histogram_count(histogram: Histogram) -> int:
    return sum(histogram.values())


def percentile_ms(histogram: Histogram, q: float) -> float | None:
    """The ``q`` quantile, as its bucket's upper bound (within 10 %); None for an empty histogram."""
    count = histogram_count(histogram)
    if not count:
        return None
    rank = min(count - 1, int(q * count))
    seen = 0
    for index in sorted(histogram, key=int):
        seen += histogram[index]
        if seen > rank:
            return round(bucket_ms(int(index)), 3)
    return None  # pragma: no cover - the counts add up


def mann_whitney_greater(slower: Histogram, reference: Histogram) -> float:
    """One-sided p-value that ``slower``'s values tend to exceed ``reference``'s (U test, normal approximation
    with the tie correction; values in one bucket are ties)."""
    n1, n2 = histogram_count(slower), histogram_count(reference)
    if not n1 or not n2:
        return 1.0
    indices = sorted({int(i) for i in slower} | {int(i) for i in reference})
    u = 0.0
    below = 0  # reference values in lower buckets
    ties = 0.0
    for index in indices:
        a, b = slower.get(str(index), 0), reference.get(str(index), 0)
        u += a * (below + b / 2)
        below += b
        together = a + b
        ties += together**3 - together
    n = n1 + n2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0 if u <= mean else 0.0
    z = (u - mean - 0.5) / math.sqrt(variance)  # with continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2))


def latency_verdict(candidate: Histogram, reference: Histogram, settings: Settings) -> dict[str, t.Any]:
    """``slower``, ``not_slower`` or ``learning``, with the p-value, both sides' p50 and p99 and how much slower."""
    n1, n0 = histogram_count(candidate), histogram_count(reference)
    shown: dict[str, t.Any] = {
        "candidate": {"n": n1, "p50_ms": percentile_ms(candidate, 0.5), "p99_ms": percentile_ms(candidate, 0.99)},
        "reference": {"n": n0, "p50_ms": percentile_ms(reference, 0.5), "p99_ms": percentile_ms(reference, 0.99)},
    }
    if n1 < settings.min_samples or n0 < settings.min_samples:
        return {"verdict": LEARNING, "p_value": 1.0, **shown, "slower_p50": None, "slower_p99": None}
    c50, r50 = shown["candidate"]["p50_ms"], shown["reference"]["p50_ms"]
    c99, r99 = shown["candidate"]["p99_ms"], shown["reference"]["p99_ms"]
    slower50 = round((c50 / r50 - 1) * 100, 1) if r50 else None
    slower99 = round((c99 / r99 - 1) * 100, 1) if r99 else None
    p = mann_whitney_greater(candidate, reference)
    slow = p < 1 - settings.confidence and slower50 is not None and slower50 > settings.latency_threshold
    return {"verdict": SLOWER if slow else NOT_SLOWER, "p_value": p, **shown, "slower_p50": slower50,
            "slower_p99": slower99}  # fmt: skip
