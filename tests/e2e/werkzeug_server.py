"""werkzeug's threaded dev server in a child process, serving ``tests.e2e.apps.wrapped`` (no gevent).

python tests/e2e/werkzeug_server.py PORT
"""

import sys

from werkzeug.serving import make_server

from tests.e2e.apps import wrapped

if __name__ == "__main__":
    server = make_server("127.0.0.1", int(sys.argv[1]), wrapped, threaded=True)
    print("ready", file=sys.stderr, flush=True)
    server.serve_forever()
