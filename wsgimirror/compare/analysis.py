"""Count comparisons per endpoint and field, and their latencies; :func:`summarize` turns the counts into verdicts.

For each endpoint, candidate comparisons (app vs a ``MirrorCompare`` cluster) and baseline comparisons
(app vs the ``MirrorBaseline`` cluster, which runs the app's code) are counted apart, and for each field
the comparisons where it differs: ``differences`` (candidate) and ``noise`` (baseline). Of a field's
candidate differences, ``added_only`` counts those that were only added keys or headers, and
``mirror_made`` those that were only what the mirror itself changed in the request (see
:class:`.diff.MirrorMade`); neither is a regression by default. ``with_baseline`` counts the candidate
comparisons made on a route that has a baseline, so that an endpoint whose baseline is sampled rarely
waits for it rather than taking its noise for a regression. Each endpoint also keeps latency histograms
of the app, the candidates and the baseline. The verdicts are :mod:`.verdicts`'.

:data:`Counts` is the shape that crosses boundaries (``stats()["compare"]``, the diff log's ``counts``
records, the report): raw counters that add up across processes, to which :func:`summarize` adds the
rates and verdicts.
"""

from __future__ import annotations

import typing as t
from collections import Counter

from ..util.green import new_lock
from .verdicts import LEARNING, NOISE, REGRESSION, SAME, Settings, bucket, field_verdict, latency_verdict

MAX_FIELDS = 200  # distinct fields kept per endpoint; the rest count under OTHER_FIELD
MAX_ENDPOINTS = 1000  # distinct endpoints kept; the rest count under OTHER_ENDPOINT
OTHER_FIELD = "other"
OTHER_ENDPOINT = "* other"
ENDPOINT_COUNTERS = ("compared", "same", "different", "baseline_compared", "baseline_different", "with_baseline")
FIELD_COUNTERS = ("differences", "noise", "added_only", "mirror_made")
LATENCY_ARMS = ("app", "candidate", "baseline")
BENIGN = frozenset({"added", "mirror"})  # kinds that are not a regression by default

# endpoint -> {"compared": n, ..., "fields": {field: {"kinds": {kind: n}, "differences": n, "noise": n, ...}},
#              "latency": {"app": {bucket: n}, "candidate": {...}, "baseline": {...}}}
Counts = t.Dict[str, t.Dict[str, t.Any]]


def new_endpoint() -> dict[str, t.Any]:
    return {**dict.fromkeys(ENDPOINT_COUNTERS, 0), "fields": {}, "latency": {arm: {} for arm in LATENCY_ARMS}}


def new_field() -> dict[str, t.Any]:
    return {"kinds": {}, **dict.fromkeys(FIELD_COUNTERS, 0)}


class Analysis:
    """The live counters of one middleware in one process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = new_lock()
        self._endpoints: Counts = {}
        self._skipped: Counter[str] = Counter()
        self._examples: Counter[tuple[str, str]] = Counter()

    def skip(self, reason: str, endpoint: str) -> str:
        """Count a comparison not made; returns the endpoint as counted (after the cap)."""
        with self._lock:
            self._skipped[reason] += 1
            endpoint = self._endpoint_key(endpoint)
            self._endpoints.setdefault(endpoint, new_endpoint())
            return endpoint

    def record(
        self,
        endpoint: str,
        baseline: bool,
        differences: t.Iterable[tuple[str, str]],
        examples: int,
        has_baseline: bool = False,
        latency: tuple[float | None, float | None] = (None, None),
    ) -> tuple[str, list[str], list[str]]:
        """Count one comparison's ``(field, kind)`` differences; ``has_baseline``: the route has a baseline;
        ``latency``: (the app's seconds to answer, the mirror's), each None when unknown.

        Returns the endpoint and the differing fields as counted (after the caps), and those
        of the fields that still want an example (fewer than ``examples`` logged so far here).
        """
        kinds_by_field: dict[str, set[str]] = {}
        for field, kind in differences:
            kinds_by_field.setdefault(field, set()).add(kind)
        real = any(not kinds <= {"mirror"} for kinds in kinds_by_field.values())
        with self._lock:
            endpoint = self._endpoint_key(endpoint)
            counts = self._endpoints.setdefault(endpoint, new_endpoint())
            self._count_comparison(counts, baseline, real, has_baseline, latency)
            wanted, counted = [], []
            fields = counts["fields"]
            for field, kinds in kinds_by_field.items():
                if field not in fields and len(fields) >= MAX_FIELDS:
                    field = OTHER_FIELD
                counted.append(field)
                entry = fields.setdefault(field, new_field())
                _count_field(entry, baseline, kinds)
                if self._examples[endpoint, field] < examples:
                    self._examples[endpoint, field] += 1
                    wanted.append(field)
            return endpoint, counted, wanted

    @staticmethod
    def _count_comparison(counts: dict[str, t.Any], baseline: bool, real: bool, has_baseline: bool,
                          latency: tuple[float | None, float | None]) -> None:  # fmt: skip
        app_seconds, mirror_seconds = latency
        histograms = counts["latency"]
        if baseline:
            counts["baseline_compared"] += 1
            counts["baseline_different"] += real
        else:
            counts["compared"] += 1
            counts["different" if real else "same"] += 1
            counts["with_baseline"] += has_baseline
            if app_seconds is not None:
                _add(histograms["app"], app_seconds)
        if mirror_seconds is not None:
            _add(histograms["baseline" if baseline else "candidate"], mirror_seconds)

    def _endpoint_key(self, endpoint: str) -> str:
        if endpoint in self._endpoints or len(self._endpoints) < MAX_ENDPOINTS:
            return endpoint
        return OTHER_ENDPOINT

    def counts(self) -> tuple[Counts, dict[str, int]]:
        """A deep copy of the counters and the skip reasons."""
        with self._lock:
            return merge([self._endpoints]), dict(self._skipped)

    def snapshot(self, settings: Settings) -> dict[str, t.Any]:
        """``stats()["compare"]``."""
        endpoints, skipped = self.counts()
        return {
            "compared": sum(c["compared"] for c in endpoints.values()),
            "same": sum(c["same"] for c in endpoints.values()),
            "different": sum(c["different"] for c in endpoints.values()),
            "skipped": skipped,
            "by_endpoint": summarize(endpoints, settings),
        }


def _count_field(entry: dict[str, t.Any], baseline: bool, kinds: set[str]) -> None:
    if baseline:
        if not kinds <= {"mirror"}:
            entry["noise"] += 1  # what the mirror changed is no noise: the candidate's echo of it is not counted
        return
    entry["differences"] += 1
    if kinds <= {"mirror"}:
        entry["mirror_made"] += 1
    elif kinds <= BENIGN:
        entry["added_only"] += 1
    for kind in kinds:
        entry["kinds"][kind] = entry["kinds"].get(kind, 0) + 1


def _add(histogram: dict[str, int], seconds: float) -> None:
    key = bucket(seconds)
    histogram[key] = histogram.get(key, 0) + 1


def merge(many: t.Iterable[Counts]) -> Counts:
    """The sum of several processes' counts (a deep copy for one)."""
    total: Counts = {}
    for counts in many:
        for name, source in counts.items():
            into = total.setdefault(name, new_endpoint())
            for key in ENDPOINT_COUNTERS:
                into[key] += int(source.get(key, 0))
            for field, values in source.get("fields", {}).items():
                entry = into["fields"].setdefault(field, new_field())
                for key in FIELD_COUNTERS:
                    entry[key] += int(values.get(key, 0))
                for kind, n in values.get("kinds", {}).items():
                    entry["kinds"][kind] = entry["kinds"].get(kind, 0) + int(n)
            for arm, histogram in source.get("latency", {}).items():
                if arm in LATENCY_ARMS:
                    into_histogram = into["latency"][arm]
                    for key, n in histogram.items():
                        into_histogram[key] = into_histogram.get(key, 0) + int(n)
    return total


def summarize(counts: Counts, settings: Settings) -> dict[str, dict[str, t.Any]]:
    """The counts with each field's rates, verdict and p-value, each endpoint's verdict and its latency verdict.

    A field's ``rate`` counts the differences that can regress (not mirror-made ones, nor added ones unless
    ``AddedFields`` is ``regression``); ``excess`` is how far it is above ``noise_rate``.
    """
    summary = {}
    for name, endpoint in counts.items():
        n1, n0 = endpoint["compared"], endpoint["baseline_compared"]
        expects_baseline = endpoint.get("with_baseline", 0) > 0 or n0 > 0
        tested = sum(1 for values in endpoint["fields"].values() if values["differences"] or values["noise"])
        fields = {field: _field_summary(values, n1, n0, expects_baseline, settings, tested)
                  for field, values in endpoint["fields"].items()}  # fmt: skip
        regressing = any(f["regression"] for f in fields.values())
        learning = n1 < settings.min_samples or (expects_baseline and n0 < settings.min_samples)
        latency = endpoint.get("latency", {})
        reference = "baseline" if expects_baseline and sum(latency.get("baseline", {}).values()) >= \
            settings.min_samples else "app"  # fmt: skip
        summary[name] = {
            **{key: endpoint.get(key, 0) for key in ENDPOINT_COUNTERS},
            "regression": regressing,
            "verdict": REGRESSION if regressing else LEARNING if learning else
            NOISE if any(f["verdict"] == NOISE for f in fields.values()) else SAME,
            "excess": max((f["excess"] for f in fields.values() if f["regression"]), default=0.0),
            "fields": fields,
            "latency": {"against": reference,
                        **latency_verdict(latency.get("candidate", {}), latency.get(reference, {}), settings)},
        }  # fmt: skip
    return summary


def _field_summary(values: dict[str, t.Any], n1: int, n0: int, baseline: bool, settings: Settings, tested: int
                   ) -> dict[str, t.Any]:  # fmt: skip
    benign = values.get("mirror_made", 0) + (values.get("added_only", 0) if settings.added_fields == "report" else 0)
    d1, d0 = max(0, values["differences"] - benign), values["noise"]
    verdict, p = field_verdict(d1, n1, d0, n0, baseline, settings, tested)
    if d1 == 0 and values["differences"]:
        verdict = "mirror-made" if values.get("mirror_made", 0) == values["differences"] else "added"
    r = d1 / n1 if n1 else 0.0
    s = d0 / n0 if n0 else 0.0
    return {
        **values,
        "rate": round(r, 6),
        "noise_rate": round(s, 6),
        "excess": round(r - s, 6),
        "verdict": verdict,
        "p_value": float(f"{p:.3g}"),
        "regression": verdict == REGRESSION,
    }
