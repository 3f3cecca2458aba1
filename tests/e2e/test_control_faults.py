"""Reloads, signals and the breaker at the wrong moment: the server keeps serving and every copy is accounted."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import gevent
import pytest
from gevent.event import Event

from tests.helpers import (
    ROOT,
    Client,
    Process,
    ScriptedServer,
    assert_accounted,
    free_port,
    mirror_config,
    one_request,
    request_bytes,
    wait_until,
    write_config,
)
from wsgimirror.commands.cli import main
from wsgimirror.middleware import MirrorMiddleware


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def serve_process(config: str, *extra: str) -> tuple[Process, tuple[str, int]]:
    port = free_port()
    args = [sys.executable, "-m", "wsgimirror", "serve", "tests.e2e.apps:app", "--config", config,
            "--bind", f"127.0.0.1:{port}", *extra]  # fmt: skip
    return Process(args, ready="serving on"), ("127.0.0.1", port)


# -- finding 1: a reload never stops the server; check and serve accept the same files -------------------

HOSTILE_FILES = {
    "superscript port": json.dumps(
        {"ReverseProxy": {"Routes": {"r": {"Match": {"Hosts": ["app.local:\u00b2"]}}}, "Clusters": {}}}
    ),
    "200,000-deep JSON": '{"ReverseProxy": ' + "[" * 200_000 + "]" * 200_000 + "}",
    "not UTF-8": b'{"ReverseProxy": "\xff"}'.decode("latin-1"),
}


@pytest.mark.parametrize("name", HOSTILE_FILES)
def test_check_and_serve_refuse_the_same_hostile_files_in_one_line(tmp_path, capsys, name):
    path = tmp_path / "bad.json"
    path.write_bytes(HOSTILE_FILES[name].encode("latin-1"))
    assert main(["check", str(path)]) == 2
    checked = capsys.readouterr().err.strip()
    assert checked.startswith("wsgimirror: invalid config: ") and "\n" not in checked
    port = free_port()
    served = subprocess.run(
        [sys.executable, "-m", "wsgimirror", "serve", "tests.e2e.apps:app", "--config", str(path),
         "--bind", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert served.returncode == 2
    assert served.stderr.strip().splitlines()[-1] == checked
    assert "Traceback" not in served.stderr


def test_sighup_with_hostile_files_keeps_the_server_and_its_config(tmp_path, sink):
    config = write_config(tmp_path, mirror_config(sink.address))
    proc, address = serve_process(config)
    try:
        for count, name in enumerate(HOSTILE_FILES, 1):
            with open(config, "wb") as fh:
                fh.write(HOSTILE_FILES[name].encode("latin-1"))
            proc.signal(signal.SIGHUP)
            proc.wait_for_line("config reload failed")
            assert one_request(address, method="POST", target=f"/after-{count}", body=b"x").status == 200
            assert sink.wait_for(count)[-1].target == f"/after-{count}"  # the old config still mirrors
    finally:
        status, _, err = proc.stop()
    assert status == 0, err
    assert "Traceback" not in err


# -- finding 4: a trial that never ran frees the half-open slot ----------------------------------------


def test_a_trial_refused_by_a_full_pool_frees_the_half_open_slot(server):
    """Two clusters share one destination's pool of one connection; one cluster's circuit is half-open."""
    release = Event()
    failed_once: list = []

    def destination(sock, head, body):
        if head.startswith(b"GET /a ") and not failed_once:
            failed_once.append(True)
            return False  # closed unanswered: that cluster's circuit opens
        if head.startswith(b"GET /b "):
            release.wait(10)  # holds the pool's one connection
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True

    shared = ScriptedServer(destination)
    clusters = {cid: {"Destinations": {"d": {"Address": shared.address}}, "HttpClient": {"MaxConnectionsPerServer": 1}}
                for cid in ("broken", "busy")}  # fmt: skip
    config = {
        "ReverseProxy": {
            "Routes": {
                "a": {"Match": {"Paths": ["/a"]}, "Metadata": {"MirrorCluster": "broken"}},
                "b": {"Match": {"Paths": ["/b"]}, "Metadata": {"MirrorCluster": "busy"}},
            },
            "Clusters": clusters,
        },
        "Mirror": {"MaxInFlight": 8, "BreakerFailures": 1, "BreakerSeconds": 0.3},
    }
    mw = MirrorMiddleware(app, config)
    try:
        with Client(server(mw)) as client:
            client.request("GET", "/a")  # fails: the circuit of broken/d opens
            wait_until(lambda: mw.stats()["by_destination"]["broken/d"]["circuit"] == "half_open", 5, "half-open")
            client.request("GET", "/b")  # takes the pool's one connection until released
            wait_until(lambda: mw.stats()["in_flight"] == 1)
            client.request("GET", "/a")  # the trial: refused by the full pool
            assert mw.stats()["by_route"]["a"]["dropped"] == {"backlog_full": 1}
            release.set()
            wait_until(lambda: mw.stats()["in_flight"] == 0, 5, "the held mirror to end")
            client.request("GET", "/a")  # a new trial goes out, and closes the circuit
            wait_until(lambda: mw.stats()["by_destination"]["broken/d"]["circuit"] == "closed")
        stats = mw.stats()
        assert stats["by_route"]["a"]["dropped"] == {"backlog_full": 1}
        assert (stats["by_route"]["a"]["succeeded"], stats["by_route"]["a"]["failed"]) == (1, 1)
        assert_accounted(stats)
    finally:
        release.set()
        shared.stop()


# -- finding 6: MaxInFlight and the connections are process-wide, whatever the reloads -------------------


def test_repeated_reloads_never_multiply_max_in_flight_or_connections(server):
    release = Event()
    never = ScriptedServer(lambda sock, head, body: release.wait(30) and False)
    config = mirror_config(never.address, MaxInFlight=8, Timeout=30)
    mw = MirrorMiddleware(app, config)
    peak = 0
    try:
        with Client(server(mw)) as client:
            for _ in range(20):
                for _ in range(5):
                    client.request("POST", "/x", body=b"x")
                mw.reload(config)
                peak = max(peak, mw.stats()["in_flight"])
            wait_until(lambda: never.connections >= 8, 5, "8 connections")
            gevent.sleep(0.1)
        stats = mw.stats()
        assert peak == 8 and never.connections == 8
        assert (stats["mirrored"], stats["dropped"]) == (8, {"backlog_full": 92})
    finally:
        release.set()  # the destination hangs up: the mirrors end at once
        assert mw.close(timeout=5)
        never.stop()


# -- finding 7: SIGTERM drains requests, then mirrors, then exits 0 -------------------------------------


def test_sigterm_answers_requests_in_flight_sends_their_mirrors_and_accounts_for_every_copy(tmp_path, sink):
    config = write_config(tmp_path, mirror_config(sink.address, Timeout=10))
    proc, address = serve_process(config, "--drain-timeout", "5")
    upload = os.urandom(8 << 20)
    idle, slow, big = Client(address), Client(address), Client(address)
    try:
        assert idle.request("GET", "/warm-up").status == 200  # then waits, idle, on keep-alive
        slow.send(request_bytes("GET", "/slow"))
        big.send(request_bytes("POST", "/upload", body=upload)[: -len(upload) + (2 << 20)])  # 2 of 8 MiB sent
        wait_until(lambda: len(sink.requests) == 1)  # the warm-up's mirror
        gevent.sleep(0.1)  # both requests are in the app
        start = time.monotonic()
        proc.signal(signal.SIGTERM)
        proc.wait_for_line("stopping")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=1)
        for offset in range(2 << 20, 8 << 20, 1 << 20):  # the rest of the upload, after the signal
            big.send(upload[offset : offset + (1 << 20)])
            gevent.sleep(0.05)
        assert slow.read_response().status == 200
        answer = json.loads(big.read_response().body)
        assert answer == {"path": "/upload", "bytes": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
        assert idle.file.read() == b""  # the idle keep-alive connection was closed, not kept to the deadline
        status, _, err = proc.stop(timeout=10)
        assert time.monotonic() - start < 4.5
    finally:
        for client in (idle, slow, big):
            client.close()
    assert status == 0, err
    assert sorted(r.target for r in sink.requests) == ["/slow", "/upload", "/warm-up"]
    assert next(r for r in sink.requests if r.target == "/upload").body == upload
    assert (
        "stopped: 3 requests; 3 copies = 3 mirrored + 0 dropped + 0 pending; "
        "mirrored: 3 succeeded, 0 failed, 0 in flight" in err
    ), err
