"""Step 4 and 5, pick and send: run each mirror in a bounded pool, off the request path.

The :class:`Runtime` of a middleware owns, per process and across every reload, the
executor (a gevent group when the server owner monkey-patched sockets, else a bounded
thread pool), one urllib3 connection pool per destination address and the count of
mirrors in flight. ``MaxInFlight`` bounds that count for the whole process: however many
configurations are still draining after reloads, no more mirrors run at once. Each
configuration's :class:`Dispatcher` holds the clusters' policies and circuit breakers.
``dispatch`` never blocks: when ``MaxInFlight`` mirrors are already running, the copy is
dropped (``backlog_full``). Under CPU saturation this sheds mirrors, never real traffic.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from ._gevent import original, sockets_patched
from ._pid import current_pid
from .balancing import POLICIES, Policy
from .compare.comparer import NO_ANSWER, request_record
from .errors import MirrorSendError
from .gor import new_id
from .head import MIRROR_MARK, BadRequest, build_head
from .record import Record, Recorder, connection_header
from .stats import new_lock
from .transport import MirrorHTTPConnectionPool, MirrorHTTPSConnectionPool, exchange, tls_context

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from urllib3 import HTTPConnectionPool

    from .capture import BodyBuffer
    from .compare.comparer import Comparer
    from .config import Cluster, Config, Destination, HttpClientSettings, MirrorSettings, RecordSettings, Route
    from .response import Answer
    from .stats import Stats

log = logging.getLogger(__name__)

IDLE_PRIORITY = -2  # libev's EV_MINPRI: mirrors start after every other event of the loop
PARKED_WORKERS = 32  # idle worker greenlets kept for the next mirrors (about 20 KiB each)
OVERLOADED = "overloaded"  # a mirror waited longer than Timeout for the loop to be idle


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


class ClusterState:
    __slots__ = ("cluster", "policy", "destinations")

    def __init__(self, cluster: Cluster, config: Config, runtime: Runtime) -> None:
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


# -- executors ---------------------------------------------------------------------------------------


class _GeventExecutor:
    """Mirrors run in worker greenlets, each mirror started when the event loop has nothing else to do.

    A mirror waits in a FIFO until a libev idle watcher of the lowest priority fires: only when no
    I/O, timer or other event is pending, that is when the real traffic has been served. Under
    saturation the loop is never idle, mirrors wait, ``MaxInFlight`` fills, and further copies are
    dropped (``backlog_full``); a mirror that waited longer than ``Timeout`` is dropped when its turn
    comes (``overloaded``). The runtime's admission count bounds how many wait or run.

    A worker that ended its mirror parks, and the next mirror reuses it: a new greenlet per mirror
    cost its creation, its group's bookkeeping and, on Python 3.11, a frame stack mapped and unmapped
    (two system calls). Up to :data:`PARKED_WORKERS` wait parked; past that, a worker ends with its mirror.
    """

    name = "gevent"
    # In the agent's process the loop has no real traffic to give way to: mirrors start at its next turn,
    # all those waiting in one go, instead of one per idle turn.
    eager = False

    def __init__(self) -> None:
        from gevent import get_hub

        self._hub = get_hub()
        self._waiting: deque[tuple[t.Callable[..., None], tuple[t.Any, ...]]] = deque()
        self._parked: list[t.Any] = []  # worker greenlets waiting for a mirror
        self._running = 0  # mirrors started and not ended
        self._idle: t.Any = None  # the loop's idle watcher, made on the first mirror
        self._soon = False  # (eager) a callback to start the waiting mirrors is due

    def try_submit(self, fn: t.Callable[..., None], *args: t.Any) -> bool:
        self._waiting.append((fn, args))
        if self.eager:
            if not self._soon:
                self._soon = True
                self._hub.loop.run_callback(self._start_all)
            return True
        idle = self._idle
        if idle is None:
            from gevent import get_hub

            idle = self._idle = get_hub().loop.idle()
            idle.priority = IDLE_PRIORITY
        if not idle.active:
            idle.start(self._start_one)
        return True

    def _start_one(self) -> None:
        """The loop is idle: start the mirror that waited longest, on a parked worker or a new one.

        This runs in the hub, as gevent's own callbacks do: the worker runs until it waits for I/O.
        """
        waiting = self._waiting
        if waiting:
            job = waiting.popleft()
            self._running += 1
            if self._parked:
                self._parked.pop().switch(job)
            else:
                from greenlet import greenlet

                greenlet(self._work, self._hub).switch(job)
        if not waiting and self._idle is not None:
            self._idle.stop()

    def _start_all(self) -> None:
        """(eager) Start every waiting mirror, each running until it waits for I/O."""
        self._soon = False
        while self._waiting:
            self._start_one()

    def _work(self, job: tuple[t.Callable[..., None], tuple[t.Any, ...]]) -> None:
        """A worker: run a mirror (it never raises), then park until the idle watcher hands over the next."""
        from greenlet import getcurrent

        while True:
            fn, args = job
            try:
                fn(*args)
            finally:
                self._running -= 1
            if len(self._parked) >= PARKED_WORKERS:
                return
            self._parked.append(getcurrent())
            job = self._hub.switch()

    def join(self, timeout: float) -> bool:
        import gevent

        deadline = time.monotonic() + timeout
        while (self._waiting or self._running) and time.monotonic() < deadline:
            gevent.sleep(0.001)  # the loop is idle now, so waiting mirrors start; running ones end
        self._end_parked()
        return not self._waiting and not self._running

    def _end_parked(self) -> None:
        """End the parked workers (a later mirror starts a new one): closing leaves no greenlet behind."""
        from greenlet import getcurrent

        here = getcurrent()
        while self._parked:
            worker = self._parked.pop()
            worker.parent = here  # it ends by returning here, not to the hub
            worker.throw()  # GreenletExit, where it waits


class _ThreadExecutor:
    """A thread pool of ``MaxInFlight`` threads; the runtime's admission count bounds what is submitted.

    After a reload to a larger ``MaxInFlight`` the excess waits in the pool's queue, never beyond the new limit.
    """

    name = "thread"

    def __init__(self, size: int) -> None:
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="wsgimirror")
        self._active = 0  # submitted and not ended, for join()
        self._idle = threading.Condition()

    def try_submit(self, fn: t.Callable[..., None], *args: t.Any) -> bool:
        with self._idle:
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
        return _GeventExecutor()
    return _ThreadExecutor(size)


# -- what every configuration of a middleware shares in a process --------------------------------------


class Runtime:
    """The executor, connection pools and in-flight count of one middleware in one process.

    Created again in a forked child (gunicorn forks after import). Every configuration,
    including retired ones still draining, sends through it, so ``MaxInFlight`` and the
    connections per destination hold process-wide whatever the number of reloads.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._lock = new_lock()
        self._executor: _GeventExecutor | _ThreadExecutor | None = None
        self._pools: dict[PoolKey, t.Any] = {}  # a MirrorHTTP(S)ConnectionPool, or a Recorder
        self.in_flight = 0
        self.cooperative = False  # gevent with patched sockets: one gevent.Timeout per mirror

    def _fresh(self, settings: MirrorSettings) -> None:
        """Start over in this process: the parent's executor and sockets are not ours."""
        self._executor = make_executor(settings.executor, settings.max_in_flight)
        self.cooperative = self._executor.name == "gevent" and sockets_patched()
        self._pools = {}
        self.in_flight = 0
        self._pid = current_pid()
        _start_sweep(weakref.ref(self), settings.keep_alive_seconds)

    def sweep(self) -> None:
        """Close the connections that rested past their pool's ``KeepAliveSeconds``."""
        for pool in list(self._pools.values()):
            if not isinstance(pool, Recorder):
                pool.close_resting(pool.keep_alive_seconds)

    def executor(self, settings: MirrorSettings) -> _GeventExecutor | _ThreadExecutor:
        if self._pid != current_pid():
            with self._lock:
                if self._pid != current_pid():
                    self._fresh(settings)
        return t.cast("_GeventExecutor | _ThreadExecutor", self._executor)

    @property
    def executor_name(self) -> str | None:
        return self._executor.name if self._executor is not None and self._pid == current_pid() else None

    def pool(
        self,
        destination: Destination,
        settings: MirrorSettings,
        http_client: HttpClientSettings,
        record: RecordSettings | None = None,
    ) -> t.Any:
        """The connection pool of a destination's address and TLS settings, shared by every configuration
        naming them; it holds at most ``MaxConnectionsPerServer`` connections (``MaxInFlight`` by default).

        A file destination's "pool" is its :class:`Recorder`, which takes the latest ``Record`` settings.
        """
        self.executor(settings)
        key = pool_key(destination, http_client)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _new_pool(destination, settings, http_client, record)
            elif isinstance(pool, Recorder) and record is not None:
                pool.configure(record)
            return pool

    def admit(self, limit: int, pool: t.Any) -> bool:
        """Count one more mirror in flight, unless ``limit`` are running or its pool's connections are all lent."""
        with self._lock:
            if self.in_flight >= limit or pool.busy >= pool.limit:
                return False
            self.in_flight += 1
            pool.busy += 1
            if pool.busy > pool.peak:
                pool.peak = pool.busy  # how many connections the recent concurrency needs (see transport)
            return True

    def ended(self, pool: t.Any) -> None:
        with self._lock:
            self.in_flight -= 1
            pool.busy -= 1

    def close_idle(self, keep: t.Container[PoolKey] = ()) -> None:
        """Close the idle connections of every pool whose address is not in ``keep``; pools stay usable."""
        for key, pool in list(self._pools.items()):
            if key in keep:
                continue
            if isinstance(pool, Recorder):
                pool.close_chunk()  # no longer configured: its file is closed, a late copy opens a new one
            else:
                pool.close_resting()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every mirror in flight, then close all connections."""
        if self._executor is None or self._pid != current_pid():
            return True
        deadline = time.monotonic() + timeout
        done = self._executor.join(timeout)
        for pool in self._pools.values():
            if isinstance(pool, Recorder):  # write what is queued, flush, close the chunk
                done = pool.close(max(0.0, deadline - time.monotonic())) and done
            else:
                pool.close()
        return done


def _start_sweep(ref: weakref.ref[Runtime], every: float) -> None:
    """Sweep the runtime's pools every half ``KeepAliveSeconds`` while it lives: a greenlet when threads are
    gevent's (the pools' queues use its locks), else a thread of the OS."""
    from gevent import monkey

    interval = min(30.0, max(0.05, every / 2))
    cooperative = monkey.is_module_patched("threading")

    def sweep() -> None:
        sleep = __import__("gevent").sleep if cooperative else original("time", "sleep")
        while True:
            sleep(interval)
            runtime = ref()
            if runtime is None or runtime._pid != current_pid():
                return
            runtime.sweep()
            del runtime

    if cooperative:
        __import__("gevent").spawn(sweep)
    else:
        original("_thread", "start_new_thread")(sweep, ())


PoolKey = tuple[str, str, int, "HttpClientSettings | None"]  # a file destination's: (file, path, 0, None)


def pool_key(destination: Destination, http_client: HttpClientSettings) -> PoolKey:
    if destination.records:
        return (destination.scheme, destination.path, 0, None)
    return (destination.scheme, destination.host, destination.port, http_client)


def _new_pool(
    destination: Destination,
    settings: MirrorSettings,
    http_client: HttpClientSettings,
    record: RecordSettings | None = None,
) -> t.Any:
    if destination.records:
        from .config import RecordSettings

        return Recorder(destination.path, record or RecordSettings())
    size = http_client.max_connections or settings.max_in_flight
    pool: t.Any
    if destination.scheme == "http":
        pool = MirrorHTTPConnectionPool(destination.host, destination.port, maxsize=size, block=False, retries=False)
    else:
        pool = MirrorHTTPSConnectionPool(
            destination.host,
            destination.port,
            maxsize=size,
            block=False,
            retries=False,
            ssl_context=tls_context(http_client),
            server_hostname=http_client.server_name,
            cert_reqs="CERT_NONE" if http_client.accept_any_certificate else "CERT_REQUIRED",
        )
    pool.keep_alive = settings.keep_alive_connections
    pool.keep_alive_seconds = settings.keep_alive_seconds
    return pool


def address_keys(config: Config) -> frozenset[PoolKey]:
    return frozenset(pool_key(d, c.http_client) for c in config.clusters.values() for d in c.destinations)


# -- the dispatcher ------------------------------------------------------------------------------------


class _Overloaded(Exception):
    """The mirror waited longer than ``Timeout`` for the loop to be idle: a copy that late is dropped."""


class Dispatcher:
    """Hands mirrors of one configuration to the shared runtime and sends them."""

    spools_answers = False  # the app's answers are kept in memory: they are compared in this process

    def __init__(self, config: Config, stats: Stats, runtime: Runtime, comparer: Comparer | None = None) -> None:
        self.config = config
        self._stats = stats
        self._comparer = comparer
        self._runtime_shared = runtime
        # Clusters that record to a file: never shed by MaxInFlight (recording is bounded in bytes).
        self._recording = frozenset(cid for cid, c in config.clusters.items() if any(d.records for d in c.destinations))
        self._executor: _GeventExecutor | _ThreadExecutor | None = None
        self._pid = -1
        self._clusters: dict[str, ClusterState] = {}
        self._lock = new_lock()
        self._active = 0  # mirrors of this dispatcher submitted and not yet ended
        self._mark = config.mirror.loop_token or MIRROR_MARK
        # What a recorded answer leaves out: the secrets a request never carries to a file, and Set-Cookie.
        self._hidden = config.mirror.remove_headers | {"set-cookie"}
        self.closed = False
        self.on_idle: t.Callable[[], None] | None = None  # set on retiring: called when its last mirror ends

    def _runtime(self) -> tuple[_GeventExecutor | _ThreadExecutor, dict[str, ClusterState]]:
        """Executor and cluster states, created on first use in each process (the runtime's too)."""
        if self._pid != current_pid():
            with self._lock:
                if self._pid != current_pid():
                    settings, runtime = self.config.mirror, self._runtime_shared
                    self._executor = runtime.executor(settings)
                    self._clusters = {
                        cid: ClusterState(c, self.config, runtime) for cid, c in self.config.clusters.items()
                    }
                    self._active = 0
                    self._pid = current_pid()
        return t.cast("_GeventExecutor | _ThreadExecutor", self._executor), self._clusters

    def open_circuits(self, cluster_ids: t.Iterable[str]) -> list[str]:
        """The clusters among ``cluster_ids`` with no destination to send to right now."""
        _, clusters = self._runtime()
        tripped = [cid for cid in cluster_ids if clusters[cid].tripped()]
        if not tripped:  # the usual case, without reading the clock
            return tripped
        now = time.monotonic()
        return [cid for cid in tripped if not clusters[cid].candidates(now)]

    def full(self, cluster_ids: t.Sequence[str]) -> list[str]:
        """The clusters among ``cluster_ids`` that cannot take a copy now: ``MaxInFlight`` mirrors wait or run.

        A cluster with a file destination always can (recording is bounded in bytes, not mirrors).
        """
        if self._runtime_shared.in_flight < self.config.mirror.max_in_flight:
            return []
        return [cid for cid in cluster_ids if cid not in self._recording]

    def circuits(self) -> dict[str, str]:
        """The circuit state of each destination in this process: closed, open or half_open."""
        if self._pid != current_pid():
            return {}
        return {d.key: d.state for state in self._clusters.values() for d in state.destinations}

    @property
    def cooperative(self) -> bool:
        """Mirrors run in greenlets of gevent's loop (with patched sockets)."""
        return self._runtime_shared.cooperative

    @property
    def active(self) -> int:
        """Mirrors of this dispatcher submitted and not yet ended."""
        return self._count_active(0)

    def dispatch(
        self,
        route: Route,
        cluster_ids: t.Iterable[str],
        environ: WSGIEnvironment,
        body: BodyBuffer,
        answer: Answer | None = None,
        timing: tuple[int, int] = (0, -1),
    ) -> None:
        """Start one mirror per cluster, never waiting; ``body`` is released here.

        ``answer``: the app's, for the route's compared and baseline clusters to be compared with, and
        for its file destinations to record when the route records responses.
        ``timing``: when the request arrived (ns since the epoch) and the app's time to answer (ns).
        """
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
                trial = target.picked(now)
                if target.destination.records:
                    recorded = answer if route.record_responses else None
                    if not self._record(state, target, route, environ, body, recorded, timing) and trial:
                        target.trial_not_run()
                    continue
                compared = (
                    answer if cluster_id in route.compare_clusters or cluster_id == route.baseline_cluster else None
                )
                if not self._start(executor, state, target, route, environ, body, compared) and trial:
                    target.trial_not_run()
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
        answer: Answer | None,
    ) -> bool:
        """Submit one mirror; False (and the copy dropped as backlog_full) when it cannot run now."""
        runtime = self._runtime_shared
        if not runtime.admit(self.config.mirror.max_in_flight, target.pool):
            self._stats.drop("backlog_full", route.id, (state.cluster.id,), target.key)
            return False
        body.retain()
        if answer is not None:
            answer.retain()
        target.in_flight += 1
        self._count_active(+1)
        self._stats.started(route.id, state.cluster.id, target.key)
        if not executor.try_submit(self._send, state, target, route, environ, body, time.monotonic(), answer):
            runtime.ended(target.pool)
            target.in_flight -= 1
            self._count_active(-1)
            self._stats.unstart("backlog_full", route.id, state.cluster.id, target.key)
            body.release()
            if answer is not None:
                answer.release()
            return False
        return True

    def _record(
        self,
        state: ClusterState,
        target: DestinationState,
        route: Route,
        environ: WSGIEnvironment,
        body: BodyBuffer,
        answer: Answer | None,
        timing: tuple[int, int],
    ) -> bool:
        """Queue one copy for a file destination's writer, here on the request's greenlet (no I/O)."""
        settings, cluster_id = self.config.mirror, state.cluster.id
        try:  # a file is read by people and programs: it carries the plain mark, never the loop token
            head = build_head(environ, target.destination, body.size, route.transforms, settings.remove_headers,
                              MIRROR_MARK)  # fmt: skip
        except BadRequest as err:
            log.debug("not recorded to %s: %s", target.destination.address, err)
            self._stats.drop("bad_request", route.id, (cluster_id,), target.key)
            return False
        body.retain()
        if answer is not None:
            answer.retain()

        def done(record: Record, reason: str | None) -> None:
            seconds = time.monotonic() - record.started
            if reason is None:
                self._stats.written(route.id, cluster_id, target.key, seconds)
                target.success(cluster_id)
            else:
                self._stats.failed(route.id, cluster_id, target.key, reason, seconds)
                target.failure(cluster_id, route.id, MirrorSendError(reason, f"cannot write {target.destination.path}"))
            self._ended(target)

        record = Record(new_id(), timing[0], head, body, answer, timing[1], done, self._hidden,
                        connection_header(environ) if answer is not None else None)  # fmt: skip
        target.in_flight += 1
        self._count_active(+1)
        self._stats.started(route.id, cluster_id, target.key)
        refused = t.cast(Recorder, target.pool).submit(record)
        if refused is not None:
            record.release()
            target.in_flight -= 1
            self._count_active(-1)
            self._stats.unstart(refused, route.id, cluster_id, target.key)
            return False
        return True

    def _ended(self, target: DestinationState) -> None:
        """One mirror of ``target`` ended (sent, written or failed); the last one of a retired config says so."""
        target.in_flight -= 1
        if self._count_active(-1) == 0 and self.on_idle is not None:
            self.on_idle()

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
        answer: Answer | None = None,
    ) -> None:
        """The body of every mirror greenlet or thread: never raises."""
        settings = self.config.mirror
        comparer = self._comparer if answer is not None else None
        kept = comparer.mirror_answer() if comparer is not None else None
        head = b""
        try:
            if self._runtime_shared.cooperative and time.monotonic() - started > settings.timeout:
                raise _Overloaded
            head = build_head(environ, target.destination, body.size, route.transforms, settings.remove_headers,
                              self._mark)  # fmt: skip
            began = time.monotonic()
            status = exchange(
                target.pool,
                head,
                body,
                environ.get("REQUEST_METHOD") == "HEAD",
                settings.connect_timeout,
                settings.timeout,
                self._runtime_shared.cooperative,
                kept,
            )
            if kept is not None:
                kept.elapsed = time.monotonic() - began  # the destination's latency, beside the app's (Compare)
        except (BadRequest, _Overloaded) as err:
            kept = None  # not sent: nothing to compare, nor to count as a comparison
            log.debug("not mirrored to %s: %s", target.destination.address, err)
            if target.trial:
                target.trial_not_run()
            reason = OVERLOADED if isinstance(err, _Overloaded) else "bad_request"
            self._stats.unstart(reason, route.id, state.cluster.id, target.key)
        except Exception as err:  # a bug here must not reach the hub or the app
            failure = err if isinstance(err, MirrorSendError) else MirrorSendError("internal_error", repr(err))
            seconds = time.monotonic() - started
            self._stats.failed(route.id, state.cluster.id, target.key, failure.reason, seconds)
            target.failure(state.cluster.id, route.id, failure)
        else:
            self._stats.succeeded(route.id, state.cluster.id, target.key, status, time.monotonic() - started)
            target.success(state.cluster.id)
        finally:
            if comparer is not None and answer is not None:
                self._compare(comparer, route, state.cluster.id, environ, head, body, answer, kept,
                              self._runtime_shared.cooperative)  # fmt: skip
            body.release()
            self._runtime_shared.ended(target.pool)
            self._ended(target)

    @staticmethod
    def _compare(
        comparer: Comparer,
        route: Route,
        cluster_id: str,
        environ: WSGIEnvironment,
        head: bytes,
        body: BodyBuffer,
        answer: Answer,
        kept: Answer | None,
        cooperative: bool,
    ) -> None:
        """Compare the mirror's answer with the app's (or count why not), then free both.

        ``kept`` is None when the mirror was not sent (its copy is counted as dropped, not here).
        """
        try:
            if kept is None:
                return
            if not kept.complete:
                comparer.skip(NO_ANSWER, route.id, cluster_id, comparer.endpoint(environ))
            else:
                comparer.compare(
                    route.id,
                    cluster_id,
                    cluster_id == route.baseline_cluster,
                    environ,
                    lambda: request_record(head, body.head_bytes, body.size),
                    answer,
                    kept,
                    cooperative,
                    route.baseline_cluster is not None,
                )
        finally:
            if kept is not None:
                kept.release()
            answer.release()

    def retire(self, on_idle: t.Callable[[], None]) -> None:
        """A newer configuration took over: call ``on_idle`` once no mirror of ours runs.

        Requests captured under this configuration still dispatch here and are sent.
        """
        self.on_idle = on_idle
        if self._count_active(0) == 0:
            on_idle()
