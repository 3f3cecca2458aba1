"""``wsgimirror serve``: an app wrapped in MirrorMiddleware, served by gevent.pywsgi.

SIGTERM or SIGINT stop accepting, let requests and mirrors in flight finish for up to
the drain timeout, and exit 0. SIGHUP reloads the config file; an invalid new file
keeps the old config and logs why.
"""

from __future__ import annotations

import logging
import signal
import socket
import typing as t

log = logging.getLogger("wsgimirror.serve")


def make_listener(bind: tuple[str, int]) -> socket.socket:
    """A listening socket with TCP_NODELAY (inherited by accepted sockets on Linux).

    gevent.pywsgi writes headers and body in two sends; without TCP_NODELAY every reused
    keep-alive connection stalls about 40 ms on Nagle plus delayed ACK.
    """
    family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(bind)
    listener.listen(1024)
    return listener


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
    from gevent.pywsgi import WSGIServer

    from .errors import ConfigError
    from .middleware import MirrorMiddleware

    mirrored = MirrorMiddleware(app, config_path, prometheus=metrics_bind is not None)
    servers = [] if metrics_bind is None else [_metrics_server(metrics_bind)]
    server = WSGIServer(
        make_listener(bind),
        mirrored,
        log=logging.getLogger("wsgimirror.access") if access_log else None,
        error_log=logging.getLogger("wsgimirror.server"),
    )
    stop = Event()

    def reload() -> None:
        try:
            mirrored.reload(config_path)
        except ConfigError as err:
            log.error("config reload failed, the previous config stays in force: %s", err)
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
    log.info("stopping: draining requests and mirrors for up to %gs", drain_timeout)
    server.stop(timeout=drain_timeout)
    drained = mirrored.close(timeout=drain_timeout)
    stats = mirrored.stats()
    log.info(
        "stopped%s: %d requests, %d mirrored, %d succeeded, %d failed, dropped %s",
        "" if drained else " with mirrors still in flight",
        stats["requests"], stats["mirrored"], stats["succeeded"], stats["failed"], stats["dropped"],
    )  # fmt: skip
    for each in servers[:-1]:
        each.stop(timeout=1)
    return 0


def _metrics_server(bind: tuple[str, int]) -> t.Any:
    from gevent.pywsgi import WSGIServer
    from prometheus_client import make_wsgi_app

    from .metrics import exposition_registry

    return WSGIServer(make_listener(bind), make_wsgi_app(exposition_registry()), log=None)
