"""Mirrors through a real agent process: what arrives, what is counted, what the app never waits for.

The app is served by gevent in this process; the agent is the process the middleware starts, as it does
for a user who sets nothing. Its destinations are sinks in this process, on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

import gevent
import pytest

from tests.agent.conftest import alive
from tests.helpers import Client, assert_accounted, one_request, wait_until
from wsgimirror.middleware import MirrorMiddleware


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [hashlib.sha256(body).hexdigest().encode()]


def mirror_to(*addresses: str, route: dict | None = None, clusters: dict | None = None, **sections) -> dict:
    return {
        "ReverseProxy": {
            "Routes": {"all": route or {"Match": {"Paths": ["/{**any}"]}, "Metadata": {"MirrorCluster": "m"}}},
            "Clusters": clusters or {"m": {"Destinations": [{"Address": a} for a in addresses]}},
        },
        **sections,
    }


def settled(mw, copies: int, timeout: float = 10) -> dict:
    """Wait until the agent reported on ``copies`` copies (none left pending or in flight)."""

    def done():
        stats = mw.stats()
        return stats["copies"] >= copies and not stats["pending"] and not stats["in_flight"]

    wait_until(done, timeout, f"the agent to report on {copies} copies")
    stats = mw.stats()
    assert_accounted(stats)
    return stats


def test_by_default_an_agent_process_sends_the_mirrors_byte_for_byte(agents, server, sink, private_tempdir):
    """Small bodies travel inline; a spilled one travels as its file's descriptor, never its bytes."""
    mw = MirrorMiddleware(echo, agents.config(mirror_to(sink.address, Mirror={"MemoryBodyBytes": 65536})))
    bodies = [b"", b"small", os.urandom(3 << 20), b"x" * 65536, os.urandom(200_000)]
    with Client(server(mw)) as client:
        for i, body in enumerate(bodies):
            response = client.request("POST", f"/up/{i}", body=body)
            assert response.body == hashlib.sha256(body).hexdigest().encode()
    got = {r.target: r.body for r in sink.wait_for(len(bodies))}
    assert got == {f"/up/{i}": body for i, body in enumerate(bodies)}
    stats = settled(mw, len(bodies))
    assert (stats["executor"], stats["mirrored"], stats["succeeded"]) == ("agent", 5, 5)
    assert stats["by_destination"][f"m/{sink.address}"]["copies"] == 5
    pid = agents.pid()
    assert pid != os.getpid() and alive(pid)
    assert mw.close(5) is True
    wait_until(lambda: os.listdir(private_tempdir) == [], 5, "the spilled body's file to go")


def test_comparison_and_its_page_come_from_the_agent(agents, server, make_sink):
    candidate = make_sink(body=b'{"total": 2}')
    config = mirror_to(candidate.address, route={"Match": {"Paths": ["/{**any}"]},
                                                 "Metadata": {"MirrorCluster": "m", "MirrorCompare": "m"}})  # fmt: skip

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"total": 1}']

    mw = MirrorMiddleware(app, agents.config(config))
    address = server(mw)
    for i in range(5):
        assert one_request(address, target=f"/orders/{i}").body == b'{"total": 1}'
    settled(mw, 5)
    wait_until(lambda: mw.stats()["compare"]["compared"] == 5, 5, "the agent's comparisons")
    endpoint = mw.stats()["compare"]["by_endpoint"]["GET /orders/{id}"]
    assert endpoint["fields"]["body.total"]["differences"] == 5
    page = mw.comparison_page()
    assert page.startswith(b"<!doctype html>") and b"GET /orders/{id}" in page
    assert json.loads(mw.comparison_page(html=False))["endpoints"][0]["endpoint"] == "GET /orders/{id}"


def test_recording_happens_in_the_agent(agents, server, tmp_path):
    config = mirror_to(f"file://{tmp_path}/traffic.gor", Record={"FlushSeconds": 0.05})
    config["ReverseProxy"]["Routes"]["all"]["Metadata"]["MirrorRecordResponses"] = "true"
    mw = MirrorMiddleware(echo, agents.config(config))
    address = server(mw)
    for i in range(3):
        one_request(address, method="POST", target=f"/r{i}", body=b"body %d" % i)
    settled(mw, 3)
    pid = agents.pid()
    (chunk,) = tmp_path.glob("traffic_*.gor")
    assert chunk.name.startswith(f"traffic_{pid}_")  # the agent's file, not the app's
    from tests.gor_format import payloads

    kinds = [p.kind for p in payloads(chunk)]
    assert kinds == [1, 2] * 3


def test_a_reload_reaches_the_agent_and_each_copy_finishes_under_the_config_it_matched(agents, server, make_sink):
    first, second = make_sink(delay=0.3), make_sink()
    mw = MirrorMiddleware(echo, agents.config(mirror_to(first.address)))
    address = server(mw)
    one_request(address, method="POST", target="/before", body=b"1")
    mw.reload(agents.config(mirror_to(second.address)))
    one_request(address, method="POST", target="/after", body=b"2")
    assert [r.target for r in first.wait_for(1)] == ["/before"]
    assert [r.target for r in second.wait_for(1)] == ["/after"]
    stats = settled(mw, 2)
    assert stats["succeeded"] == 2


def test_close_waits_until_the_agent_reports_every_copy(agents, server, make_sink):
    slow = make_sink(delay=0.5)
    mw = MirrorMiddleware(echo, agents.config(mirror_to(slow.address)))
    address = server(mw)
    for i in range(4):
        one_request(address, method="POST", target=f"/{i}", body=b"x")
    assert mw.close(10) is True
    stats = mw.stats()
    assert (stats["succeeded"], stats["pending"], stats["in_flight"]) == (4, 0, 0)
    assert_accounted(stats)


def test_a_stopped_agent_never_slows_the_app_and_what_it_cannot_take_is_counted(agents, server, sink):
    """SIGSTOP: the socket fills, then the buffer; copies are dropped (agent_busy), requests answered at once."""
    mw = MirrorMiddleware(echo, agents.config(mirror_to(sink.address), BufferBytes=65536))
    address = server(mw)
    one_request(address, method="POST", target="/warm", body=b"w")
    settled(mw, 1)  # the middleware is connected to its agent
    pid = agents.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        slowest = 0.0
        with Client(address) as client:
            for i in range(300):
                started = time.monotonic()
                assert client.request("POST", f"/{i}", body=os.urandom(8192)).status == 200
                slowest = max(slowest, time.monotonic() - started)
        assert slowest < 0.5
        dropped = mw.stats()["dropped"]
        assert dropped.get("agent_busy", 0) > 0
    finally:
        os.kill(pid, signal.SIGCONT)
    stats = settled(mw, 301, timeout=20)
    assert stats["mirrored"] + stats["dropped"]["agent_busy"] == 301


def test_killing_the_agent_under_load_loses_only_what_it_held_and_a_new_one_follows(agents, server, sink):
    """kill -9 under load: every request answered, the copies the agent held counted agent_lost, a new agent
    within a second, and the accounting exact."""
    mw = MirrorMiddleware(echo, agents.config(mirror_to(sink.address)))
    address = server(mw)
    one_request(address, method="POST", target="/warm", body=b"w")
    settled(mw, 1)
    first = agents.pid()
    answered = []

    def load(n: int) -> None:
        with Client(address) as client:
            for i in range(150):
                answered.append(client.request("POST", f"/{n}/{i}", body=b"x" * 2000).status)
                gevent.sleep(0.002)

    workers = [gevent.spawn(load, n) for n in range(4)]
    gevent.sleep(0.15)
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: (agents.pid() or 0) not in (0, first), 5, "a new agent")
    assert time.monotonic() - killed_at < 1.0 + 0.5  # within a second (plus the test's own polling)
    gevent.joinall(workers, raise_error=True)
    assert answered == [200] * 600
    second = agents.pid()
    assert second != first and alive(second)
    stats = settled(mw, 601, timeout=20)
    lost = stats["dropped"].get("agent_lost", 0) + stats["failures"].get("agent_lost", 0)
    assert stats["succeeded"] + lost + sum(v for k, v in stats["dropped"].items() if k != "agent_lost") == 601
    assert len(sink.requests) >= stats["succeeded"]  # what was counted sent did arrive


def test_a_stale_socket_of_a_dead_agent_is_replaced(agents, server, sink):
    import socket

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(agents.path)  # a socket file nobody listens on: what a killed agent leaves
    stale.close()
    mw = MirrorMiddleware(echo, agents.config(mirror_to(sink.address)))
    one_request(server(mw), method="POST", target="/x", body=b"1")
    assert [r.body for r in sink.wait_for(1)] == [b"1"]
    assert alive(agents.pid())


def test_two_configs_on_one_host_get_an_agent_each(monkeypatch, server, make_sink):
    """By default an agent's socket is named by its config: two deployments never share one."""
    from tests.agent.conftest import agent_pid, stop
    from wsgimirror.agent import supervise

    monkeypatch.delenv("WSGIMIRROR_AGENT", raising=False)
    sinks = [make_sink(), make_sink()]
    configs = [{**mirror_to(s.address), "Agent": {"IdleSeconds": 30}} for s in sinks]
    mws = [MirrorMiddleware(echo, c) for c in configs]
    paths = [supervise.socket_path(supervise.identity(c, c)) for c in configs]
    try:
        for mw, s in zip(mws, sinks):
            one_request(server(mw), method="POST", target="/x", body=s.address.encode())
        for s in sinks:
            assert [r.body for r in s.wait_for(1)] == [s.address.encode()]
        pids = [agent_pid(p) for p in paths]
        assert len(set(pids)) == 2 and all(pids)
        assert oct(os.stat(os.path.dirname(paths[0])).st_mode & 0o777) == "0o700"
        assert oct(os.stat(paths[0]).st_mode & 0o777) == "0o600"
    finally:
        for mw in mws:
            mw.close(2)
        for path in paths:
            pid = agent_pid(path)
            if pid:
                stop(pid)


def test_a_full_disk_under_the_agent_fails_its_recordings_and_never_the_app(agents, server, tmp_path):
    import resource

    config = mirror_to(f"file://{tmp_path}/t.gor", Record={"FlushSeconds": 0.02}, Mirror={"BreakerFailures": 0})
    mw = MirrorMiddleware(echo, agents.config(config))
    address = server(mw)
    one_request(address, method="POST", target="/warm", body=b"w")
    settled(mw, 1)
    resource.prlimit(agents.pid(), resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))  # the agent's disk is full
    for i in range(10):
        assert one_request(address, method="POST", target=f"/{i}", body=b"x" * 5000).status == 200
    stats = settled(mw, 11)
    assert stats["failures"] == {"disk_full": 10} and stats["succeeded"] == 1


@pytest.mark.parametrize("crash", ["SIGSEGV", "SIGABRT"])
def test_an_agent_that_crashes_mid_answer_leaves_the_app_unaffected(agents, server, scripted_answer, crash):
    """A hostile answer that crashes the agent (here: a fatal signal while it reads one) costs the app nothing."""
    mw = MirrorMiddleware(echo, agents.config(mirror_to(scripted_answer)))
    address = server(mw)
    one_request(address, method="POST", target="/warm", body=b"w")
    settled(mw, 1)
    first = agents.pid()
    with Client(address) as client:
        for i in range(20):
            started = time.monotonic()
            assert client.request("POST", f"/{i}", body=b"x").status == 200
            assert time.monotonic() - started < 0.5
            if i == 10:
                os.kill(first, getattr(signal, crash))
    stats = settled(mw, 21, timeout=15)
    assert stats["mirrored"] + sum(stats["dropped"].values()) == 21
    assert agents.pid() != first


@pytest.fixture
def scripted_answer():
    """A destination that answers slowly, endlessly streaming its body (so mirrors are in flight)."""
    from tests.helpers import ScriptedServer

    def streams(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(50):
            sock.sendall(b"400\r\n" + b"y" * 1024 + b"\r\n")
            gevent.sleep(0.01)
        sock.sendall(b"0\r\n\r\n")
        return True

    srv = ScriptedServer(streams)
    yield srv.address
    srv.stop()


def test_the_agents_warnings_reach_the_apps_log_under_wsgimirror_agent(agents, server, caplog):
    """A failing destination is seen in the agent; its warning is relayed to the app's own log."""
    import logging

    from tests.helpers import free_port

    caplog.set_level(logging.WARNING, logger="wsgimirror")
    dead = f"http://127.0.0.1:{free_port()}"
    mw = MirrorMiddleware(echo, agents.config(mirror_to(dead)))
    with Client(server(mw)) as client:
        assert client.request("GET", "/x").status == 200
    settled(mw, 1)

    def relayed():
        return [r for r in caplog.records if r.name == "wsgimirror.agent.send.breaker"]

    wait_until(relayed, what="the agent's warning in the app's log")
    assert (
        relayed()[0]
        .getMessage()
        .startswith(f"agent: mirror destination {dead} (cluster 'm', route 'all') is failing: refused")
    )
