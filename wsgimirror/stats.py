"""Step 6, count: the counters behind ``MirrorMiddleware.stats()``, by route, cluster and destination.

Every request that matches a route with mirror clusters yields one *copy* per cluster;
each copy ends in exactly one of ``mirrored`` or a ``dropped`` reason, and each mirrored
copy in exactly one of ``succeeded``, ``failed`` or ``in_flight``. The same identities
hold per route and per cluster. An optional listener (the Prometheus exporter) hears
every event after it is counted.
"""

from __future__ import annotations

import typing as t
from collections import Counter, defaultdict, deque

LATENCY_SAMPLES = 2048  # per cluster: the most recent mirror durations, for p50 / p99
TIMEOUTS = ("timeout", "connect_timeout")


def _original_allocate_lock() -> t.Callable[[], t.Any]:
    try:
        from gevent.monkey import get_original
    except ImportError:  # pragma: no cover - gevent is a dependency
        import _thread

        return _thread.allocate_lock
    return t.cast(t.Callable[[], t.Any], get_original("_thread", "allocate_lock"))


# A real OS-thread lock, even after gevent monkey-patching. The critical sections here are a
# few increments with no I/O, so no greenlet can switch while one is held; gevent's patched
# lock costs ten times as much.
new_lock = _original_allocate_lock()


class StatsListener(t.Protocol):
    def request(self) -> None: ...
    def matched(self, route: str, clusters: t.Sequence[str]) -> None: ...
    def drop(self, reason: str, route: str, clusters: t.Sequence[str]) -> None: ...
    def started(self, route: str, cluster: str, destination: str) -> None: ...
    def unstart(self, reason: str, route: str, cluster: str, destination: str) -> None: ...
    def succeeded(self, route: str, cluster: str, destination: str, status: int, seconds: float) -> None: ...
    def failed(self, route: str, cluster: str, destination: str, reason: str, seconds: float) -> None: ...


class Stats:
    """Thread-safe counters; under gevent the lock is never contended."""

    def __init__(self, listener: StatsListener | None = None) -> None:
        self.listener = listener
        self._lock = new_lock()
        self._totals: Counter[str] = Counter()
        self._routes: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._clusters: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._destinations: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._latency: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=LATENCY_SAMPLES))

    # -- events ---------------------------------------------------------------------------------

    def request(self) -> None:
        with self._lock:
            self._totals["requests"] += 1
        if self.listener is not None:
            self.listener.request()

    def matched(self, route: str, clusters: t.Sequence[str]) -> None:
        with self._lock:
            self._totals["matched"] += 1
            self._totals["copies"] += len(clusters)
            self._routes[route]["copies"] += len(clusters)
            for cluster in clusters:
                self._clusters[cluster]["copies"] += 1
        if self.listener is not None:
            self.listener.matched(route, clusters)

    def drop(self, reason: str, route: str, clusters: t.Sequence[str]) -> None:
        key = "dropped." + reason
        with self._lock:
            self._totals[key] += len(clusters)
            self._routes[route][key] += len(clusters)
            for cluster in clusters:
                self._clusters[cluster][key] += 1
        if self.listener is not None:
            self.listener.drop(reason, route, clusters)

    def started(self, route: str, cluster: str, destination: str) -> None:
        self._add(route, cluster, destination, ("mirrored", "in_flight"), 1)
        if self.listener is not None:
            self.listener.started(route, cluster, destination)

    def unstart(self, reason: str, route: str, cluster: str, destination: str) -> None:
        """Undo ``started`` for a copy the executor refused, counting it as dropped."""
        self._add(route, cluster, destination, ("mirrored", "in_flight"), -1)
        self.drop(reason, route, (cluster,))
        if self.listener is not None:
            self.listener.unstart(reason, route, cluster, destination)

    def succeeded(self, route: str, cluster: str, destination: str, status: int, seconds: float) -> None:
        status_class = f"{status // 100}xx"
        self._add(route, cluster, destination, ("in_flight",), -1, ("succeeded", "status." + status_class), seconds)
        if self.listener is not None:
            self.listener.succeeded(route, cluster, destination, status, seconds)

    def failed(self, route: str, cluster: str, destination: str, reason: str, seconds: float) -> None:
        keys = ("failed", "failure." + reason) + (("timed_out",) if reason in TIMEOUTS else ())
        self._add(route, cluster, destination, ("in_flight",), -1, keys, seconds)
        if self.listener is not None:
            self.listener.failed(route, cluster, destination, reason, seconds)

    def _add(
        self,
        route: str,
        cluster: str,
        destination: str,
        keys: tuple[str, ...],
        delta: int,
        more: tuple[str, ...] = (),
        seconds: float | None = None,
    ) -> None:
        counters = (self._totals, self._routes[route], self._clusters[cluster], self._destinations[destination])
        with self._lock:
            for counter in counters:
                for key in keys:
                    counter[key] += delta
                for key in more:
                    counter[key] += 1
            if seconds is not None:
                self._latency[cluster].append(seconds)

    # -- the snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, t.Any]:
        with self._lock:
            totals = _shape(self._totals)
            totals["requests"] = self._totals["requests"]
            totals["matched"] = self._totals["matched"]
            totals["by_route"] = {name: _shape(c) for name, c in self._routes.items()}
            totals["by_cluster"] = {name: _shape(c, self._latency.get(name)) for name, c in self._clusters.items()}
            totals["by_destination"] = {name: _shape(c) for name, c in self._destinations.items()}
        return totals


def _shape(counter: Counter[str], latency: t.Iterable[float] | None = None) -> dict[str, t.Any]:
    shaped: dict[str, t.Any] = {
        key: counter[key] for key in ("copies", "mirrored", "succeeded", "failed", "timed_out", "in_flight")
    }
    for prefix, name in (("dropped.", "dropped"), ("failure.", "failures"), ("status.", "statuses")):
        shaped[name] = {k[len(prefix) :]: v for k, v in counter.items() if k.startswith(prefix) and v}
    if latency is not None:
        samples = sorted(latency)
        shaped["latency_ms"] = {
            "p50": round(_percentile(samples, 0.50) * 1000, 3),
            "p99": round(_percentile(samples, 0.99) * 1000, 3),
            "samples": len(samples),
        }
    return shaped


def _percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    return samples[min(len(samples) - 1, int(q * len(samples)))]
