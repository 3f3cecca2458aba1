"""Transparency under servers and frameworks the rest of the suite does not run: waitress and WebOb.

waitress hands the app a seekable input, and WebOb relies on it (``webob.is_body_seekable``): an app
that reads its body, seeks back and reads it again must answer exactly as it does bare, and its
mirror must carry the body once, as the client sent it.
"""

import hashlib
import json
import sys

import pytest

from tests.helpers import ROOT, one_request, wait_until, write_config


class WaitressServer:
    """tests/e2e/waitress_server.py in a child process, stopped by its pid."""

    def __init__(self, config: str) -> None:
        from gevent import subprocess

        self.popen = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "e2e" / "waitress_server.py"), config],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        line = self.popen.stdout.readline()
        assert line.startswith("ready "), line + self.popen.stderr.read()
        self.address = ("127.0.0.1", int(line.split()[1]))

    def stats(self) -> list[dict]:
        return json.loads(one_request(self.address, target="/__stats", host="127.0.0.1").body)

    def stop(self) -> str:
        self.popen.terminate()
        _, err = self.popen.communicate(timeout=15)
        return err


@pytest.fixture
def waitress_servers(tmp_path, sink):
    config = write_config(tmp_path, {
        "ReverseProxy": {
            "Routes": {"r": {"Match": {"Paths": ["/plain/{**x}", "/webob/{**x}"]}, "Metadata": {"MirrorCluster": "m"}}},
            "Clusters": {"m": {"Destinations": [{"Address": sink.address}]}},
        }
    })  # fmt: skip
    wrapped, bare = WaitressServer(config), WaitressServer("bare")
    yield wrapped, bare
    errors = wrapped.stop() + bare.stop()
    assert "Traceback" not in errors, errors


def test_an_app_that_seeks_back_and_reads_again_answers_as_bare_under_waitress(waitress_servers, sink):
    wrapped, bare = waitress_servers
    body = b'{"item": "tea"}' * 5000  # 75 KB: waitress keeps it in memory; the copy spills past nothing
    answers = [one_request(s.address, method="POST", target="/plain/orders", body=body) for s in (wrapped, bare)]
    assert answers[0].status == answers[1].status == 200
    assert answers[0].body == answers[1].body
    digest = hashlib.sha256(body).hexdigest()
    assert json.loads(answers[0].body) == [digest, digest, len(body)]
    (mirrored,) = sink.wait_for(1)
    assert mirrored.body == body  # once, as the client sent it, though the app read it twice
    wait_until(lambda: wrapped.stats()[0]["succeeded"] == 1)


def test_a_webob_app_behind_a_layer_that_made_the_body_seekable_answers_as_bare(waitress_servers, sink):
    wrapped, bare = waitress_servers
    body = json.dumps({"item": "cake", "notes": "x" * 3000}).encode()
    answers = [one_request(s.address, method="PUT", target="/webob/orders/7", body=body,
                           headers={"Content-Type": "application/json"}) for s in (wrapped, bare)]  # fmt: skip
    assert answers[0].status == answers[1].status == 200
    assert answers[0].body == answers[1].body
    assert json.loads(answers[0].body) == {"same": True, "bytes": len(body), "item": "cake"}
    (mirrored,) = sink.wait_for(1)
    assert (mirrored.method, mirrored.target, mirrored.body) == ("PUT", "/webob/orders/7", body)
