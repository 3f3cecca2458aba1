"""End to end: a real gevent server wrapping real apps, mirrors to real recording sinks."""

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import flask
import gevent
import pytest
from werkzeug.middleware.lint import LintMiddleware

from tests.helpers import Client, free_port, mirror_config, one_request, open_files, request_bytes, wait_until
from wsgimirror.middleware import MirrorMiddleware

SEED = Path(__file__).parent.parent / "data" / "seed.json"
BIG = os.urandom(3 * 1024 * 1024 + 17)


def digest_app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [hashlib.sha256(body).hexdigest().encode()]


def unread_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"did not read"]


def lazy_app(environ, start_response):
    """Reads the body in pieces while the response is being iterated."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    stream = environ["wsgi.input"]

    def generate():
        while True:
            piece = stream.read(40_000)
            if not piece:
                return
            yield b"%d\n" % len(piece)

    return generate()


def line_app(environ, start_response):
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = list(stream)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d lines" % (len(rest) + bool(first))]


def partial_app(environ, start_response):
    environ["wsgi.input"].read(1000)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"read 1000"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_identity(stats: dict) -> None:
    assert stats["copies"] == stats["mirrored"] + sum(stats["dropped"].values()), stats
    assert stats["mirrored"] == stats["succeeded"] + stats["failed"] + stats["in_flight"], stats


# -- the seed's configuration -----------------------------------------------------------------------


def test_the_seed_config_mirrors_matching_hosts(server, sink):
    config = json.loads(SEED.read_text())
    config["ReverseProxy"]["Clusters"]["apidemoMirror"]["Destinations"] = [{"Address": sink.address + "/"}]
    mw = MirrorMiddleware(digest_app, config)
    address = server(mw)
    with Client(address) as client:
        response = client.request("POST", "/orders?id=7", {"X-Forwarded-For": "198.51.100.4"}, b"{}", host="api.com")
        assert response.status == 200
        assert client.request("GET", "/", host="other.com").status == 200
    (got,) = sink.wait_for(1)
    assert (got.method, got.target, got.body) == ("POST", "/orders?id=7", b"{}")
    assert got.headers["x-forwarded-for"] == "198.51.100.4, 127.0.0.1"
    assert got.headers["x-forwarded-host"] == "api.com"
    wait_until(lambda: mw.stats()["succeeded"] == 1)
    stats = mw.stats()
    assert (stats["requests"], stats["matched"], stats["mirrored"]) == (2, 1, 1)
    assert_identity(stats)


# -- bodies, byte for byte ---------------------------------------------------------------------------


@pytest.mark.parametrize("app", [digest_app, unread_app, lazy_app, line_app, partial_app])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("body", [b"", b"small\nbody\n", BIG], ids=["empty", "small", "3MiB"])
def test_bodies_are_mirrored_byte_for_byte(server, sink, app, chunked, body):
    mw = MirrorMiddleware(app, mirror_config(sink.address, MemoryBodyBytes=64 * 1024))
    address = server(mw)
    response = one_request(address, method="POST", target="/upload", body=body, chunked=chunked)
    assert response.status == 200
    if app is digest_app:
        assert response.body == sha(body).encode()
    (got,) = sink.wait_for(1)
    assert len(got.body) == len(body) and sha(got.body) == sha(body)
    assert got.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in got.headers


def test_flask_json_and_form_bodies(server, sink):
    app = flask.Flask(__name__)

    @app.post("/json")
    def json_endpoint():
        return {"got": flask.request.get_json()["n"]}

    @app.post("/form")
    def form_endpoint():
        return flask.request.form["name"]

    @app.post("/raw")
    def raw_endpoint():
        return str(len(flask.request.get_data()))

    address = server(MirrorMiddleware(app, mirror_config(sink.address, MemoryBodyBytes=1024)))
    with Client(address) as client:
        r1 = client.request("POST", "/json", {"Content-Type": "application/json"}, b'{"n": 41}')
        r2 = client.request("POST", "/form", {"Content-Type": "application/x-www-form-urlencoded"}, b"name=ada+l")
        r3 = client.request("POST", "/raw", {"Content-Type": "application/octet-stream"}, BIG)
    assert (json.loads(r1.body), r2.body, r3.body) == ({"got": 41}, b"ada l", str(len(BIG)).encode())
    got = sink.wait_for(3)
    bodies = {r.target: r.body for r in got}
    assert bodies == {"/json": b'{"n": 41}', "/form": b"name=ada+l", "/raw": BIG}
    assert {r.target: r.headers["content-type"] for r in got}["/form"] == "application/x-www-form-urlencoded"


# -- the request line and headers ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND"])
def test_methods_and_query_strings(server, sink, method):
    address = server(MirrorMiddleware(digest_app, mirror_config(sink.address)))
    body = b"payload" if method in ("POST", "PUT", "PATCH") else None
    target = "/caf%C3%A9/a%20b?q=%E2%9C%93&empty=&flag&x=1&x=2"
    assert one_request(address, method=method, target=target, body=body).status == 200
    (got,) = sink.wait_for(1)
    assert (got.method, got.target, got.body) == (method, target, body or b"")


def test_the_base_path_of_the_destination_is_prefixed(server, sink):
    address = server(MirrorMiddleware(digest_app, mirror_config(sink.address + "/shadow/v2/")))
    one_request(address, target="/items?a=1")
    assert sink.wait_for(1)[0].target == "/shadow/v2/items?a=1"


def test_header_rules_on_the_wire(server, sink):
    address = server(MirrorMiddleware(digest_app, mirror_config(sink.address)))
    headers = {
        "X-Trace": "t-1",
        "Cookie": "a=1",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "private",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic eA==",
        "X-Forwarded-For": "203.0.113.9",
        "X-Mirrored-By-Other": "ok",
    }
    one_request(address, method="POST", target="/h", headers=headers, body=b"abc", host="shop.example:8443")
    got = sink.wait_for(1)[0].headers
    assert got["host"] == f"127.0.0.1:{sink.port}"
    assert got["x-trace"] == "t-1" and got["cookie"] == "a=1" and got["x-mirrored-by-other"] == "ok"
    assert got["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert got["x-forwarded-host"] == "shop.example:8443"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-mirrored-by"] == "wsgimirror"
    assert got["content-length"] == "3"
    for hop in ("x-hop", "keep-alive", "proxy-authorization", "connection"):
        assert hop not in got or (hop == "connection" and got[hop] != "keep-alive, X-Hop")


def test_the_snapshot_is_taken_before_the_app_rewrites_environ(server, sink):
    def rewriting_app(environ, start_response):
        environ["PATH_INFO"] = "/rewritten"
        environ["REQUEST_METHOD"] = "GET"
        environ["HTTP_X_USER"] = "mallory"
        return digest_app(environ, start_response)

    address = server(MirrorMiddleware(rewriting_app, mirror_config(sink.address)))
    one_request(address, method="POST", target="/original", headers={"X-User": "alice"}, body=b"b")
    got = sink.wait_for(1)[0]
    assert (got.method, got.target, got.headers["x-user"]) == ("POST", "/original", "alice")


# -- the real response is never changed -----------------------------------------------------------------


def test_the_response_and_its_framing_are_unchanged(server, sink):
    def listed(environ, start_response):
        start_response("201 Created", [("X-App", "1")])
        return [b"a", b"bc"]

    def generated(environ, start_response):
        start_response("200 OK", [("X-App", "2")])
        return (part for part in [b"x", b"yz"])

    for app in (listed, generated):
        bare = one_request(server(app), target="/")
        wrapped = one_request(server(MirrorMiddleware(app, mirror_config(sink.address))), target="/")
        assert (wrapped.status, wrapped.body) == (bare.status, bare.body)
        bare.headers.pop("date"), wrapped.headers.pop("date")
        assert wrapped.headers == bare.headers
    assert "content-length" in one_request(server(MirrorMiddleware(listed, mirror_config(sink.address)))).headers


def test_a_wsgi_lint_check_passes_on_both_sides(server, sink):
    app = LintMiddleware(MirrorMiddleware(LintMiddleware(lazy_app), mirror_config(sink.address)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = one_request(server(app), method="POST", target="/", body=BIG[:100_000])
    assert response.status == 200 and [str(w.message) for w in caught] == []
    assert sink.wait_for(1)[0].body == BIG[:100_000]


def test_the_mirror_goes_out_when_the_app_raises(server, sink):
    def failing(environ, start_response):
        environ["wsgi.input"].read(10)
        raise RuntimeError("app bug")

    mw = MirrorMiddleware(failing, mirror_config(sink.address))
    response = one_request(server(mw), method="POST", target="/boom", body=b"0123456789abcdef")
    assert response.status == 500
    got = sink.wait_for(1)[0]
    assert (got.target, got.body) == ("/boom", b"0123456789abcdef")


def test_the_mirror_goes_out_when_the_response_iterator_raises(server, sink):
    def failing(environ, start_response):
        start_response("200 OK", [])

        def generate():
            yield b"partial"
            raise RuntimeError("iterator bug")

        return generate()

    mw = MirrorMiddleware(failing, mirror_config(sink.address))
    with pytest.raises(ConnectionError, match="in the middle of a chunked body"):
        one_request(server(mw), method="POST", target="/boom", body=b"xyz")
    assert sink.wait_for(1)[0].body == b"xyz"


def test_an_unmatched_request_reaches_the_app_untouched(server, sink):
    seen = {}

    def app(environ, start_response):
        seen["input"] = type(environ["wsgi.input"]).__name__
        return digest_app(environ, start_response)

    config = mirror_config(sink.address, route={"Match": {"Paths": ["/api*"]}, "Metadata": {"MirrorCluster": "m"}})
    mw = MirrorMiddleware(app, config)
    assert one_request(server(mw), method="POST", target="/static/x", body=b"abc").status == 200
    assert seen["input"] == "Input"  # gevent's own, not wrapped
    assert mw.stats()["matched"] == 0 and sink.requests == []


# -- mirrors that fail or are slow never reach the client --------------------------------------------


def test_a_dead_mirror_costs_the_client_nothing(server, caplog, hub_errors):
    mw = MirrorMiddleware(digest_app, mirror_config(f"http://127.0.0.1:{free_port()}", BreakerFailures=0))
    address = server(mw)
    with caplog.at_level(logging.WARNING, logger="wsgimirror"), Client(address) as client:
        for i in range(20):
            response = client.request("POST", f"/r{i}", body=b"data")
            assert (response.status, response.body) == (200, sha(b"data").encode())
        wait_until(lambda: mw.stats()["failed"] == 20)
    stats = mw.stats()
    assert stats["failures"] == {"refused": 20} and stats["in_flight"] == 0
    assert_identity(stats)
    lines = [r for r in caplog.records if r.name.startswith("wsgimirror")]
    assert len(lines) == 1 and "refused" in lines[0].getMessage()
    assert hub_errors.getvalue() == ""


def test_a_slow_mirror_does_not_delay_the_next_request_on_the_connection(server, make_sink):
    slow = make_sink(delay=1.0)
    mw = MirrorMiddleware(digest_app, mirror_config(slow.address))
    address = server(mw)
    timings = []
    with Client(address) as client:
        for i in range(3):
            start = time.monotonic()
            assert client.request("POST", f"/r{i}", body=b"x" * 1000).status == 200
            timings.append(time.monotonic() - start)
    assert max(timings) < 0.5, timings  # each would take 1 s if it waited for its mirror
    assert mw.stats()["in_flight"] == 3
    slow.wait_for(3)
    wait_until(lambda: mw.stats()["succeeded"] == 3)


def test_the_mirror_timeout_is_counted(server, make_sink):
    slow = make_sink(delay=2.0)
    mw = MirrorMiddleware(digest_app, mirror_config(slow.address, Timeout=0.3))
    one_request(server(mw), target="/")
    wait_until(lambda: mw.stats()["failed"] == 1)
    assert mw.stats()["failures"] == {"timeout": 1}


def test_a_full_backlog_drops_mirrors_without_waiting(server, make_sink):
    slow = make_sink(delay=0.5)
    mw = MirrorMiddleware(digest_app, mirror_config(slow.address, MaxInFlight=2))
    address = server(mw)
    start = time.monotonic()
    with Client(address) as client:
        for i in range(5):
            assert client.request("POST", f"/r{i}", body=b"b").status == 200
    assert time.monotonic() - start < 0.4
    stats = mw.stats()
    assert stats["mirrored"] == 2 and stats["dropped"] == {"backlog_full": 3}
    slow.wait_for(2)
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    assert_identity(mw.stats())


def test_mirror_error_statuses_count_as_answered(server, make_sink):
    failing = make_sink(status=503)
    mw = MirrorMiddleware(digest_app, mirror_config(failing.address))
    assert one_request(server(mw), target="/").status == 200
    wait_until(lambda: mw.stats()["succeeded"] == 1)
    assert mw.stats()["statuses"] == {"5xx": 1}


# -- requests that are not mirrored --------------------------------------------------------------------


def test_a_mirrored_request_is_never_mirrored_again(server, sink):
    mw = MirrorMiddleware(digest_app, mirror_config(sink.address))
    one_request(server(mw), target="/", headers={"X-Mirrored-By": "wsgimirror"})
    assert mw.stats()["dropped"] == {"loop": 1} and sink.requests == []


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_body_over_the_maximum_is_not_mirrored(server, sink, chunked):
    mw = MirrorMiddleware(digest_app, mirror_config(sink.address, MaxBodyBytes=100_000, MemoryBodyBytes=1000))
    response = one_request(server(mw), method="POST", target="/", body=BIG[:200_000], chunked=chunked)
    assert response.body == sha(BIG[:200_000]).encode()
    wait_until(lambda: sum(mw.stats()["dropped"].values()) == 1)
    assert mw.stats()["dropped"] == {"body_too_large": 1} and sink.requests == []


def test_a_client_that_aborts_mid_body_is_not_mirrored(server, sink):
    mw = MirrorMiddleware(unread_app, mirror_config(sink.address))
    address = server(mw)
    with Client(address) as client:
        client.send(request_bytes("POST", "/upload", {"Content-Length": "100000"})[:-2] + b"\r\n" + b"x" * 5000)
    wait_until(lambda: mw.stats()["dropped"].get("incomplete_body") == 1)
    assert one_request(address, target="/after").status == 200
    sink.wait_for(1)
    assert [r.target for r in sink.requests] == ["/after"]


def test_expect_continue_answered_without_reading_is_not_mirrored_and_the_connection_stays_clean(server, sink):
    def deny(environ, start_response):
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"no"]

    mw = MirrorMiddleware(deny, mirror_config(sink.address))
    with Client(server(mw)) as client:
        client.send(request_bytes("POST", "/upload", {"Expect": "100-continue", "Content-Length": "5"}))
        response = client.read_response()
        assert (response.status, response.body) == (401, b"no")
        client.send(b"hello")  # the client sends its body anyway, as curl does after a second
        assert client.request("GET", "/next").status == 401  # the next answer is not a stray 100 Continue
    assert mw.stats()["dropped"] == {"expect_continue": 1}
    assert [r.target for r in sink.wait_for(1)] == ["/next"]


def test_expect_continue_read_by_the_app_is_mirrored(server, sink):
    mw = MirrorMiddleware(digest_app, mirror_config(sink.address))
    with Client(server(mw)) as client:
        client.send(request_bytes("POST", "/upload", {"Expect": "100-continue", "Content-Length": "5"}))
        assert client.read_response().status == 100
        client.send(b"hello")
        assert client.read_response().body == sha(b"hello").encode()
    got = sink.wait_for(1)[0]
    assert got.body == b"hello" and "expect" not in got.headers


# -- lifecycle ---------------------------------------------------------------------------------------------


def test_close_waits_for_mirrors_in_flight_and_then_drops_new_ones(server, make_sink):
    slow = make_sink(delay=0.3)
    mw = MirrorMiddleware(digest_app, mirror_config(slow.address))
    address = server(mw)
    for i in range(3):
        one_request(address, target=f"/{i}")
    assert mw.close(timeout=5) is True
    stats = mw.stats()
    assert (stats["succeeded"], stats["in_flight"]) == (3, 0)
    one_request(address, target="/late")
    assert mw.stats()["dropped"] == {"closed": 1}


def test_several_clusters_each_get_a_copy_of_one_capture(server, make_sink):
    a, b = make_sink(), make_sink()
    config = mirror_config(a.address, MemoryBodyBytes=1000)
    config["ReverseProxy"]["Clusters"]["n"] = {"Destinations": [{"Address": b.address}]}
    config["ReverseProxy"]["Routes"]["all"]["Metadata"]["MirrorCluster"] = "m,n"
    mw = MirrorMiddleware(digest_app, config)
    one_request(server(mw), method="POST", target="/both", body=BIG)
    assert a.wait_for(1)[0].body == BIG and b.wait_for(1)[0].body == BIG
    wait_until(lambda: mw.stats()["succeeded"] == 2)
    assert mw.stats()["copies"] == 2


def test_temporary_files_and_sockets_are_not_leaked(server, sink):
    mw = MirrorMiddleware(digest_app, mirror_config(sink.address, MemoryBodyBytes=1000))
    address = server(mw)
    one_request(address, method="POST", target="/warm", body=BIG[:50_000])
    wait_until(lambda: mw.stats()["succeeded"] == 1)
    before = open_files()
    with Client(address) as client:
        for i in range(30):
            client.request("POST", f"/{i}", body=BIG[: 20_000 + i])
    wait_until(lambda: mw.stats()["succeeded"] == 31)
    gevent.sleep(0.05)
    after = open_files()
    assert len(after) <= len(before) + 1  # at most one more pooled connection
    assert {f for f in after if "(deleted)" in f} <= set(before)  # no temp file of ours is open


def test_transforms_shape_the_mirror_only(server, sink):
    seen = {}

    def app(environ, start_response):
        seen.update(path=environ["PATH_INFO"], query=environ["QUERY_STRING"], cookie=environ.get("HTTP_COOKIE"))
        return digest_app(environ, start_response)

    route = {
        "Match": {"Paths": ["/api/*"]},
        "Metadata": {"MirrorCluster": "m"},
        "Transforms": [
            {"PathRemovePrefix": "/api"},
            {"PathPrefix": "/v2"},
            {"RequestHeader": "X-Env", "Set": "shadow"},
            {"QueryRemoveParameter": "token"},
        ],
    }
    config = mirror_config(sink.address, route=route, RemoveHeaders=["Cookie", "Authorization"])
    address = server(MirrorMiddleware(app, config))
    headers = {"Cookie": "sid=secret", "Authorization": "Bearer t", "X-Env": "prod"}
    one_request(address, method="POST", target="/api/orders?token=abc&id=7", headers=headers, body=b"{}")
    got = sink.wait_for(1)[0]
    assert (got.target, got.body) == ("/v2/orders?id=7", b"{}")
    assert got.headers["x-env"] == "shadow"
    assert "cookie" not in got.headers and "authorization" not in got.headers
    assert seen == {"path": "/api/orders", "query": "token=abc&id=7", "cookie": "sid=secret"}


def test_least_requests_sends_each_mirror_where_the_fewest_are_in_flight(server, make_sink):
    first, second = make_sink(delay=2.0), make_sink(delay=2.0)  # every mirror stays in flight for the test
    mw = MirrorMiddleware(unread_app, mirror_config(first.address, second.address, policy="LeastRequests"))
    with Client(server(mw)) as client:
        for i in range(4):
            client.request("GET", f"/{i}")
            wait_until(lambda: mw.stats()["mirrored"] == i + 1)  # noqa: B023 - waited for here
    # 0 and 0: the first; 1 and 0: the second; 1 and 1: the first; 2 and 1: the second.
    assert sorted(r.target for r in first.wait_for(2)) == ["/0", "/2"]
    assert sorted(r.target for r in second.wait_for(2)) == ["/1", "/3"]
    wait_until(lambda: mw.stats()["succeeded"] == 4, 10)
    first.delay = second.delay = 0.0
    with Client(server(mw)) as client:  # one at a time, each ended before the next: always a tie, always the first
        for i in range(4, 6):
            client.request("GET", f"/{i}")
            wait_until(lambda: mw.stats()["succeeded"] == i + 1)  # noqa: B023 - waited for here
    assert sorted(r.target for r in first.wait_for(4)) == ["/0", "/2", "/4", "/5"]
    mw.close()
