"""A plain WSGI callable with no framework, mirrored like any other.

With the command:  wsgimirror serve examples.legacy_app:application --config examples/mirror.json
By hand:           python examples/legacy_app.py [HOST:PORT]
"""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()

import json
import os
import sys
from pathlib import Path


def application(environ, start_response):
    """Echoes what it received: method, path and body length."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    answer = json.dumps(
        {"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "bytes": len(body)}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


if __name__ == "__main__":
    from gevent.pywsgi import WSGIServer

    from wsgimirror.middleware import MirrorMiddleware
    from wsgimirror.util.listen import make_listener

    config = os.environ.get("WSGIMIRROR_CONFIG", str(Path(__file__).with_name("mirror.json")))
    host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000").rpartition(":")
    listener = make_listener((host, int(port)))
    print(f"serving on http://{host}:{port}, mirroring per {config}", flush=True)
    WSGIServer(listener, MirrorMiddleware(application, config)).serve_forever()
