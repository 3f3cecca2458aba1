"""A gevent server for bench/compare_cost.py: an app answering SIZE bytes of JSON, bare or wrapped.

    python bench/compare_server.py MODE PORT MIRROR_PORT SIZE

MODE: ``bare`` (no middleware), ``mirror`` (every request mirrored to MIRROR_PORT), ``compare``
(mirrored, and the mirror's answer compared with the app's), ``answer`` (no middleware: the
destination, answering the same document). Prints ``ready`` when listening on 127.0.0.1:PORT.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from wsgimirror.middleware import MirrorMiddleware  # noqa: E402
from wsgimirror.util.listen import make_listener  # noqa: E402


def document(size: int) -> bytes:
    """A JSON document of about ``size`` bytes: a list of small items."""
    one = len(json.dumps({"id": 0, "name": "item 0", "price": 0, "tags": ["a", "b"]})) + 8
    count = max(1, size // one)
    items = [{"id": i, "name": f"item {i}", "price": i * 3, "tags": ["a", "b"]} for i in range(count)]
    return json.dumps({"total": count, "items": items}).encode()


def main() -> None:
    mode, port, mirror_port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    body = document(size)

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    metadata = {"MirrorCluster": "shadow"}
    if mode == "compare":
        metadata["MirrorCompare"] = "shadow"
    config = {
        "ReverseProxy": {
            "Routes": {"all": {"Match": {"Paths": ["*"]}, "Metadata": metadata}},
            "Clusters": {"shadow": {"Destinations": [{"Address": f"http://127.0.0.1:{mirror_port}"}]}},
        },
        "Mirror": {"MaxInFlight": 256},
        "Compare": {"MaxPerSecond": 1_000_000},
    }
    served = app if mode in ("bare", "answer") else MirrorMiddleware(app, config)
    server = WSGIServer(make_listener(("127.0.0.1", port)), served, log=None)  # TCP_NODELAY, as serve has it
    server.start()
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
