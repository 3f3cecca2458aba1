"""Step 4 and 5, pick and send: run each mirror in a bounded pool, off the request path.

The :class:`Dispatcher` owns, per process, the executor (a gevent pool when the
server owner monkey-patched sockets, else a bounded thread pool), one urllib3
connection pool per destination and each cluster's policy. ``dispatch`` never
blocks: when ``MaxInFlight`` mirrors are already running, the copy is dropped
(``backlog_full``). Under CPU saturation this sheds mirrors, never real traffic.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from urllib.parse import quote

from ._gevent import sockets_patched
from .balancing import POLICIES, Policy
from .errors import MirrorSendError
from .stats import new_lock
from .transforms import MirrorRequest
from .transport import MirrorHTTPConnectionPool, MirrorHTTPSConnectionPool, exchange

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .capture import BodyBuffer
    from .config import Cluster, Config, Destination, MirrorSettings, Route
    from .stats import Stats
    from .transforms import Transform

log = logging.getLogger(__name__)

MIRROR_MARK = "wsgimirror"
# Headers never copied to a mirror (environ names): hop-by-hop ones, Expect, and those we set.
SKIPPED_HEADERS = frozenset(
    {
        "CONNECTION",
        "KEEP_ALIVE",
        "TE",
        "TRAILER",
        "TRANSFER_ENCODING",
        "UPGRADE",
        "EXPECT",
        "HOST",
        "CONTENT_LENGTH",
        "X_FORWARDED_FOR",
        "X_FORWARDED_HOST",
        "X_FORWARDED_PROTO",
        "X_MIRRORED_BY",
    }
)
PATH_SAFE = "/:@!$&'()*+,;=~"


# -- the mirrored request -------------------------------------------------------------------------


def build_head(
    environ: WSGIEnvironment,
    destination: Destination,
    body_length: int,
    transforms: t.Sequence[Transform] = (),
    remove: t.AbstractSet[str] = frozenset(),
) -> bytes:
    """The request line and headers of the mirror of the request described by ``environ``.

    End-to-end headers are copied, forwarding headers added, then the route's transforms
    applied; ``X-Mirrored-By`` and ``Content-Length`` are set last and ``remove`` (the
    global ``Mirror.RemoveHeaders``, lower case) wins over everything else.
    """
    path, _, query = request_target(environ).partition("?")
    request = MirrorRequest(environ.get("REQUEST_METHOD", "GET"), path, query, _end_to_end_headers(environ))
    for transform in transforms:
        transform.apply(request)
    host = original_host(environ) if request.original_host else destination.host_header
    target = f"{destination.base_path}{request.path}{'?' if request.query else ''}{request.query}"
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in request.headers if name.lower() not in remove)
    if body_length or environ.get("CONTENT_LENGTH") or "HTTP_TRANSFER_ENCODING" in environ:
        lines.append(f"Content-Length: {body_length}")
    lines.append(f"X-Mirrored-By: {MIRROR_MARK}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def _end_to_end_headers(environ: WSGIEnvironment) -> list[tuple[str, str]]:
    """The request's headers minus hop-by-hop ones, plus X-Forwarded-For/-Host/-Proto."""
    named_by_connection = {
        token.strip().upper().replace("-", "_") for token in environ.get("HTTP_CONNECTION", "").split(",")
    }
    headers = [
        (header_name(key[5:]), value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
        and key[5:] not in SKIPPED_HEADERS
        and key[5:] not in named_by_connection
        and not key.startswith("HTTP_PROXY_")
    ]
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", environ["CONTENT_TYPE"]))
    client = environ.get("REMOTE_ADDR")
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if client or forwarded:
        headers.append(("X-Forwarded-For", ", ".join(v for v in (forwarded, client) if v)))
    headers.append(("X-Forwarded-Host", original_host(environ)))
    headers.append(("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http")))
    return headers


def request_target(environ: WSGIEnvironment) -> str:
    """The path and query as the client sent them (``RAW_URI`` when the server keeps it)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw and raw.startswith("/"):
        return raw
    path = quote((environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1"), PATH_SAFE)
    query = environ.get("QUERY_STRING")
    return f"{path or '/'}?{query}" if query else path or "/"


def original_host(environ: WSGIEnvironment) -> str:
    host = environ.get("HTTP_HOST")
    if host:
        return host
    return f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}".rstrip(":")


@lru_cache(maxsize=512)
def header_name(environ_name: str) -> str:
    """``X_FORWARDED_FOR`` -> ``X-Forwarded-For``."""
    return "-".join(part.capitalize() for part in environ_name.split("_"))


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

    def __init__(self, cluster_id: str, destination: Destination, settings: MirrorSettings) -> None:
        self.destination = destination
        self.name = destination.name
        self.key = f"{cluster_id}/{destination.name}"  # how stats and metrics name it
        pool_class = MirrorHTTPSConnectionPool if destination.scheme == "https" else MirrorHTTPConnectionPool
        self.pool = pool_class(
            destination.host, destination.port, maxsize=settings.max_in_flight, block=False, retries=False
        )
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

    def picked(self, now: float) -> None:
        if self.open_until and now >= self.open_until:
            self.trial = True

    def close_idle(self) -> None:
        """Close the connections resting in the pool; the pool stays usable and reconnects on demand."""
        idle = self.pool.pool
        if idle is None:
            return
        taken = []
        while True:  # take them all first: the queue is LIFO, a put would come straight back
            try:
                taken.append(idle.get(block=False))
            except queue.Empty:
                break
        for conn in taken:
            if conn is not None:
                conn.close()
            idle.put(conn, block=False)

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


class ClusterState:
    __slots__ = ("cluster", "policy", "destinations")

    def __init__(self, cluster: Cluster, settings: MirrorSettings) -> None:
        self.cluster = cluster
        self.policy: Policy = POLICIES[cluster.policy.lower()](cluster)
        self.destinations = tuple(DestinationState(cluster.id, d, settings) for d in cluster.destinations)

    def candidates(self, now: float) -> t.Sequence[DestinationState]:
        """The destinations whose circuit lets a mirror through (usually all of them)."""
        if not any(d.open_until for d in self.destinations):
            return self.destinations
        return [d for d in self.destinations if d.available(now)]


# -- executors ---------------------------------------------------------------------------------------


class _GeventExecutor:
    name = "gevent"

    def __init__(self, size: int) -> None:
        from gevent.pool import Pool

        self._pool = Pool(size)

    def try_submit(self, fn: t.Callable[..., None], *args: t.Any) -> bool:
        if self._pool.full():
            return False
        self._pool.spawn(fn, *args)
        return True

    def join(self, timeout: float) -> bool:
        return bool(self._pool.join(timeout=timeout))


class _ThreadExecutor:
    name = "thread"

    def __init__(self, size: int) -> None:
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="wsgimirror")
        self._size = size
        self._active = 0
        self._idle = threading.Condition()

    def try_submit(self, fn: t.Callable[..., None], *args: t.Any) -> bool:
        with self._idle:
            if self._active >= self._size:
                return False
            self._active += 1
        try:
            self._executor.submit(self._run, fn, args)
        except RuntimeError:  # the executor is shutting down
            self._finished()
            return False
        return True

    def _run(self, fn: t.Callable[..., None], args: tuple[t.Any, ...]) -> None:
        try:
            fn(*args)
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def join(self, timeout: float) -> bool:
        with self._idle:
            done = self._idle.wait_for(lambda: self._active == 0, timeout)
        self._executor.shutdown(wait=False)
        return done


def make_executor(kind: str, size: int) -> _GeventExecutor | _ThreadExecutor:
    patched = sockets_patched()
    if kind == "gevent" and not patched:
        log.warning(
            "Mirror.Executor is 'gevent' but sockets are not monkey-patched: every mirror will block "
            "the server while it is sent; call gevent.monkey.patch_all() first, or use Executor 'auto'"
        )
    if kind == "gevent" or (kind == "auto" and patched):
        return _GeventExecutor(size)
    return _ThreadExecutor(size)


# -- the dispatcher ------------------------------------------------------------------------------------


class Dispatcher:
    """Hands mirrors to the executor and sends them; one per configuration and process."""

    def __init__(self, config: Config, stats: Stats) -> None:
        self.config = config
        self._stats = stats
        self._pid = -1
        self._executor: _GeventExecutor | _ThreadExecutor | None = None
        self._clusters: dict[str, ClusterState] = {}
        self._lock = new_lock()
        self._active = 0  # mirrors of this dispatcher submitted and not yet ended
        self._cooperative = False  # gevent with patched sockets: one gevent.Timeout per mirror
        self.closed = False
        self.retiring = False

    def _runtime(self) -> tuple[_GeventExecutor | _ThreadExecutor, dict[str, ClusterState]]:
        """Executor and pools, created on first use in each process (gunicorn forks after import)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    settings = self.config.mirror
                    self._executor = make_executor(settings.executor, settings.max_in_flight)
                    self._cooperative = self._executor.name == "gevent" and sockets_patched()
                    self._clusters = {cid: ClusterState(c, settings) for cid, c in self.config.clusters.items()}
                    self._pid = os.getpid()
        return t.cast("_GeventExecutor | _ThreadExecutor", self._executor), self._clusters

    def open_circuits(self, cluster_ids: t.Iterable[str]) -> list[str]:
        """The clusters among ``cluster_ids`` with no destination to send to right now."""
        _, clusters = self._runtime()
        now = time.monotonic()
        return [cid for cid in cluster_ids if not clusters[cid].candidates(now)]

    def circuits(self) -> dict[str, str]:
        """The circuit state of each destination in this process: closed, open or half_open."""
        if self._pid != os.getpid():
            return {}
        return {d.key: d.state for state in self._clusters.values() for d in state.destinations}

    @property
    def active(self) -> int:
        """Mirrors of this dispatcher submitted and not yet ended."""
        return self._count_active(0)

    @property
    def executor_name(self) -> str | None:
        return self._executor.name if self._executor is not None and self._pid == os.getpid() else None

    def dispatch(self, route: Route, cluster_ids: t.Iterable[str], environ: WSGIEnvironment, body: BodyBuffer) -> None:
        """Start one mirror per cluster, never waiting; ``body`` is released here."""
        try:
            executor, clusters = self._runtime()
            now = time.monotonic()
            for cluster_id in cluster_ids:
                if self.closed:
                    self._stats.drop("closed", route.id, (cluster_id,))
                    continue
                state = clusters[cluster_id]
                candidates = state.candidates(now)
                if not candidates:
                    self._stats.drop("circuit_open", route.id, (cluster_id,))
                    continue
                target = state.policy.pick(candidates, environ)
                target.picked(now)
                self._start(executor, state, target, route, environ, body)
        finally:
            body.release()

    def _start(
        self,
        executor: _GeventExecutor | _ThreadExecutor,
        state: ClusterState,
        target: DestinationState,
        route: Route,
        environ: WSGIEnvironment,
        body: BodyBuffer,
    ) -> None:
        body.retain()
        target.in_flight += 1
        self._count_active(+1)
        self._stats.started(route.id, state.cluster.id, target.key)
        if not executor.try_submit(self._send, state, target, route, environ, body, time.monotonic()):
            target.in_flight -= 1
            self._count_active(-1)
            self._stats.unstart("backlog_full", route.id, state.cluster.id, target.key)
            body.release()

    def _count_active(self, delta: int) -> int:
        with self._lock:
            self._active += delta
            return self._active

    def _send(
        self,
        state: ClusterState,
        target: DestinationState,
        route: Route,
        environ: WSGIEnvironment,
        body: BodyBuffer,
        started: float,
    ) -> None:
        """The body of every mirror greenlet or thread: never raises."""
        settings = self.config.mirror
        try:
            head = build_head(environ, target.destination, body.size, route.transforms, settings.remove_headers)
            status = exchange(
                target.pool,
                head,
                body,
                environ.get("REQUEST_METHOD") == "HEAD",
                settings.connect_timeout,
                settings.timeout,
                self._cooperative,
            )
        except Exception as err:  # a bug here must not reach the hub or the app
            failure = err if isinstance(err, MirrorSendError) else MirrorSendError("internal_error", repr(err))
            seconds = time.monotonic() - started
            self._stats.failed(route.id, state.cluster.id, target.key, failure.reason, seconds)
            target.failure(state.cluster.id, route.id, failure)
        else:
            self._stats.succeeded(route.id, state.cluster.id, target.key, status, time.monotonic() - started)
            target.success(state.cluster.id)
        finally:
            target.in_flight -= 1
            body.release()
            if self._count_active(-1) == 0 and self.retiring:
                self._close_idle_connections()

    def retire(self) -> None:
        """A newer configuration took over: close idle connections whenever no mirror of ours runs.

        Requests captured under this configuration still dispatch here and are sent;
        a connection they open is closed again when they end.
        """
        self.retiring = True
        if self._count_active(0) == 0:
            self._close_idle_connections()

    def _close_idle_connections(self) -> None:
        for state in self._clusters.values():
            for dest in state.destinations:
                dest.close_idle()

    def close(self, timeout: float) -> bool:
        """Start no more mirrors; wait up to ``timeout`` s for those in flight. True if all ended."""
        self.closed = True
        if self._executor is None or self._pid != os.getpid():
            return True
        done = self._executor.join(timeout)
        for state in self._clusters.values():
            for dest in state.destinations:
                dest.pool.close()
        return done
