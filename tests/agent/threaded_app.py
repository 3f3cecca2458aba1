"""werkzeug's threaded server in a child process, no gevent: ``threaded_app.py CONFIG.json``.

Prints ``ready <port>``; serves an app wrapped in MirrorMiddleware (the config's agent mode, the default
unless WSGIMIRROR_AGENT says otherwise), and ``/__stats`` with the middleware's stats.
"""

import json
import sys

from werkzeug.serving import make_server

from wsgimirror.middleware import MirrorMiddleware


def app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app got " + body]


mirrored = MirrorMiddleware(app, sys.argv[1])


def control(environ, start_response):
    if environ["PATH_INFO"] != "/__stats":
        return mirrored(environ, start_response)
    data = json.dumps(mirrored.stats()).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


server = make_server("127.0.0.1", 0, control, threaded=True)
print(f"ready {server.server_port}", flush=True)
server.serve_forever()
