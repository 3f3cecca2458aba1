"""Record and replay as GoReplay reads and writes: its files' edges, its names, its order and pacing, bounded memory.

The fixtures under ``tests/data/goreplay/`` are written byte for byte as GoReplay writes; its README names the
source rule each follows. Every test replays with the ``wsgimirror replay`` command to a real server.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import socket
import sys
import time
from email.utils import formatdate

import gevent
import pytest

from tests.e2e.test_record import files, record_config, recorded
from tests.e2e.test_replay import get, gor, replay
from tests.gor_format import payloads
from tests.helpers import ROOT, Sink, serve, wait_until
from wsgimirror.middleware import MirrorMiddleware
from wsgimirror.record.gor import SEPARATOR

DATA = ROOT / "tests" / "data" / "goreplay"
EMOJI = "🐵🙈🙉".encode()
BASE = 1_764_160_000_000_000_000


@pytest.fixture
def target():
    with Sink() as sink:
        yield sink


def sent(sink: Sink) -> list[str]:
    return [r.target for r in sink.requests]


def run(*args: str) -> tuple[int, dict, str]:
    status, out, err = replay(*args, "--json")
    return status, json.loads(out), err


# -- 1. the separator inside a body ---------------------------------------------------------------------------


def test_a_file_of_separator_edges_replays_every_request_once_and_whole(target):
    status, summary, _ = run(str(DATA / "separators.gor"), "--target", target.address, "--speed", "0",
                             "--concurrency", "1")  # fmt: skip
    assert sent(target) == ["/a", "/b", "/c", "/d"]  # the first request too, and none forged
    bodies = {r.target: r.body for r in target.requests}
    assert bodies["/a"] == b"tail:\n" + EMOJI  # its end is the separator's text, kept
    assert bodies["/c"].startswith(b"note=" + SEPARATOR + b"1 ") and b"DELETE /admin/users/1" in bodies["/c"]
    assert bodies["/c"].endswith(SEPARATOR + b"&rest=1") and len(bodies["/c"]) == 144
    assert (status, summary["skipped_malformed"], summary["records"]) == (0, 0, 4)


# -- 2 and 3. what a recording holds of the answers ----------------------------------------------------------


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"str", b"eam"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body) + 3))])
    return [b"ok:" + body]


@pytest.fixture
def recorder(tmp_path):
    middleware = MirrorMiddleware(echo, record_config(f"file://{tmp_path}/traffic.gor"))
    server = serve(middleware)
    yield middleware, server.server_port
    server.stop(timeout=1)
    middleware.close()


def raw_exchange(port: int, request: bytes) -> bytes:
    """What a client receives: the answer's head, read off the socket until the server closes or 1 s passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(request)
        data = b""
        try:
            while b"\r\n\r\n" not in data or not data.endswith((b"ok:", b"0\r\n\r\n", b"eam")):
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
        except socket.timeout:
            pass
    return data.partition(b"\r\n\r\n")[0]


def names(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_an_answer_is_recorded_with_the_headers_the_server_added(recorder, tmp_path):
    """gevent.pywsgi adds Date always and Connection to an HTTP/1.0 answer; the recording has them too. Framing
    is the documented difference: an answer without Content-Length is recorded with one, not chunked."""
    middleware, port = recorder
    shapes = [b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n",
              b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
              b"GET /stream HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"]  # fmt: skip
    received = [names(raw_exchange(port, shape)) for shape in shapes]
    recorded(middleware, len(shapes))
    middleware.close()
    answers = [p for p in payloads(files(tmp_path)[0]) if p.kind == 2]
    for got, answer in zip(received, answers):
        kept = names(answer.head)
        assert kept.pop("date") == got.pop("date") or abs(time.time() - answer.timestamp / 1e9) < 5
        if "transfer-encoding" in got:
            assert got.pop("transfer-encoding") == "chunked" and kept.pop("content-length") == "6"
        assert kept == got
    assert [names(a.head).get("connection") for a in answers] == [None, "close", "keep-alive", None]


def recording_of(recorder, tmp_path, requests: list[bytes]):
    """The file the recording middleware wrote of ``requests``, each sent on a connection of its own."""
    middleware, port = recorder
    for request in requests:
        raw_exchange(port, request)
    recorded(middleware, len(requests))
    middleware.close()
    [path] = files(tmp_path)
    return path


def test_an_answer_is_stamped_when_it_started_so_that_it_sorts_after_its_request(recorder, tmp_path, target):
    posts = [
        b"POST /n/%d HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi" % i for i in range(40)
    ]
    path = recording_of(recorder, tmp_path, posts)
    found = payloads(path)
    stamps = {(p.kind, p.id): p for p in found}
    for request in (p for p in found if p.kind == 1):
        answer = stamps[(2, request.id)]
        assert request.timestamp < answer.timestamp <= request.timestamp + answer.latency
        assert names(answer.head)["date"] == formatdate(answer.timestamp // 10**9, usegmt=True)
    _, summary, _ = run(str(path), "--target", target.address, "--speed", "0", "--compare")
    assert summary["compare"]["skipped"] == {} and summary["compare"]["compared"] == 40  # every answer found


# -- 4. cut requests --------------------------------------------------------------------------------------


def test_a_request_cut_at_goreplays_copy_buffer_is_skipped_and_counted_never_sent_shorter(target):
    status, out, _ = replay(str(DATA / "cut.gor"), "--target", target.address, "--speed", "0")
    assert sent(target) == ["/whole"]
    assert "not sent: 2 cut (shorter than framed)" in out and status == 0
    _, summary, _ = run(str(DATA / "cut.gor"), "--target", target.address, "--speed", "0")
    assert (summary["skipped_cut"], summary["sent"]) == (2, 1)


# -- 5. GoReplay's file names ------------------------------------------------------------------------------


def test_a_directory_replays_every_chunk_in_time_order_and_the_readmes_globs_match_goreplays_names(target):
    status, summary, _ = run(str(DATA / "chunks"), "--target", target.address, "--speed", "0", "--concurrency", "1")
    assert sent(target) == [f"/chunk/{i}" for i in range(1, 9)]  # two sets of chunks, interleaved by time
    assert (status, summary["records"]) == (0, 8)
    readme = (ROOT / "README.md").read_text()
    for pattern, expected in (("api.gor_*.gz", ["api.gor_0.gz", "api.gor_1.gz"]),
                              ("web_*.gor", ["web_0.gor", "web_1.gor"])):  # fmt: skip
        assert f"'/var/lib/traffic/{pattern}'" in readme
        assert sorted(os.path.basename(p) for p in glob.glob(str(DATA / "chunks" / pattern))) == expected


# -- 6. lenient where GoReplay is ------------------------------------------------------------------------------


def test_odd_header_lines_send_what_goreplay_sends(target):
    status, summary, _ = run(str(DATA / "odd-headers.gor"), "--target", target.address, "--speed", "0",
                             "--concurrency", "1")  # fmt: skip
    # seven of eight, as GoReplay; the two stamped 0 (a timestamp "soon", and the double space's) come first
    assert sent(target) == ["/odd/4", "/odd/5", "/odd/1", "/odd/2", "/odd/3", "/odd/6", "/odd/7"]
    assert (summary["skipped_unknown_type"], summary["skipped_malformed"], status) == (1, 0, 0)


def test_a_gzip_file_broken_in_the_middle_keeps_what_came_before_and_says_so(target, tmp_path):
    whole = gzip.compress(b"".join(b"1 %024x %d -1\n" % (i, BASE + i) + get(f"/g/{i}") + SEPARATOR
                                   for i in range(2000)))  # fmt: skip
    broken = bytearray(whole)
    broken[len(broken) // 2 : len(broken) // 2 + 64] = b"\x00" * 64  # a damaged block: the stream cannot go on
    path = tmp_path / "broken.gor.gz"
    path.write_bytes(bytes(broken))
    status, summary, err = run(str(path), "--target", target.address, "--speed", "0")
    assert 0 < summary["sent"] < 2000 and summary["sent"] == summary["succeeded"] == len(target.requests)
    assert summary["unreadable_files"] == 1 and "skipped from there" in summary["file_problems"][0]
    assert status == 1 and err.startswith(f"wsgimirror replay: {path}: ")


# -- 7 and 8. order and pacing ---------------------------------------------------------------------------------


def test_payloads_out_of_order_within_the_read_depth_are_sent_in_time_order(target):
    run(str(DATA / "out-of-order.gor"), "--target", target.address, "--speed", "0", "--concurrency", "1")
    assert sent(target) == [f"/order/{i}" for i in (1, 2, 3, 4, 5)]
    target.requests.clear()
    run(str(DATA / "out-of-order.gor"), "--target", target.address, "--speed", "0", "--concurrency", "1",
        "--read-depth", "1")  # fmt: skip
    assert sent(target) == [f"/order/{i}" for i in (3, 1, 2, 5, 4)]  # a window of one: file order


def test_a_long_gap_is_kept_by_default_and_capped_only_when_asked(tmp_path):
    path = gor(tmp_path / "gap.gor", [(BASE, get("/before")), (BASE + 3 * 10**9, get("/after"))])
    with Sink() as kept, Sink() as capped:
        runs = [gevent.spawn(replay, str(path), "--target", kept.address),
                gevent.spawn(replay, str(path), "--target", capped.address, "--max-wait", "0.5")]  # fmt: skip
        gevent.joinall(runs, raise_error=True)
        gaps = [sink.requests[1].at - sink.requests[0].at for sink in (kept, capped)]
    assert 2.9 <= gaps[0] < 4.5 and 0.45 <= gaps[1] < 1.5


# -- 11 and 12. the mirror's mark, and a summary of what happened ------------------------------------------


def staging(candidate: Sink):
    """A staging app wrapped to mirror everything to ``candidate``."""
    config = {"ReverseProxy": {"Routes": {"all": {"Match": {"Paths": ["*"]}, "Metadata": {"MirrorCluster": "c"}}},
                               "Clusters": {"c": {"Destinations": [{"Address": candidate.address}]}}}}  # fmt: skip
    middleware = MirrorMiddleware(echo, config)
    return middleware, serve(middleware)


def test_replayed_traffic_is_mirrored_by_a_wrapped_target_unless_the_mark_is_kept(recorder, tmp_path):
    path = recording_of(recorder, tmp_path, [b"GET /r/%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % i
                                             for i in range(3)])  # fmt: skip
    assert all(p.header("X-Mirrored-By") == "wsgimirror" for p in payloads(path) if p.kind == 1)
    with Sink() as candidate:
        wrapped, server = staging(candidate)
        address = f"http://127.0.0.1:{server.server_port}"
        try:
            run(str(path), "--target", address, "--speed", "0")
            wait_until(lambda: len(candidate.requests) == 3, 5, "the staging app's mirrors")
            assert wrapped.stats()["dropped"] == {}
            run(str(path), "--target", address, "--speed", "0", "--keep-mirror-mark")
            wait_until(lambda: wrapped.stats()["dropped"] == {"loop": 3}, 5, "three loops")
            assert len(candidate.requests) == 3
        finally:
            server.stop(timeout=1)
            wrapped.close()


def test_a_replay_refused_everywhere_reports_no_latency_and_no_answer_rate(tmp_path):
    from tests.helpers import free_port

    status, out, _ = replay(str(DATA / "cut.gor"), str(DATA / "out-of-order.gor"), "--target",
                            f"http://127.0.0.1:{free_port()}", "--speed", "0")  # fmt: skip
    assert "latency" not in out and "none answered" in out and "failures: refused 6" in out and status == 1


# -- 9 and 10. memory -------------------------------------------------------------------------------------------


HIGH_WATER = """
import sys
from wsgimirror.commands.cli import main
try:
    status = main(sys.argv[1:])
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    sys.stderr.write("peak-kib %s\\n" % peak.split()[1])
sys.exit(status)
"""


def peak_rss_mib(*args: str) -> tuple[float, str]:
    """Run ``wsgimirror`` as a child; its peak resident memory in MiB (its own, read from /proc at its exit: a
    forked child's rusage would count the test process's pages from before the exec), and its output."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", HIGH_WATER, *args], capture_output=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)  # fmt: skip
    err = proc.stderr.decode(errors="replace")
    peak = int(err.rsplit("peak-kib ", 1)[1].split()[0])
    return peak / 1024, proc.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory):
    """The replay command's own peak on a tiny file: what the runs below are measured against."""
    with Sink() as sink:
        return peak_rss_mib("replay", str(DATA / "cut.gor"), "--target", sink.address, "--speed", "0")[0]


def test_a_gzip_bomb_is_replayed_in_bounded_memory(tmp_path, baseline_rss):
    path = tmp_path / "bomb.gor.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b"1 %024x %d -1\nPOST /bomb HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (1, BASE, 200 << 20))
        for _ in range(200):
            out.write(b"\0" * (1 << 20))  # one line of 200 MiB
        out.write(SEPARATOR + b"1 %024x %d -1\n" % (2, BASE + 1) + get("/after") + SEPARATOR)
    assert path.stat().st_size < 1 << 20
    with Sink() as sink:
        peak, out = peak_rss_mib("replay", str(path), "--target", sink.address, "--speed", "0", "--json")
        bodies = {r.target: len(r.body) for r in sink.requests}
        assert json.loads(out)["succeeded"] == 2 and bodies == {"/bomb": 200 << 20, "/after": 0}
    assert peak - baseline_rss < 64, f"peak {peak:.0f} MiB against {baseline_rss:.0f} MiB"


def test_large_uploads_and_answers_never_sent_are_replayed_in_bounded_memory(tmp_path, baseline_rss):
    """Eight uploads of 16 MiB, and 48 GETs whose recorded answers of 1 MiB a filter leaves unsent."""
    path = tmp_path / "big.gor"
    upload = b"u" * (16 << 20)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 20) + b"a" * (1 << 20)
    with open(path, "wb") as out:
        for i in range(56):
            if i % 7 == 0:
                out.write(b"1 %024x %d -1\n" % (i, BASE + i) + b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: "
                          b"%d\r\n\r\n" % len(upload) + upload + SEPARATOR)  # fmt: skip
            else:
                out.write(b"1 %024x %d -1\n" % (i, BASE + i) + get(f"/g/{i}") + SEPARATOR)
            out.write(b"2 %024x %d 1000\n" % (i, BASE + i) + answer + SEPARATOR)
    with Sink() as sink:
        peak, out = peak_rss_mib("replay", str(path), "--target", sink.address, "--speed", "0", "--compare",
                                 "--filter-method", "POST", "--concurrency", "4", "--json")  # fmt: skip
        summary = json.loads(out)
        assert (summary["sent"], summary["succeeded"], summary["filtered"]) == (8, 8, 48)
        assert all(len(r.body) == 16 << 20 for r in sink.requests)
    # four uploads in flight may each hold their 1 MiB kept for comparison, and the sink's answers are tiny
    assert peak - baseline_rss < 64, f"peak {peak:.0f} MiB against {baseline_rss:.0f} MiB"


def test_report_reads_a_large_diff_log_in_bounded_memory(tmp_path, baseline_rss):
    log = tmp_path / "diff.jsonl"
    example = {
        "type": "example",
        "time": 1.0,
        "process": {"host": "h", "pid": 1, "start": 1.0},
        "endpoint": "GET /x",
        "differences": [{"field": "$.a", "kind": "changed"}],
        "filler": "f" * 2000,
    }
    line = (json.dumps(example) + "\n").encode()
    with open(log, "wb") as out:
        for _ in range((96 << 20) // len(line)):
            out.write(line)
    peak, out = peak_rss_mib("report", str(log), "--json")
    assert peak - baseline_rss < 48, f"peak {peak:.0f} MiB against {baseline_rss:.0f} MiB: {out[:300]}"


# -- 13. worker processes ----------------------------------------------------------------------------------


def test_workers_share_the_requests_each_sent_once_and_their_summaries_add_up(target, tmp_path):
    path = gor(tmp_path / "many.gor", [(BASE + i * 1000, get(f"/w/{i}")) for i in range(300)])
    fake = tmp_path / "b.gor.gz"
    fake.write_bytes(b"not gzip")
    status, out, err = replay(str(path), str(fake), str(DATA / "cut.gor"), "--target", target.address, "--speed",
                              "0", "--workers", "3", "--json", process=True)  # fmt: skip
    summary = json.loads(out)
    assert sorted(sent(target)) == sorted([f"/w/{i}" for i in range(300)] + ["/whole"])  # each once
    assert (summary["records"], summary["sent"], summary["succeeded"], summary["workers"]) == (303, 301, 301, 3)
    assert (summary["skipped_cut"], summary["unreadable_files"], summary["statuses"]) == (2, 1, {"200": 301})
    assert (
        err.count("Not a gzipped file") == 1 and status == 1
    )  # the first worker alone warns; a skipped file fails the run
    assert summary["latency_ms"]["p50"] is not None and summary["rate"] > 0


def test_flooding_workers_take_the_next_requests_when_free_so_one_held_up_holds_up_little(tmp_path):
    """With --speed 0 the workers claim blocks of requests as they go: one held by a slow answer leaves the rest to
    the other. (Each sending every 2nd request, the held worker's 200 would all wait for it.)"""
    from gevent.event import Event

    from wsgimirror.record.source import Claims

    released, arrived = Event(), []

    def app(environ, start_response):
        arrived.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/hold":
            released.wait(60)
        start_response("204 No Content", [])
        return []

    paths = ["/hold"] + [f"/w/{i}" for i in range(1, 400)]
    path = gor(tmp_path / "flood.gor", [(BASE + i, get(p)) for i, p in enumerate(paths)])
    server = serve(app)
    try:
        address = f"http://127.0.0.1:{server.server_port}"
        running = gevent.spawn(replay, str(path), "--target", address, "--speed", "0", "--workers", "2",
                               "--concurrency", "1", "--timeout", "60", "--json", process=True)  # fmt: skip
        # all but the rest of the held worker's block go out while /hold waits (within its --timeout)
        wait_until(lambda: len(arrived) >= len(paths) - Claims.BLOCK + 1, 20, "the requests the held worker left")
        released.set()
        status, out, _ = running.get(timeout=60)
    finally:
        released.set()
        server.stop(timeout=1)
    summary = json.loads(out)
    assert status == 0 and sorted(arrived) == sorted(paths)  # each once
    assert (summary["sent"], summary["succeeded"], summary["workers"]) == (400, 400, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--workers", "0"], "--workers must be at least 1, got 0"),
     (["--workers", "2", "--compare"], "--compare runs in one process: leave --workers at 1")],
)  # fmt: skip
def test_bad_worker_arguments_exit_2(args, message):
    status, _, err = replay(str(DATA / "cut.gor"), "--target", "http://127.0.0.1:1", *args)
    assert status == 2 and err == f"wsgimirror: {message}\n"
