"""A gevent server in a child process, for tests that need resource limits or a clean RSS figure.

    python tests/e2e/child_server.py CONFIG.json|bare

Prints ``ready <port>`` on stdout, then serves ``tests.e2e.apps.app`` (wrapped in a
MirrorMiddleware unless ``bare``) on 127.0.0.1. Three control paths are answered before
the middleware, so they are never mirrored:
- ``/__stats``: the middleware's stats (``{}`` when bare) and this process's memory (kB);
- ``/__limit?files=N``: from now on, at most N more open files than are open now;
- ``/__limit?fsize=BYTES``: no file may grow past BYTES (the disk is "full").
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from tests.e2e.apps import app  # noqa: E402
from wsgimirror.util.listen import make_listener  # noqa: E402


def memory_kb() -> dict:
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    mirrored = None if sys.argv[1] == "bare" else __import__("wsgimirror").MirrorMiddleware(app, sys.argv[1])
    served = mirrored or app

    def control(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/__stats":
            try:  # both need a file descriptor, and the test may have used them all
                memory, open_files = memory_kb(), len(os.listdir("/proc/self/fd"))
            except OSError:
                memory, open_files = None, None
            body = {"stats": mirrored.stats() if mirrored else {}, "memory": memory, "open_files": open_files}
        elif path == "/__limit":
            query = {k: int(v[0]) for k, v in parse_qs(environ["QUERY_STRING"]).items()}
            if "files" in query:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + query["files"], hard))
            if "fsize" in query:
                resource.setrlimit(resource.RLIMIT_FSIZE, (query["fsize"], resource.RLIM_INFINITY))
            body = {"limited": query}
        else:
            return served(environ, start_response)
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    listener = make_listener(("127.0.0.1", 0))
    print(f"ready {listener.getsockname()[1]}", flush=True)
    WSGIServer(listener, control, log=None, spawn=10_000).serve_forever()


if __name__ == "__main__":
    main()
