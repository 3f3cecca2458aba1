"""Hostile request lines and headers, as raw bytes, through gevent.pywsgi, gunicorn and werkzeug's dev server.

Whatever a client sends, only valid HTTP/1.1 messages leave the process: the target is
origin form under the destination's base path, the Host is the destination's, header values
carry no control bytes, and a request that cannot be written so is not mirrored. Each case is
checked after its copy has settled (the server's middleware reports nothing pending or in
flight), so "no mirror" is a fact, not a timeout.
"""

from __future__ import annotations

import json
import sys
import typing as t

import httptools
import pytest

from tests.e2e.apps import with_stats
from tests.helpers import ROOT, Client, Process, ScriptedServer, free_port, mirror_config, serve, wait_until
from wsgimirror.commands.serve import RawTargetHandler

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Recorder(ScriptedServer):
    """A destination that records every request's raw head and body and answers 200."""

    def __init__(self) -> None:
        super().__init__(lambda sock, head, body: sock.sendall(OK) or True)


@pytest.fixture(scope="module")
def destination():
    recorder = Recorder()
    yield recorder
    recorder.stop()


def config_for(destination: Recorder) -> dict:
    return mirror_config(destination.address + "/shadow", MaxInFlight=8)


@pytest.fixture(scope="module", params=["gevent", "gevent-plain", "gunicorn", "werkzeug"])
def app_server(request, destination, tmp_path_factory):
    """(name, address) of a server running the wrapped app, with /__stats."""
    config = config_for(destination)
    if request.param.startswith("gevent"):
        from gevent.pywsgi import WSGIHandler

        handler = RawTargetHandler if request.param == "gevent" else WSGIHandler
        srv = serve(with_stats(config), handler_class=handler)
        yield request.param, srv.address
        srv.stop(timeout=1)
        return
    path = tmp_path_factory.mktemp("config") / "mirror.json"
    path.write_text(json.dumps(config))
    port = free_port()
    env = {"WSGIMIRROR_TEST_CONFIG": str(path)}
    if request.param == "gunicorn":
        args = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{port}",
                "tests.e2e.apps:wrapped"]  # fmt: skip
        proc = Process(args, ready="Booting worker", env=env)
    else:
        proc = Process([sys.executable, str(ROOT / "tests" / "e2e" / "werkzeug_server.py"), str(port)], "ready", env)
    wait_until(lambda: _answers(("127.0.0.1", port)), 20, f"{request.param} to answer")
    yield request.param, ("127.0.0.1", port)
    proc.stop()


def _answers(address) -> bool:
    try:
        return stats_of(address) is not None
    except OSError:
        return False


def stats_of(address) -> dict:
    with Client(address) as client:
        return json.loads(client.request("GET", "/__stats", host="127.0.0.1").body)


def send_raw(address, data: bytes) -> int | None:
    """Send one request as raw bytes; the response status, or None when the server hung up."""
    with Client(address) as client:
        client.send(data)
        try:
            return client.read_response().status
        except (ConnectionError, ValueError, IndexError):
            return None


def mirrors_of(app_server, destination: Recorder, data: bytes) -> tuple[int | None, list[tuple[bytes, bytes]]]:
    """Send ``data`` and return (status, the requests the destination got for it) once its copy settled."""
    _, address = app_server
    seen = len(destination.requests)
    status = send_raw(address, data)
    wait_until(lambda: _settled(stats_of(address)), 10, "the copy to settle")
    mirrors = destination.requests[seen:]
    for head, body in mirrors:  # every head that left is one valid message under the base path
        assert parse_strictly(head, body).target.startswith(b"/shadow/")
    return status, mirrors


def _settled(stats: dict) -> bool:
    return stats["pending"] == 0 and stats["in_flight"] == 0


class Head(t.NamedTuple):
    method: bytes
    target: bytes
    headers: dict[bytes, bytes]


def parse_strictly(head: bytes, body: bytes) -> Head:
    """Parse a recorded request with llhttp (strict); fail unless it is exactly one valid message."""

    class Collect:
        def __init__(self):
            self.target, self.headers, self.done, self.body = b"", {}, 0, b""

        def on_url(self, url):
            self.target += url

        def on_header(self, name, value):
            self.headers[name.lower()] = value

        def on_body(self, data):
            self.body += data

        def on_message_complete(self):
            self.done += 1

    collect = Collect()
    parser = httptools.HttpRequestParser(collect)
    parser.feed_data(head + body)
    assert collect.done == 1 and collect.body == body, (head, body)
    return Head(parser.get_method(), collect.target, collect.headers)


def only_mirror(app_server, destination, data: bytes) -> Head:
    status, mirrors = mirrors_of(app_server, destination, data)
    assert status == 200, status
    (mirror,) = mirrors
    return parse_strictly(*mirror)


# -- finding 8: the target is origin form under the base path; the Host is the destination's --------


def test_an_absolute_form_target_is_mirrored_as_its_path_under_the_base_path(app_server, destination):
    mirror = only_mirror(
        app_server, destination, b"GET http://evil.example/admin?x=1 HTTP/1.1\r\nHost: app.test\r\n\r\n"
    )
    assert mirror.target == b"/shadow/admin?x=1"
    assert mirror.headers[b"host"] == destination.address.split("//")[1].encode()


@pytest.mark.parametrize("target", [b"-admin/x", b"*", b"admin"])
def test_a_target_in_neither_form_is_never_mirrored(app_server, destination, target):
    _, mirrors = mirrors_of(app_server, destination, b"OPTIONS %s HTTP/1.1\r\nHost: app.test\r\n\r\n" % target)
    assert mirrors == []


# -- finding 9: only valid HTTP/1.1 leaves the process ----------------------------------------------


def test_an_obs_folded_value_becomes_one_line(app_server, destination):
    status, mirrors = mirrors_of(app_server, destination, b"GET /fold HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n")
    if status != 200:  # gunicorn refuses obs-fold itself: nothing reaches the app
        assert mirrors == []
        return
    (mirror,) = mirrors
    assert parse_strictly(*mirror).headers[b"x-a"] == b"one two"


def test_folded_lines_cannot_smuggle_a_second_request(app_server, destination):
    smuggle = b"GET /s HTTP/1.1\r\nHost: a\r\nX-A: one\r\n \r\n GET /smuggled HTTP/1.1\r\n\tHost: evil\r\n\r\n"
    _, mirrors = mirrors_of(app_server, destination, smuggle)
    assert len(mirrors) <= 1
    for head, body in mirrors:
        parsed = parse_strictly(head, body)
        assert parsed.target == b"/shadow/s"
        assert b"\r\n " not in head and b"\r\n\t" not in head


@pytest.mark.parametrize("value", [b"a\x01b", b"a\x7fb", b"a\x00b"])
def test_a_control_byte_in_a_header_value_drops_the_copy(app_server, destination, value):
    _, mirrors = mirrors_of(app_server, destination, b"GET /c HTTP/1.1\r\nHost: a\r\nX-B: %s\r\n\r\n" % value)
    assert mirrors == []


@pytest.mark.parametrize(
    "sent, mirrored",
    [
        (b"/caf%C3%A9/a%2Fb;p=1?q=%C3%A9&r=a%20b+c", b"/shadow/caf%C3%A9/a%2Fb;p=1?q=%C3%A9&r=a%20b+c"),
        (b"/caf\xc3\xa9?q=\xc3\xa9", b"/shadow/caf%C3%A9?q=%C3%A9"),  # raw bytes: the one valid spelling
    ],
    ids=["percent-encoded", "raw-utf8"],
)
def test_the_target_keeps_the_clients_bytes(app_server, destination, sent, mirrored):
    name, _ = app_server
    status, mirrors = mirrors_of(app_server, destination, b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % sent)
    if name == "gunicorn" and not sent.isascii():  # gunicorn refuses raw bytes in a target itself (400)
        assert (status, mirrors) == (400, [])
        return
    (mirror,) = mirrors
    mirror = parse_strictly(*mirror)
    if name == "gevent-plain":  # gevent's own handler keeps no raw target: the path is quoted again
        assert mirror.target == mirrored.replace(b"%2F", b"/")
    else:
        assert mirror.target == mirrored


# -- finding 10: an Upgrade header alone does not switch mirroring off -------------------------------


def test_an_upgrade_header_without_connection_upgrade_is_mirrored(app_server, destination):
    data = b"POST /u HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nContent-Length: 2\r\n\r\nhi"
    mirror = only_mirror(app_server, destination, data)
    assert mirror.target == b"/shadow/u" and b"upgrade" not in mirror.headers


# -- finding 13: a terminated input ignores CONTENT_LENGTH, for the app and for the copy -----------------


@pytest.mark.parametrize("length", [b"3", b"invalid"])
def test_a_chunked_body_with_a_content_length_is_read_and_mirrored_whole(app_server, destination, length):
    data = (b"POST /cl HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: %s\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" % length)  # fmt: skip
    seen = len(destination.requests)
    with Client(app_server[1]) as client:
        client.send(data)
        try:
            response = client.read_response()
        except (ConnectionError, ValueError, IndexError):
            response = None
    wait_until(lambda: _settled(stats_of(app_server[1])), 10, "the copy to settle")
    mirrors = destination.requests[seen:]
    if response is None or response.status != 200:  # the server refused the request itself
        assert mirrors == []
        return
    assert json.loads(response.body)["bytes"] == 11  # the app read the whole body
    (mirror,) = mirrors
    parsed = parse_strictly(*mirror)
    assert mirror[1] == b"hello world" and parsed.headers[b"content-length"] == b"11"
