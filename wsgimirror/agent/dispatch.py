"""What happens to a copy after the hand-off, wherever it runs: pick a destination of each mirror cluster,
send, then compare and record the answer.

The agent process runs it, and so does the app's process with ``Agent.Mode`` in-process. Each configuration's
:class:`Dispatcher` holds the clusters' policies and circuit breakers and sends through the process's
:class:`~wsgimirror.agent.runtime.Runtime`. ``dispatch`` never blocks: when ``MaxInFlight`` mirrors are already
running, the copy is dropped (``backlog_full``). Under CPU saturation this sheds mirrors, never real traffic.
"""

from __future__ import annotations

import logging
import time
import typing as t

from ..compare.comparer import NO_ANSWER, request_record
from ..errors import MirrorSendError
from ..record.gor import new_id
from ..record.recorder import Record, Recorder, connection_header
from ..send.head import MIRROR_MARK, BadRequest, build_head
from ..send.transport import exchange
from ..util.green import new_lock
from ..util.pid import current_pid

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from ..capture.answer import Answer
    from ..capture.body import BodyBuffer
    from ..compare.comparer import Comparer
    from ..config.model import Config, Route
    from ..stats import Stats
from ..send.breaker import ClusterState, DestinationState
from ..send.executors import _GeventExecutor, _ThreadExecutor
from .runtime import Runtime

log = logging.getLogger(__name__)
OVERLOADED = "overloaded"  # a mirror waited longer than Timeout for the loop to be idle


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
        self._begin(target, route.id, state.cluster.id)
        if not executor.try_submit(self._send, state, target, route, environ, body, time.monotonic(), answer):
            runtime.ended(target.pool)
            self._unbegin(target, route.id, state.cluster.id, "backlog_full")
            body.release()
            if answer is not None:
                answer.release()
            return False
        return True

    def _begin(self, target: DestinationState, route_id: str, cluster_id: str) -> None:
        """Count one mirror started for ``target``."""
        target.in_flight += 1
        self._count_active(+1)
        self._stats.started(route_id, cluster_id, target.key)

    def _unbegin(self, target: DestinationState, route_id: str, cluster_id: str, reason: str) -> None:
        """Take back a :meth:`_begin` whose mirror could not run after all: the copy is dropped for ``reason``."""
        target.in_flight -= 1
        self._count_active(-1)
        self._stats.unstart(reason, route_id, cluster_id, target.key)

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
        self._begin(target, route.id, cluster_id)
        refused = t.cast(Recorder, target.pool).submit(record)
        if refused is not None:
            record.release()
            self._unbegin(target, route.id, cluster_id, refused)
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
