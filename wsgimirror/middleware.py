"""MirrorMiddleware: copy matching requests to mirror clusters without touching the real response. One idea kept
whole (over 400 lines): the WSGI entry and the one path a request takes through it.

The path of one request through the package:

1. ``routing``  - match: the first route whose hosts, paths and methods match.
2. ``capture``  - tee: ``wsgi.input`` is replaced by a reader that copies the body.
3. ``middleware`` (here) - call the app; when the server closes the response (it
   has been sent by then), read what the app left unread and hand off.
4. ``balancing`` - pick: each mirror cluster's policy chooses a destination.
5. ``head`` / ``sender`` / ``transport`` - build a valid HTTP/1.1 head; a bounded pool writes
   the copy on a pooled connection.
6. ``stats``    - count: every copy is pending until its response closes, then ends mirrored
   or dropped; every mirror succeeded or failed.
7. ``compare``  - for the routes that compare, ``response`` tees the app's answer as the server
   sends it, and each compared mirror's answer is diffed with it in the mirror's greenlet.

Nothing here raises into the app: failures are counted and logged (rate-limited).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import typing as t

from .agent.dispatch import Dispatcher
from .agent.handoff import AgentDispatcher, AgentLink, link_for
from .agent.handoff import mode as agent_mode
from .agent.runtime import Runtime, address_keys
from .capture.answer import Answer, AnswerTee
from .capture.body import BodyBuffer, CaptureBudget, TeeInput, tee_input
from .capture.routing import Router
from .compare.comparer import Comparer
from .compare.difflog import Report
from .config.load import load_config
from .config.model import Config, ConfigSource, MirrorSettings, Route
from .send.pick import sampled_in
from .stats import Drop, Stats
from .util.logs import Throttled
from .util.syntax import connection_tokens

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)
_unmatched = Throttled(log)
_failed = Throttled(log)

# Why a copy was given up because of the request itself (beside the capture's reasons).
NOT_CLOSED = "not_closed"


class _Generation:
    """One configuration with its router and dispatcher; swapped whole on reload."""

    __slots__ = ("config", "router", "dispatcher")

    def __init__(self, config: Config, stats: Stats, runtime: Runtime, comparer: Comparer,
                 link: AgentLink | None) -> None:  # fmt: skip
        self.config = config
        self.router = Router(config.routes)
        self.dispatcher: t.Any = (
            Dispatcher(config, stats, runtime, comparer) if link is None else AgentDispatcher(config, stats, link)
        )


class MirrorMiddleware:
    """Wrap a WSGI app so that requests matching the config's routes are mirrored.

    ``config`` is a path to a JSON file, a dict of the same shape, or a :class:`Config`
    from :func:`load_config`. It is validated here; a bad one raises ``ConfigError``.
    ``prometheus``: True to export metrics on prometheus_client's default registry, or
    the ``CollectorRegistry`` to register them on.
    """

    def __init__(self, app: WSGIApplication, config: ConfigSource, *, prometheus: t.Any = None) -> None:
        self.app = app
        metrics = _metrics(prometheus)
        self._stats = Stats(metrics)
        self._runtime = Runtime()
        loaded = load_config(config)
        self._budget = CaptureBudget(loaded.mirror.capture_memory_bytes, loaded.mirror.capture_disk_bytes)
        self._comparer = Comparer(loaded.compare, metrics)
        self._comparer.configure(loaded.compare, loaded.mirror.remove_headers, loaded.mirror.loop_token)
        self._link = _agent_link(loaded, config, self._stats)
        self._generation = _Generation(loaded, self._stats, self._runtime, self._comparer, self._link)
        self._retired: list[t.Any] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        generation = self._generation
        try:
            route = generation.router.match(environ)
        except Exception:
            _unmatched.warning("wsgimirror could not match a request; it is served without a mirror", exc_info=True)
            route = None
        if route is None:
            self._stats.request()
            capture = None
        else:
            capture = self._prepare(generation, route, environ)
        if capture is None:
            return self.app(environ, start_response)
        tee = capture.answer_tee(self._comparer, start_response)
        try:
            result = self.app(environ, start_response if tee is None else tee.start_response)
        except BaseException:
            capture.finish()
            raise
        return _wrap(result, capture, tee)

    def _prepare(self, generation: _Generation, route: Route, environ: WSGIEnvironment) -> _Capture | None:
        """Count the copies of a matched request and, when one is to be sent, snapshot it and tee its input.

        The copies and those given up before capture are counted together, once the request's
        fate is known: one count per request, whichever way it goes.
        """
        clusters = route.mirror_clusters
        drops: list[Drop] = []
        try:
            capture = self._capture(generation, route, environ, drops) if clusters else None
        except Exception:
            _failed.warning("wsgimirror could not prepare a mirror of route %r", route.id, exc_info=True)
            capture, drops = None, [("internal_error", clusters)]
        self._stats.matched(route.id, clusters, drops)
        return capture

    def _capture(
        self, generation: _Generation, route: Route, environ: WSGIEnvironment, drops: list[Drop]
    ) -> _Capture | None:
        """The capture of a request for the clusters that take it; those that don't are added to ``drops``."""
        clusters = route.mirror_clusters
        settings = generation.config.mirror
        length, reason = _refusal(environ, settings, generation.dispatcher.closed)
        if reason is not None:
            drops.append((reason, clusters))
            return None
        selected = [cid for cid in clusters if sampled_in(generation.config.clusters[cid], environ)]
        if len(selected) < len(clusters):
            drops.append(("sampled_out", [c for c in clusters if c not in selected]))
        if selected:
            broken = generation.dispatcher.open_circuits(selected)
            if broken:
                drops.append(("circuit_open", broken))
                selected = [cid for cid in selected if cid not in broken]
            full = generation.dispatcher.full(selected)
            if full:  # shed before capturing: under saturation a copy costs the request nothing
                drops.append(("backlog_full", full))
                selected = [cid for cid in selected if cid not in full]
        if not selected:
            return None  # no capture at all when no cluster takes the request
        snapshot = environ.copy()  # apps and middleware rewrite environ in place
        buffer = BodyBuffer(settings.memory_body_bytes, settings.max_body_bytes, self._budget)
        tee = tee_input(environ["wsgi.input"], length, bool(environ.get("wsgi.input_terminated")), buffer)
        environ["wsgi.input"] = tee
        return _Capture(self._stats, generation.dispatcher, route, selected, snapshot, tee, time.time_ns())

    def stats(self) -> dict[str, t.Any]:
        """Counters since start, in total and by route, cluster and destination (see the README)."""
        snapshot = self._stats.snapshot()
        snapshot["executor"] = "agent" if self._link is not None else self._runtime.executor_name
        snapshot["capture"] = {"memory_bytes": self._budget.memory, "disk_bytes": self._budget.disk}
        snapshot["compare"] = self._compare_snapshot()
        for key, state in self._generation.dispatcher.circuits().items():
            if key in snapshot["by_destination"]:
                snapshot["by_destination"][key]["circuit"] = state
        return snapshot

    def _compare_snapshot(self) -> dict[str, t.Any]:
        if self._link is None:
            return self._comparer.snapshot()
        answer = self._link.ask("compare")  # the agent compares: its figures are every client's of the deployment
        return json.loads(answer) if isinstance(answer, str) else self._comparer.snapshot()

    def comparison_report(self) -> Report:
        """This process's comparison results and latest examples, as ``wsgimirror report`` shows them
        (in-process mode; with an agent, the agent compares: see :meth:`comparison_page`)."""
        return self._comparer.report()

    def comparison_page(self, html: bool = True) -> bytes:
        """The live comparison report, as HTML or JSON, rendered where the comparisons are made."""
        dropped = dict(self._stats.snapshot()["dropped"])  # what never reached a comparison, beside what did
        if self._link is not None:
            page = self._link.ask(("report_html" if html else "report_json", dropped), 5.0)
            if isinstance(page, str):
                page = page.encode("utf-8")
            if isinstance(page, bytes):
                return page
        from .compare.html import render
        from .compare.report import as_json

        report = self._comparer.report()
        return (render(report, dropped) if html else as_json(report, dropped)).encode("utf-8")

    @property
    def config(self) -> Config:
        """The configuration new requests are matched against."""
        return self._generation.config

    def reload(self, config: ConfigSource) -> None:
        """Swap the configuration atomically; an invalid one raises ``ConfigError`` and changes nothing.

        Requests already captured finish under the configuration they started with;
        new requests use the new one.
        """
        loaded = load_config(config)
        generation = _Generation(loaded, self._stats, self._runtime, self._comparer, self._link)
        previous, self._generation = self._generation, generation
        self._budget.memory_limit = loaded.mirror.capture_memory_bytes
        self._budget.disk_limit = loaded.mirror.capture_disk_bytes
        self._comparer.configure(loaded.compare, loaded.mirror.remove_headers, loaded.mirror.loop_token)
        keep = address_keys(loaded)
        previous.dispatcher.retire(lambda: self._runtime.close_idle(keep))
        self._retired = [d for d in self._retired if d.active] + [previous.dispatcher]

    def close(self, timeout: float = 5.0) -> bool:
        """Stop starting mirrors and wait up to ``timeout`` s for those in flight; True if none is left.

        With an agent: wait until it has reported on every copy this process handed it.
        """
        for dispatcher in [*self._retired, self._generation.dispatcher]:
            dispatcher.closed = True
        done = self._runtime.join(timeout) if self._link is None else self._link.join(timeout)
        self._comparer.close()  # the last counts record, after the comparisons of the mirrors that ended
        return done


def _agent_link(config: Config, source: ConfigSource, stats: Stats) -> AgentLink | None:
    """The link to the agent that sends this middleware's mirrors, or None in-process (``Agent.Mode``)."""
    mode, socket = agent_mode(config)
    if mode == "in-process":
        return None
    if mode == "external":
        from dataclasses import replace

        config = replace(config, agent=replace(config.agent, mode="external", socket=socket))
    try:
        return link_for(config, source, stats)
    except OSError as err:  # no private directory for the socket: the mirrors stay in this process
        log.error("wsgimirror cannot use an agent (%s); its mirrors are sent from the app's process", err)
        return None


def _metrics(prometheus: t.Any) -> t.Any:
    if prometheus is None or prometheus is False:
        return None
    from .metrics import PrometheusMetrics

    return PrometheusMetrics.for_registry(None if prometheus is True else prometheus)


def _refusal(environ: WSGIEnvironment, settings: MirrorSettings, closed: bool) -> tuple[int | None, str | None]:
    """The body length from CONTENT_LENGTH, and why the request cannot be mirrored (None: it can).

    With ``wsgi.input_terminated`` the stream is read to its end and CONTENT_LENGTH is not
    used at all (werkzeug's ``get_input_stream`` rule): the capture judges the body's size.
    """
    if _is_loop(environ, settings.loop_token):
        return None, "loop"
    if closed:
        return None, "closed"
    if _is_upgrade(environ):
        return None, "upgrade"
    if "wsgi.input" not in environ:
        return None, "no_input"
    if environ.get("wsgi.input_terminated"):
        return None, None
    max_body = settings.max_body_bytes
    raw = environ.get("CONTENT_LENGTH")
    if not raw:
        return None, None
    try:
        length = int(raw)
    except ValueError:
        return None, "bad_request"
    if length < 0:
        return None, "bad_request"
    if length > max_body:
        return None, "body_too_large"
    return length, None


def _is_loop(environ: WSGIEnvironment, token: str | None) -> bool:
    """A request wsgimirror itself sent. With a ``LoopToken``, only a mark carrying it counts:
    a forged mark is stripped from the mirror like any X-Mirrored-By, and the request is mirrored."""
    mark = environ.get("HTTP_X_MIRRORED_BY")
    if mark is None:
        return False
    if token is None:
        return True
    return hmac.compare_digest(str(mark).encode("utf-8", "replace"), token.encode("ascii"))


def _is_upgrade(environ: WSGIEnvironment) -> bool:
    """A real protocol upgrade: an Upgrade header *and* the upgrade token in Connection."""
    if not environ.get("HTTP_UPGRADE"):
        return False
    return "upgrade" in connection_tokens(str(environ.get("HTTP_CONNECTION", "")))


class _Capture:
    """What one mirrored request needs when its response is closed."""

    __slots__ = ("stats", "dispatcher", "route", "clusters", "environ", "tee", "answer", "done", "arrived")

    def __init__(
        self,
        stats: Stats,
        dispatcher: Dispatcher,
        route: Route,
        clusters: list[str],
        environ: WSGIEnvironment,
        tee: TeeInput,
        arrived: int,
    ) -> None:
        self.arrived = arrived  # ns since the epoch: a recording's timestamp
        self.stats = stats
        self.dispatcher = dispatcher
        self.route = route
        self.clusters = clusters
        self.environ = environ
        self.tee = tee
        self.answer: Answer | None = None  # the app's, when a selected cluster's answer is compared with it
        self.done = False

    def answer_tee(self, comparer: Comparer, start_response: StartResponse) -> AnswerTee | None:
        """Tee the app's answer when the route records it, or a selected cluster compares it (else None)."""
        route = self.route
        records = route.record_responses
        if not records and not any(c in route.compare_clusters or c == route.baseline_cluster for c in self.clusters):
            return None
        tee = comparer.tee(start_response, prefix=records, spool=self.dispatcher.spools_answers)
        self.answer = tee.answer
        return tee

    def finish(self) -> None:
        """Complete the body capture and dispatch, or count the drop; runs once, never raises."""
        if self.done:
            return
        self.done = True
        buffer = self.tee.buffer
        try:
            expect = self.environ.get("HTTP_EXPECT", "").lower() == "100-continue"
            reason = self.tee.outcome(expect)
            if reason is not None:
                self.stats.drop(reason, self.route.id, self.clusters)
                buffer.release()
                return
            timing = (self.arrived, time.time_ns() - self.arrived)  # the answer has been sent by now
            if self.answer is not None:
                self.answer.elapsed = timing[1] / 1e9  # the app's latency, beside the mirrors' (Compare)
            self.dispatcher.dispatch(self.route, self.clusters, self.environ, buffer, self.answer, timing)
        except Exception:
            _failed.warning("wsgimirror failed to dispatch a mirror of route %r", self.route.id, exc_info=True)
            self.stats.drop("internal_error", self.route.id, self.clusters)
        finally:
            if self.answer is not None:
                self.answer.release()  # the request's hold; each mirror comparing with it holds its own

    def abandon(self) -> None:
        """The response was discarded without ``close()``: free the copy and count it ``not_closed``.

        Nothing is read or sent: the input may belong to a request long gone.
        """
        if self.done:
            return
        self.done = True
        self.stats.drop(NOT_CLOSED, self.route.id, self.clusters)
        self.tee.buffer.release()
        if self.answer is not None:
            self.answer.release()


class _ClosingIterable:
    """The app's response, unchanged, whose ``close()`` also hands the mirror off.

    A server must call ``close()`` (PEP 3333); test clients often don't. When the object is
    discarded without it, the capture is released and the copy counted ``not_closed``.
    """

    __slots__ = ("_result", "_capture", "_tee")

    def __init__(self, result: t.Iterable[bytes], capture: _Capture, tee: AnswerTee | None) -> None:
        self._result = result
        self._capture = capture
        self._tee = tee

    def __iter__(self) -> t.Iterator[bytes]:
        if self._tee is not None:
            return self._tee.iterate(self._result)
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._capture.finish()
            if self._capture.dispatcher.cooperative:
                _let_other_connections_run()

    def __del__(self) -> None:
        self._capture.abandon()


class _ClosingSequence(_ClosingIterable):
    """Keeps ``len()``: servers set Content-Length from it (gevent does), so the framing is unchanged."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


def _let_other_connections_run() -> None:
    """Yield to the loop for one round of I/O polling before this connection reads its next request.

    gevent's server reads a keep-alive connection's next request as soon as the last one is answered,
    and when its bytes are already there it never yields. The few microseconds a captured request
    spends here are enough for the client's next request to arrive first, so a few connections
    would run back to back while others starve (measured by ``bench/tail.py``: with 16 connections
    some got 1,000 requests and others 6,500, and the p99 went from 6 to 200 ms). A timer of the
    shortest delay lets the loop poll every socket, and each ready connection is served in turn.
    """
    import gevent

    if gevent.getcurrent() is not gevent.get_hub():
        gevent.sleep(1e-6)


def _wrap(result: t.Iterable[bytes], capture: _Capture, tee: AnswerTee | None) -> _ClosingIterable:
    cls = _ClosingSequence if hasattr(result, "__len__") else _ClosingIterable
    return cls(result, capture, tee)
