"""Count comparisons per endpoint and field, and tell regressions from noise with Diffy's rule.

For each endpoint, candidate comparisons (app vs a ``MirrorCompare`` cluster) and baseline
comparisons (app vs the ``MirrorBaseline`` cluster, which runs the app's code) are counted
apart, and for each field the comparisons where it differs. With r the share of candidate
comparisons where a field differs and s the same share for the baseline (0 without one),
the field is a **regression** when

    r > s  and  (r - s) / (r + s) * 100 > RelativeThreshold  and  (r - s) * 100 > AbsoluteThreshold

Rates, not counts, so sampling the two clusters differently cannot skew it. An endpoint
regresses when one of its fields does.

:class:`Counts` is the shape that crosses boundaries (``stats()["compare"]``, the diff log's
``counts`` records, the report): raw counters that add up across processes, to which
:func:`summarize` adds the rates and verdicts.
"""

from __future__ import annotations

import typing as t
from collections import Counter

from ..stats import new_lock

MAX_FIELDS = 200  # distinct fields kept per endpoint; the rest count under OTHER_FIELD
MAX_ENDPOINTS = 1000  # distinct endpoints kept; the rest count under OTHER_ENDPOINT
OTHER_FIELD = "other"
OTHER_ENDPOINT = "* other"
ENDPOINT_COUNTERS = ("compared", "same", "different", "baseline_compared", "baseline_different")

# endpoint -> {"compared": n, ..., "fields": {field: {"kinds": {kind: n}, "differences": n, "noise": n}}}
Counts = dict[str, dict[str, t.Any]]


def new_endpoint() -> dict[str, t.Any]:
    return {**dict.fromkeys(ENDPOINT_COUNTERS, 0), "fields": {}}


def new_field() -> dict[str, t.Any]:
    return {"kinds": {}, "differences": 0, "noise": 0}


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
        self, endpoint: str, baseline: bool, differences: t.Iterable[tuple[str, str]], examples: int
    ) -> tuple[str, list[str], list[str]]:
        """Count one comparison's ``(field, kind)`` differences.

        Returns the endpoint and the differing fields as counted (after the caps), and those
        of the fields that still want an example (fewer than ``examples`` logged so far here).
        """
        kinds_by_field: dict[str, set[str]] = {}
        for field, kind in differences:
            kinds_by_field.setdefault(field, set()).add(kind)
        prefix = "baseline_" if baseline else ""
        with self._lock:
            endpoint = self._endpoint_key(endpoint)
            counts = self._endpoints.setdefault(endpoint, new_endpoint())
            counts[prefix + "compared"] += 1
            if not baseline:
                counts["same" if not kinds_by_field else "different"] += 1
            elif kinds_by_field:
                counts["baseline_different"] += 1
            wanted, counted = [], []
            fields = counts["fields"]
            for field, kinds in kinds_by_field.items():
                if field not in fields and len(fields) >= MAX_FIELDS:
                    field = OTHER_FIELD
                counted.append(field)
                entry = fields.setdefault(field, new_field())
                entry["noise" if baseline else "differences"] += 1
                if not baseline:
                    for kind in kinds:
                        entry["kinds"][kind] = entry["kinds"].get(kind, 0) + 1
                if self._examples[endpoint, field] < examples:
                    self._examples[endpoint, field] += 1
                    wanted.append(field)
            return endpoint, counted, wanted

    def _endpoint_key(self, endpoint: str) -> str:
        if endpoint in self._endpoints or len(self._endpoints) < MAX_ENDPOINTS:
            return endpoint
        return OTHER_ENDPOINT

    def counts(self) -> tuple[Counts, dict[str, int]]:
        """A deep copy of the counters and the skip reasons."""
        with self._lock:
            endpoints = {
                name: {
                    **{key: c[key] for key in ENDPOINT_COUNTERS},
                    "fields": {f: {**v, "kinds": dict(v["kinds"])} for f, v in c["fields"].items()},
                }
                for name, c in self._endpoints.items()
            }
            return endpoints, dict(self._skipped)

    def snapshot(self, relative: float, absolute: float) -> dict[str, t.Any]:
        """``stats()["compare"]``."""
        endpoints, skipped = self.counts()
        return {
            "compared": sum(c["compared"] for c in endpoints.values()),
            "same": sum(c["same"] for c in endpoints.values()),
            "different": sum(c["different"] for c in endpoints.values()),
            "skipped": skipped,
            "by_endpoint": summarize(endpoints, relative, absolute),
        }


def merge(many: t.Iterable[Counts]) -> Counts:
    """The sum of several processes' counts."""
    total: Counts = {}
    for counts in many:
        for name, source in counts.items():
            into = total.setdefault(name, new_endpoint())
            for key in ENDPOINT_COUNTERS:
                into[key] += int(source.get(key, 0))
            for field, values in source.get("fields", {}).items():
                entry = into["fields"].setdefault(field, new_field())
                entry["differences"] += int(values.get("differences", 0))
                entry["noise"] += int(values.get("noise", 0))
                for kind, n in values.get("kinds", {}).items():
                    entry["kinds"][kind] = entry["kinds"].get(kind, 0) + int(n)
    return total


def regression(r: float, s: float, relative: float, absolute: float) -> bool:
    """Diffy's rule, with r and s as shares (0 to 1) and the thresholds in percent."""
    return r > s and (r - s) / (r + s) * 100 > relative and (r - s) * 100 > absolute


def summarize(counts: Counts, relative: float, absolute: float) -> dict[str, dict[str, t.Any]]:
    """The counts with each field's ``rate``, ``noise_rate`` and ``regression``, and each endpoint's verdict."""
    summary = {}
    for name, endpoint in counts.items():
        compared, baseline = endpoint["compared"], endpoint["baseline_compared"]
        fields = {}
        for field, values in endpoint["fields"].items():
            r = values["differences"] / compared if compared else 0.0
            s = values["noise"] / baseline if baseline else 0.0
            fields[field] = {
                **values,
                "rate": round(r, 6),
                "noise_rate": round(s, 6),
                "regression": regression(r, s, relative, absolute),
            }
        summary[name] = {
            **{key: endpoint[key] for key in ENDPOINT_COUNTERS},
            "regression": any(f["regression"] for f in fields.values()),
            "fields": fields,
        }
    return summary
