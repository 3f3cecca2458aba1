"""Run in a child process with no gevent patching: a threaded werkzeug server mirroring to a threaded sink.

Prints one JSON line: what the client got, what the sink received, and the middleware's stats.
"""

import http.client
import http.server
import json
import sys
import threading
import time

from werkzeug.serving import make_server

from wsgimirror import MirrorMiddleware

received = []


class SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/slow":
            time.sleep(1.0)
        received.append({"path": self.path, "body": body.decode()})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app got " + body]


def main() -> None:
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SinkHandler)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    config = {
        "ReverseProxy": {
            "Routes": {"r": {"Metadata": {"MirrorCluster": "m"}}},
            "Clusters": {"m": {"Destinations": [{"Address": f"http://127.0.0.1:{sink.server_port}"}]}},
        },
        "Mirror": {"MaxInFlight": int(sys.argv[1])},
    }
    mw = MirrorMiddleware(app, config)
    server = make_server("127.0.0.1", 0, mw, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answers, timings = [], []
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    for path in ("/slow", "/a", "/b"):
        start = time.monotonic()
        conn.request("POST", path, body=path.encode())
        answers.append(conn.getresponse().read().decode())
        timings.append(time.monotonic() - start)
    deadline = time.monotonic() + 10  # the dev server closes each response ~10 ms after sending it
    while time.monotonic() < deadline:
        stats = mw.stats()
        if stats["mirrored"] + sum(stats["dropped"].values()) == 3:
            break
        time.sleep(0.01)
    mw.close(timeout=5)
    print(json.dumps({"answers": answers, "timings": timings, "received": received, "stats": mw.stats()}))
    server.shutdown()
    sink.shutdown()


if __name__ == "__main__":
    main()
