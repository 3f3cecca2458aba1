"""A pytest plugin that puts MirrorMiddleware around every app of Flask's or Werkzeug's own test suite.

Loaded with ``-p wsgimirror_upstream`` (this folder on ``PYTHONPATH``) and switched on by
``WSGIMIRROR_UPSTREAM=flask`` or ``=werkzeug``; any other value loads it inert, for the
unwrapped run. Every request of the suite goes through one shared middleware that mirrors
everything to a local recording sink; at the end, its stats and the sink's count are
written as JSON to ``WSGIMIRROR_UPSTREAM_REPORT``.

- Flask: ``Flask.wsgi_app`` is replaced at class level. The app is handed to the shared
  middleware in a thread-local for the length of the call only, so nothing keeps a
  reference to any app (a test of Flask's checks apps are freed).
- Werkzeug: the ``app`` argument of ``werkzeug.test.run_wsgi_app`` is wrapped (``Client``,
  ``Response.from_app`` and ``force_type`` all go through it).
"""

from __future__ import annotations

import gc
import http.server
import json
import os
import threading

_state: dict = {}
_current = threading.local()  # the app the shared middleware calls, during one call


class _Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def _any(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with _Sink.lock:
            _Sink.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

    def log_message(self, *args) -> None:
        pass


def _inner(environ, start_response):
    return _current.app(environ, start_response)


def _through(mirrored, app, environ, start_response):
    """Call ``app`` inside the shared middleware (nested calls restore the outer app)."""
    outer = getattr(_current, "app", None)
    _current.app = app
    try:
        return mirrored(environ, start_response)
    finally:
        _current.app = outer


def pytest_configure(config) -> None:
    target = os.environ.get("WSGIMIRROR_UPSTREAM")
    if target not in ("flask", "werkzeug"):
        return
    from wsgimirror.middleware import MirrorMiddleware

    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    mirrored = MirrorMiddleware(
        _inner,
        {
            "ReverseProxy": {
                "Routes": {"all": {"Metadata": {"MirrorCluster": "sink"}}},
                "Clusters": {"sink": {"Destinations": [{"Address": f"http://127.0.0.1:{sink.server_port}"}]}},
            },
            "Mirror": {"MaxInFlight": 256},
        },
    )
    _state.update(sink=sink, mirrored=mirrored)
    (_wrap_flask if target == "flask" else _wrap_werkzeug)(mirrored)


def _wrap_flask(mirrored) -> None:
    from functools import partial

    from flask import Flask

    original = Flask.wsgi_app

    def wsgi_app(self, environ, start_response):
        return _through(mirrored, partial(original, self), environ, start_response)

    Flask.wsgi_app = wsgi_app


def _wrap_werkzeug(mirrored) -> None:
    from functools import partial

    import werkzeug.test

    original = werkzeug.test.run_wsgi_app

    def run_wsgi_app(app, environ, buffered=False):
        return original(partial(_through, mirrored, app), environ, buffered)

    werkzeug.test.run_wsgi_app = run_wsgi_app


def pytest_unconfigure(config) -> None:
    if not _state:
        return
    gc.collect()  # responses the suite never closed are freed and counted now
    mirrored, sink = _state["mirrored"], _state["sink"]
    mirrored.close(timeout=10)
    sink.shutdown()
    sink.server_close()
    report = {"stats": mirrored.stats(), "received": _Sink.count}
    with open(os.environ["WSGIMIRROR_UPSTREAM_REPORT"], "w") as fh:
        json.dump(report, fh)
