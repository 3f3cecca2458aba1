"""Mirror latency to a destination without TCP_NODELAY (gevent.pywsgi's own listener), with and without quick ACKs.

    python bench/nagle_latency.py

Such a destination writes an answer's head and body in two sends and holds the second until
the first is acknowledged; the mirror's side acknowledges at once only with TCP_QUICKACK.
Prints the mirrors' p50 and p99 (ms) over 200 sequential mirrors on one kept-alive connection,
each way, as JSON.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import Client, wait_until  # noqa: E402
from wsgimirror.middleware import MirrorMiddleware  # noqa: E402
from wsgimirror.send import transport  # noqa: E402
from wsgimirror.util.listen import make_listener  # noqa: E402

MIRRORS = 200


def destination(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": ', b"true}"]


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def latency(quick_ack: bool) -> dict:
    transport.QUICKACK = transport.QUICKACK if quick_ack else None
    legacy = WSGIServer(("127.0.0.1", 0), destination, log=None)  # no TCP_NODELAY: Nagle on
    legacy.start()
    config = {
        "ReverseProxy": {
            "Routes": {"r": {"Match": {"Paths": ["*"]}, "Metadata": {"MirrorCluster": "m"}}},
            "Clusters": {"m": {"Destinations": [{"Address": f"http://127.0.0.1:{legacy.address[1]}"}]}},
        }
    }
    mw = MirrorMiddleware(app, config)
    server = WSGIServer(make_listener(("127.0.0.1", 0)), mw, log=None)
    server.start()
    try:
        with Client(server.address) as client:
            for i in range(MIRRORS):
                client.request("POST", "/x", body=b"a" * 512)
                wait_until(lambda i=i: mw.stats()["succeeded"] == i + 1, timeout=5)
        return mw.stats()["by_cluster"]["m"]["latency_ms"]
    finally:
        server.stop(timeout=1)
        legacy.stop(timeout=1)


def main() -> int:
    quick = transport.QUICKACK
    with_quick_ack = latency(True)
    without = latency(False)
    transport.QUICKACK = quick
    print(json.dumps({"with_quick_ack": with_quick_ack, "without_quick_ack": without}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
