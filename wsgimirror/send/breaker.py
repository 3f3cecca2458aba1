"""Each destination's circuit breaker and load, and each cluster's policy: which destinations may take a
mirror now.
"""

from __future__ import annotations

import logging
import time
import typing as t

from ..errors import MirrorSendError
from .pick import POLICIES, Policy

if t.TYPE_CHECKING:
    from urllib3 import HTTPConnectionPool

    from ..config.model import Cluster, Config, Destination, HttpClientSettings, MirrorSettings, RecordSettings

log = logging.getLogger(__name__)

# -- per-destination state -------------------------------------------------------------------------


class DestinationState:
    """One destination in one process: its connection pool, load, and circuit breaker.

    After ``BreakerFailures`` failures in a row the circuit opens: the destination is
    skipped for ``BreakerSeconds``, then one trial mirror is let through (half-open);
    its success closes the circuit, its failure opens it again. ``BreakerFailures`` 0
    never opens it. The first failure of a streak and the recovery are logged, nothing
    in between.
    """

    __slots__ = ("destination", "name", "key", "pool", "in_flight", "streak", "open_until", "trial", "_settings")

    def __init__(
        self, cluster_id: str, destination: Destination, settings: MirrorSettings, pool: HTTPConnectionPool
    ) -> None:
        self.destination = destination
        self.name = destination.name
        self.key = f"{cluster_id}/{destination.name}"  # how stats and metrics name it
        self.pool = pool
        self.in_flight = 0
        self.streak = 0  # consecutive failures
        self.open_until = 0.0  # monotonic time the open circuit half-opens; 0: closed
        self.trial = False  # a half-open trial mirror is in flight
        self._settings = settings

    @property
    def state(self) -> str:
        if not self.open_until:
            return "closed"
        return "open" if time.monotonic() < self.open_until else "half_open"

    def available(self, now: float) -> bool:
        return not self.open_until or (now >= self.open_until and not self.trial)

    def picked(self, now: float) -> bool:
        """Note that a mirror goes here; True when it is the half-open trial."""
        if self.open_until and now >= self.open_until:
            self.trial = True
            return True
        return False

    def trial_not_run(self) -> None:
        """The trial mirror was never sent (the pool was full, the head invalid): free the slot."""
        self.trial = False

    def failure(self, cluster_id: str, route_id: str, err: MirrorSendError) -> None:
        self.streak += 1
        if self.streak == 1:
            log.warning(
                "mirror destination %s (cluster %r, route %r) is failing: %s",
                self.destination.address, cluster_id, route_id, err,
            )  # fmt: skip
        threshold = self._settings.breaker_failures
        if self.trial or (threshold and self.streak >= threshold and not self.open_until):
            self.trial = False
            self.open_until = time.monotonic() + self._settings.breaker_seconds
            log.debug("circuit of %s open for %gs", self.destination.address, self._settings.breaker_seconds)

    def success(self, cluster_id: str) -> None:
        if self.streak:
            log.warning(
                "mirror destination %s (cluster %r) recovered after %d failures",
                self.destination.address, cluster_id, self.streak,
            )  # fmt: skip
        self.streak = 0
        self.open_until = 0.0
        self.trial = False


class Pools(t.Protocol):
    """Where a destination's pool comes from (the process's :class:`~wsgimirror.agent.runtime.Runtime`)."""

    def pool(self, destination: Destination, settings: MirrorSettings, http_client: HttpClientSettings,
             record: RecordSettings | None = None) -> t.Any: ...  # fmt: skip


class ClusterState:
    __slots__ = ("cluster", "policy", "destinations")

    def __init__(self, cluster: Cluster, config: Config, runtime: Pools) -> None:
        self.cluster = cluster
        self.policy: Policy = POLICIES[cluster.policy.lower()](cluster)
        settings = config.mirror
        self.destinations = tuple(
            DestinationState(cluster.id, d, settings, runtime.pool(d, settings, cluster.http_client, config.record))
            for d in cluster.destinations
        )

    def tripped(self) -> bool:
        """Whether the circuit of any destination is open or half-open."""
        return any(d.open_until for d in self.destinations)

    def candidates(self, now: float) -> t.Sequence[DestinationState]:
        """The destinations whose circuit lets a mirror through (usually all of them)."""
        if not self.tripped():
            return self.destinations
        return [d for d in self.destinations if d.available(now)]
