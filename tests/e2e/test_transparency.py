"""The middleware changes nothing a reader of the request sees, and accounts for copies nobody closes.

Test clients (werkzeug's, Flask's) call apps without sockets, re-send input streams on
redirects, leave ``wsgi.input`` out and never close responses: a user's own test suite
must behave the same with the middleware in place.
"""

import gc
import io
import logging

import flask
import pytest
from werkzeug.test import Client as WerkzeugClient

from tests.helpers import Client, assert_accounted, mirror_config, open_files, wait_until
from wsgimirror.middleware import MirrorMiddleware

TOKEN = "s3cret-loop-token-0123456789"


def echo(environ, start_response):
    """Answers 307 to /redirect without reading; elsewhere echoes the body it read."""
    if environ["PATH_INFO"] == "/redirect":
        start_response("307 Temporary Redirect", [("Location", "/target")])
        return [b""]
    body = environ["wsgi.input"].read() if "wsgi.input" in environ else b"(no input)"
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def environ_for(body: bytes = b"", **extra) -> dict:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/x",
        "SERVER_NAME": "app.test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    environ.update(extra)
    return environ


def start_response(status, headers, exc_info=None):
    return lambda data: None


# -- finding 12: draining the unread body never changes what the app sees next --------------------------


@pytest.mark.parametrize("code", [307, 308])
def test_a_redirect_that_resends_the_input_sees_the_whole_body_with_the_middleware(sink, code):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/redirect":
            start_response(f"{code} Redirect", [("Location", "/target")])
            return [b""]
        return echo(environ, start_response)

    bare = WerkzeugClient(app).post("/redirect", data=b"the body", follow_redirects=True)
    mw = MirrorMiddleware(app, mirror_config(sink.address))
    with WerkzeugClient(mw).post("/redirect", data=b"the body", follow_redirects=True) as wrapped:
        assert bare.data == b"the body"
        assert wrapped.data == bare.data
    assert sorted(r.body for r in sink.wait_for(2)) == [b"the body", b"the body"]


def test_flask_redirect_debugging_behaves_the_same_wrapped(sink):
    app = flask.Flask(__name__)

    @app.route("/post/", methods=["POST"])
    def post():
        return flask.request.get_data()

    app.wsgi_app = MirrorMiddleware(app.wsgi_app, mirror_config(sink.address))
    response = app.test_client().post("/post", data=b"abc", follow_redirects=True)
    assert (response.status_code, response.data) == (200, b"abc")


# -- finding 14: an environ without wsgi.input ------------------------------------------------------------


def test_an_environ_without_input_is_served_and_its_copy_dropped_without_a_traceback(sink, caplog):
    mw = MirrorMiddleware(echo, mirror_config(sink.address))
    environ = environ_for()
    del environ["wsgi.input"]
    with caplog.at_level(logging.DEBUG, logger="wsgimirror"):
        result = mw(environ, start_response)
        assert b"".join(result) == b"(no input)"
    stats = mw.stats()
    assert stats["dropped"] == {"no_input": 1}
    assert_accounted(stats)
    assert caplog.records == []


# -- finding 15: responses never closed -------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 200_000])  # in memory, and spilled to a temporary file
def test_a_response_discarded_without_close_frees_its_capture_and_is_accounted(sink, size):
    mw = MirrorMiddleware(echo, mirror_config(sink.address, MemoryBodyBytes=1000))
    gc.collect()
    files_before = len(open_files())
    result = mw(environ_for(b"x" * size), start_response)
    assert b"".join(result) == b"x" * size
    stats = mw.stats()
    assert stats["pending"] == 1 and stats["capture"]["memory_bytes"] + stats["capture"]["disk_bytes"] == size
    assert_accounted(stats)
    del result
    gc.collect()
    stats = mw.stats()
    assert (stats["pending"], stats["dropped"], stats["mirrored"]) == (0, {"not_closed": 1}, 0)
    assert stats["capture"] == {"memory_bytes": 0, "disk_bytes": 0}
    assert len(open_files()) == files_before  # the temporary file is closed
    assert_accounted(stats)


def test_a_test_client_that_never_closes_leaves_no_copy_unaccounted(sink):
    mw = MirrorMiddleware(echo, mirror_config(sink.address))
    client = WerkzeugClient(mw)
    for i in range(20):
        client.post(f"/r{i}", data=b"x")  # werkzeug's client closes some responses, drops others
    gc.collect()
    stats = mw.stats()
    assert stats["copies"] == 20 and stats["pending"] == 0
    assert_accounted(stats)


# -- finding 10: clients cannot switch mirroring off; bad Hosts and floods stay quiet -------------------


def test_with_a_loop_token_a_forged_mark_is_stripped_and_the_request_mirrored(server, sink):
    mw = MirrorMiddleware(echo, mirror_config(sink.address, LoopToken=TOKEN))
    with Client(server(mw)) as client:
        client.request("POST", "/forged", headers={"X-Mirrored-By": "wsgimirror"}, body=b"a")
        client.request("POST", "/empty", headers={"X-Mirrored-By": ""}, body=b"b")
        client.request("POST", "/real-loop", headers={"X-Mirrored-By": TOKEN}, body=b"c")
    got = sink.wait_for(2)
    assert sorted(r.target for r in got) == ["/empty", "/forged"]  # sent concurrently: in either order
    assert all(r.headers["x-mirrored-by"] == TOKEN for r in got)
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    assert mw.stats()["dropped"] == {"loop": 1}


def test_without_a_loop_token_any_mark_stops_the_mirror(server, sink):
    mw = MirrorMiddleware(echo, mirror_config(sink.address))
    with Client(server(mw)) as client:
        client.request("POST", "/a", headers={"X-Mirrored-By": ""}, body=b"a")
    assert mw.stats()["dropped"] == {"loop": 1}


def test_two_apps_mirroring_to_each_other_with_a_token_do_not_loop(server):
    from tests.helpers import free_port

    port_a, port_b = free_port(), free_port()
    a = MirrorMiddleware(echo, mirror_config(f"http://127.0.0.1:{port_b}", LoopToken=TOKEN))
    b = MirrorMiddleware(echo, mirror_config(f"http://127.0.0.1:{port_a}", LoopToken=TOKEN))
    from tests.helpers import serve

    servers = [serve(a, port=port_a), serve(b, port=port_b)]
    try:
        with Client(("127.0.0.1", port_a)) as client:
            assert client.request("POST", "/x", body=b"once").body == b"once"
        wait_until(lambda: b.stats()["dropped"].get("loop") == 1, 5, "B to see its loop")
        wait_until(lambda: a.stats()["succeeded"] == 1)
        assert (a.stats()["requests"], b.stats()["requests"], b.stats()["mirrored"]) == (1, 1, 0)
    finally:
        for srv in servers:
            srv.stop(timeout=1)


def test_a_malformed_host_is_a_non_match_without_a_traceback(server, sink, caplog):
    config = mirror_config(sink.address, route={"Match": {"Hosts": ["app.local"]}, "Metadata": {"MirrorCluster": "m"}})
    mw = MirrorMiddleware(echo, config)
    with caplog.at_level(logging.DEBUG, logger="wsgimirror"), Client(server(mw)) as client:
        for _ in range(50):
            assert client.request("POST", "/x", body=b"x", host="app.local:\u00b2").status == 200
        assert client.request("POST", "/ok", body=b"x", host="app.local").status == 200
    assert [r.target for r in sink.wait_for(1)] == ["/ok"]
    assert (mw.stats()["requests"], mw.stats()["matched"]) == (51, 1)
    assert caplog.records == []


def test_a_flood_of_failing_requests_writes_one_warning(sink, caplog):
    mw = MirrorMiddleware(echo, mirror_config(sink.address))
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        for _ in range(50):
            environ = environ_for(b"x", PATH_INFO=b"/not-a-str")  # a broken environ: routing fails
            assert b"".join(mw(environ, start_response)) == b"x"
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None  # the first one says where
