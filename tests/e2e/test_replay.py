"""``wsgimirror replay``, end to end: real files (hand-made and recorded), real targets, real pacing."""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

import gevent
import pytest
from gevent import subprocess

from tests.helpers import ROOT, Sink, free_port, one_request, serve, wait_until, write_config
from wsgimirror.middleware import MirrorMiddleware
from wsgimirror.record.gor import SEPARATOR

PY = sys.executable
FIXTURE = ROOT / "tests" / "data" / "goreplay.gor"  # written byte for byte as GoReplay writes (see test below)


def replay(
    *args: str, timeout: float = 60, stderr_fd: int | None = None, process: bool = False
) -> tuple[int, str, str]:
    """Run ``wsgimirror replay``; (exit status, stdout, stderr).

    In this process by default (the targets are this process's greenlets, and mutation testing sees the code run);
    ``process=True`` runs the command as a child process, as a user does.
    """
    if not process and stderr_fd is None:
        import contextlib
        import io

        from wsgimirror.commands.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), gevent.Timeout(timeout):
            try:
                status = main(["replay", *args])
            except SystemExit as exit:  # argparse's own errors
                status = int(exit.code or 0)
        return status, out.getvalue(), err.getvalue()
    proc = subprocess.Popen(
        [PY, "-m", "wsgimirror", "replay", *args],
        stdout=subprocess.PIPE,
        stderr=stderr_fd if stderr_fd is not None else subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err or ""


def gor(path: Path, requests: list[tuple[int, bytes]], answers: dict[int, bytes] | None = None) -> Path:
    """A .gor file of ``(timestamp_ns, raw request)``; ``answers`` by index become type-2 payloads."""
    data = bytearray()
    for i, (timestamp, message) in enumerate(requests):
        data += b"1 %024x %d -1\n" % (i + 1, timestamp) + message + SEPARATOR
        if answers and i in answers:
            data += b"2 %024x %d 1000000\n" % (i + 1, timestamp) + answers[i] + SEPARATOR
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(bytes(data)))
    else:
        path.write_bytes(bytes(data))
    return path


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: rec.example\r\n\r\n".encode()


@pytest.fixture
def target():
    with Sink() as s:
        yield s


def test_a_goreplay_file_is_replayed_with_chunked_bodies_decoded_and_bad_records_skipped(target):
    status, out, err = replay(str(FIXTURE), "--target", target.address, "--speed", "0", "--concurrency", "1",
                              "--json")  # fmt: skip
    assert status == 0, err
    summary = json.loads(out)
    assert {k: summary[k] for k in ("records", "sent", "succeeded", "failed", "failures", "statuses",
                                    "skipped_malformed", "partial_files")} == {
        "records": 3, "sent": 3, "succeeded": 3, "failed": 0, "failures": {}, "statuses": {"200": 3},
        "skipped_malformed": 1, "partial_files": 1,
    }  # fmt: skip
    assert set(summary) >= {"latency_ms", "seconds"} and summary["latency_ms"]["p99"] > 0
    got = target.requests
    assert [(r.method, r.target) for r in got] == [("POST", "/orders?src=gor"), ("GET", "/items/42"),
                                                   ("DELETE", "/items/7")]  # fmt: skip
    orders = got[0]
    assert orders.body == b'{"a": 1}\n' and orders.headers["content-length"] == "9"
    assert "transfer-encoding" not in orders.headers
    assert orders.headers["content-type"] == "application/json" and orders.headers["user-agent"] == "curl/8.5.0"
    assert all(r.headers["host"] == f"127.0.0.1:{target.port}" for r in got)


def test_the_fixture_follows_goreplays_bytes(target):
    data = FIXTURE.read_bytes()
    assert data.count(b"\n\xf0\x9f\x90\xb5\xf0\x9f\x99\x88\xf0\x9f\x99\x89\n") == 6  # six separators, one partial tail
    assert data.startswith(b"1 4a2c1b7e9f0d3c5a6b8e1f2a 1764160000000000000 -1\nPOST /orders?src=gor HTTP/1.1\r\n")
    assert data.endswith(b"Content-Length: 5\r\n\r\nab")


def test_original_host_keeps_the_recorded_host_and_filters_choose_what_is_sent(target):
    status, out, err = replay(str(FIXTURE), "--target", target.address, "--speed", "0", "--original-host",
                              "--filter-method", "get", "--filter-method", "DELETE", "--filter-path", "^/items/4",
                              "--json")  # fmt: skip
    assert status == 0, err
    assert json.loads(out)["filtered"] == 2
    assert [(r.target, r.headers["host"]) for r in target.requests] == [("/items/42", "shop.example")]


def test_several_files_merge_by_timestamp(target, tmp_path):
    base = 1_764_160_000_000_000_000
    gor(tmp_path / "a.gor", [(base + i * 2_000_000, get(f"/a{i}")) for i in range(5)])
    gor(tmp_path / "b.gor.gz", [(base + 1_000_000 + i * 2_000_000, get(f"/b{i}")) for i in range(5)])
    status, _, err = replay(str(tmp_path / "*.gor*"), "--target", target.address, "--concurrency", "1")
    assert status == 0, err
    assert [r.target for r in target.requests] == [f"/{x}{i}" for i in range(5) for x in "ab"]


def recording_of(tmp_path: Path, seconds: float, step: float) -> Path:
    base = 1_764_160_000_000_000_000
    count = round(seconds / step) + 1
    return gor(tmp_path / "paced.gor", [(base + int(i * step * 1e9), get(f"/p/{i}")) for i in range(count)])


def span(sink: Sink) -> float:
    return sink.requests[-1].at - sink.requests[0].at


def test_original_pacing_is_kept_and_speed_scales_it(tmp_path):
    path = recording_of(tmp_path, 10.0, 0.5)
    with Sink() as normal, Sink() as double:
        runs = [gevent.spawn(replay, str(path), "--target", sink.address, "--speed", speed)
                for sink, speed in ((normal, "1"), (double, "2"))]  # fmt: skip
        gevent.joinall(runs, raise_error=True)
        (status1, _, err1), (status2, _, _) = (run.value for run in runs)
        assert (status1, status2) == (0, 0)
        assert len(normal.requests) == len(double.requests) == 21
        assert 9.0 <= span(normal) <= 11.0, span(normal)
        assert 4.5 <= span(double) <= 5.5, span(double)
    # Not on a terminal: a plain progress line every few seconds, for CI logs.
    progress = [line for line in err1.splitlines() if line.startswith("sent ")]
    assert progress and "\r" not in err1 and "succeeded" in progress[0] and "elapsed" in progress[0]


def test_a_gap_in_the_recording_waits_at_most_max_wait(target, tmp_path):
    base = 1_764_160_000_000_000_000
    path = gor(tmp_path / "gap.gor", [(base, get("/1")), (base + 3600 * 10**9, get("/2"))])  # an hour apart
    status, _, _ = replay(str(path), "--target", target.address, "--max-wait", "0.5")
    assert status == 0 and 0.4 <= span(target) <= 1.5


def test_a_fixed_rate_replaces_the_recorded_pacing(target, tmp_path):
    path = recording_of(tmp_path, 400.0, 1.0)  # 401 requests a second apart, sent at 200 per second
    status, _out, err = replay(str(path), "--target", target.address, "--rate", "200", "--json")
    assert status == 0, err
    assert len(target.requests) == 401
    rate = 400 / span(target)
    assert 180 <= rate <= 220, rate


def test_loop_starts_over_until_duration(target):
    status, out, err = replay(str(FIXTURE), "--target", target.address, "--rate", "40", "--loop", "--duration",
                              "1.5", "--json")  # fmt: skip
    assert status == 0, err
    sent = json.loads(out)["sent"]
    assert 45 <= sent <= 70 and len(target.requests) == sent  # the fixture's 3 requests, over and over
    assert {r.target for r in target.requests} == {"/orders?src=gor", "/items/42", "/items/7"}


def test_on_a_terminal_progress_is_one_live_line_with_an_eta(target, tmp_path):
    import pty

    path = recording_of(tmp_path, 2.0, 0.25)
    leader, follower = pty.openpty()
    try:
        status, _, _ = replay(str(path), "--target", target.address, stderr_fd=follower)
        os.close(follower)
        follower = -1
        os.set_blocking(leader, False)
        shown = b""
        while True:  # the replay has exited: everything it showed is in the terminal's buffer
            try:
                piece = os.read(leader, 65536)
            except OSError:  # EAGAIN: all read (EIO: the other end is gone)
                break
            if not piece:
                break
            shown += piece
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert status == 0
    text = shown.decode()
    assert text.count("\r\x1b[K") >= 3 and "ETA" in text and "rate" in text and "\n" not in text.strip("\r\n")


def test_dry_run_counts_per_method_and_endpoint_and_the_expected_duration(tmp_path):
    path = recording_of(tmp_path, 10.0, 0.5)
    status, out, _ = replay(str(path), "--dry-run", "--speed", "2", "--json")
    assert status == 0
    plan = json.loads(out)
    assert (plan["requests"], plan["methods"], plan["endpoints"]) == (21, {"GET": 21}, {"GET /p/{id}": 21})
    assert plan["expected_seconds"] == 5.0
    status, out, _ = replay(str(FIXTURE), "--dry-run", "--rate", "2")
    assert status == 0
    assert "3 requests to replay" in out and "expected duration: 1.0s (2/s)" in out and "DELETE /items/{id}" in out
    expected = {("--rate", "3"): 0.667, ("--speed", "2", "--duration", "100"): 5.0,  # the recording ends first
                ("--speed", "2", "--duration", "100", "--loop"): 100.0, ("--speed", "0"): 0.0,
                ("--filter-method", "PATCH"): 0.0}  # nothing to send  # fmt: skip
    for args, seconds in expected.items():
        source = str(FIXTURE) if "--rate" in args else str(path)
        status, out, _ = replay(source, "--dry-run", *args, "--json")
        assert status == 0 and json.loads(out)["expected_seconds"] == seconds, (args, out)


def test_a_target_that_does_not_answer_fails_the_run(tmp_path):
    status, out, _err = replay(str(FIXTURE), "--target", f"http://127.0.0.1:{free_port()}", "--json")
    summary = json.loads(out)
    assert status == 1 and summary["failed"] == 3 and summary["failures"] == {"refused": 3}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.gor", "--target", "http://127.0.0.1:1"], "missing.gor: No such file or directory"),
        (["nothing-*.gor", "--target", "http://127.0.0.1:1"], "no file matches 'nothing-*.gor'"),
        ([str(FIXTURE)], "--target URL is required"),
        ([str(ROOT / "tests"), "--target", "http://127.0.0.1:1"], "tests: no recording in this directory"),
        ([str(FIXTURE), "--target", "ftp://x"], "--target must be http://"),
        ([str(FIXTURE), "--target", "http://[::1"], "--target is not a valid URL: Invalid IPv6 URL"),
        (
            [str(FIXTURE), "--target", "http://h/?q=1"],
            "--target must not carry a query or fragment, got 'http://h/?q=1'",
        ),
        (
            [str(FIXTURE), "--target", "http://h/#top"],
            "--target must not carry a query or fragment, got 'http://h/#top'",
        ),
        ([str(FIXTURE), "--target", "http://127.0.0.1:1/café"], "--target must be ASCII (percent-encode its path)"),
        ([str(FIXTURE), "--target", "http://127.0.0.1:1", "--speed", "-1"], "--speed must be at least 0"),
        ([str(FIXTURE), "--target", "http://127.0.0.1:1", "--rate", "0"], "--rate must be more than 0"),
        ([str(FIXTURE), "--target", "http://127.0.0.1:1", "--filter-path", "("], "--filter-path is not a regular"),
        ([str(FIXTURE), "--target", "http://127.0.0.1:1", "--concurrency", "0"], "--concurrency must be at least 1"),
        (
            [str(FIXTURE), "--target", "https://127.0.0.1:1", "--ca-file", "/no/ca.pem"],
            "--ca-file /no/ca.pem: No such file or directory",
        ),
        ([str(FIXTURE), "--target", "https://127.0.0.1:1", "--ca-file", str(FIXTURE)], "--ca-file "),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    status, out, err = replay(*args)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_a_gz_file_that_is_not_gzip_is_skipped_with_a_warning_and_the_rest_is_replayed(target, tmp_path):
    """GoReplay's newFileInputReader returns no reader for it and replays the other files; so does replay, and
    says so: a warning as it happens, the count in the summary, and exit 1 at the end."""
    fake = tmp_path / "a.gor.gz"
    fake.write_bytes(b"plain text")
    status, out, err = replay(str(fake), str(FIXTURE), "--target", target.address, "--speed", "0", "--json")
    summary = json.loads(out)
    assert (summary["sent"], summary["succeeded"], summary["unreadable_files"]) == (3, 3, 1)
    assert summary["file_problems"] == [f"{fake}: Not a gzipped file (b'pl'); skipped"]
    assert status == 1 and err == f"wsgimirror replay: {fake}: Not a gzipped file (b'pl'); skipped\n"
    assert len(target.requests) == 3


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"path": environ["PATH_INFO"], "length": len(body), "version": 1}).encode()]


def echo_v2(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"path": environ["PATH_INFO"], "length": len(body), "version": 2}).encode()]


def test_record_then_replay_with_compare_finds_the_regression_and_report_reads_its_log(tmp_path):
    config = {
        "ReverseProxy": {
            "Routes": {"all": {"Match": {"Paths": ["*"]},
                               "Metadata": {"MirrorCluster": "rec", "MirrorRecordResponses": "true"}}},
            "Clusters": {"rec": {"Destinations": [{"Address": f"file://{tmp_path}/friday.gor"}]}},
        },
        "Compare": {"Endpoints": ["/users/{id}"]},
    }  # fmt: skip
    middleware = MirrorMiddleware(echo, config)
    srv = serve(middleware)
    try:
        for i in range(20):
            one_request(srv.address, method="POST", target=f"/users/{i}", body=b"u" * i)
    finally:
        srv.stop(timeout=1)
        middleware.close()
    files = str(tmp_path / "friday_*.gor")
    config_file = write_config(tmp_path, config)
    same, changed = serve(echo), serve(echo_v2)
    try:
        status, out, err = replay(files, "--target", f"http://127.0.0.1:{same.server_port}", "--speed", "0",
                                  "--compare", "--config", config_file, "--json")  # fmt: skip
        assert status == 0, err
        compare = json.loads(out)["compare"]
        assert (compare["compared"], compare["same"], compare["regression"]) == (20, 20, False)

        log = tmp_path / "diff.jsonl"
        status, out, err = replay(files, "--target", f"http://127.0.0.1:{changed.server_port}", "--speed", "0",
                                  "--compare", "--config", config_file, "--diff-log", str(log))  # fmt: skip
        assert status == 1, err
        assert "compared 20: 20 different" in out and "REGRESSION" in out
    finally:
        same.stop(timeout=1)
        changed.stop(timeout=1)
    report = subprocess.run([PY, "-m", "wsgimirror", "report", str(log), "--json"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert report.returncode == 1
    [row] = json.loads(report.stdout)["endpoints"]
    assert row["endpoint"] == "POST /users/{id}" and row["worst_field"] == "body.version"


def test_requests_without_a_recorded_answer_are_counted_not_recorded(target, tmp_path):
    status, out, _err = replay(str(FIXTURE), "--target", target.address, "--speed", "0", "--compare", "--json")
    compare = json.loads(out)["compare"]
    assert compare["skipped"] == {"not_recorded": 2} and compare["compared"] == 1
    assert set(compare["by_endpoint"]) == {"POST /orders", "GET /items/{id}", "DELETE /items/{id}"}
    assert compare["by_endpoint"]["POST /orders"]["verdict"] == "learning" and status == 0  # one comparison: no verdict
    config = write_config(tmp_path, {"ReverseProxy": {"Routes": {}, "Clusters": {}}, "Compare": {"MinSamples": 1}})
    status, out, _err = replay(str(FIXTURE), "--target", target.address, "--speed", "0", "--compare", "--config",
                               config)  # fmt: skip
    assert status == 1  # the sink's answer is not the recorded 201
    assert "POST /orders regresses:" in out and "    status: differs in 100.0% of 1 (no baseline)" in out


def test_an_https_target_is_verified_with_ca_file(tmp_path):
    import ssl

    import trustme
    from gevent.pywsgi import WSGIServer

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    bodies = []

    def app(environ, start_response):
        bodies.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    srv = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None, ssl_context=context)
    srv.start()
    try:
        address = f"https://127.0.0.1:{srv.server_port}"
        status, out, _ = replay(str(FIXTURE), "--target", address, "--speed", "0", "--json")
        assert status == 1 and json.loads(out)["failures"] == {"tls_error": 3}
        status, out, err = replay(str(FIXTURE), "--target", address, "--speed", "0", "--ca-file", str(ca_path))
        assert status == 0, err
        assert sorted(bodies) == [b"", b"", b'{"a": 1}\n']
    finally:
        srv.stop(timeout=1)


def test_replay_in_process_sends_and_summarises(target):
    """The same run without a child process (mutation testing sees only in-process calls)."""
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options
    from wsgimirror.record.summary import exit_status, summary_text

    started = time.monotonic()
    replayer = Replay(Options(paths=[str(FIXTURE)], target=target.address, speed=0, concurrency=2))
    summary = replayer.run()
    assert time.monotonic() - started < 5
    assert (summary["sent"], summary["succeeded"], summary["skipped_malformed"]) == (3, 3, 1)
    assert exit_status(summary) == 0
    assert summary_text(summary).startswith("records 3  sent 3  succeeded 3  failed 0\nnot sent: 1 malformed\n")
    wait_until(lambda: len(target.requests) == 3)


def test_ctrl_c_stops_sending_and_still_prints_the_summary(target, tmp_path):
    import signal

    path = recording_of(tmp_path, 10.0, 0.5)
    proc = subprocess.Popen([PY, "-m", "wsgimirror", "replay", str(path), "--target", target.address, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    wait_until(lambda: len(target.requests) >= 3, 10, "the replay to start")
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < 3
    summary = json.loads(out)
    assert 3 <= summary["sent"] < 21 and summary["sent"] == summary["succeeded"] == len(target.requests)
    assert proc.returncode == 0 and "Traceback" not in err


def test_a_target_slower_than_timeout_fails_each_request_as_timeout(tmp_path):
    with Sink(delay=2.0) as slow:
        status, out, _ = replay(str(FIXTURE), "--target", slow.address, "--speed", "0", "--timeout", "0.3", "--json")
    summary = json.loads(out)
    assert status == 1 and summary["failures"] == {"timeout": 3} and summary["succeeded"] == 0
    assert summary["seconds"] < 1.9  # nobody waited for the slow answers


def test_a_replayed_answer_cut_off_by_the_timeout_gives_its_bytes_back(tmp_path):
    """With --compare, a partial answer's kept bytes return to the comparison's budget when the request fails."""
    from tests.helpers import ScriptedServer
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    def partial(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"p" * 40)
        gevent.sleep(2)
        return False

    hanging = ScriptedServer(partial)
    try:
        replayer = Replay(Options(paths=[str(FIXTURE)], target=hanging.address, speed=0, timeout=0.3, compare=True))
        summary = replayer.run()
    finally:
        hanging.stop()
    assert summary["failures"] == {"timeout": 3}
    assert (
        summary["compare"]["compared"] == 0 and summary["compare"]["skipped"] == {}
    )  # a failed request is not compared
    assert replayer._comparer.budget.memory == 0


class _Terminal:
    """What the replay writes its progress to, claiming to be a terminal."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_each_request_is_sent_as_recorded_and_counted_by_status_with_its_latency(tmp_path):
    """HEAD waits for no body; the Host is the target's unless --original-host; statuses add up."""
    from gevent.pywsgi import WSGIServer

    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    seen = []

    def target_app(environ, start_response):
        seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["HTTP_HOST"]))
        start_response("404 Not Found" if "missing" in environ["PATH_INFO"] else "200 OK", [("Content-Length", "9")])
        return [b"123456789"]

    base = 1_764_160_000_000_000_000
    path = gor(tmp_path / "mixed.gor", [
        (base, b"HEAD /big HTTP/1.1\r\nHost: rec.example\r\n\r\n"), (base + 1, get("/a")),
        (base + 2, get("/missing")), (base + 3, get("/b")), (base + 4, b"GET /no-host HTTP/1.1\r\n\r\n"),
    ])  # fmt: skip
    srv = WSGIServer(("127.0.0.1", 0), target_app, log=None)
    srv.start()
    try:
        address = f"http://127.0.0.1:{srv.server_port}/base"
        summary = Replay(Options(paths=[str(path)], target=address, speed=0, concurrency=1, timeout=3)).run()
        assert (summary["sent"], summary["succeeded"], summary["statuses"]) == (5, 5, {"200": 4, "404": 1})
        assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"] < 2000
        assert summary["seconds"] < 2  # the HEAD did not wait for the 9 bytes its Content-Length announces
        here = f"127.0.0.1:{srv.server_port}"
        assert seen == [("HEAD", "/base/big", here), ("GET", "/base/a", here), ("GET", "/base/missing", here),
                        ("GET", "/base/b", here), ("GET", "/base/no-host", here)]  # fmt: skip
        seen.clear()
        Replay(Options(paths=[str(path)], target=address, speed=0, concurrency=1, original_host=True)).run()
        assert [host for _, _, host in seen] == ["rec.example"] * 4 + [here]  # no recorded Host: the target's
    finally:
        srv.stop(timeout=1)


def test_the_summary_and_the_plan_read_as_documented():
    from wsgimirror.record.source import Options
    from wsgimirror.record.summary import dumps, plan, plan_text, summary_text

    summary = {"records": 9, "sent": 7, "succeeded": 5, "failed": 2, "failures": {"timeout": 1, "refused": 1},
               "statuses": {"200": 4, "503": 1}, "skipped_malformed": 1, "skipped_cut": 0, "skipped_unknown_type": 0,
               "filtered": 1, "partial_files": 0, "unreadable_files": 0, "file_problems": [],
               "latency_ms": {"p50": 1.5, "p99": 20.25}, "seconds": 3.5, "rate": 2.0,
               "answered_rate": 1.4}  # fmt: skip
    assert summary_text(summary) == (
        "records 9  sent 7  succeeded 5  failed 2\n"
        "not sent: 1 malformed, 1 filtered out\n"
        "failures: refused 1, timeout 1\n"
        "statuses: 200: 4, 503: 1\n"
        "latency: p50 1.5 ms, p99 20.25 ms\n"
        "3.5s: 7 sent at 2.0/s, 5 answered at 1.4/s"
    )
    refused = {**summary, "succeeded": 0, "failed": 7, "failures": {"refused": 7}, "statuses": {},
               "skipped_malformed": 0, "filtered": 0, "latency_ms": None, "answered_rate": None}  # fmt: skip
    assert summary_text(refused) == "records 9  sent 7  succeeded 0  failed 7\nfailures: refused 7\n" \
        "3.5s: 7 sent at 2.0/s, none answered"  # fmt: skip
    nothing = {**refused, "sent": 0, "failed": 0, "failures": {}, "skipped_cut": 2, "skipped_unknown_type": 1,
               "partial_files": 1, "unreadable_files": 1, "file_problems": ["b.gor.gz: Not a gzipped file; skipped"],
               "rate": None}  # fmt: skip
    assert summary_text(nothing) == (
        "records 9  sent 0  succeeded 0  failed 0\n"
        "not sent: 2 cut (shorter than framed), 1 of an unknown type\n"
        "3.5s: nothing sent\n"
        "files skipped or damaged: 1\n"
        "  b.gor.gz: Not a gzipped file; skipped\n"
        "files ending in a partial payload (ignored): 1"
    )
    compared = {**summary, "compare": {"compared": 6, "different": 2, "skipped": {"a": 1, "b": 2}, "regression": True}}
    assert summary_text(compared).splitlines()[-1] == "compared 6: 2 different, skipped: a 1, b 2; REGRESSION"
    compared["compare"]["regression"] = False
    assert summary_text(compared).endswith("; no regression")
    options = Options(paths=[str(FIXTURE)], speed=3, max_wait=0.05)
    assert plan_text(plan(options), options) == (
        "3 requests to replay of 3 recorded (1 malformed)\n"
        "expected duration: 0.1s (speed 3, gaps capped at 0.05s)\n"  # two gaps of 0.25 s at speed 3, each capped
        "\n"
        "by method:\n"
        "         1  POST\n"
        "         1  GET\n"
        "         1  DELETE\n"
        "by endpoint:\n"
        "         1  POST /orders\n"
        "         1  GET /items/{id}\n"
        "         1  DELETE /items/{id}"
    )
    fast = Options(paths=[str(FIXTURE)], speed=0)
    assert "(as fast as possible)" in plan_text(plan(fast), fast)
    kept = Options(paths=[str(FIXTURE)])
    assert "expected duration: 0.5s (speed 1, recorded gaps kept)" in plan_text(plan(kept), kept)
    assert dumps({"b": 1, "a": [2]}) == '{\n  "b": 1,\n  "a": [\n    2\n  ]\n}'


def test_on_a_tty_the_progress_line_is_redrawn_every_half_second_and_cleared_at_the_end(target, tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    terminal = _Terminal()
    path = recording_of(tmp_path, 1.2, 0.1)
    summary = Replay(Options(paths=[str(path)], target=target.address), progress=terminal).run()
    assert summary["sent"] == 13
    *lines, last = terminal.writes
    assert last == "\r\x1b[K" and 2 <= len(lines) <= 3  # at 0.5 s and 1.0 s (and 1.5 s on a busy machine)
    assert all(line.startswith("\r\x1b[Ksent ") and "\n" not in line for line in lines)
    assert lines[0].endswith("  ETA 1s")  # 1.2 s expected, about 0.5 s elapsed


def test_the_progress_line_counts_the_rate_the_elapsed_time_and_what_is_left():
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    replayer = Replay(Options(paths=[str(FIXTURE)], target="http://127.0.0.1:1"), progress=_Terminal())
    replayer.results.sent, replayer.results.succeeded, replayer.results.failed = 51, 50, 1
    replayer._started = time.monotonic() - 10.2
    assert replayer._progress_line() == "sent 51  succeeded 50  failed 1  rate 5.0/s  elapsed 10s"
    replayer._expected = 30.0
    assert replayer._progress_line().endswith("elapsed 10s  ETA 20s")
    replayer._expected = 5.0
    assert replayer._progress_line().endswith("  ETA 0s")  # late: never a negative ETA
    looping = Replay(Options(paths=[str(FIXTURE)], target="http://127.0.0.1:1", loop=True, duration=60.0))
    looping._started = time.monotonic() - 10.2
    assert looping._progress_line().endswith("elapsed 10s  ETA 50s")  # a loop ends at its duration


def test_a_replay_that_starts_over_ends_at_its_duration_even_in_the_middle_of_a_pause(target, tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    base = 1_764_160_000_000_000_000
    path = gor(tmp_path / "slow.gor", [(base, get("/1")), (base + 30 * 10**9, get("/2"))])  # 30 s apart
    started = time.monotonic()
    summary = Replay(Options(paths=[str(path)], target=target.address, max_wait=60, loop=True, duration=0.5)).run()
    assert 0.4 <= time.monotonic() - started < 2 and summary["sent"] == 1


def test_requests_that_cannot_be_sent_are_skipped_and_the_summary_says_why(target, tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options
    from wsgimirror.record.summary import summary_text

    base = 1_764_160_000_000_000_000
    path = gor(tmp_path / "odd.gor", [
        (base, b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n"),
        (base + 1, b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"),
        (base + 2, b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
        (base + 3, b"GET / HTTP/1.1\r\nX-Ctl: a\x01b\r\n\r\n"),
        (base + 4, b"POST /empty HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        (base + 5, b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"),
        (base + 6, b"GET / HTTP/1.1\r\nBad Name: y\r\n\r\n"),
        (base + 7, b"GET / HTTP/1.1\r\nBad Name: z\r\n\r\n"),  # a sixth: counted, not listed
    ])  # fmt: skip
    summary = Replay(Options(paths=[str(path)], target=target.address, speed=0, concurrency=1)).run()
    assert (summary["records"], summary["sent"], summary["skipped_malformed"]) == (8, 2, 6)
    assert summary["malformed_examples"] == [
        "000000000000000000000001: not a request line: 'G@T' '/'",
        "000000000000000000000002: the target is neither origin nor absolute form: '*'",
        "000000000000000000000003: 'Bad Name' is not a header name",
        "000000000000000000000004: the X-Ctl header holds control characters",
        "000000000000000000000007: 'Bad Name' is not a header name",
    ]
    assert (
        summary_text(summary).splitlines()[-1]
        == "not sent, request 000000000000000000000007: 'Bad Name' is not a header name"
    )
    wait_until(lambda: len(target.requests) == 2)
    empty = next(r for r in target.requests if r.target == "/empty")
    assert (empty.headers["content-length"], empty.body) == ("0", b"")  # an empty chunked body keeps its framing


def test_answers_read_before_their_requests_wait_for_them_and_past_the_bound_the_oldest_is_forgotten(
    target, tmp_path, monkeypatch
):
    from wsgimirror.record import source as source_module
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    monkeypatch.setattr(source_module, "EARLY_ANSWERS", 2)
    base = 1_764_160_000_000_000_000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nmirror-ok"
    paths = ["/alpha", "/beta", "/gamma"]  # words, not ids: one endpoint each, so the counts say which was forgotten
    data = b"".join(b"2 %024x %d 1000\n" % (i + 1, base + i) + answer + SEPARATOR for i in range(3))
    data += b"".join(b"1 %024x %d -1\n" % (i + 1, base + 10 + i) + get(p) + SEPARATOR for i, p in enumerate(paths))
    path = tmp_path / "answers.gor"
    path.write_bytes(data)
    summary = Replay(Options(paths=[str(path)], target=target.address, speed=0, concurrency=1, compare=True)).run()
    compare = summary["compare"]
    assert compare["skipped"] == {"not_recorded": 1} and compare["compared"] == 2
    assert {endpoint: counts["compared"] for endpoint, counts in compare["by_endpoint"].items()} == {
        "GET /alpha": 0, "GET /beta": 1, "GET /gamma": 1,
    }  # fmt: skip


def test_off_a_terminal_progress_is_a_plain_line_of_its_own(target, tmp_path):
    import io

    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    log = io.StringIO()  # not a terminal: a CI log
    summary = Replay(Options(paths=[str(recording_of(tmp_path, 0.5, 0.05))], target=target.address), log, 0.2).run()
    lines = log.getvalue().split("\n")
    assert summary["sent"] == 11 and lines[-1] == "" and 2 <= len(lines) - 1 <= 3  # at 0.2 s and 0.4 s
    assert all(line.startswith("sent ") and "\r" not in line and "ETA" not in line for line in lines[:-1])


def test_concurrency_bounds_the_requests_in_flight(tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    with Sink(delay=0.3) as slow:
        summary = Replay(Options(paths=[str(FIXTURE)], target=slow.address, speed=0, concurrency=1)).run()
    assert summary["succeeded"] == 3 and summary["seconds"] >= 0.85  # one at a time: 3 times 0.3 s


def test_insecure_skips_verifying_an_https_target(tmp_path):
    import ssl

    import trustme
    from gevent.pywsgi import WSGIServer

    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)  # a CA nobody trusts
    srv = WSGIServer(("127.0.0.1", 0), lambda e, s: s("200 OK", [("Content-Length", "0")]) or [], log=None,
                     error_log=None, ssl_context=context)  # fmt: skip
    srv.start()
    try:
        target = f"https://127.0.0.1:{srv.server_port}"
        assert Replay(Options(paths=[str(FIXTURE)], target=target, speed=0)).run()["failures"] == {"tls_error": 3}
        assert Replay(Options(paths=[str(FIXTURE)], target=target, speed=0, insecure=True)).run()["succeeded"] == 3
    finally:
        srv.stop(timeout=1)


def test_a_replayed_difference_is_logged_with_the_request_and_both_answers(tmp_path):
    from gevent.pywsgi import WSGIServer

    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    def candidate(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"v": 2}']

    base = 1_764_160_000_000_000_000
    recorded = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"v": 1}'
    path = gor(tmp_path / "one.gor", [(base, get("/users/7?full=1"))], {0: recorded})
    log = tmp_path / "diff.jsonl"
    srv = WSGIServer(("127.0.0.1", 0), candidate, log=None)
    srv.start()
    try:
        from wsgimirror.config.model import CompareSettings

        settings = CompareSettings(log=str(log), examples=1)
        options = Options(paths=[str(path)], target=f"http://127.0.0.1:{srv.server_port}", speed=0, compare=True,
                          compare_settings=settings)  # fmt: skip
        assert Replay(options).run()["compare"]["different"] == 1
    finally:
        srv.stop(timeout=1)
    [example] = [json.loads(line) for line in log.read_text().splitlines() if '"example"' in line]
    assert (example["route"], example["cluster"], example["source"]) == ("replay", "target", "candidate")
    assert example["request"]["method"] == "GET" and example["request"]["target"] == "/users/7?full=1"
    import base64

    bodies = [base64.b64decode(example[side]["body"]) for side in ("app", "mirror")]
    assert bodies == [b'{"v": 1}', b'{"v": 2}'] and example["app"]["status"] == 200  # the recorded, the replayed
    assert [d["field"] for d in example["differences"]] == ["body.v"]


def test_stop_ends_the_replay_and_it_still_returns_its_summary(target, tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    replayer = Replay(Options(paths=[str(recording_of(tmp_path, 10.0, 0.1))], target=target.address))
    running = gevent.spawn(replayer.run)
    wait_until(lambda: len(target.requests) >= 3, 5, "the replay to start")
    replayer.stop()  # what Ctrl-C and SIGTERM do
    summary = running.get(timeout=5)
    assert 3 <= summary["sent"] < 101 and summary["sent"] == summary["succeeded"]


def test_recorded_answers_that_are_cut_or_not_http_are_not_compared(target, tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    base = 1_764_160_000_000_000_000
    answers = {0: b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nmirror-ok",  # whole: compared
               1: b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nmirror-ok",  # cut: 9 of 50 bytes recorded
               2: b"HTTP/1.1 abc Weird\r\nContent-Length: 9\r\n\r\nmirror-ok"}  # fmt: skip
    path = gor(tmp_path / "answers.gor", [(base + i, get(f"/{i}")) for i in range(3)], answers)
    summary = Replay(Options(paths=[str(path)], target=target.address, speed=0, compare=True)).run()
    assert summary["compare"]["compared"] == 1
    assert summary["compare"]["skipped"] == {"not_captured": 2}


def test_a_replayed_body_is_shown_in_the_logged_example(tmp_path):
    import base64

    from gevent.pywsgi import WSGIServer

    from wsgimirror.config.model import CompareSettings
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    def candidate(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"v2"]

    base = 1_764_160_000_000_000_000
    post = b'POST /orders HTTP/1.1\r\nHost: rec.example\r\nContent-Length: 11\r\n\r\n{"id": 42}\n'
    path = gor(tmp_path / "post.gor", [(base, post)], {0: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv1"})
    log = tmp_path / "diff.jsonl"
    srv = WSGIServer(("127.0.0.1", 0), candidate, log=None)
    srv.start()
    try:
        options = Options(paths=[str(path)], target=f"http://127.0.0.1:{srv.server_port}", speed=0, compare=True,
                          compare_settings=CompareSettings(log=str(log), examples=1))  # fmt: skip
        Replay(options).run()
    finally:
        srv.stop(timeout=1)
    [example] = [json.loads(line) for line in log.read_text().splitlines() if '"example"' in line]
    shown = example["request"]
    assert (base64.b64decode(shown["body"]), shown["body_length"]) == (b'{"id": 42}\n', 11)
    assert example["endpoint"] == "POST /orders"


def test_an_answer_cut_short_by_the_target_is_counted_no_answer(tmp_path):
    from tests.helpers import ScriptedServer
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    def cut_short(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        return False

    base = 1_764_160_000_000_000_000
    path = gor(tmp_path / "one.gor", [(base, get("/users/7"))], {0: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
    target = ScriptedServer(cut_short)
    try:
        summary = Replay(Options(paths=[str(path)], target=target.address, speed=0, compare=True)).run()
    finally:
        target.stop()
    compare = summary["compare"]
    assert compare["skipped"] == {"no_answer": 1} and list(compare["by_endpoint"]) == ["GET /users/{id}"]


def test_looping_over_a_recording_that_sends_nothing_ends_at_once(target):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options
    from wsgimirror.record.summary import exit_status

    options = Options(paths=[str(FIXTURE)], target=target.address, speed=0, loop=True, methods=frozenset({"PATCH"}))
    with gevent.Timeout(5):  # no --duration: without the guard it would go round forever
        summary = Replay(options).run()
    assert summary["sent"] == 0 and summary["filtered"] == 3 and exit_status(summary) == 1


def test_a_flooding_worker_whose_first_pass_had_no_request_of_its_own_keeps_looping(target, tmp_path):
    """Two workers' replays in one process, sharing their claims: the second's first pass finds every request of
    a 5-request recording claimed by the first, and it must loop on to the blocks it claimed, not stop."""
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Claims, Options

    path = gor(tmp_path / "five.gor", [(i, get(f"/{i}")) for i in range(5)])
    claims = Claims()
    first, second = (Replay(Options(paths=[str(path)], target=target.address, speed=0, loop=True, duration=0.5,
                                    concurrency=1, claims=claims)) for _ in range(2))  # fmt: skip
    runs = [gevent.spawn(first.run), gevent.spawn(second.run)]
    gevent.joinall(runs, timeout=10, raise_error=True)
    sent = [run.value["sent"] for run in runs]
    assert all(run.successful() for run in runs) and sent[0] > 0 and sent[1] > 0, sent
    assert len(target.requests) == sum(sent)


@pytest.mark.parametrize("pace", [{"speed": 0}, {"rate": 1000.0}], ids=["flood", "paced"])
def test_a_payload_that_cannot_go_to_its_temporary_file_skips_the_file_from_there_and_says_why(target, tmp_path, pace):
    """A body past the 32 KiB kept in memory goes to a temporary file; when that fails (TMPDIR full, here the
    file size limit), the file is skipped from there with a warning naming the temporary file, and nothing leaks."""
    import resource
    import tempfile

    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options
    from wsgimirror.record.summary import exit_status

    upload = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n" + b"u" * 200_000
    path = gor(tmp_path / "big.gor", [(1, get("/before")), (2, upload), (3, get("/after"))])
    warnings: list[str] = []
    replay_ = Replay(Options(paths=[str(path)], target=target.address, warn=warnings.append, **pace))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        summary = replay_.run()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert warnings == [f"{path}: a temporary file for a payload over 32 KiB in {tempfile.gettempdir()}: "
                        "File too large; skipped from there"]  # fmt: skip
    assert [r.target for r in target.requests] == ["/before"]
    assert (summary["sent"], summary["unreadable_files"], exit_status(summary)) == (1, 1, 1)


def test_a_flood_whose_reading_fails_raises_it_instead_of_ending_short(target, tmp_path, monkeypatch):
    """As a paced replay does: a bug or fault while reading is not a replay that sent fewer requests."""
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options, Source

    path = gor(tmp_path / "ten.gor", [(i, get(f"/{i}")) for i in range(10)])
    real_take, taken = Source._take, []

    def failing_take(self, payload):
        taken.append(payload)
        if len(taken) == 4:
            raise RuntimeError("reading broke")
        return real_take(self, payload)

    monkeypatch.setattr(Source, "_take", failing_take)
    with pytest.raises(RuntimeError, match="reading broke"):
        Replay(Options(paths=[str(path)], target=target.address, speed=0, concurrency=2)).run()
    assert sorted(r.target for r in target.requests) == ["/0", "/1", "/2"] and len(taken) == 4


def test_the_summarys_figures_are_rounded_as_documented():
    from wsgimirror.record.replay import Latencies, Replay
    from wsgimirror.record.source import Options

    latencies = Latencies()
    assert latencies.percentile_ms(0.5) is None
    for i in range(1, 101):  # 1 to 100 ms
        latencies.add(i / 1000)
    assert (latencies.percentile_ms(0.5), latencies.percentile_ms(0.99)) == (51.0, 100.0)
    one = Latencies()
    one.add(0.0123456)
    assert one.percentile_ms(0.99) == 12.346
    replayer = Replay(Options(paths=[str(FIXTURE)], target="http://127.0.0.1:1"))
    replayer.results.sent = replayer.results.succeeded = 10
    for i in range(1, 201):  # 1 to 200 ms: the p99 is not the slowest
        replayer.results.latencies.add(i / 1000)
    summary = replayer.summary(0.5123)  # under a second: the rate is still a rate
    assert (summary["seconds"], summary["rate"], summary["latency_ms"]) == (0.512, 19.5, {"p50": 101.0, "p99": 199.0})
    assert replayer.summary(0.0)["rate"] is None
    replayer.results.succeeded = 0
    assert replayer.summary(1.0)["latency_ms"] is None and replayer.summary(1.0)["answered_rate"] is None


def test_past_the_kept_latencies_a_uniform_sample_stands_for_them(monkeypatch):
    from wsgimirror.record.replay import Latencies

    monkeypatch.setattr(Latencies, "KEPT", 1000)
    latencies = Latencies()
    for i in range(100_000):  # 0 to 99.999 ms, in order: a sample biased to either end would show
        latencies.add(i / 1_000_000)
    assert latencies.count == 100_000 and len(latencies._kept) == 1000
    assert 45 < latencies.percentile_ms(0.5) < 55 and latencies.percentile_ms(0.99) > 95


def test_a_replayed_head_does_not_wait_for_the_body_its_answer_announces(tmp_path):
    from tests.helpers import ScriptedServer
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    def head_answer(sock, head, body):  # kept alive, as a HEAD answer may be: no body follows its Content-Length
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        return True

    base = 1_764_160_000_000_000_000
    path = gor(tmp_path / "head.gor", [(base + i, f"HEAD /{i} HTTP/1.1\r\nHost: h\r\n\r\n".encode()) for i in range(3)])
    target = ScriptedServer(head_answer)
    try:
        summary = Replay(Options(paths=[str(path)], target=target.address, speed=0, concurrency=1, timeout=3)).run()
    finally:
        target.stop()
    assert summary["succeeded"] == 3 and summary["seconds"] < 2 and target.connections == 1


def no_content(sock, head, body):
    sock.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    return True


def test_a_flood_keeps_one_connection_per_sender_and_closes_them_at_the_end(tmp_path):
    from tests.helpers import ScriptedServer

    path = gor(tmp_path / "many.gor", [(i, get(f"/{i}")) for i in range(200)])
    target = ScriptedServer(no_content)
    try:
        status, out, _ = replay(str(path), "--target", target.address, "--speed", "0", "--concurrency", "4", "--json")
        wait_until(lambda: target.ended == target.connections, 5, "the replay's connections to close")
    finally:
        target.stop()
    assert status == 0 and json.loads(out)["succeeded"] == 200
    assert target.connections == 4 and len(target.requests) == 200


@pytest.mark.parametrize("closing", ["announced", "silent"])
def test_a_flood_sends_each_request_once_when_the_target_closes_connections(tmp_path, closing):
    """Every third answer ends its connection: with ``Connection: close``, or silently after a keep-alive answer
    (the next request, written to the closed connection, gets nothing back and goes out again on a new one)."""
    from tests.helpers import ScriptedServer

    def answer(sock, head, body):
        count = len(target.requests)
        close = closing == "announced" and count % 3 == 0
        sock.sendall(b"HTTP/1.1 204 No Content\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
        return count % 3 != 0

    path = gor(tmp_path / "many.gor", [(i, get(f"/{i}")) for i in range(60)])
    target = ScriptedServer(answer)
    try:
        status, out, _ = replay(str(path), "--target", target.address, "--speed", "0", "--concurrency", "2", "--json")
    finally:
        target.stop()
    summary = json.loads(out)
    assert status == 0 and (summary["succeeded"], summary["failed"]) == (60, 0)
    sent = sorted(int(head.split(b" ")[1][1:]) for head, _ in target.requests)
    assert sent == list(range(60)) and target.connections >= 20


def test_a_target_whose_answer_head_never_ends_fails_each_request_at_once(tmp_path):
    """replay --compare keeps the answer to compare: an endless head must not grow it (nor hold it to --timeout)."""
    from tests.e2e.test_mirror_faults import headers_forever
    from tests.helpers import ScriptedServer

    target = ScriptedServer(headers_forever)
    try:
        path = gor(tmp_path / "t.gor", [(1, get("/a")), (2, get("/b"))], {0: b"HTTP/1.1 200 OK\r\n\r\n"})
        started = time.monotonic()
        status, out, _ = replay(str(path), "--target", target.address, "--compare", "--timeout", "30", "--json")
        assert time.monotonic() - started < 10
    finally:
        target.stop()
    summary = json.loads(out)
    assert status == 1 and summary["failures"] == {"head_too_large": 2}


def test_the_summarys_rates_are_what_was_sent_and_answered_per_second():
    from wsgimirror.record.replay import Replay, progress_line
    from wsgimirror.record.source import Options

    replay_ = Replay(Options(paths=[str(FIXTURE)], target="http://127.0.0.1:1"))
    replay_.results.sent, replay_.results.succeeded = 10, 7
    summary = replay_.summary(0.3)
    assert (summary["rate"], summary["answered_rate"], summary["seconds"]) == (33.3, 23.3, 0.3)
    assert replay_.summary(2.0)["answered_rate"] == 3.5
    assert replay_.summary(0.0)["answered_rate"] is None
    replay_.results.succeeded = 0
    assert replay_.summary(2.0)["answered_rate"] is None
    assert "rate 0.0/s" in progress_line(3, 3, 0, 0.0, None)  # nothing elapsed yet


def test_a_loop_over_one_request_that_is_filtered_out_ends_at_once(target, tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    path = gor(tmp_path / "one.gor", [(1, get("/only"))])
    with gevent.Timeout(5):  # no --duration: without the guard it would go round forever
        summary = Replay(Options(paths=[str(path)], target=target.address, speed=0, loop=True,
                                 methods=frozenset({"PATCH"}))).run()  # fmt: skip
    assert (summary["records"], summary["sent"], summary["filtered"]) == (1, 0, 1)


def test_a_worker_left_no_request_of_a_one_request_recording_loops_on_to_its_blocks(target, tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Claims, Options

    path = gor(tmp_path / "one.gor", [(1, get("/only"))])
    claims = Claims()
    claims.take()  # another worker claimed the first block, the only request in it
    summary = Replay(Options(paths=[str(path)], target=target.address, speed=0, loop=True, duration=0.3,
                             claims=claims)).run()  # fmt: skip
    # its first pass had no request of its own; it goes on, and from the 17th pass sends the blocks it claims
    assert summary["sent"] > 0 and summary["seconds"] >= 0.25


def test_replay_compare_takes_the_app_side_latency_from_the_recording(target):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    summary = Replay(Options(paths=[str(FIXTURE)], target=target.address, speed=0, compare=True)).run()
    latency = summary["compare"]["by_endpoint"]["POST /orders"]["latency"]
    # the recorded 1,523,000 ns, in its histogram bucket
    assert latency["reference"] == {"n": 1, "p50_ms": 1.562, "p99_ms": 1.562}
    assert latency["candidate"]["n"] == 1 and 0 < latency["candidate"]["p50_ms"] < 5000
    assert summary["compare"]["skipped"] == {"not_recorded": 2}


def test_a_recorded_answer_that_is_not_http_at_all_is_counted_not_recorded_for_its_endpoint(target, tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    path = gor(
        tmp_path / "answers.gor",
        [(1, get("/a")), (2, get("/a"))],
        {0: b"x\r\n\r\n", 1: b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"},
    )
    summary = Replay(Options(paths=[str(path)], target=target.address, speed=0, compare=True)).run()
    assert summary["compare"]["skipped"] == {"not_recorded": 2} and summary["succeeded"] == 2
    assert list(summary["compare"]["by_endpoint"]) == ["GET /a"]


def test_duration_stops_a_flood_in_the_middle_of_a_pass(tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    path = gor(tmp_path / "long.gor", [(i, get(f"/{i}")) for i in range(1000)])
    with Sink(delay=0.01) as slow:
        summary = Replay(Options(paths=[str(path)], target=slow.address, speed=0, concurrency=1,
                                 duration=0.2)).run()  # fmt: skip
    assert 0 < summary["sent"] < 200 and summary["seconds"] < 2  # not the pass's 1,000 requests (10 s)


def test_on_a_terminal_a_warning_clears_the_progress_line_first(target, tmp_path):
    import io

    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bad = tmp_path / "bad.gor.gz"
    bad.write_bytes(b"not gzip")
    terminal = Terminal()
    Replay(Options(paths=[str(FIXTURE), str(bad)], target=target.address, speed=0), progress=terminal).run()
    warning = next(line for line in terminal.getvalue().split("\n") if "bad.gor.gz" in line)
    assert warning.startswith("\r\033[Kwsgimirror replay: ") and "Not a gzipped file" in warning


def test_a_recorded_answer_echoing_the_recorded_host_is_not_a_difference_when_the_target_echoes_its_own(tmp_path):
    """The replay sends the target's Host: an answer that echoes it differs from the recording only by that."""
    import json as json_

    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    def echo_host(environ, start_response):
        body = json_.dumps({"host": environ["HTTP_HOST"], "n": 1}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    recorded = json_.dumps({"host": "rec.example", "n": 1}).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(recorded)
    path = gor(tmp_path / "echo.gor", [(1, get("/echo"))], {0: answer + recorded})
    server = serve(echo_host)
    try:
        address = f"http://127.0.0.1:{server.server_port}"
        summary = Replay(Options(paths=[str(path)], target=address, speed=0, compare=True)).run()
    finally:
        server.stop(timeout=1)
    fields = summary["compare"]["by_endpoint"]["GET /echo"]["fields"]
    assert fields["body.host"]["mirror_made"] == 1 and fields["body.host"]["excess"] == 0.0


def test_concurrency_bounds_a_paced_replay_too(tmp_path):
    from wsgimirror.record.replay import Replay
    from wsgimirror.record.source import Options

    path = gor(tmp_path / "three.gor", [(i, get(f"/{i}")) for i in range(3)])
    with Sink(delay=0.3) as slow:
        summary = Replay(Options(paths=[str(path)], target=slow.address, rate=100.0, concurrency=1)).run()
    assert summary["succeeded"] == 3 and summary["seconds"] >= 0.85  # one at a time, though due 10 ms apart
