"""One benchmark server: ``python bench/server.py APP CASE PORT FAST_PORT SLOW_PORT DEAD_PORT [MIRROR_JSON]``.

gevent.pywsgi with TCP_NODELAY, as ``wsgimirror serve`` runs it. Prints "ready"; on SIGTERM
prints the middleware's stats as JSON and exits.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from apps import build  # noqa: E402

from wsgimirror.util.listen import make_listener  # noqa: E402


def main() -> None:
    app_name, case = sys.argv[1], sys.argv[2]
    port, fast, slow, dead = (int(a) for a in sys.argv[3:7])
    mirror = json.loads(sys.argv[7]) if len(sys.argv) > 7 else {}
    app = build(app_name, case, fast, slow, dead, **mirror)

    def with_stats(environ, start_response):
        """GET /_stats answers the middleware's counters, outside the measured path."""
        if environ["PATH_INFO"] == "/_stats":
            body = json.dumps(app.stats() if hasattr(app, "stats") else {}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    served = with_stats
    per_connection: dict[str, int] = {}
    if os.environ.get("BENCH_PER_CONNECTION"):  # count requests per client connection (its port): fairness

        def served(environ, start_response):
            port = environ.get("REMOTE_PORT", "")
            per_connection[port] = per_connection.get(port, 0) + 1
            return with_stats(environ, start_response)

    server = WSGIServer(make_listener(("127.0.0.1", port)), served, log=None, error_log=None)
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    server.start()
    print("ready", flush=True)
    stop.wait()
    server.stop(timeout=1)
    stats = app.stats() if hasattr(app, "stats") else {}
    if hasattr(app, "close"):
        app.close(timeout=2)
    if per_connection:
        stats["per_connection"] = sorted(per_connection.values())
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
