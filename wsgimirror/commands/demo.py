"""``wsgimirror demo``: watch mirroring happen, on 127.0.0.1 only, in a few seconds.

Starts a small Flask app wrapped in MirrorMiddleware and two sinks behind a ``Hash``
cluster keyed on ``X-Forwarded-For``, sends a varied burst of requests, prints what the
app answered beside what each mirror received, and stops everything it started.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import typing as t

SINKS = ("sink-a", "sink-b")
# (method, target, client address, content type, body, chunked)
BURST: list[tuple[str, str, str, str | None, bytes | None, bool]] = [
    ("GET", "/api/health", "198.51.100.1", None, None, False),
    ("POST", "/api/orders", "198.51.100.2", "application/json", b'{"item": "tea", "qty": 2}', False),
    ("POST", "/api/orders", "198.51.100.1", "application/json", b'{"item": "cake", "qty": 1}', False),
    ("GET", "/api/search?q=mirror&page=2", "203.0.113.7", None, None, False),
    ("PUT", "/api/blobs/7", "203.0.113.7", "application/octet-stream", os.urandom(200_000), False),
    ("POST", "/api/upload", "198.51.100.2", "application/octet-stream", os.urandom(300_000), True),
    ("DELETE", "/api/orders/3", "203.0.113.9", None, None, False),
    ("POST", "/api/orders", "203.0.113.9", "application/json", b'{"item": "jam", "qty": 5}', False),
    ("PATCH", "/api/orders/3", "198.51.100.1", "application/json", b'{"qty": 4}', False),
    ("GET", "/static/logo.png", "198.51.100.2", None, None, False),
]


def create_app() -> t.Any:
    try:
        from flask import Flask, request
    except ImportError as err:
        from . import CommandError

        raise CommandError("the demo needs Flask: pip install 'wsgimirror[demo]'") from err
    app = Flask("wsgimirror-demo")

    @app.route("/api/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def api(rest: str) -> dict[str, t.Any]:
        body = request.get_data()
        return {"path": rest, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    @app.route("/static/<path:name>")
    def static_file(name: str) -> tuple[str, int]:
        return "not mirrored: static files are outside the mirrored route", 404

    return app


def demo_config(sink_ports: dict[str, int]) -> dict[str, t.Any]:
    return {
        "ReverseProxy": {
            "Routes": {"api": {"Match": {"Paths": ["/api/*"]}, "Metadata": {"MirrorCluster": "shadow"}}},
            "Clusters": {
                "shadow": {
                    "LoadBalancingPolicy": "Hash",
                    "Metadata": {"HashBy": "header", "Key": "X-Forwarded-For"},
                    "Destinations": {
                        name: {"Address": f"http://127.0.0.1:{port}"} for name, port in sink_ports.items()
                    },
                }
            },
        }
    }


def run_demo(as_json: bool = False) -> int:
    from gevent.pywsgi import WSGIServer

    from ..middleware import MirrorMiddleware
    from ..util.listen import make_listener
    from .serve import RawTargetHandler
    from .sink import SinkApp

    started = time.monotonic()
    sinks = {name: SinkApp(keep=True) for name in SINKS}
    servers = [
        WSGIServer(make_listener(("127.0.0.1", 0)), app, log=None, handler_class=RawTargetHandler)
        for app in sinks.values()
    ]
    try:
        for srv in servers:
            srv.start()
        ports = {name: srv.server_port for name, srv in zip(SINKS, servers)}
        mirrored = MirrorMiddleware(create_app(), demo_config(ports))
        app_server = WSGIServer(make_listener(("127.0.0.1", 0)), mirrored, log=None)
        servers.append(app_server)
        app_server.start()
        print(f"app on http://127.0.0.1:{app_server.server_port}, mirrors to {ports} (Hash on X-Forwarded-For)\n")
        answers = _send_burst(app_server.server_port)
        _wait_for_mirrors(mirrored)
        mirrored.close(timeout=5)
        ok = _report(answers, sinks, mirrored.stats(), as_json)
    finally:
        for srv in servers:
            srv.stop(timeout=1)
    print(f"\ndone in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


Answer = tuple[str, str, str, int, str, str]  # method, target, client, status, sent sha, sha the app saw


def _send_burst(port: int) -> list[Answer]:
    answers = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for method, target, client, content_type, body, chunked in BURST:
            headers = {"X-Forwarded-For": client}
            if content_type:
                headers["Content-Type"] = content_type
            payload: t.Any = body
            if chunked and body is not None:
                payload = (body[i : i + 65536] for i in range(0, len(body), 65536))
            conn.request(method, target, body=payload, headers=headers, encode_chunked=chunked)
            response = conn.getresponse()
            answer = response.read()
            seen = json.loads(answer)["sha256"][:12] if response.status == 200 else "-"
            answers.append((method, target, client, response.status, _short(body or b""), seen))
    finally:
        conn.close()
    return answers


def _wait_for_mirrors(mirrored: t.Any, timeout: float = 10.0) -> None:
    import gevent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = mirrored.stats()
        if stats["copies"] == stats["mirrored"] + sum(stats["dropped"].values()) and not stats["in_flight"]:
            return
        gevent.sleep(0.01)


def _report(answers: list[Answer], sinks: dict[str, t.Any], stats: dict[str, t.Any], as_json: bool = False) -> bool:
    received = {}
    for name, sink in sinks.items():
        for record in sink.records:
            key = (record["method"], record["target"], record["headers"].get("X-Forwarded-For", "").split(",")[0])
            received[key] = (name, _short(record["body_bytes"]))
    print(
        f"{'#':>2}  {'request':32} {'client':13} {'sent sha256':12} {'app':>4} {'app saw':12} "
        f"{'mirror':7} {'mirror got':12} same"
    )
    ok = True
    for number, (method, target, client, status, digest, seen) in enumerate(answers, 1):
        sink_name, mirror_digest = received.get((method, target, client), ("-", "-"))
        if target.startswith("/api/"):
            same = mirror_digest == digest == seen
        else:
            same = sink_name == "-"  # outside the mirrored route: must not be mirrored
        ok = ok and same
        line = f"{number:>2}  {method + ' ' + target:32} {client:13} {digest:12} {status:>4} {seen:12} {sink_name:7}"
        print(f"{line} {mirror_digest:12} {'yes' if same else 'NO'}")
    if as_json:
        print(f"\nstats: {json.dumps({k: v for k, v in stats.items() if k != 'executor'})}")
    else:
        print()
        print(stats_table(stats))
    for client in sorted({a[2] for a in answers}):
        names = {received[(m, tg, c)][0] for m, tg, c, *_ in answers if c == client and (m, tg, c) in received}
        print(f"client {client:14} -> {', '.join(sorted(names)) or 'not mirrored'}")
    return ok


def stats_table(stats: dict[str, t.Any]) -> str:
    """``mw.stats()`` as a short table: the totals, then each cluster and destination."""
    columns = ("copies", "mirrored", "succeeded", "failed", "dropped")

    def cells(part: dict[str, t.Any]) -> list[str]:
        dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(part.get("dropped", {}).items())) or "0"
        return [str(part.get(key, "-")) for key in columns[:-1]] + [dropped]

    rows = [["total", *cells(stats)]]
    rows += [[f"cluster {name}", *cells(part)] for name, part in sorted(stats["by_cluster"].items())]
    rows += [[f"  {name}", *cells(part)] for name, part in sorted(stats["by_destination"].items())]
    header = ["stats", *columns]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i in (0, len(header) - 1) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in [header, *rows]]  # fmt: skip
    return "\n".join(lines) + "\n(wsgimirror demo --json prints every figure)"


def _short(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:12]
