"""``wsgimirror serve``: an app wrapped in MirrorMiddleware, served by gevent.pywsgi.

SIGTERM or SIGINT close the listener; requests in flight finish and are answered,
idle keep-alive connections are closed, then the mirrors in flight are sent, all within
the drain timeout, and the process exits 0 with a last line that accounts for every
copy. SIGHUP reloads the config file; a file that fails to load for any reason keeps
the old config and logs why: a reload never stops the server.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
import typing as t
import weakref

from gevent.pywsgi import WSGIHandler

from ..util.listen import make_listener

log = logging.getLogger("wsgimirror.serve")


class RawTargetHandler(WSGIHandler):
    """gevent's handler, keeping the request target exactly as it arrived in ``environ['RAW_URI']``."""

    def get_environ(self) -> dict[str, t.Any]:
        env = super().get_environ()
        env["RAW_URI"] = self.path
        return env


class DrainingHandler(RawTargetHandler):
    """Knows whether it waits for a request; once the server drains, asks for no more after the current one."""

    def __init__(self, sock: t.Any, address: t.Any, server: t.Any) -> None:
        super().__init__(sock, address, server)
        self.idle = False
        self.served = 0
        server.handlers.add(self)

    def read_requestline(self) -> str:
        if self.served and self.server.draining:
            return ""  # no next request on a kept-alive connection: close it
        self.idle = True
        try:
            return str(super().read_requestline())
        finally:
            self.idle = False
            self.served += 1

    def hang_up_if_idle(self) -> None:
        """Close a kept-alive connection waiting for its next request (no request is cut)."""
        if self.idle and self.served and self.socket is not None:
            try:
                self.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(
    app: t.Callable[..., t.Any],
    config_path: str,
    bind: tuple[str, int],
    drain_timeout: float,
    access_log: bool = False,
    metrics_bind: tuple[str, int] | None = None,
) -> int:
    import gevent
    from gevent.event import Event
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer

    from ..errors import ConfigError
    from ..middleware import MirrorMiddleware

    mirrored = MirrorMiddleware(app, config_path, prometheus=metrics_bind is not None)
    servers = [] if metrics_bind is None else [_metrics_server(metrics_bind, mirrored)]
    server = WSGIServer(
        make_listener(bind),
        mirrored,
        log=logging.getLogger("wsgimirror.access") if access_log else None,
        error_log=logging.getLogger("wsgimirror.server"),
        handler_class=DrainingHandler,
        spawn=Pool(),  # a pool, so that stopping can wait for the requests in flight
    )
    server.handlers = weakref.WeakSet()
    server.draining = False
    stop = Event()

    def reload() -> None:
        try:
            mirrored.reload(config_path)
        except ConfigError as err:
            log.error("config reload failed, the previous config stays in force: %s", err)
        except Exception:  # whatever the file holds, the server keeps running on the old config
            log.exception("config reload failed, the previous config stays in force")
        else:
            log.info("config reloaded from %s: %d routes", config_path, len(mirrored.config.routes))

    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    gevent.signal_handler(signal.SIGHUP, reload)
    servers.append(server)
    for each in servers:
        each.start()
    host, port = server.address[:2]
    if metrics_bind is not None:
        log.info("metrics on http://%s:%d/metrics", *servers[0].address[:2])
    log.info("serving on http://%s:%d, mirroring per %s", host, port, config_path)
    stop.wait()
    server.close()  # no new connection from here on, before anyone is told we are stopping
    log.info("stopping: draining requests and mirrors for up to %gs", drain_timeout)
    deadline = time.monotonic() + drain_timeout
    drain_requests(server, drain_timeout)
    drained = mirrored.close(timeout=max(0.0, deadline - time.monotonic()))
    stats = mirrored.stats()
    log.info(
        "stopped%s: %d requests; %d copies = %d mirrored + %d dropped + %d pending; "
        "mirrored: %d succeeded, %d failed, %d in flight; dropped: %s",
        "" if drained else " with mirrors still in flight",
        stats["requests"], stats["copies"], stats["mirrored"], sum(stats["dropped"].values()), stats["pending"],
        stats["succeeded"], stats["failed"], stats["in_flight"], json.dumps(stats["dropped"], sort_keys=True),
    )  # fmt: skip
    for each in servers[:-1]:
        each.stop(timeout=1)
    return 0


def drain_requests(server: t.Any, timeout: float) -> bool:
    """Stop accepting, let the requests in flight finish, close idle keep-alive connections.

    True when every connection ended within ``timeout``; those left are then cut.
    """
    import gevent

    server.close()
    server.draining = True
    deadline = time.monotonic() + timeout
    while server.pool and time.monotonic() < deadline:
        for handler in list(server.handlers):
            handler.hang_up_if_idle()
        server.pool.join(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
    done = not server.pool
    if not done:
        log.warning("%d connections still open after %gs are cut", len(server.pool), timeout)
        server.pool.kill(block=True, timeout=1)
    gevent.sleep(0)  # let the closed responses hand their mirrors off
    return done


def _metrics_server(bind: tuple[str, int], mirrored: t.Any) -> t.Any:
    """Prometheus metrics at /metrics, and this process's comparison report at /compare and /compare.json."""
    from gevent.pywsgi import WSGIServer
    from prometheus_client import make_wsgi_app

    from ..metrics import exposition_registry

    metrics = make_wsgi_app(exposition_registry())

    def app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> t.Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/compare", "/compare.json"):
            return t.cast("t.Iterable[bytes]", metrics(environ, start_response))
        html = path == "/compare"  # rendered where the comparisons are made: the agent, when there is one
        body = mirrored.comparison_page(html)
        kind = "text/html; charset=utf-8" if html else "application/json"
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])  # fmt: skip
        return [body]

    return WSGIServer(make_listener(bind), app, log=None)
