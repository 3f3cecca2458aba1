"""The ``wsgimirror`` command and the examples, run as real processes on 127.0.0.1."""

import base64
import json
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import Process, example_config, free_port, one_request, wait_until

PY = sys.executable


def serve(tmp_path, app: str, *sinks, extra=()) -> tuple[Process, tuple[str, int], str]:
    config = example_config(tmp_path, *(s.address for s in sinks))
    port = free_port()
    args = [PY, "-m", "wsgimirror", "serve", app, "--config", config, "--bind", f"127.0.0.1:{port}", *extra]
    return Process(args, ready="serving on"), ("127.0.0.1", port), config


def test_serve_mirrors_a_legacy_app_and_stops_cleanly(tmp_path, sink):
    proc, address, _ = serve(tmp_path, "examples.legacy_app:application", sink)
    try:
        response = one_request(address, method="POST", target="/api/items", body=b"abc", host="127.0.0.1")
        assert json.loads(response.body) == {"method": "POST", "path": "/api/items", "bytes": 3}
        assert one_request(address, target="/health", host="127.0.0.1").status == 200
        (got,) = sink.wait_for(1)
        assert (got.method, got.target, got.body) == ("POST", "/api/items", b"abc")
    finally:
        status, _, err = proc.stop()
    assert status == 0, err
    assert "stopped: 2 requests; 1 copies = 1 mirrored + 0 dropped + 0 pending; mirrored: 1 succeeded, 0 failed" in err
    assert "Traceback" not in err


def test_serve_reloads_on_sighup_and_keeps_the_old_config_when_the_new_one_is_invalid(tmp_path, make_sink):
    first, second = make_sink(), make_sink()
    proc, address, config = serve(tmp_path, "examples.flask_app:create_app()", first)
    try:
        one_request(address, target="/api/orders/1", host="localhost")
        first.wait_for(1)
        with open(config) as fh:
            data = json.load(fh)
        data["ReverseProxy"]["Clusters"]["shadow"]["Destinations"] = [{"Address": second.address}]
        with open(config, "w") as fh:
            json.dump(data, fh)
        proc.signal(signal.SIGHUP)
        proc.wait_for_line("config reloaded")
        one_request(address, target="/api/orders/2", host="localhost")
        assert [r.target for r in second.wait_for(1)] == ["/api/orders/2"]
        with open(config, "w") as fh:
            fh.write('{"ReverseProxy": {"Routes": {"api": {"Order": "x"}}}}')
        proc.signal(signal.SIGHUP)
        line = proc.wait_for_line("config reload failed")
        assert "ReverseProxy.Routes.api.Order: must be an integer" in line
        one_request(address, target="/api/orders/3", host="localhost")
        assert [r.target for r in second.wait_for(2)] == ["/api/orders/2", "/api/orders/3"]
        assert len(first.requests) == 1
    finally:
        status, _, err = proc.stop()
    assert status == 0, err


def test_sigterm_lets_mirrors_in_flight_finish(tmp_path, make_sink):
    slow = make_sink(delay=1.0)
    proc, address, _ = serve(tmp_path, "examples.legacy_app:application", slow, extra=["--drain-timeout", "5"])
    one_request(address, method="POST", target="/api/slow", body=b"x", host="127.0.0.1")
    slow.wait_for(1)
    start = time.monotonic()
    status, _, err = proc.stop()
    assert status == 0 and time.monotonic() - start < 5
    assert "stopped: 1 requests; 1 copies = 1 mirrored + 0 dropped + 0 pending; mirrored: 1 succeeded" in err, err


def test_the_sink_command_prints_and_records_what_it_receives(tmp_path):
    out = tmp_path / "mirrors.jsonl"
    port = free_port()
    proc = Process(
        [PY, "-m", "wsgimirror", "sink", "--bind", f"127.0.0.1:{port}", "--out", str(out), "--status", "503"],
        ready="sink listening",
    )
    try:
        headers = {"X-Forwarded-For": "198.51.100.7", "Content-Type": "application/octet-stream"}
        response = one_request(
            ("127.0.0.1", port), method="PUT", target="/a%20b?x=1", headers=headers, body=b"\x00\xff"
        )
        assert response.status == 503
        wait_until(lambda: out.exists() and out.read_text().count("\n") == 1)
    finally:
        status, stdout, _ = proc.stop()
    assert status == 0
    record = json.loads(out.read_text())
    assert (record["method"], record["path"], record["query"]) == ("PUT", "/a%20b", "x=1")
    assert base64.b64decode(record["body"]) == b"\x00\xff" and record["body_length"] == 2
    assert record["headers"]["X-Forwarded-For"] == "198.51.100.7"
    (line,) = stdout.splitlines()
    assert " PUT /a%20b?x=1 2 B " in line and "X-Forwarded-For=198.51.100.7" in line


def test_the_sink_shows_and_counts_the_requests_it_refuses_without_a_raw_server_line(tmp_path):
    port = free_port()
    proc = Process([PY, "-m", "wsgimirror", "sink", "--bind", f"127.0.0.1:{port}"], ready="sink listening")
    try:
        for raw in (b"HEAD /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
                    b"GET /y HTTP/1.1\r\nHost: a\r\nContent-Length: zz\r\n\r\n"):  # fmt: skip
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(raw)
                assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
        one_request(("127.0.0.1", port), target="/fine")
    finally:
        status, stdout, stderr = proc.stop()
    assert status == 0
    head, bad_length, fine = stdout.splitlines()
    assert head.endswith(" 400 malformed: HEAD /x HTTP/1.1: Unexpected Content-Length")
    assert " 400 malformed: GET /y HTTP/1.1: " in bad_length and " GET /fine 0 B" in fine
    assert "sink stopped after 3 requests" in stderr and "gevent" not in stderr and "socket" not in stderr


def test_the_demo_runs_offline_and_shows_every_mirror(tmp_path):
    from gevent import subprocess

    start = time.monotonic()
    run = subprocess.run([PY, "-m", "wsgimirror", "demo"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - start < 30
    rows = [line for line in run.stdout.splitlines() if line[:2].strip().isdigit()]
    assert len(rows) == 10 and all(row.endswith(" yes") for row in rows)
    assert {"sink-a", "sink-b"} <= set(run.stdout.split())
    table = run.stdout.split("\nstats ", 1)[1].splitlines()
    assert table[0].split() == ["copies", "mirrored", "succeeded", "failed", "dropped"]
    assert table[1].split() == ["total", "9", "9", "9", "0", "0"] and table[2].split()[:3] == ["cluster", "shadow", "9"]
    assert sorted(int(line.split()[1]) for line in table[3:5]) == [4, 5]  # one row per sink, the copies it got
    assert max(len(line) for line in run.stdout.splitlines()) < 120 and "Traceback" not in run.stderr


def test_the_demo_prints_every_figure_as_json_when_asked(tmp_path):
    from gevent import subprocess

    run = subprocess.run([PY, "-m", "wsgimirror", "demo", "--json"], capture_output=True, text=True, timeout=30,
                         cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout.split("\nstats: ", 1)[1].splitlines()[0])
    assert (stats["copies"], stats["mirrored"], stats["succeeded"]) == (9, 9, 9)


def test_the_flask_example_runs_as_written(tmp_path, sink):
    port = free_port()
    proc = Process(
        [PY, "examples/flask_app.py", f"127.0.0.1:{port}"],
        ready="serving on",
        env={"WSGIMIRROR_CONFIG": example_config(tmp_path, sink.address)},
        on_stdout=True,
    )
    try:
        body = b'{"item": "tea"}'
        response = one_request(
            ("127.0.0.1", port), method="POST", target="/api/orders", body=body, host="127.0.0.1",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert response.status == 201 and json.loads(response.body)["created"] == {"item": "tea"}
        assert sink.wait_for(1)[0].body == body
        response = one_request(("127.0.0.1", port), target="/api/files/a%2Fb", host="127.0.0.1")
        assert json.loads(response.body) == {"name": "a/b"}
        assert sink.wait_for(2)[1].target == "/api/files/a%2Fb"  # the client's bytes, as RawTargetHandler keeps them
    finally:
        proc.stop()


@pytest.mark.parametrize("workers", [2])
def test_gunicorn_with_the_gevent_worker_mirrors_from_each_worker(tmp_path, sink, workers):
    port = free_port()
    config = example_config(tmp_path, sink.address)
    proc = Process(
        [PY, "-m", "gunicorn", "-c", "examples/gunicorn.conf.py"],
        ready="Booting worker",
        env={"WSGIMIRROR_CONFIG": config, "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)},
    )
    try:
        for _ in range(workers - 1):
            proc.wait_for_line("Booting worker")
        listening = f"Listening at: http://127.0.0.1:{port} ({workers} workers"  # not gunicorn's line with no address
        assert any(listening in line for line in proc.err_lines), proc.err_lines
        bodies = [b'{"n": %d}' % i for i in range(40)]
        served_by = set()
        for body in bodies:
            response = one_request(
                ("127.0.0.1", port), method="POST", target="/api/orders", body=body, host="127.0.0.1",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert response.status == 201
            served_by.add(json.loads(response.body)["worker"])
        assert len(served_by) == workers  # every worker served, and so mirrored, some of the requests
        got = sink.wait_for(40)
        assert sorted(r.body for r in got) == sorted(bodies)
        assert all(r.headers["x-mirrored-by"] == "wsgimirror" for r in got)
    finally:
        status, _, err = proc.stop()
    assert status == 0, err
    assert "Traceback" not in err


def test_a_typo_in_a_route_is_refused_by_check_and_serve_and_never_mirrors_the_whole_site(tmp_path, sink):
    """YARP's singular Path (or a one-letter typo) used to be ignored, and the route then matched every path."""
    config = json.loads(Path(example_config(tmp_path, sink.address)).read_text())
    route = config["ReverseProxy"]["Routes"]["api"]
    route["Match"]["Path"] = route["Match"].pop("Paths")[0]
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(config))
    checked = run([PY, "-m", "wsgimirror", "check", str(path)])
    assert (checked.returncode, checked.stdout) == (2, "")
    assert checked.stderr.startswith("wsgimirror: invalid config: ReverseProxy.Routes.api.Match.Path: YARP's single")
    served = run([PY, "-m", "wsgimirror", "serve", "examples.legacy_app:application", "--config", str(path),
                  "--bind", f"127.0.0.1:{free_port()}"])  # fmt: skip
    assert served.returncode == 2 and "ReverseProxy.Routes.api.Match.Path: YARP's single Path" in served.stderr
    assert sink.requests == []


def run(args: list[str]):
    """A command that ends by itself, run to its end (bounded by a timeout)."""
    from gevent import subprocess

    from tests.helpers import ROOT

    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_metrics_bind_takes_loopback_unless_an_address_is_given_and_warns_once_for_another(tmp_path, sink):
    """/compare shows live traffic: a bare port listens on 127.0.0.1, and anything else is said in one line."""
    proc, _, _ = serve(tmp_path, "examples.legacy_app:application", sink, extra=["--metrics-bind", "0"])
    try:
        line = next(line for line in proc.err_lines if "metrics on" in line)
        assert "metrics on http://127.0.0.1:" in line
    finally:
        status, _, err = proc.stop()
    assert status == 0 and "not a loopback address" not in err
    proc, _, _ = serve(tmp_path, "examples.legacy_app:application", sink, extra=["--metrics-bind", "0.0.0.0:0"])
    status, _, err = proc.stop()
    assert status == 0
    assert err.count("--metrics-bind 0.0.0.0:0 is not a loopback address: /metrics and /compare") == 1
