"""Run in a child process with no gevent patching: a threaded werkzeug server mirroring to a threaded sink.

``threaded_server.py N``: MaxInFlight N, three small requests, one of them slow to mirror.
``threaded_server.py clusters N``: three 6 MiB bodies (spilled to disk) mirrored to N clusters at once.
``threaded_server.py record DIR``: five requests recorded, with their answers, to a file destination in DIR.
Prints one JSON line: what the client got, what the sinks received, and the middleware's stats.
"""

import hashlib
import http.client
import http.server
import json
import os
import sys
import threading
import time

from werkzeug.serving import make_server

from wsgimirror.middleware import MirrorMiddleware

received = []
hashes: dict[int, list[str]] = {}


class SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/big":
            hashes.setdefault(self.server.server_port, []).append(hashlib.sha256(body).hexdigest())
        else:
            received.append({"path": self.path, "body": body.decode()})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def app(environ, start_response):
    # At most CONTENT_LENGTH (PEP 3333): the dev server's stream ends only when the client closes.
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app got " + body]


def start_sink() -> http.server.ThreadingHTTPServer:
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SinkHandler)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    return sink


def digest_app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [hashlib.sha256(body).hexdigest().encode()]


def clusters(count: int) -> None:
    sinks = [start_sink() for _ in range(count)]
    names = [f"c{i}" for i in range(count)]
    config = {
        "ReverseProxy": {
            "Routes": {"r": {"Metadata": {"MirrorCluster": ",".join(names)}}},
            "Clusters": {
                name: {"Destinations": [{"Address": f"http://127.0.0.1:{s.server_port}"}]}
                for name, s in zip(names, sinks)
            },
        },
        "Mirror": {"MemoryBodyBytes": 65536, "Timeout": 60},
    }
    mw = MirrorMiddleware(digest_app, config)
    server = make_server("127.0.0.1", 0, mw, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bodies = [os.urandom(6 * 1024 * 1024 + i) for i in range(3)]

    def post(body: bytes) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        conn.request("POST", "/big", body=body)
        assert conn.getresponse().read().decode() == hashlib.sha256(body).hexdigest()

    clients = [threading.Thread(target=post, args=(b,)) for b in bodies]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    deadline = time.monotonic() + 60
    while mw.stats()["succeeded"] + mw.stats()["failed"] < 3 * count and time.monotonic() < deadline:
        time.sleep(0.02)
    mw.close(timeout=5)
    sent = [hashlib.sha256(b).hexdigest() for b in bodies]
    print(json.dumps({"sent": sent, "received": {str(k): v for k, v in hashes.items()}, "stats": mw.stats()}))


def record(directory: str) -> None:
    config = {
        "ReverseProxy": {
            "Routes": {"r": {"Metadata": {"MirrorCluster": "rec", "MirrorRecordResponses": "true"}}},
            "Clusters": {"rec": {"Destinations": [{"Address": f"file://{directory}/t.gor"}]}},
        }
    }
    mw = MirrorMiddleware(app, config)
    server = make_server("127.0.0.1", 0, mw, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    for i in range(5):
        conn.request("POST", f"/r{i}", body=b"b" * i)
        conn.getresponse().read()
    deadline = time.monotonic() + 10  # outcomes are counted by the writer thread itself here
    while mw.stats()["succeeded"] + mw.stats()["failed"] < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    closed = mw.close(timeout=5)
    print(json.dumps({"closed": closed, "stats": mw.stats()}))
    server.shutdown()


def main() -> None:
    if sys.argv[1] == "record":
        record(sys.argv[2])
        return
    if sys.argv[1] == "clusters":
        clusters(int(sys.argv[2]))
        return
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
