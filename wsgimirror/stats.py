"""Step 6, count: the counters behind ``MirrorMiddleware.stats()``, by route, cluster and destination.

Every request that matches a route with mirror clusters yields one *copy* per cluster;
each copy is ``pending`` while its response is open, then ends in exactly one of
``mirrored`` or a ``dropped`` reason, and each mirrored copy in exactly one of
``succeeded``, ``failed`` or ``in_flight``: copies = pending + mirrored + Σ dropped. The same identities
hold per route, per cluster and per destination; a destination's copies are those picked for it
(mirrored, or dropped after the pick), so none of them is ever pending. An optional listener (the
Prometheus exporter) hears every event after it is counted.
"""

from __future__ import annotations

import typing as t
from collections import Counter, defaultdict, deque

from .util.green import new_lock

LATENCY_SAMPLES = 2048  # per cluster: the most recent mirror durations, for p50 / p99
TIMEOUTS = ("timeout", "connect_timeout")
PICKED = "picked"  # a destination's copies: those picked for it, sent or dropped after the pick

Drop = t.Tuple[str, t.Sequence[str]]  # a reason, and the clusters whose copies were given up for it


class StatsListener(t.Protocol):
    def request(self) -> None: ...
    def matched(self, route: str, clusters: t.Sequence[str]) -> None: ...
    def drop(self, reason: str, route: str, clusters: t.Sequence[str]) -> None: ...
    def started(self, route: str, cluster: str, destination: str) -> None: ...
    def unstart(self, reason: str, route: str, cluster: str, destination: str) -> None: ...
    def succeeded(self, route: str, cluster: str, destination: str, status: int, seconds: float) -> None: ...
    def written(self, route: str, cluster: str, destination: str, seconds: float) -> None: ...
    def failed(self, route: str, cluster: str, destination: str, reason: str, seconds: float) -> None: ...


class Stats:
    """Thread-safe counters; under gevent the lock is never contended.

    Each event bumps one or two cells keyed by (route, cluster, destination, counter);
    totals and breakdowns are summed from the cells when a snapshot is taken, so the
    request path pays for a few dict updates, not one per breakdown.
    """

    def __init__(self, listener: StatsListener | None = None) -> None:
        self.listener = listener
        self._lock = new_lock()
        self._requests = 0
        self._matched = 0
        self._cells: dict[tuple[str, str, str, str], int] = {}
        self._latency: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=LATENCY_SAMPLES))

    # -- events ---------------------------------------------------------------------------------

    def request(self) -> None:
        with self._lock:
            self._requests += 1
        if self.listener is not None:
            self.listener.request()

    def matched(self, route: str, clusters: t.Sequence[str], drops: t.Sequence[Drop] = ()) -> None:
        """A request matched ``route``: one copy per cluster, and those of ``drops`` already given up.

        Counts the request too, all under one lock: under saturation every copy is shed here,
        and each request's accounting is then the whole of what mirroring costs it.
        """
        with self._lock:  # the cells are added to here, not with _bump: no list built for a shed request
            self._requests += 1
            self._matched += 1
            counts = self._cells
            for cluster in clusters:
                cell = (route, cluster, "", "copies")
                counts[cell] = counts.get(cell, 0) + 1
            for reason, dropped in drops:
                key = "dropped." + reason
                for cluster in dropped:
                    cell = (route, cluster, "", key)
                    counts[cell] = counts.get(cell, 0) + 1
        listener = self.listener
        if listener is not None:
            listener.request()
            listener.matched(route, clusters)
            for reason, dropped in drops:
                listener.drop(reason, route, dropped)

    def drop(self, reason: str, route: str, clusters: t.Sequence[str], destination: str = "") -> None:
        """Copies given up; with ``destination``, after it was picked for them (it counts them as its copies)."""
        key = "dropped." + reason
        with self._lock:
            self._bump([(route, cluster, destination, key) for cluster in clusters], 1)
            if destination:
                self._bump([(route, cluster, destination, PICKED) for cluster in clusters], 1)
        if self.listener is not None:
            self.listener.drop(reason, route, clusters)

    def started(self, route: str, cluster: str, destination: str) -> None:
        with self._lock:
            self._bump([(route, cluster, destination, key) for key in ("mirrored", "in_flight", PICKED)], 1)
        if self.listener is not None:
            self.listener.started(route, cluster, destination)

    def unstart(self, reason: str, route: str, cluster: str, destination: str) -> None:
        """Undo ``started`` for a copy that was not sent after all, counting it as dropped at its destination."""
        with self._lock:
            self._bump([(route, cluster, destination, "mirrored"), (route, cluster, destination, "in_flight")], -1)
            self._bump([(route, cluster, destination, "dropped." + reason)], 1)
        if self.listener is not None:
            self.listener.drop(reason, route, (cluster,))
            self.listener.unstart(reason, route, cluster, destination)

    def succeeded(self, route: str, cluster: str, destination: str, status: int, seconds: float) -> None:
        self._ended(route, cluster, destination, ("succeeded", f"status.{status // 100}xx"), seconds)
        if self.listener is not None:
            self.listener.succeeded(route, cluster, destination, status, seconds)

    def written(self, route: str, cluster: str, destination: str, seconds: float) -> None:
        """A copy recorded to a file destination: succeeded, with no status."""
        self._ended(route, cluster, destination, ("succeeded",), seconds)
        if self.listener is not None:
            self.listener.written(route, cluster, destination, seconds)

    def failed(self, route: str, cluster: str, destination: str, reason: str, seconds: float) -> None:
        keys = ("failed", "failure." + reason) + (("timed_out",) if reason in TIMEOUTS else ())
        self._ended(route, cluster, destination, keys, seconds)
        if self.listener is not None:
            self.listener.failed(route, cluster, destination, reason, seconds)

    def _ended(self, route: str, cluster: str, destination: str, keys: tuple[str, ...], seconds: float) -> None:
        with self._lock:
            self._bump([(route, cluster, destination, "in_flight")], -1)
            self._bump([(route, cluster, destination, key) for key in keys], 1)
            self._latency[cluster].append(seconds)

    def _bump(self, cells: list[tuple[str, str, str, str]], delta: int) -> None:
        """Add ``delta`` to each cell; the caller holds the lock."""
        counts = self._cells
        for cell in cells:
            counts[cell] = counts.get(cell, 0) + delta

    # -- the snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, t.Any]:
        with self._lock:
            cells = dict(self._cells)
            latency = {cluster: list(samples) for cluster, samples in self._latency.items()}
            requests, matched = self._requests, self._matched
        totals: Counter[str] = Counter()
        routes: defaultdict[str, Counter[str]] = defaultdict(Counter)
        clusters: defaultdict[str, Counter[str]] = defaultdict(Counter)
        destinations: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for (route, cluster, destination, key), count in cells.items():
            totals[key] += count
            routes[route][key] += count
            clusters[cluster][key] += count
            if destination:
                destinations[destination][key] += count
        snapshot = _shape(totals)
        snapshot["requests"] = requests
        snapshot["matched"] = matched
        snapshot["by_route"] = {name: _shape(c) for name, c in routes.items()}
        snapshot["by_cluster"] = {name: _shape(c, latency.get(name, [])) for name, c in clusters.items()}
        snapshot["by_destination"] = {name: _shape(c, copies=c[PICKED]) for name, c in destinations.items()}
        return snapshot


def _shape(
    counter: Counter[str], latency: t.Iterable[float] | None = None, copies: int | None = None
) -> dict[str, t.Any]:
    shaped: dict[str, t.Any] = {
        key: counter[key] for key in ("copies", "mirrored", "succeeded", "failed", "timed_out", "in_flight")
    }
    if copies is not None:
        shaped["copies"] = copies
    for prefix, name in (("dropped.", "dropped"), ("failure.", "failures"), ("status.", "statuses")):
        shaped[name] = {k[len(prefix) :]: v for k, v in counter.items() if k.startswith(prefix) and v}
    # Every copy is counted when matched and again when it ends (mirrored or dropped): the rest wait.
    shaped["pending"] = shaped["copies"] - shaped["mirrored"] - sum(shaped["dropped"].values())
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
