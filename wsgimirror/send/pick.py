"""Pick the destination of a mirror cluster for one request: the load-balancing policies.

Policies are registered by name in :data:`POLICIES` (names are case-insensitive in
the configuration). Each picks among *candidates*, objects with a ``name`` and an
``in_flight`` count (the sender's per-destination state), so a policy never needs
to know about sockets. ``Hash`` is rendezvous hashing over a stable digest: the
same key goes to the same destination in every process and after restarts, and
adding a fourth destination to three moves about a quarter of the keys.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import typing as t
from urllib.parse import parse_qsl

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from ..config.model import Cluster


class Candidate(t.Protocol):
    name: str
    in_flight: int


C = t.TypeVar("C", bound=Candidate)


class Policy:
    """Base class: ``pick`` returns one of ``candidates`` (never empty) for the request in ``environ``."""

    name: t.ClassVar[str] = ""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def pick(self, candidates: t.Sequence[C], environ: WSGIEnvironment) -> C:
        raise NotImplementedError


class First(Policy):
    name = "First"

    def pick(self, candidates: t.Sequence[C], environ: WSGIEnvironment) -> C:
        return candidates[0]


class Random(Policy):
    name = "Random"

    def pick(self, candidates: t.Sequence[C], environ: WSGIEnvironment) -> C:
        return random.choice(candidates)


class RoundRobin(Policy):
    name = "RoundRobin"

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self._counter = itertools.count()

    def pick(self, candidates: t.Sequence[C], environ: WSGIEnvironment) -> C:
        return candidates[next(self._counter) % len(candidates)]


class LeastRequests(Policy):
    """The destination with the fewest mirrors in flight; ties go to the first."""

    name = "LeastRequests"

    def pick(self, candidates: t.Sequence[C], environ: WSGIEnvironment) -> C:
        return min(candidates, key=_in_flight)


class PowerOfTwoChoices(Policy):
    """Two destinations at random, the one with fewer mirrors in flight."""

    name = "PowerOfTwoChoices"

    def pick(self, candidates: t.Sequence[C], environ: WSGIEnvironment) -> C:
        if len(candidates) == 1:
            return candidates[0]
        first, second = random.sample(candidates, 2)
        return second if second.in_flight < first.in_flight else first


class Hash(Policy):
    """Rendezvous hashing of the cluster's ``HashBy``/``Key`` value (the client address when absent)."""

    name = "Hash"

    def pick(self, candidates: t.Sequence[C], environ: WSGIEnvironment) -> C:
        key = hash_key(self.cluster, environ).encode("utf-8", "surrogateescape")
        return max(candidates, key=lambda c: _score(c.name, key))


def _in_flight(candidate: Candidate) -> int:
    return candidate.in_flight


def _score(name: str, key: bytes) -> bytes:
    return hashlib.blake2b(name.encode() + b"\x00" + key, digest_size=8).digest()


def sampled_in(cluster: Cluster, environ: WSGIEnvironment) -> bool:
    """Whether this cluster takes a copy of the request, per its ``MirrorPercent`` and ``MirrorSampleBy``.

    ``key`` sampling hashes the cluster's hash key (stable across processes and restarts),
    so the same user is always in or always out.
    """
    percent = cluster.percent
    if percent >= 100.0:
        return True
    if percent <= 0.0:
        return False
    if cluster.sample_by == "key":
        key = hash_key(cluster, environ).encode("utf-8", "surrogateescape")
        digest = hashlib.blake2b(key, digest_size=8, person=b"wsgimirror-smpl").digest()
        return int.from_bytes(digest, "big") < percent / 100.0 * 2**64
    return random.random() * 100.0 < percent


def hash_key(cluster: Cluster, environ: WSGIEnvironment) -> str:
    """The value a request is hashed by: header, cookie or query value, else the client address."""
    value = None
    if cluster.hash_by == "header":
        value = _header(environ, t.cast(str, cluster.hash_key))
    elif cluster.hash_by == "cookie":
        value = _cookie(environ.get("HTTP_COOKIE", ""), t.cast(str, cluster.hash_key))
    elif cluster.hash_by == "query":
        value = _query(environ.get("QUERY_STRING", ""), t.cast(str, cluster.hash_key))
    return value if value else environ.get("REMOTE_ADDR", "")


def _header(environ: WSGIEnvironment, name: str) -> str | None:
    upper = name.upper().replace("-", "_")
    value = environ.get(upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper)
    if value and upper == "X_FORWARDED_FOR":
        value = value.split(",", 1)[0].strip()
    return value


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def _query(query: str, name: str) -> str | None:
    for key, value in parse_qsl(query):  # a blank value falls back to the client address anyway
        if key == name:
            return value
    return None


POLICIES: dict[str, type[Policy]] = {
    cls.name.lower(): cls for cls in (Hash, Random, RoundRobin, LeastRequests, PowerOfTwoChoices, First)
}


def resolve_policy(name: str) -> type[Policy] | None:
    """The policy class registered under ``name`` (case-insensitive), or None."""
    return POLICIES.get(name.lower())
