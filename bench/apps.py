"""The apps and cases the benchmark serves: a Flask JSON endpoint and a plain WSGI endpoint, each bare or wrapped."""

from __future__ import annotations

import typing as t

CASES = ("bare", "nomatch", "sample0", "sample10", "fast", "slow", "dead")
CASE_LABELS = {
    "bare": "bare app",
    "nomatch": "wrapped, no route matches",
    "sample0": "wrapped, sampled at 0 %",
    "sample10": "10 % to the fast sink",
    "fast": "100 % to the fast sink",
    "slow": "100 % to a sink answering after 200 ms",
    "dead": "100 % to a port where nothing listens",
}
BODY = b'{"user": "bench", "items": [' + b",".join(b'"item-%04d"' % i for i in range(84)) + b"]}"
assert 1000 <= len(BODY) <= 1100, len(BODY)  # about 1 KiB


def flask_app() -> t.Any:
    from flask import Flask, request

    app = Flask("bench")

    @app.post("/api/echo")
    def echo() -> dict[str, t.Any]:
        data = request.get_json()
        return {"user": data["user"], "items": len(data["items"])}

    return app


def plain_app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    answer = b'{"bytes": %d}' % len(body)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


def config(case: str, fast_port: int, slow_port: int, dead_port: int, **mirror: t.Any) -> dict[str, t.Any]:
    port = {"slow": slow_port, "dead": dead_port}.get(case, fast_port)
    percent = {"sample0": 0, "sample10": 10}.get(case, 100)
    paths = ["/never/*"] if case == "nomatch" else ["/api/*"]  # the upload app is served at /api/upload
    return {
        "ReverseProxy": {
            "Routes": {"api": {"Match": {"Paths": paths}, "Metadata": {"MirrorCluster": "shadow"}}},
            "Clusters": {
                "shadow": {
                    "Metadata": {"MirrorPercent": percent},
                    "Destinations": [{"Address": f"http://127.0.0.1:{port}"}],
                }
            },
        },
        "Mirror": mirror,
    }


def build(app_name: str, case: str, fast_port: int, slow_port: int, dead_port: int, **mirror: t.Any) -> t.Any:
    """The app, bare or wrapped. ``BENCH_AGENT`` (a socket path) sends its mirrors through an agent there;
    otherwise they are sent in-process. ``BENCH_COMPARE`` compares every mirror's answer with the app's."""
    import os

    from wsgimirror.middleware import MirrorMiddleware

    app = {
        "flask": flask_app,
        "plain": lambda: plain_app,
        "upload": lambda: upload_app,
        "bigjson": lambda: bigjson_app,
    }[app_name]()
    if case == "bare":
        return app
    configured = config(case, fast_port, slow_port, dead_port, **mirror)
    socket = os.environ.get("BENCH_AGENT")
    os.environ["WSGIMIRROR_AGENT"] = "embedded" if socket else "in-process"
    if socket:
        configured["Agent"] = {"Socket": socket, "IdleSeconds": 60}
    if os.environ.get("BENCH_COMPARE"):
        configured["ReverseProxy"]["Routes"]["api"]["Metadata"]["MirrorCompare"] = "shadow"
        configured["Compare"] = {"MaxPerSecond": 1000}
    return MirrorMiddleware(app, configured)


def nested_document(size: int, depth: int = 10, variant: int = 0) -> bytes:
    """About ``size`` bytes of JSON nested ``depth`` levels, whose leaves are lists of small records; a
    ``variant`` changes one value in twenty, as a candidate that answers a little differently would."""
    import json

    leaves = max(1, size // 60)
    records = [{"id": i, "name": f"n{i}", "price": i * 3 + (variant if i % 20 == 0 else 0)} for i in range(leaves)]
    document: t.Any = records
    for level in range(depth):
        document = {f"level{level}": document, "meta": {"depth": level}}
    return json.dumps(document).encode()


BIG = nested_document(900_000)  # about 700 KB


def bigjson_app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
    """/api/big answers about 700 KB of JSON nested 10 levels; any other path (unmirrored) a few bytes."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = BIG if environ["PATH_INFO"].startswith("/api/") else b'{"pong": true}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def upload_app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
    """Streams the body through in 64 KiB pieces, as an upload endpoint that stores to disk would."""
    stream = environ["wsgi.input"]
    total = 0
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        total += len(piece)
    answer = b'{"bytes": %d}' % total
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]
