"""The default (an embedded agent) on every server the README names, each a real process with nothing set.

``wsgimirror serve``, gunicorn with ``examples/gunicorn.conf.py``, gevent.pywsgi and a threaded server:
the first middleware starts the agent, the mirrors arrive, every copy is accounted for, and the agent
outlives the worker that started it.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import pytest

from tests.agent.conftest import agent_pid, alive, stop
from tests.helpers import ROOT, ChildServer, Process, example_config, free_port, one_request, wait_until
from wsgimirror.agent import supervise

PY = sys.executable
DEFAULT = {"WSGIMIRROR_AGENT": ""}  # as a user has it: no setting at all


@pytest.fixture
def deployment(tmp_path, sink):
    """examples/mirror.json pointed at a sink, and the default agent socket of that file; its agent is stopped."""
    config = example_config(tmp_path, sink.address)
    path = supervise.socket_path(supervise.identity(config, {}))
    yield config, path
    pid = agent_pid(path)
    if pid:
        stop(pid)


def post(port: int, n: int, target: str = "/api/orders/{n}") -> None:
    response = one_request(("127.0.0.1", port), method="POST", target=target.format(n=n), body=b'{"n": %d}' % n,
                           host="127.0.0.1", headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status in (200, 201)


def test_serve_mirrors_through_an_agent_that_outlives_it_and_its_last_line_accounts_for_every_copy(deployment, sink):
    config, path = deployment
    port = free_port()
    proc = Process([PY, "-m", "wsgimirror", "serve", "examples.legacy_app:application", "--config", config,
                    "--bind", f"127.0.0.1:{port}"], ready="serving on", env=DEFAULT)  # fmt: skip
    try:
        for n in range(10):
            post(port, n)
        assert len(sink.wait_for(10)) == 10
        agent = agent_pid(path)
        assert agent and agent != proc.popen.pid
    finally:
        status, _, err = proc.stop()
    assert status == 0, err
    assert "stopped: 10 requests; 10 copies = 10 mirrored + 0 dropped + 0 pending; mirrored: 10 succeeded" in err
    assert alive(agent)  # the server is gone, its agent is not: a recycled worker must not take it down


def test_gunicorn_workers_share_one_agent_that_survives_their_recycling(deployment, sink):
    config, path = deployment
    port = free_port()
    env = {**DEFAULT, "WSGIMIRROR_CONFIG": config, "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2"}
    proc = Process([PY, "-m", "gunicorn", "-c", "examples/gunicorn.conf.py", "--max-requests", "6"],
                   ready="Booting worker", env=env)  # fmt: skip
    try:
        proc.wait_for_line("Booting worker")
        for n in range(6):
            post(port, n, "/api/orders")  # the Flask example takes orders there
        sink.wait_for(6)
        first = agent_pid(path)
        assert first
        for n in range(6, 40):  # every worker reaches max_requests and is replaced, some more than once
            post(port, n, "/api/orders")
        assert sorted(r.body for r in sink.wait_for(40)) == sorted(b'{"n": %d}' % n for n in range(40))
        assert agent_pid(path) == first and alive(first)
        assert sum("Booting worker" in line for line in proc.err_lines) >= 2
    finally:
        status, _, err = proc.stop()
    assert status == 0, err
    assert "Traceback" not in err


def test_gevent_pywsgi_mirrors_through_the_agent_by_default(tmp_path, sink):
    config = example_config(tmp_path, sink.address)
    path = supervise.socket_path(supervise.identity(config, {}))
    import os

    previous = os.environ.pop("WSGIMIRROR_AGENT")
    try:
        with ChildServer(config) as child:
            for n in range(5):
                one_request(child.address, method="POST", target=f"/api/x/{n}", body=b"%d" % n, host="127.0.0.1")
            assert sorted(r.body for r in sink.wait_for(5)) == [b"0", b"1", b"2", b"3", b"4"]
            wait_until(lambda: child.stats()["stats"]["succeeded"] == 5, 10, "the agent's reports")
            assert child.stats()["stats"]["executor"] == "agent"
    finally:
        os.environ["WSGIMIRROR_AGENT"] = previous
        pid = agent_pid(path)
        if pid:
            stop(pid)


def test_a_threaded_server_mirrors_through_the_agent_by_default(deployment, sink):
    config, _ = deployment
    from gevent import subprocess

    child = subprocess.Popen([PY, str(ROOT / "tests" / "agent" / "threaded_app.py"), config], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**__import__("os").environ, **DEFAULT, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        port = int(child.stdout.readline().split()[1])
        for n in range(5):
            post(port, n)
        assert len(sink.wait_for(5)) == 5

        def stats() -> dict:
            return json.loads(one_request(("127.0.0.1", port), target="/__stats", host="127.0.0.1").body)

        wait_until(lambda: stats()["succeeded"] == 5, 10, "the agent's reports")
        assert stats()["executor"] == "agent"
    finally:
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=10)


def test_an_embedded_agent_exits_once_it_has_had_no_client_for_its_idle_seconds(tmp_path, sink, monkeypatch):
    from tests.helpers import serve as serve_app
    from wsgimirror.middleware import MirrorMiddleware

    monkeypatch.delenv("WSGIMIRROR_AGENT")
    socket_dir = tmp_path / "run"
    socket_dir.mkdir(mode=0o700)
    config = {"ReverseProxy": {"Routes": {"r": {"Metadata": {"MirrorCluster": "m"}}},
                               "Clusters": {"m": {"Destinations": [{"Address": sink.address}]}}},
              "Agent": {"Socket": str(socket_dir / "a.sock"), "IdleSeconds": 1}}  # fmt: skip

    def app(environ, start_response):
        start_response("204 No Content", [])
        return []

    mw = MirrorMiddleware(app, config)
    srv = serve_app(mw)
    try:
        one_request(srv.address, target="/x")
        sink.wait_for(1)
        pid = agent_pid(str(socket_dir / "a.sock"))
        assert mw.close(5)  # the client leaves
        started = time.monotonic()
        wait_until(lambda: not alive(pid), 10, "the idle agent to exit")
        assert time.monotonic() - started < 5
        assert not (socket_dir / "a.sock").exists()  # it removed its socket
    finally:
        srv.stop(timeout=1)
