"""A small Flask app whose /api requests are mirrored to the sinks named in mirror.json.

Run it on its own (gevent's server, wrapped here):   python examples/flask_app.py [HOST:PORT]
Or let the command wrap it:  wsgimirror serve examples.flask_app:create_app() --config examples/mirror.json
Or under gunicorn:           gunicorn -c examples/gunicorn.conf.py
The config path can be changed with WSGIMIRROR_CONFIG.
"""

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()  # the server owner patches first, before anything imports ssl or sockets

import hashlib
import os
import sys
from pathlib import Path

from flask import Flask, request

from wsgimirror import MirrorMiddleware, RawTargetHandler

CONFIG = os.environ.get("WSGIMIRROR_CONFIG", str(Path(__file__).with_name("mirror.json")))


def create_app() -> Flask:
    """The plain app, without mirroring."""
    app = Flask(__name__)

    @app.get("/api/orders/<int:order_id>")
    def get_order(order_id: int):
        return {"id": order_id, "status": "shipped"}

    @app.post("/api/orders")
    def create_order():
        order = request.get_json()
        body_hash = hashlib.sha256(request.get_data()).hexdigest()
        return {"created": order, "sha256": body_hash, "worker": os.getpid()}, 201

    @app.get("/api/files/<path:name>")
    def get_file(name: str):
        return {"name": name}

    @app.get("/health")
    def health():
        return "ok"  # outside the mirrored route: never mirrored

    return app


def create_mirrored_app(config: str = CONFIG) -> Flask:
    """The app with mirroring: Flask's WSGI callable wrapped in MirrorMiddleware.

    With WSGIMIRROR_METRICS_BIND set (see gunicorn.conf.py), mirrors are also counted
    as Prometheus metrics.
    """
    app = create_app()
    prometheus = bool(os.environ.get("WSGIMIRROR_METRICS_BIND"))
    app.wsgi_app = MirrorMiddleware(app.wsgi_app, config, prometheus=prometheus)  # type: ignore[method-assign]
    return app


if __name__ == "__main__":
    from gevent.pywsgi import WSGIServer

    host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000").rpartition(":")
    # RawTargetHandler keeps the request target as the client sent it (an encoded slash stays %2F in the mirror)
    server = WSGIServer((host, int(port)), create_mirrored_app(), handler_class=RawTargetHandler)
    server.start()
    print(f"serving on http://{host}:{port}, mirroring per {CONFIG}", flush=True)
    server.serve_forever()
