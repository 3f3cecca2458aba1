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
    from wsgimirror import MirrorMiddleware

    app = {"flask": flask_app, "plain": lambda: plain_app, "upload": lambda: upload_app}[app_name]()
    if case == "bare":
        return app
    return MirrorMiddleware(app, config(case, fast_port, slow_port, dead_port, **mirror))


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
