"""A comparison candidate for bench/agent.py: answers about 700 KB of JSON nested 10 levels, a little different
from the app's (one value in twenty). ``python bench/json_server.py PORT``; prints "ready"; stops on SIGTERM."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from apps import nested_document  # noqa: E402

from wsgimirror.util.listen import make_listener  # noqa: E402

BODY = nested_document(900_000, variant=1)


def app(environ, start_response):
    stream = environ["wsgi.input"]
    while stream.read(65536):
        pass
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


server = WSGIServer(make_listener(("127.0.0.1", int(sys.argv[1]))), app, log=None)
gevent.signal_handler(signal.SIGTERM, server.stop)
server.start()
print("ready", flush=True)
server.serve_forever()
