"""waitress in a child process (threads, no gevent patching): apps that re-read their body, wrapped or bare.

    python tests/e2e/waitress_server.py CONFIG.json|bare

Prints ``ready <port>`` on stdout. waitress buffers the body before it calls the app and hands it a
seekable input, so the apps below read the body, seek back and read it again:

- ``/plain/...``: reads the body, ``seek(0)``, reads it again, answers both digests;
- ``/webob/...``: an outer WebOb layer makes the body seekable (``webob.is_body_seekable``), and the
  inner WebOb app reads ``request.body`` twice, then its JSON;

``/__stats`` answers the middleware's stats (``{}`` when bare), before the middleware.
"""

import hashlib
import json
import logging
import sys

import waitress
from webob import Request, Response


def plain(environ, start_response):
    stream = environ["wsgi.input"]
    first = stream.read()
    stream.seek(0)
    second = stream.read()
    position = stream.tell()
    body = json.dumps([hashlib.sha256(first).hexdigest(), hashlib.sha256(second).hexdigest(), position]).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def webob_app(environ, start_response):
    request = Request(environ)
    first, second = request.body, request.body
    response = Response(json={"same": first == second, "bytes": len(first), "item": request.json.get("item")})
    return response(environ, start_response)


def outer_webob_layer(app):
    """A layer above (ours or the framework's) that made the body seekable and flagged it so."""

    def layer(environ, start_response):
        Request(environ).make_body_seekable()
        return app(environ, start_response)

    return layer


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def wrap(app):
        if sys.argv[1] == "bare":
            return app, None
        from wsgimirror.middleware import MirrorMiddleware

        mirrored = MirrorMiddleware(app, sys.argv[1])
        return mirrored, mirrored

    plain_app, plain_mw = wrap(plain)
    inner, webob_mw = wrap(webob_app)
    layered = outer_webob_layer(inner)

    def control(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/__stats":
            stats = [mw.stats() for mw in (plain_mw, webob_mw) if mw is not None]
            data = json.dumps(stats).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]
        return (layered if path.startswith("/webob/") else plain_app)(environ, start_response)

    server = waitress.create_server(control, host="127.0.0.1", port=0, threads=4)
    print(f"ready {server.effective_port}", flush=True)
    server.run()


if __name__ == "__main__":
    main()
