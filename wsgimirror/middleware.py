"""MirrorMiddleware: copy matching requests to mirror clusters without touching the real response.

The path of one request through the package:

1. ``routing``  - match: the first route whose hosts, paths and methods match.
2. ``capture``  - tee: ``wsgi.input`` is replaced by a reader that copies the body.
3. ``middleware`` (here) - call the app; when the server closes the response (it
   has been sent by then), read what the app left unread and hand off.
4. ``balancing`` - pick: each mirror cluster's policy chooses a destination.
5. ``sender`` / ``transport`` - send: a bounded pool writes the copy on a pooled connection.
6. ``stats``    - count: every copy ends mirrored or dropped, every mirror succeeded or failed.

Nothing here raises into the app: failures are counted and logged.
"""

from __future__ import annotations

import logging
import time
import typing as t

from .balancing import sampled_in
from .capture import BodyBuffer, TeeInput
from .config import Config, ConfigSource, Route, load_config
from .routing import Router
from .sender import Dispatcher
from .stats import Stats

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)


class _Generation:
    """One configuration with its router and dispatcher; swapped whole on reload."""

    __slots__ = ("config", "router", "dispatcher")

    def __init__(self, config: Config, stats: Stats) -> None:
        self.config = config
        self.router = Router(config.routes)
        self.dispatcher = Dispatcher(config, stats)


class MirrorMiddleware:
    """Wrap a WSGI app so that requests matching the config's routes are mirrored.

    ``config`` is a path to a JSON file, a dict of the same shape, or a :class:`Config`
    from :func:`load_config`. It is validated here; a bad one raises ``ConfigError``.
    ``prometheus``: True to export metrics on prometheus_client's default registry, or
    the ``CollectorRegistry`` to register them on.
    """

    def __init__(self, app: WSGIApplication, config: ConfigSource, *, prometheus: t.Any = None) -> None:
        self.app = app
        self._stats = Stats(_metrics(prometheus))
        self._generation = _Generation(load_config(config), self._stats)
        self._retired: list[Dispatcher] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        self._stats.request()
        generation = self._generation
        try:
            capture = self._prepare(generation, environ)
        except Exception:
            log.warning("wsgimirror could not prepare a mirror; the request is served without one", exc_info=True)
            capture = None
        if capture is None:
            return self.app(environ, start_response)
        try:
            result = self.app(environ, start_response)
        except BaseException:
            capture.finish()
            raise
        return _wrap(result, capture.finish)

    def _prepare(self, generation: _Generation, environ: WSGIEnvironment) -> _Capture | None:
        """Match the request and, when it is to be mirrored, snapshot it and tee its input."""
        route = generation.router.match(environ)
        if route is None:
            return None
        clusters = route.mirror_clusters
        self._stats.matched(route.id, clusters)
        if not clusters:
            return None
        settings = generation.config.mirror
        length, reason = _refusal(environ, settings.max_body_bytes, generation.dispatcher.closed)
        if reason is not None:
            self._stats.drop(reason, route.id, clusters)
            return None
        selected = [cid for cid in clusters if sampled_in(generation.config.clusters[cid], environ)]
        if len(selected) < len(clusters):
            self._stats.drop("sampled_out", route.id, [c for c in clusters if c not in selected])
        if selected:
            broken = generation.dispatcher.open_circuits(selected)
            if broken:
                self._stats.drop("circuit_open", route.id, broken)
                selected = [cid for cid in selected if cid not in broken]
        if not selected:
            return None  # no capture at all when no cluster takes the request
        snapshot = environ.copy()  # apps and middleware rewrite environ in place
        buffer = BodyBuffer(settings.memory_body_bytes, settings.max_body_bytes)
        tee = TeeInput(environ["wsgi.input"], length, bool(environ.get("wsgi.input_terminated")), buffer)
        environ["wsgi.input"] = tee
        return _Capture(self._stats, generation.dispatcher, route, selected, snapshot, tee)

    def stats(self) -> dict[str, t.Any]:
        """Counters since start, in total and by route, cluster and destination (see the README)."""
        snapshot = self._stats.snapshot()
        snapshot["executor"] = self._generation.dispatcher.executor_name
        for key, state in self._generation.dispatcher.circuits().items():
            if key in snapshot["by_destination"]:
                snapshot["by_destination"][key]["circuit"] = state
        return snapshot

    @property
    def config(self) -> Config:
        """The configuration new requests are matched against."""
        return self._generation.config

    def reload(self, config: ConfigSource) -> None:
        """Swap the configuration atomically; an invalid one raises ``ConfigError`` and changes nothing.

        Requests already captured finish under the configuration they started with;
        new requests use the new one.
        """
        generation = _Generation(load_config(config), self._stats)
        previous, self._generation = self._generation, generation
        previous.dispatcher.retire()
        self._retired = [d for d in self._retired if d.active] + [previous.dispatcher]

    def close(self, timeout: float = 5.0) -> bool:
        """Stop starting mirrors and wait up to ``timeout`` s for those in flight; True if none is left."""
        deadline = time.monotonic() + timeout
        done = True
        for dispatcher in [*self._retired, self._generation.dispatcher]:
            done = dispatcher.close(max(0.0, deadline - time.monotonic())) and done
        return done


def _metrics(prometheus: t.Any) -> t.Any:
    if prometheus is None or prometheus is False:
        return None
    from .metrics import PrometheusMetrics

    return PrometheusMetrics.for_registry(None if prometheus is True else prometheus)


def _refusal(environ: WSGIEnvironment, max_body: int, closed: bool) -> tuple[int | None, str | None]:
    """The body length from CONTENT_LENGTH, and why the request cannot be mirrored (None: it can)."""
    if "HTTP_X_MIRRORED_BY" in environ:
        return None, "loop"
    if closed:
        return None, "closed"
    if environ.get("HTTP_UPGRADE"):
        return None, "upgrade"
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


class _Capture:
    """What one mirrored request needs when its response is closed."""

    __slots__ = ("stats", "dispatcher", "route", "clusters", "environ", "tee", "done")

    def __init__(
        self,
        stats: Stats,
        dispatcher: Dispatcher,
        route: Route,
        clusters: list[str],
        environ: WSGIEnvironment,
        tee: TeeInput,
    ) -> None:
        self.stats = stats
        self.dispatcher = dispatcher
        self.route = route
        self.clusters = clusters
        self.environ = environ
        self.tee = tee
        self.done = False

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
            self.dispatcher.dispatch(self.route, self.clusters, self.environ, buffer)
        except Exception:
            log.warning("wsgimirror failed to dispatch a mirror of route %r", self.route.id, exc_info=True)
            self.stats.drop("internal_error", self.route.id, self.clusters)


class _ClosingIterable:
    """The app's response, unchanged, whose ``close()`` also hands the mirror off."""

    __slots__ = ("_result", "_on_close")

    def __init__(self, result: t.Iterable[bytes], on_close: t.Callable[[], None]) -> None:
        self._result = result
        self._on_close = on_close

    def __iter__(self) -> t.Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


class _ClosingSequence(_ClosingIterable):
    """Keeps ``len()``: servers set Content-Length from it (gevent does), so the framing is unchanged."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


def _wrap(result: t.Iterable[bytes], on_close: t.Callable[[], None]) -> _ClosingIterable:
    cls = _ClosingSequence if hasattr(result, "__len__") else _ClosingIterable
    return cls(result, on_close)
