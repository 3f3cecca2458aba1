"""WSGI apps the child-process servers of the tests run (importable as ``tests.e2e.apps``).

``app`` answers by path:
- ``/slow``: sleeps 0.5 s, then answers;
- ``/redirect``: 307 without reading the body;
- anything else: reads the body in 64 KiB pieces as it arrives and answers its length and SHA-256.

``wrapped`` is the same app inside a MirrorMiddleware configured by ``WSGIMIRROR_TEST_CONFIG``,
behind ``/__stats``, which answers the middleware's stats and is never mirrored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/slow":
        time.sleep(0.5)  # patched under gevent: other requests go on
    if path == "/redirect":
        start_response("307 Temporary Redirect", [("Location", "/target"), ("Content-Length", "0")])
        return [b""]
    stream = environ["wsgi.input"]
    digest, size = hashlib.sha256(), 0
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        digest.update(piece)
        size += len(piece)
    answer = json.dumps({"path": path, "bytes": size, "sha256": digest.hexdigest()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


def with_stats(config):
    """``app`` in a MirrorMiddleware, behind a ``/__stats`` path that answers its stats."""
    from wsgimirror.middleware import MirrorMiddleware

    mirrored = MirrorMiddleware(app, config)

    def control(environ, start_response):
        if environ.get("PATH_INFO") != "/__stats":
            return mirrored(environ, start_response)
        data = json.dumps(mirrored.stats()).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return control


wrapped = with_stats(os.environ["WSGIMIRROR_TEST_CONFIG"]) if os.environ.get("WSGIMIRROR_TEST_CONFIG") else app
