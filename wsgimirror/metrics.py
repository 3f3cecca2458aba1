"""Prometheus metrics (the ``prometheus`` extra): the stats as ``wsgimirror_*`` series.

Pass ``prometheus=True`` (the default registry) or a ``CollectorRegistry`` to
``MirrorMiddleware``. Every series is a plain prometheus_client Counter, Gauge or
Histogram, so gunicorn's multi-process mode works as prometheus_client documents it:
set ``PROMETHEUS_MULTIPROC_DIR`` before the workers start and expose a
``MultiProcessCollector`` from the master (``examples/gunicorn.conf.py`` does).
"""

from __future__ import annotations

import typing as t

from .stats import TIMEOUTS
from .util.text import printable

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusMetrics:
    """A stats listener that feeds prometheus_client metrics; one per registry."""

    _by_registry: t.ClassVar[dict[int, PrometheusMetrics]] = {}

    @classmethod
    def for_registry(cls, registry: t.Any = None) -> PrometheusMetrics:
        """The metrics registered on ``registry`` (the default one when None), created once."""
        try:
            import prometheus_client
        except ImportError as err:
            raise ImportError(
                "Prometheus metrics need prometheus_client: pip install 'wsgimirror[prometheus]'"
            ) from err
        registry = registry if registry is not None else prometheus_client.REGISTRY
        if id(registry) not in cls._by_registry:
            cls._by_registry[id(registry)] = cls(registry)
        return cls._by_registry[id(registry)]

    def __init__(self, registry: t.Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> t.Any:
            return Counter(f"wsgimirror_{name}", doc, labels, registry=registry)

        self._requests = counter("requests", "Requests seen by the middleware")
        self._copies = counter("copies", "Copies of matched requests, one per mirror cluster", ("route", "cluster"))
        self._dropped = counter("dropped", "Copies not mirrored, by reason", ("route", "cluster", "reason"))
        self._mirrors = counter(
            "mirrors", "Mirrors that ended, by outcome", ("route", "cluster", "destination", "outcome")
        )
        self._responses = counter(
            "responses", "Mirror responses by status class", ("cluster", "destination", "status_class")
        )
        self._failures = counter("failures", "Failed mirrors by reason", ("cluster", "destination", "reason"))
        self._duration = Histogram(
            "wsgimirror_mirror_duration_seconds",
            "Time from hand-off to the end of a mirror",
            ("cluster", "destination"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._compared = counter(
            "compared",
            "Mirror answers compared with the app's, by result (same, different, or why skipped)",
            ("route", "cluster", "endpoint", "result"),
        )
        self._field_differences = counter(
            "field_differences",
            "Comparisons in which a field differed, by source (candidate or baseline)",
            ("endpoint", "field", "source"),
        )
        self._in_flight = Gauge(
            "wsgimirror_in_flight",
            "Mirrors handed off and not yet ended",
            ("cluster", "destination"),
            registry=registry,
            multiprocess_mode="livesum",
        )

    def request(self) -> None:
        self._requests.inc()

    def matched(self, route: str, clusters: t.Sequence[str]) -> None:
        for cluster in clusters:
            self._copies.labels(route, cluster).inc()

    def drop(self, reason: str, route: str, clusters: t.Sequence[str]) -> None:
        for cluster in clusters:
            self._dropped.labels(route, cluster, reason).inc()

    def started(self, route: str, cluster: str, destination: str) -> None:
        self._in_flight.labels(cluster, destination).inc()

    def unstart(self, reason: str, route: str, cluster: str, destination: str) -> None:
        self._in_flight.labels(cluster, destination).dec()

    def succeeded(self, route: str, cluster: str, destination: str, status: int, seconds: float) -> None:
        self._ended(route, cluster, destination, "succeeded", seconds)
        self._responses.labels(cluster, destination, f"{status // 100}xx").inc()

    def written(self, route: str, cluster: str, destination: str, seconds: float) -> None:
        self._ended(route, cluster, destination, "succeeded", seconds)

    def failed(self, route: str, cluster: str, destination: str, reason: str, seconds: float) -> None:
        self._ended(route, cluster, destination, "timed_out" if reason in TIMEOUTS else "failed", seconds)
        self._failures.labels(cluster, destination, reason).inc()

    def compared(self, route: str, cluster: str, endpoint: str, result: str) -> None:
        self._compared.labels(route, cluster, printable(endpoint), result).inc()

    def field_difference(self, endpoint: str, field: str, source: str) -> None:
        self._field_differences.labels(printable(endpoint), printable(field), source).inc()

    def _ended(self, route: str, cluster: str, destination: str, outcome: str, seconds: float) -> None:
        self._in_flight.labels(cluster, destination).dec()
        self._mirrors.labels(route, cluster, destination, outcome).inc()
        self._duration.labels(cluster, destination).observe(seconds)


def exposition_registry() -> t.Any:
    """The registry to expose: a MultiProcessCollector when PROMETHEUS_MULTIPROC_DIR is set, else the default."""
    import os

    import prometheus_client
    from prometheus_client import multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return prometheus_client.REGISTRY
    registry = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
