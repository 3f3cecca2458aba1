"""Secrets in traffic never reach a file, a page or a log line that a mirror writes.

The loop token nowhere; ``Set-Cookie`` and ``Mirror.RemoveHeaders`` out of recorded answers;
credentials, cookies and values named sensitive masked in the diff log's examples and ``/compare``.
Every check reads what a user or an attacker would read: the files, the pages over a real socket,
and the log records.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.gor_format import payloads
from tests.helpers import Client, one_request, wait_until
from wsgimirror.middleware import MirrorMiddleware

TOKEN = "loop-7f3c9a1b2d4e5f60"


def echo_headers(environ, start_response):
    """A candidate that echoes the request it got (httpbin's /anything does): the token comes back in its answer."""
    environ["wsgi.input"].read()
    headers = {k[5:]: v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps({"headers": headers, "args": environ.get("QUERY_STRING", "")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def secret_app(environ, start_response):
    """The app: answers a session cookie, an API key header and a token in its JSON body."""
    environ["wsgi.input"].read()
    body = b'{"token": "bt-app-123", "n": 1, "note": "visible"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Set-Cookie", "sid=sc-app-123; Path=/"),
                              ("X-Api-Key", "ak-app-123"), ("Content-Length", str(len(body)))])  # fmt: skip
    return [body]


def config(candidate: str, tmp_path, **mirror) -> dict:
    return {
        "ReverseProxy": {
            "Routes": {"r": {"Match": {"Paths": ["/{**any}"]},
                             "Metadata": {"MirrorCluster": "candidate,keep", "MirrorCompare": "candidate",
                                          "MirrorRecordResponses": "true"}}},
            "Clusters": {"candidate": {"Destinations": [{"Address": candidate}]},
                         "keep": {"Destinations": [{"Address": f"file://{tmp_path}/t.gor"}]}},
        },
        "Mirror": mirror,
        "Compare": {"Log": str(tmp_path / "diff.jsonl"), "LogSeconds": 0.01},
        "Record": {"FlushSeconds": 0.01},
    }  # fmt: skip


@pytest.fixture
def pages():
    """``pages(mw)``: serve's live report server for ``mw`` on 127.0.0.1, and a getter of its paths."""
    from wsgimirror.commands.serve import _metrics_server

    started = []

    def factory(mw):
        metrics = _metrics_server(("127.0.0.1", 0), mw)
        metrics.start()
        started.append(metrics)

        def get(path: str) -> bytes:
            response = one_request(metrics.address[:2], target=path, host="127.0.0.1")
            assert response.status == 200, path
            return response.body

        return get

    yield factory
    for metrics in started:
        metrics.stop(timeout=1)


def everything_written(mw, tmp_path, get, caplog) -> dict[str, bytes]:
    mw.close()
    (chunk,) = sorted(tmp_path.glob("t_*.gor"))
    return {
        "diff log": (tmp_path / "diff.jsonl").read_bytes(),
        "recording": chunk.read_bytes(),
        "/compare": get("/compare"),
        "/compare.json": get("/compare.json"),
        "/metrics": get("/metrics"),
        "logs": caplog.text.encode(),
    }


def settle(mw, count):
    wait_until(lambda: mw.stats()["compare"]["compared"] == count and mw.stats()["succeeded"] == 2 * count,
               what="the comparisons and recordings")  # fmt: skip


def test_no_file_page_or_log_shows_the_loop_token(server, tmp_path, pages, caplog):
    caplog.set_level(logging.DEBUG, logger="wsgimirror")
    candidate = server(echo_headers)
    mw = MirrorMiddleware(secret_app, config(f"http://127.0.0.1:{candidate[1]}", tmp_path, LoopToken=TOKEN),
                          prometheus=__import__("prometheus_client").CollectorRegistry())  # fmt: skip
    get = pages(mw)
    address = server(mw)
    with Client(address) as client:
        for i in range(3):
            assert client.request("POST", f"/notes/{i}", body=b'{"a": 1}').status == 200
    settle(mw, 3)
    written = everything_written(mw, tmp_path, get, caplog)
    for where, data in written.items():
        assert TOKEN.encode() not in data, where
    assert b"(Mirror.LoopToken)" in written["diff log"]  # the echoed mark is shown replaced, not removed
    [request] = [p for p in payloads(sorted(tmp_path.glob("t_*.gor"))[0]) if p.kind == 1][:1]
    assert request.header("X-Mirrored-By") == "wsgimirror"


def test_recorded_answers_leave_out_set_cookie_and_the_removed_headers(server, tmp_path, pages, caplog):
    candidate = server(echo_headers)
    mw = MirrorMiddleware(secret_app, config(f"http://127.0.0.1:{candidate[1]}", tmp_path,
                                             RemoveHeaders=["X-Api-Key", "Authorization"]))  # fmt: skip
    address = server(mw)
    one_request(address, method="POST", target="/n", body=b"1", headers={"Authorization": "Bearer au-123"})
    settle(mw, 1)
    mw.close()
    (chunk,) = sorted(tmp_path.glob("t_*.gor"))
    request, answer = payloads(chunk)
    assert request.header("Authorization") is None
    assert answer.header("Set-Cookie") is None and answer.header("X-Api-Key") is None
    assert answer.header("Content-Type") == "application/json"
    data = chunk.read_bytes()
    for secret in (b"au-123", b"sc-app-123", b"ak-app-123"):
        assert secret not in data


def test_examples_mask_credentials_cookies_and_values_named_sensitive(server, tmp_path, pages, caplog):
    """What /compare and the diff log show of a request and two answers, with their secrets masked."""
    candidate = server(echo_headers)
    mw = MirrorMiddleware(secret_app, config(f"http://127.0.0.1:{candidate[1]}", tmp_path,
                                             RemoveHeaders=["X-Api-Key"]),
                          prometheus=__import__("prometheus_client").CollectorRegistry())  # fmt: skip
    get = pages(mw)
    address = server(mw)
    headers = {"Authorization": "Bearer au-123", "Cookie": "sessionid=ck-123; theme=dark",
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    one_request(address, method="POST", target="/login?access_token=qt-123&page=2", headers=headers,
                body=b"user=ann&password=pw-123")  # fmt: skip
    settle(mw, 1)
    written = everything_written(mw, tmp_path, get, caplog)
    for where in ("diff log", "/compare"):
        shown = written[where]
        if where == "diff log":  # bodies are base64 in the log: decode what an example shows
            example = next(json.loads(line) for line in shown.splitlines() if b'"example"' in line)
            shown = json.dumps(example).encode() + b"".join(
                __import__("base64").b64decode(example[side]["body"]) for side in ("request", "app", "mirror")
            )
        for secret in (b"au-123", b"ck-123", b"qt-123", b"pw-123", b"sc-app-123", b"ak-app-123", b"bt-app-123"):
            assert secret not in shown, (where, secret)
        # The page shows the answers (the mirror's echoes the request); the log the request too, with its
        # Authorization as "Bearer ***".
        for kept in (b"theme=dark", b"page=2", b"visible") + (
            (b"user=ann", b"Bearer ***") if where == "diff log" else ()
        ):
            assert kept in shown, (where, kept)


def hostile_keys(environ, start_response):
    """A candidate whose JSON keys are a lone surrogate and a terminal escape sequence."""
    environ["wsgi.input"].read()
    body = b'{"\\ud800": 1, "\\u001b]0;pwned\\u0007\\u001b[31mred": 2}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def test_text_from_traffic_that_is_not_valid_unicode_or_drives_a_terminal_breaks_no_page_or_report(
    server, tmp_path, pages, capsys
):
    """One answer {"\\ud800": 1} made /metrics and /compare answer 500 until restart, and report crash."""
    from wsgimirror.commands.cli import main

    candidate = server(hostile_keys)
    configured = config(f"http://127.0.0.1:{candidate[1]}", tmp_path)
    configured["Compare"].update(MinSamples=1, Confidence=90, AddedFields="regression")  # one comparison judges
    mw = MirrorMiddleware(secret_app, configured, prometheus=__import__("prometheus_client").CollectorRegistry())
    get = pages(mw)
    one_request(server(mw), target="/x")
    settle(mw, 1)
    for path in ("/metrics", "/compare", "/compare.json"):
        assert b"\x1b" not in get(path)  # 200 (or the getter fails), and no escape sequence
    mw.close()
    page = get("/compare")
    assert b"body.\\ud800" in page and b"\x1b" not in page
    log = str(tmp_path / "diff.jsonl")
    assert main(["report", log]) == 1  # the candidate's extra fields regress
    out = capsys.readouterr().out
    assert "body.\\ud800" in out and "\x1b" not in out and "\x07" not in out
    assert "body.\\x1b]0;pwned\\x07\\x1b[31mred" in out  # shown, escaped
    assert main(["report", log, "--html", str(tmp_path / "page.html")]) == 1
    assert b"body.\\ud800" in (tmp_path / "page.html").read_bytes()
