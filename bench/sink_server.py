"""A cheap mirror destination for the benchmarks: gevent.pywsgi answering 204 (optionally after a delay).

Usage: python bench/sink_server.py PORT [DELAY_SECONDS [CERTFILE KEYFILE]]. Prints "ready" when listening and
counts the requests it receives; GET /_count answers the count so far; on SIGTERM it prints the count and exits.
With a certificate and key it serves HTTPS.
"""

from gevent import monkey

monkey.patch_all()

import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

count = 0


def app(environ, start_response):
    global count
    if environ["PATH_INFO"] == "/_count":
        answer = str(count).encode()
        start_response("200 OK", [("Content-Length", str(len(answer)))])
        return [answer]
    stream = environ["wsgi.input"]
    while stream.read(65536):
        pass
    count += 1
    if delay:
        gevent.sleep(delay)
    start_response("204 No Content", [])
    return []


def stop(*_):
    print(count, flush=True)
    server.stop(timeout=0.5)
    sys.exit(0)


if __name__ == "__main__":
    port = int(sys.argv[1])
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    tls = {"certfile": sys.argv[3], "keyfile": sys.argv[4]} if len(sys.argv) > 4 else {}
    server = WSGIServer(("127.0.0.1", port), app, log=None, error_log=None, backlog=1024, **tls)
    server.init_socket()
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    gevent.signal_handler(signal.SIGTERM, stop)
    print("ready", flush=True)
    server.serve_forever()
