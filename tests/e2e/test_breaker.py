"""The per-destination circuit breaker, against real sinks that are stopped and restarted."""

import logging

import gevent

from tests.helpers import Client, ScriptedServer, Sink, free_port, mirror_config, wait_until
from wsgimirror.middleware import MirrorMiddleware


def app(environ, start_response):
    kind = type(environ["wsgi.input"]).__name__
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [kind.encode()]


def send(client, n, start=0):
    return [client.request("POST", f"/r{start + i}", body=b"x").body for i in range(n)]


def settle(mw):
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    gevent.sleep(0.01)


def test_the_circuit_opens_half_opens_and_closes(server, caplog):
    port = free_port()
    mw = MirrorMiddleware(app, mirror_config(f"http://127.0.0.1:{port}", BreakerFailures=3, BreakerSeconds=0.5))
    with caplog.at_level(logging.DEBUG, logger="wsgimirror"), Client(server(mw)) as client:
        for i in range(3):  # nothing listens: three failures open the circuit
            send(client, 1, i)
            settle(mw)
        assert mw.stats()["failures"] == {"refused": 3}
        answers = send(client, 5, 3)  # open: no capture, no send, a counter increment
        assert answers == [b"Input"] * 5  # gevent's own input: the middleware did not even wrap it
        assert mw.stats()["dropped"] == {"circuit_open": 5}
        sink = Sink().start(port)  # the destination comes back
        try:
            gevent.sleep(0.55)  # half-open: the next mirror is the trial
            send(client, 1, 8)
            settle(mw)
            send(client, 4, 9)  # closed again: every mirror goes out
            sink.wait_for(5)
            settle(mw)
        finally:
            sink.stop()
    stats = mw.stats()
    assert (stats["succeeded"], stats["failed"], stats["dropped"]) == (5, 3, {"circuit_open": 5})
    address = f"http://127.0.0.1:{port}"
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if address in r.getMessage()]
    assert [level for level, _ in logged] == ["WARNING", "DEBUG", "WARNING"]
    assert logged[0][1].startswith(f"mirror destination {address} (cluster 'm', route 'all') is failing: refused")
    assert logged[1][1] == f"circuit of {address} open for 0.5s"
    assert logged[2][1] == f"mirror destination {address} (cluster 'm') recovered after 3 failures"


def test_a_failed_trial_opens_the_circuit_again(server):
    port = free_port()
    mw = MirrorMiddleware(app, mirror_config(f"http://127.0.0.1:{port}", BreakerFailures=1, BreakerSeconds=0.3))
    with Client(server(mw)) as client:
        send(client, 1)
        settle(mw)
        send(client, 2, 1)
        assert mw.stats()["dropped"] == {"circuit_open": 2}
        gevent.sleep(0.35)
        send(client, 1, 3)  # the trial, still refused
        settle(mw)
        send(client, 2, 4)
    stats = mw.stats()
    assert stats["failed"] == 2 and stats["dropped"] == {"circuit_open": 4}


def test_other_destinations_take_over_while_one_circuit_is_open(server, sink):
    dead = f"http://127.0.0.1:{free_port()}"
    mw = MirrorMiddleware(app, mirror_config(dead, sink.address, policy="First", BreakerFailures=2))
    with Client(server(mw)) as client:
        for i in range(2):
            send(client, 1, i)
            settle(mw)
        send(client, 6, 2)
    sink.wait_for(6)
    settle(mw)
    stats = mw.stats()
    assert (stats["failed"], stats["succeeded"], stats["dropped"]) == (2, 6, {})


def test_after_recovering_a_destination_needs_breaker_failures_again_to_open(server):
    answers = iter([b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"", b""])

    def scripted(sock, head, body):  # closes without an answer, except once
        sock.sendall(next(answers))
        return False

    destination = ScriptedServer(scripted)
    mw = MirrorMiddleware(app, mirror_config(destination.address, BreakerFailures=2, BreakerSeconds=60))
    try:
        with Client(server(mw)) as client:
            for i in range(4):  # failure, success (the count starts over), failure, failure (now it opens)
                send(client, 1, i)
                settle(mw)
            send(client, 2, 4)
    finally:
        destination.stop()
    stats = mw.stats()
    assert (stats["failed"], stats["succeeded"], stats["dropped"]) == (3, 1, {"circuit_open": 2})
