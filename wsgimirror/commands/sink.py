"""``wsgimirror sink``: a server that receives mirrored requests and shows or records them.

One line per request on stdout (time, method, target, body length, a few headers) and,
with ``--out``, one JSON line per request with method, path, query, headers and the body
in base64. The demo and the tests use :class:`SinkApp` in-process.
"""

from __future__ import annotations

import base64
import datetime
import http
import json
import logging
import signal
import sys
import typing as t

from ..send.head import header_name
from ..util.text import printable
from .serve import RawTargetHandler

log = logging.getLogger("wsgimirror.sink")

SHOWN_HEADERS = ("X-Forwarded-For", "X-Forwarded-Host", "Content-Type", "X-Mirrored-By")


class SinkApp:
    """A WSGI app that records each request it receives and answers ``status`` after ``delay`` seconds."""

    def __init__(
        self,
        out: t.TextIO | None = None,
        echo: t.TextIO | None = None,
        delay: float = 0.0,
        status: int = 200,
        keep: bool = False,
    ) -> None:
        self.out = out
        self.echo = echo
        self.delay = delay
        self.status = f"{status} {_phrase(status)}"
        self.records: list[dict[str, t.Any]] | None = [] if keep else None
        self.count = 0

    def malformed(self, requestline: str, reason: str) -> None:
        """A request the server answered 400 before the app saw it (a HEAD with a body, a bad length): shown and
        counted like any other, its reason in place of the body's length."""
        self.count += 1
        if self.echo is not None:
            now = datetime.datetime.now().isoformat(timespec="milliseconds")
            shown = printable(requestline.strip()) or "(no request line)"
            print(f"{now} 400 malformed: {shown}: {printable(reason)}", file=self.echo)
            self.echo.flush()

    def __call__(self, environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
        body = _read_all(environ["wsgi.input"])
        record = _record(environ, body)
        self.count += 1
        if self.records is not None:
            self.records.append(record)
        if self.echo is not None:
            shown = " ".join(f"{k}={v}" for k, v in record["headers"].items() if k in SHOWN_HEADERS)
            print(f"{record['time']} {record['method']} {record['target']} {len(body)} B {shown}", file=self.echo)
            self.echo.flush()
        if self.out is not None:
            self.out.write(json.dumps({k: v for k, v in record.items() if k != "body_bytes"}) + "\n")
            self.out.flush()
        if self.delay:
            import gevent

            gevent.sleep(self.delay)
        start_response(self.status, [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return []


def _read_all(stream: t.Any) -> bytes:
    parts: list[bytes] = []
    while True:
        piece = stream.read(65536)
        if not piece:
            return b"".join(parts)
        parts.append(piece)


def _record(environ: dict[str, t.Any], body: bytes) -> dict[str, t.Any]:
    target = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
    path, _, query = target.partition("?")
    headers = {header_name(k[5:]): v for k, v in environ.items() if k.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[header_name(key)] = environ[key]
    return {
        "time": datetime.datetime.now().isoformat(timespec="milliseconds"),
        "method": environ["REQUEST_METHOD"],
        "target": target,
        "path": path,
        "query": query,
        "headers": headers,
        "body_length": len(body),
        "body": base64.b64encode(body).decode("ascii"),
        "body_bytes": body,
    }


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class SinkHandler(RawTargetHandler):
    """gevent's handler, telling the sink about the requests it refuses instead of writing to stderr."""

    def _handle_client_error(self, ex: Exception) -> t.Any:
        reason = getattr(ex, "formatted_message", None) or str(ex) or ex.__class__.__name__
        self.server.application.malformed(getattr(self, "requestline", None) or "", reason)
        return ("400", b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")


def run_sink(bind: tuple[str, int], out: t.TextIO | None, delay: float, status: int, out_path: str = "") -> int:
    """Serve until SIGTERM or SIGINT; ``out`` (``out_path``, opened by the command) takes a JSON line per request."""
    import gevent
    from gevent.event import Event
    from gevent.pywsgi import WSGIServer

    from ..util.listen import make_listener

    app = SinkApp(out=out, echo=sys.stdout, delay=delay, status=status)
    server = WSGIServer(make_listener(bind), app, log=None, handler_class=SinkHandler)
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    server.start()
    log.info("sink listening on http://%s:%d%s", *server.address[:2], f", recording to {out_path}" if out else "")
    stop.wait()
    server.stop(timeout=1)
    log.info("sink stopped after %d requests", app.count)
    return 0
