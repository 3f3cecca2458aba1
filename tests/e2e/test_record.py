"""File destinations, end to end: real gevent servers and gunicorn write GoReplay files, read back byte for byte."""

from __future__ import annotations

import gzip
import json
import logging
import os
import stat
import sys
import tempfile
import time
from email.utils import formatdate
from pathlib import Path

import gevent
import pytest

from tests.gor_format import ID, payloads
from tests.helpers import Client, Process, free_port, one_request, wait_until, write_config
from wsgimirror import ConfigError, load_config
from wsgimirror.middleware import MirrorMiddleware
from wsgimirror.record.recorder import Recorder

PY = sys.executable


def echo_app(environ, start_response):
    """Answers with the body's length and first bytes, so each recorded answer is checkable."""
    body = environ["wsgi.input"].read()
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Seen", str(len(body)))])
    return [b"seen ", str(len(body)).encode(), b" ", body[:8]]


def record_config(address: str, *, record_responses: bool = True, route: dict | None = None, **sections) -> dict:
    metadata = {"MirrorCluster": "rec"}
    if record_responses:
        metadata["MirrorRecordResponses"] = "true"
    config = {
        "ReverseProxy": {
            "Routes": {"all": route or {"Match": {"Paths": ["*"]}, "Metadata": metadata}},
            "Clusters": {"rec": {"Destinations": [{"Address": address}]}},
        }
    }
    config.update(sections)
    config.setdefault("Record", {}).setdefault("FlushSeconds", 0.05)  # a copy counts as written once flushed
    return config


def files(directory: Path, pattern: str = "traffic_*") -> list[Path]:
    return sorted(directory.glob(pattern), key=lambda p: int(p.name.split("_")[2].split(".")[0]))


def recorded(middleware, count: int) -> dict:
    wait_until(lambda: middleware.stats()["succeeded"] + middleware.stats()["failed"] >= count, 10,
               f"{count} copies recorded")  # fmt: skip
    return middleware.stats()


@pytest.fixture
def recording(server, tmp_path):
    """``recording(config)`` serves echo_app wrapped, and closes the middleware at the end."""
    made = []

    def factory(config, app=echo_app):
        middleware = MirrorMiddleware(app, config)
        made.append(middleware)
        return middleware, server(middleware)

    yield factory
    for middleware in made:
        middleware.close()


def test_requests_and_answers_are_recorded_byte_for_byte_in_goreplays_format(recording, tmp_path):
    middleware, address = recording(record_config(f"file://{tmp_path}/traffic.gor", Mirror={"MemoryBodyBytes": 65536}))
    large = os.urandom(3 << 20).replace(b"\n\xf0", b"\n\x00")  # spills to disk; no separator inside
    binary = bytes(range(256)) * 16
    chunked = b"chunk-" * 5000
    before = time.time_ns()
    with Client(address) as client:
        assert client.request("POST", "/upload?kind=large", body=large, host="shop.test").status == 201
        assert client.request("PUT", "/bin?p=%2Fx", body=binary, headers={"Content-Type": "application/octet-stream"},
                              host="shop.test").status == 201  # fmt: skip
        assert client.request("POST", "/chunked", body=chunked, chunked=True, host="shop.test").status == 201
        assert client.request("GET", "/empty", host="shop.test").status == 201
    after = time.time_ns()
    stats = recorded(middleware, 4)
    assert (stats["succeeded"], stats["failed"], stats["by_destination"][f"rec/file://{tmp_path}/traffic.gor"]
            ["succeeded"]) == (4, 0, 4)  # fmt: skip
    middleware.close()

    [path] = files(tmp_path)
    assert path.name == f"traffic_{os.getpid()}_0.gor"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = payloads(path)
    assert [p.kind for p in found] == [1, 2] * 4
    requests, answers = found[0::2], found[1::2]
    for request, answer in zip(requests, answers):
        assert ID.fullmatch(request.id) and answer.id == request.id
        assert before <= request.timestamp <= after and request.latency == -1
        assert 0 < answer.latency < after - before
        # stamped as GoReplay stamps an answer: when it started, after its request, before its end
        assert request.timestamp < answer.timestamp <= request.timestamp + answer.latency
        assert answer.header("Date") == formatdate(answer.timestamp // 10**9, usegmt=True)  # as the server added it
    assert len({r.id for r in requests}) == 4
    assert [r.start for r in requests] == ["POST /upload?kind=large HTTP/1.1", "PUT /bin?p=%2Fx HTTP/1.1",
                                           "POST /chunked HTTP/1.1", "GET /empty HTTP/1.1"]  # fmt: skip
    assert [r.body for r in requests] == [large, binary, chunked, b""]
    assert [r.header("Content-Length") for r in requests] == [str(len(large)), "4096", str(len(chunked)), None]
    assert all(r.header("Host") == "shop.test" for r in requests)  # the original Host: a recording names no one
    assert requests[2].header("Transfer-Encoding") is None
    assert requests[1].header("Content-Type") == "application/octet-stream"
    assert requests[0].header("X-Mirrored-By") == "wsgimirror"
    assert [a.start for a in answers] == ["HTTP/1.1 201 Created"] * 4
    assert answers[0].body == b"seen %d " % len(large) + large[:8]
    assert answers[0].header("X-Seen") == str(len(large))
    assert answers[0].header("Content-Length") == str(len(answers[0].body))


def test_a_gzip_destination_writes_a_gzip_file_that_holds_the_same_payloads(recording, tmp_path):
    middleware, address = recording(record_config(f"file://{tmp_path}/traffic.gor.gz"))
    for i in range(3):
        assert one_request(address, method="POST", target=f"/n/{i}", body=b"x" * i).status == 201
    recorded(middleware, 3)
    middleware.close()
    [path] = files(tmp_path)
    assert path.name == f"traffic_{os.getpid()}_0.gor.gz" and path.read_bytes()[:2] == b"\x1f\x8b"
    found = payloads(path)
    assert [p.start for p in found[0::2]] == ["POST /n/0 HTTP/1.1", "POST /n/1 HTTP/1.1", "POST /n/2 HTTP/1.1"]
    assert [p.body for p in found[1::2]] == [b"seen 0 ", b"seen 1 x", b"seen 2 xx"]


def test_records_are_flushed_every_flush_seconds_while_the_server_runs(recording, tmp_path):
    _middleware, address = recording(record_config(f"file://{tmp_path}/traffic.gor.gz", Record={"FlushSeconds": 0.2}))
    assert one_request(address, method="POST", target="/live", body=b"abc").status == 201

    def readable() -> bool:
        found = files(tmp_path)
        if not found:
            return False
        with open(found[0], "rb") as fh:
            data = gzip.GzipFile(fileobj=fh).read1(1 << 20)  # a gzip stream flushed, not ended
        return b"POST /live" in data and b"seen 3 abc" in data

    wait_until(readable, 5, "the record to be flushed to the file")


def test_answers_are_cut_at_compare_max_body_bytes_and_keep_their_own_content_length(recording, tmp_path):
    def big(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a" * 3000, b"b" * 3000])  # no Content-Length: gevent chunks it

    middleware, address = recording(record_config(f"file://{tmp_path}/t.gor", Compare={"MaxBodyBytes": 4000}), big)
    response = one_request(address, target="/big")
    assert response.body == b"a" * 3000 + b"b" * 3000
    recorded(middleware, 1)
    middleware.close()
    _, answer = payloads(files(tmp_path, "t_*")[0])
    assert answer.body == b"a" * 3000 + b"b" * 1000
    assert answer.header("Content-Length") == "4000"  # added for the bytes recorded (the app set none)
    assert answer.header("Transfer-Encoding") is None


def test_without_record_responses_only_requests_are_written(recording, tmp_path):
    middleware, address = recording(record_config(f"file://{tmp_path}/t.gor", record_responses=False))
    one_request(address, method="POST", target="/only", body=b"q")
    recorded(middleware, 1)
    middleware.close()
    assert [(p.kind, p.body) for p in payloads(files(tmp_path, "t_*")[0])] == [(1, b"q")]


def test_a_sized_multi_chunk_answer_is_recorded_once_though_gevent_iterates_it_twice(recording, tmp_path):
    def listed(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"one ", b"two ", b"three"]  # gevent sums the lengths while writing the first chunk

    middleware, address = recording(record_config(f"file://{tmp_path}/t.gor"), listed)
    assert one_request(address, target="/l").body == b"one two three"
    recorded(middleware, 1)
    middleware.close()
    assert payloads(files(tmp_path, "t_*")[0])[1].body == b"one two three"


def test_chunks_roll_over_at_chunk_bytes_and_recording_stops_at_max_bytes(recording, tmp_path):
    config = record_config(f"file://{tmp_path}/t.gor", record_responses=False,
                           Record={"ChunkBytes": 8192, "MaxBytes": 40000})  # fmt: skip
    middleware, address = recording(config)
    body = b"z" * 3000
    with Client(address) as client:
        for i in range(20):
            assert client.request("POST", f"/r/{i}", body=body).status == 201
    wait_until(lambda: middleware.stats()["succeeded"] + middleware.stats()["dropped"].get("disk_budget", 0) == 20)
    middleware.close()
    stats = middleware.stats()
    written = stats["succeeded"]
    assert 9 <= written <= 13 and stats["dropped"] == {"disk_budget": 20 - written}, stats
    chunks = files(tmp_path, "t_*")
    assert [c.name for c in chunks] == [f"t_{os.getpid()}_{n}.gor" for n in range(len(chunks))]
    assert len(chunks) >= 4 and all(c.stat().st_size <= 8192 + 3500 for c in chunks)
    assert sum(c.stat().st_size for c in chunks) <= 40000
    assert all(stat.S_IMODE(c.stat().st_mode) == 0o600 for c in chunks)
    targets = [p.start for c in chunks for p in payloads(c)]
    assert targets == [f"POST /r/{i} HTTP/1.1" for i in range(written)]  # in order, none lost before the budget


def test_a_new_process_never_writes_over_an_existing_chunk(recording, tmp_path):
    taken = tmp_path / f"t_{os.getpid()}_0.gor"
    taken.write_bytes(b"an earlier run's file")
    middleware, address = recording(record_config(f"file://{tmp_path}/t.gor"))
    one_request(address, target="/next")
    recorded(middleware, 1)
    middleware.close()
    assert taken.read_bytes() == b"an earlier run's file"
    assert next(p.start for p in payloads(tmp_path / f"t_{os.getpid()}_1.gor")) == "GET /next HTTP/1.1"


def test_the_hour_in_a_path_expands_when_a_chunk_opens(recording, tmp_path):
    middleware, address = recording(record_config(f"file://{tmp_path}/t-%Y%m%d%H.gor"))
    one_request(address, target="/t")
    recorded(middleware, 1)
    middleware.close()
    [path] = tmp_path.glob("t-*")
    assert path.name == f"t-{time.strftime('%Y%m%d%H', time.gmtime())}_{os.getpid()}_0.gor"


def test_a_full_disk_fails_the_copies_it_refuses_then_recording_resumes_in_a_new_chunk(recording, tmp_path, caplog):
    from wsgimirror.record import recorder as record_module

    record_module._failed._next, record_module._failed._held = 0.0, 0
    caplog.set_level(logging.WARNING, logger="wsgimirror.record")
    caplog.set_level(logging.WARNING, logger="wsgimirror.send.breaker")
    config = record_config(f"file://{tmp_path}/t.gor", record_responses=False, Record={"FlushSeconds": 0.1})
    middleware, address = recording(config)
    one_request(address, method="POST", target="/before", body=b"1")
    recorded(middleware, 1)
    chunk = str(tmp_path / f"t_{os.getpid()}_0.gor")
    wait_until(lambda: os.path.getsize(chunk) > 0, 5, "the first record to be flushed")
    [fd] = [int(fd) for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == chunk]
    full = os.open("/dev/full", os.O_WRONLY)  # the kernel answers every write with ENOSPC
    os.dup2(full, fd)
    os.close(full)
    one_request(address, method="POST", target="/refused", body=b"2" * 300_000)  # more than the file buffer
    stats = recorded(middleware, 2)
    assert (stats["failed"], stats["failures"]) == (1, {"disk_full": 1})
    one_request(address, method="POST", target="/after", body=b"3")
    stats = recorded(middleware, 3)
    middleware.close()
    assert (stats["succeeded"], stats["failed"]) == (2, 1)
    destination = f"rec/file://{tmp_path}/t.gor"
    for part in (stats["by_route"]["all"], stats["by_cluster"]["rec"], stats["by_destination"][destination]):
        assert (part["mirrored"], part["succeeded"], part["failed"], part["failures"]) == (3, 2, 1, {"disk_full": 1})
    assert 0 < stats["by_cluster"]["rec"]["latency_ms"]["p99"] < 5000  # from submission to the write's outcome
    assert [r.getMessage() for r in caplog.records if r.name == "wsgimirror.send.breaker"] == [
        f"mirror destination file://{tmp_path}/t.gor (cluster 'rec', route 'all') is failing: "
        f"disk_full: cannot write {tmp_path}/t.gor",
        f"mirror destination file://{tmp_path}/t.gor (cluster 'rec') recovered after 1 failures",
    ]
    assert [p.start for p in payloads(chunk)] == ["POST /before HTTP/1.1"]
    assert [p.start for p in payloads(tmp_path / f"t_{os.getpid()}_1.gor")] == ["POST /after HTTP/1.1"]
    [warning] = [r for r in caplog.records if "could not" in r.getMessage()]
    assert warning.getMessage() == f"wsgimirror could not record to {chunk}: [Errno 28] No space left on device"
    assert not warning.exc_info  # a full disk is no bug: no traceback


class _SlowBody:
    """A captured body whose bytes come only when the test says: it holds the writer thread."""

    def __init__(self, size: int, gate) -> None:
        self.size, self._gate, self.released = size, gate, 0

    def chunks(self, size):
        self._gate.acquire()
        yield b"s" * self.size

    def release(self) -> None:
        self.released += 1


def test_past_queue_bytes_copies_are_refused_as_backlog_full_and_nothing_is_held():
    import threading

    from wsgimirror.config.model import RecordSettings
    from wsgimirror.record.recorder import Record

    gate = threading.Lock()
    gate.acquire()
    outcomes = []
    recorder = Recorder("/dev/null/never.gor", RecordSettings(queue_bytes=10_000))
    first = _SlowBody(100, gate)
    assert recorder.submit(Record("a" * 24, 1, b"GET / HTTP/1.1\r\n\r\n", first, None, -1,
                                  lambda r, why: outcomes.append(why))) is None  # fmt: skip
    wait_until(lambda: not recorder._queue, 5, "the writer to take the first copy")
    queued = [_SlowBody(4000, gate) for _ in range(3)]
    answers = [recorder.submit(Record("b" * 24, 1, b"", body, None, -1, lambda r, why: outcomes.append(why)))
               for body in queued]  # fmt: skip
    assert answers == [None, None, "backlog_full"]  # 8,000 bytes wait; 12,000 would not fit in 10,000
    gate.release()
    assert recorder.close(5)
    assert outcomes == ["io_error", "io_error", "io_error"]  # /dev/null/ is no directory
    assert [first.released, *(b.released for b in queued[:2])] == [1, 1, 1]


def test_every_feature_of_a_cluster_applies_to_file_destinations(recording, tmp_path, sink):
    from prometheus_client import CollectorRegistry

    config = record_config(f"file://{tmp_path}/t.gor", record_responses=False)
    config["ReverseProxy"]["Routes"]["all"] = {
        "Match": {"Paths": ["*"]},
        "Metadata": {"MirrorCluster": "rec,net"},
        "Transforms": [{"RequestHeader": "X-Env", "Set": "shadow"}, {"PathRemovePrefix": "/api"}],
    }
    config["ReverseProxy"]["Clusters"]["net"] = {"Destinations": [{"Address": sink.address}]}
    config["ReverseProxy"]["Clusters"]["rec"]["Metadata"] = {"MirrorPercent": "50", "MirrorSampleBy": "key",
                                                              "HashBy": "header", "Key": "X-User"}  # fmt: skip
    config["Mirror"] = {"RemoveHeaders": ["Authorization"]}
    registry = CollectorRegistry()
    middleware = MirrorMiddleware(echo_app, config, prometheus=registry)
    from tests.helpers import serve

    srv = serve(middleware)
    try:
        for user in range(40):
            one_request(srv.address, method="POST", target="/api/items", body=b"i",
                        headers={"X-User": f"u{user}", "Authorization": "Bearer secret"})  # fmt: skip
        sink.wait_for(40)
    finally:
        srv.stop(timeout=1)
        middleware.close()
    rec = middleware.stats()["by_cluster"]["rec"]
    assert 10 <= rec["succeeded"] <= 30 and rec["succeeded"] + rec["dropped"]["sampled_out"] == 40
    found = payloads(files(tmp_path, "t_*")[0])
    assert len(found) == rec["succeeded"]
    assert all(p.start == "POST /items HTTP/1.1" and p.header("X-Env") == "shadow" for p in found)
    assert all(p.header("Authorization") is None for p in found)
    assert {p.header("X-User") for p in found} <= {f"u{u}" for u in range(40)}
    value = registry.get_sample_value(
        "wsgimirror_mirrors_total",
        {"route": "all", "cluster": "rec", "destination": f"rec/file://{tmp_path}/t.gor", "outcome": "succeeded"},
    )
    assert value == rec["succeeded"]
    assert middleware.stats()["by_cluster"]["net"]["succeeded"] == 40


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("file:///no/such/dir/t.gor", "directory '/no/such/dir' does not exist"),
        ("file://host/tmp/t.gor", "a file address names no host"),
        ("file:///tmp/", "must be file:///absolute/path/name.gor"),
        ("file:///tmp/%Y/t.gor", "expand in the file name only"),
        ("file:///tmp/t-%M.gor", "only %Y %m %d %H expand"),
    ],
)
def test_a_bad_file_address_is_refused_at_load_naming_its_key(address, message):
    with pytest.raises(ConfigError, match="^ReverseProxy.Clusters.rec.Destinations\\[0\\].Address: ") as err:
        load_config(record_config(address))
    assert message in str(err.value)


def test_a_directory_that_is_not_writable_is_refused_at_load(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: make the directory a file's child instead
        locked = tmp_path / "file"
        locked.write_text("")
        with pytest.raises(ConfigError, match="does not exist"):
            load_config(record_config(f"file://{locked}/t.gor"))
    else:
        with pytest.raises(ConfigError, match="is not writable"):
            load_config(record_config(f"file://{locked}/t.gor"))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"QueueBytes": 10}, "Record.QueueBytes: "),
        ({"ChunkBytes": "big"}, "Record.ChunkBytes: "),
        ({"FlushSeconds": 0}, "Record.FlushSeconds: "),
        ({"MaxBytes": -1}, "Record.MaxBytes: "),
    ],
)
def test_bad_record_settings_name_their_key(section, message, tmp_path):
    with pytest.raises(ConfigError, match=f"^{message}"):
        load_config(record_config(f"file://{tmp_path}/t.gor", Record=section))


def test_record_responses_must_be_true_or_false(tmp_path):
    config = record_config(f"file://{tmp_path}/t.gor")
    config["ReverseProxy"]["Routes"]["all"]["Metadata"]["MirrorRecordResponses"] = "yes"
    with pytest.raises(ConfigError, match='^ReverseProxy.Routes.all.Metadata.MirrorRecordResponses: must be "true"'):
        load_config(config)


def test_gunicorn_gevent_workers_each_write_their_own_files(tmp_path):
    port = free_port()
    config = write_config(tmp_path, record_config(f"file://{tmp_path}/traffic.gor"))
    proc = Process(
        [PY, "-m", "gunicorn", "-c", "examples/gunicorn.conf.py"],
        ready="Booting worker",
        env={"WSGIMIRROR_CONFIG": config, "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2"},
    )
    bodies = [json.dumps({"n": i, "pad": "p" * (i * 997)}).encode() for i in range(40)]
    try:
        proc.wait_for_line("Booting worker")
        workers = set()
        for body in bodies:
            response = one_request(("127.0.0.1", port), method="POST", target="/api/orders", body=body,
                                   host="127.0.0.1", headers={"Content-Type": "application/json"})  # fmt: skip
            assert response.status == 201
            workers.add(json.loads(response.body)["worker"])
    finally:
        status, _, err = proc.stop()
    assert status == 0 and "Traceback" not in err, err
    assert len(workers) == 2
    chunks = sorted(tmp_path.glob("traffic_*.gor"))
    assert {int(c.name.split("_")[1]) for c in chunks} == workers  # one file per worker, named by its pid
    found = [p for c in chunks for p in payloads(c)]
    requests = [p for p in found if p.kind == 1]
    assert sorted(r.body for r in requests) == sorted(bodies)  # every request, byte for byte, written at exit
    answers = {p.id: p for p in found if p.kind == 2}
    assert all(json.loads(answers[r.id].body)["created"] == json.loads(r.body) for r in requests)


def test_close_writes_what_is_queued_under_a_burst(recording, tmp_path):
    middleware, address = recording(record_config(f"file://{tmp_path}/t.gor", record_responses=False))

    def client(n):
        with Client(address) as c:
            for i in range(25):
                c.request("POST", f"/burst/{n}/{i}", body=b"b" * 20_000)

    gevent.joinall([gevent.spawn(client, n) for n in range(8)], raise_error=True)
    assert middleware.close(10)
    stats = middleware.stats()
    assert (stats["succeeded"], stats["failed"], stats["dropped"], stats["in_flight"]) == (200, 0, {}, 0)
    assert len(payloads(files(tmp_path, "t_*")[0])) == 200


def test_a_reload_away_from_a_file_closes_it_and_a_reload_back_writes_a_new_chunk(recording, tmp_path):
    first, second = f"file://{tmp_path}/a.gor", f"file://{tmp_path}/b.gor"
    middleware, address = recording(record_config(first, record_responses=False))
    one_request(address, target="/1")
    recorded(middleware, 1)
    chunk = str(tmp_path / f"a_{os.getpid()}_0.gor")

    def is_open(path: str) -> bool:
        return any(os.path.realpath(f"/proc/self/fd/{fd}") == path for fd in os.listdir("/proc/self/fd"))

    assert is_open(chunk)
    middleware.reload(record_config(second, record_responses=False))
    one_request(address, target="/2")
    recorded(middleware, 2)
    wait_until(lambda: not is_open(chunk), 5, "the file of the destination no longer configured to be closed")
    assert [p.start for p in payloads(chunk)] == ["GET /1 HTTP/1.1"]  # complete: flushed and closed
    middleware.reload(record_config(first, record_responses=False))
    one_request(address, target="/3")
    recorded(middleware, 3)
    one_request(address, target="/4")
    recorded(middleware, 4)
    middleware.close()
    # one chunk again for what follows: closing the earlier one was asked once, not for every batch
    assert [p.start for p in payloads(tmp_path / f"a_{os.getpid()}_1.gor")] == ["GET /3 HTTP/1.1", "GET /4 HTTP/1.1"]
    assert [p.start for p in payloads(tmp_path / f"b_{os.getpid()}_0.gor")] == ["GET /2 HTTP/1.1"]


def recorded_size(recording, tmp_path, name: str) -> int:
    """The bytes one copy of ``POST /same`` with a 3000-byte body takes in a file (all such copies take as many)."""
    middleware, address = recording(record_config(f"file://{tmp_path}/{name}.gor", record_responses=False))
    one_request(address, method="POST", target="/same", body=b"s" * 3000)
    recorded(middleware, 1)
    middleware.close()
    return (tmp_path / f"{name}_{os.getpid()}_0.gor").stat().st_size


def send_one_by_one(middleware, address, count: int) -> None:
    with Client(address) as client:
        for _ in range(count):
            client.request("POST", "/same", body=b"s" * 3000)
            wait_until(lambda: middleware.stats()["in_flight"] == 0)  # written (or refused) before the next


@pytest.mark.parametrize(("extra", "per_chunk"), [(0, 2), (1, 3)])
def test_a_chunk_ends_with_the_copy_that_reaches_chunk_bytes(recording, tmp_path, extra, per_chunk):
    size = recorded_size(recording, tmp_path, "probe")
    config = record_config(f"file://{tmp_path}/t.gor", record_responses=False,
                           Record={"ChunkBytes": 2 * size + extra})  # fmt: skip
    middleware, address = recording(config)
    send_one_by_one(middleware, address, 6)
    middleware.close()
    chunks = files(tmp_path, "t_*")
    assert [c.stat().st_size for c in chunks] == [per_chunk * size] * (6 // per_chunk)


def test_max_bytes_holds_exactly_the_copies_that_fit(recording, tmp_path):
    size = recorded_size(recording, tmp_path, "probe")
    # A copy is admitted when the bytes written so far plus its reservation fit; the reservation is its size
    # plus the room a payload header may take beyond this one's (26 bytes here). Exactly four fit.
    config = record_config(f"file://{tmp_path}/t.gor", record_responses=False,
                           Record={"MaxBytes": 4 * size + 26})  # fmt: skip
    middleware, address = recording(config)
    send_one_by_one(middleware, address, 7)
    middleware.close()
    stats = middleware.stats()
    assert (stats["succeeded"], stats["dropped"]) == (4, {"disk_budget": 3})
    assert stats["by_route"]["all"]["dropped"] == stats["by_cluster"]["rec"]["dropped"] == {"disk_budget": 3}
    destination = stats["by_destination"][f"rec/file://{tmp_path}/t.gor"]
    assert (destination["mirrored"], destination["succeeded"], destination["in_flight"]) == (4, 4, 0)
    dispatcher = middleware._generation.dispatcher
    [state] = dispatcher._runtime()[1]["rec"].destinations
    assert (dispatcher.active, state.in_flight) == (0, 0)  # a refused copy gives back what it counted
    assert sum(c.stat().st_size for c in files(tmp_path, "t_*")) == 4 * size


def an_answer(headers, body=b"body", status="200 OK"):
    from wsgimirror.capture.answer import Answer
    from wsgimirror.capture.body import CaptureBudget

    answer = Answer(1 << 20, CaptureBudget())
    answer.status_text, answer.headers = status, list(headers)
    answer.feed(body)
    return answer


def test_a_recorded_answer_frames_itself_without_transfer_encoding():
    from wsgimirror.record.recorder import response_message

    assert response_message(an_answer([("Transfer-Encoding", "chunked"), ("X-A", "1")])) == (
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 4\r\n\r\nbody"
    )
    assert response_message(an_answer([("content-length", "9")], b"cut")) == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\ncut"  # the app's own length stays: the body was cut
    )
    assert response_message(an_answer([("X-Name", "café ☕")], b"", "404 Not Found")) == (
        "HTTP/1.1 404 Not Found\r\nX-Name: café ?\r\nContent-Length: 0\r\n\r\n".encode("latin-1")
    )


class _Body:
    """A captured body the writer reads, with a gate the test can hold it at."""

    def __init__(self, size: int, gate=None, fail: Exception | None = None) -> None:
        self.size, self._gate, self._fail, self.released = size, gate, fail, 0

    def chunks(self, size):
        if self._gate is not None:
            self._gate.acquire()
            self._gate.release()
        if self._fail is not None:
            raise self._fail
        yield b"b" * self.size

    def release(self) -> None:
        self.released += 1


def a_record(body, outcomes, head=b"GET / HTTP/1.1\r\n\r\n"):
    from wsgimirror.record.recorder import Record

    return Record("c" * 24, 1, head, body, None, -1, lambda r, why: outcomes.append((r.id, why)))


def held_recorder(tmp_path, name="t.gor", **settings):
    """A recorder whose writer is held on a first copy until the returned gate is released."""
    from wsgimirror.config.model import RecordSettings
    from wsgimirror.util.green import new_lock

    gate = new_lock()  # a native lock: the writer is a native thread
    gate.acquire()
    outcomes: list = []
    recorder = Recorder(str(tmp_path / name), RecordSettings(**{"flush_seconds": 0.05, **settings}))
    assert recorder.submit(a_record(_Body(10, gate), outcomes)) is None
    wait_until(lambda: not recorder._queue, 5, "the writer to take the first copy")
    return recorder, gate, outcomes


def test_closing_gives_a_stuck_writer_only_the_time_left_and_says_it_did_not_finish(tmp_path):
    from wsgimirror.agent.runtime import Runtime
    from wsgimirror.util.green import new_lock

    config = load_config(record_config(f"file://{tmp_path}/t.gor"))
    cluster = config.clusters["rec"]
    runtime = Runtime()
    recorder = runtime.pool(cluster.destinations[0], config.mirror, cluster.http_client, config.record)
    gate = new_lock()  # the writer's disk hangs on the first copy
    gate.acquire()
    outcomes: list = []
    assert recorder.submit(a_record(_Body(10, gate), outcomes)) is None
    started = time.monotonic()
    assert runtime.join(timeout=0.05) is False
    assert time.monotonic() - started < 0.9
    gate.release()
    wait_until(lambda: recorder.close(0), 5, "the writer to end")
    assert [why for _, why in outcomes] == [None]


def test_a_copy_that_exactly_fills_queue_bytes_waits_and_one_byte_more_is_refused(tmp_path):
    recorder, gate, outcomes = held_recorder(tmp_path, queue_bytes=10_000)
    first = a_record(_Body(100), outcomes)
    room = 10_000 - first.size
    assert recorder.submit(first) is None
    exact = a_record(_Body(room - (first.size - 100)), outcomes)
    assert exact.size == room and recorder.submit(exact) is None
    assert recorder.submit(a_record(_Body(1), outcomes)) == "backlog_full"
    gate.release()
    assert recorder.close(5)
    assert [why for _, why in outcomes] == [None, None, None]


def test_past_max_bytes_recording_stops_for_good_with_one_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="wsgimirror.record")
    recorder, gate, outcomes = held_recorder(tmp_path, max_bytes=5_000)
    assert recorder.submit(a_record(_Body(6_000), outcomes)) == "disk_budget"
    assert recorder.submit(a_record(_Body(10), outcomes)) == "disk_budget"  # stopped, even for a small one
    assert recorder.submit(a_record(_Body(20), outcomes)) == "disk_budget"
    gate.release()
    assert recorder.close(5) and recorder.submit(a_record(_Body(10), outcomes)) == "closed"
    assert recorder.close(5)  # closing again says it is closed
    assert [r.getMessage() for r in caplog.records] == [
        f"recording to {tmp_path / 't.gor'} stopped: Record.MaxBytes (5000) written by this process"
    ]


def test_a_bug_while_writing_fails_the_copy_as_io_error_and_the_next_one_is_written(tmp_path, caplog):
    from wsgimirror.record import recorder as record_module

    record_module._failed._next, record_module._failed._held = 0.0, 0
    caplog.set_level(logging.WARNING, logger="wsgimirror.record")
    recorder, gate, outcomes = held_recorder(tmp_path)
    broken, fine = _Body(10, fail=RuntimeError("a bug")), _Body(10)
    recorder.submit(a_record(broken, outcomes))
    recorder.submit(a_record(fine, outcomes))
    gate.release()
    assert recorder.close(5)
    assert [why for _, why in outcomes] == [None, "io_error", None] and broken.released == fine.released == 1
    [warning] = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert warning.getMessage() == f"wsgimirror could not record to {tmp_path / 't.gor'}: RuntimeError('a bug')"
    assert warning.exc_info[0] is RuntimeError  # a bug: its traceback is logged
    assert len(recorder.files) == 2  # the chunk the failure may have cut was left; the next copy opened another


def test_without_gevents_threads_outcomes_are_counted_by_the_writer_itself(tmp_path, monkeypatch):
    from wsgimirror.record import recorder as record_module

    monkeypatch.setattr(record_module, "_hub_watcher", lambda deliver: None)
    outcomes: list = []
    from wsgimirror.config.model import RecordSettings

    recorder = Recorder(str(tmp_path / "t.gor"), RecordSettings(flush_seconds=0.05))
    body, broken = _Body(5), _Body(5, fail=RuntimeError("a bug"))
    assert recorder.submit(a_record(body, outcomes)) is None
    wait_until(lambda: outcomes, 5, "the outcome")
    assert outcomes == [("c" * 24, None)] and body.released == 1
    assert recorder.submit(a_record(broken, outcomes)) is None
    wait_until(lambda: len(outcomes) == 2, 5, "the second outcome")
    assert outcomes[1] == ("c" * 24, "io_error") and broken.released == 1
    recorder.close(5)


def test_a_failure_to_count_an_outcome_is_logged_and_the_others_are_still_counted(tmp_path, caplog):
    from wsgimirror.config.model import RecordSettings
    from wsgimirror.record import recorder as record_module
    from wsgimirror.record.recorder import Record

    record_module._failed._next, record_module._failed._held = 0.0, 0
    caplog.set_level(logging.WARNING, logger="wsgimirror.record")
    counted = []

    def done(record, why):
        if record.id == "bad" * 8:
            raise ValueError("broken counter")
        counted.append(why)

    recorder = Recorder(str(tmp_path / "t.gor"), RecordSettings(flush_seconds=0.05))
    for rid in ("bad" * 8, "e" * 24):
        assert recorder.submit(Record(rid, 1, b"GET / HTTP/1.1\r\n\r\n", _Body(3), None, -1, done)) is None
    assert recorder.close(5)
    assert counted == [None]
    [warning] = [r for r in caplog.records if "count" in r.getMessage()]
    assert warning.getMessage() == "wsgimirror could not count a recorded copy" and warning.exc_info[0] is ValueError


def test_what_a_copy_reserves_of_max_bytes_covers_what_it_writes_and_little_more(tmp_path):
    from wsgimirror.config.model import RecordSettings
    from wsgimirror.record.recorder import Record

    recorder = Recorder(str(tmp_path / "t.gor"), RecordSettings(flush_seconds=0.05))
    long_head = b"POST /a/long/path?x=1 HTTP/1.1\r\nHost: h.example\r\nX-A: " + b"a" * 500 + b"\r\n\r\n"
    answers = [
        None,
        an_answer([]),
        an_answer([("Content-Type", "text/plain")] * 20, b"x" * 5000, "503 Busy Now"),
        an_answer([], b"", "299 " + "r" * 300),
    ]  # a reason phrase longer than the room the estimate adds
    outcomes: list = []
    for head in (b"GET / HTTP/1.1\r\n\r\n", long_head):
        for answer in answers:
            record = Record("d" * 24, 1764160000000000000, head, _Body(777), answer, 123456789,
                            lambda r, why: outcomes.append(why))  # fmt: skip
            before, count = recorder.written, len(outcomes)
            assert recorder.submit(record) is None
            wait_until(lambda: len(outcomes) > count, 5, "the copy to be written")  # noqa: B023 - waited for here
            written = recorder.written - before
            assert outcomes[-1] is None and written <= record.size <= written + 100, (written, record.size)
    recorder.close(5)


def test_a_request_that_cannot_be_written_as_http_is_not_recorded_and_its_answer_is_untouched(tmp_path, caplog):
    import io

    caplog.set_level(logging.DEBUG, logger="wsgimirror.agent.dispatch")
    middleware = MirrorMiddleware(echo_app, record_config(f"file://{tmp_path}/t.gor"))
    environ = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/x", "QUERY_STRING": "",
               "SERVER_NAME": "h", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
               "CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abc"), "HTTP_BAD NAME": "x"}  # fmt: skip
    statuses = []
    result = middleware(environ, lambda status, headers, exc_info=None: statuses.append(status))
    body = b"".join(result)
    result.close()
    middleware.close()
    assert (statuses, body) == (["201 Created"], b"seen 3 abc")  # as the bare app answers
    stats = middleware.stats()
    assert (stats["dropped"], stats["mirrored"]) == ({"bad_request": 1}, 0)
    assert stats["by_route"]["all"]["dropped"] == {"bad_request": 1}
    assert list(tmp_path.glob("t_*")) == []
    assert [r.getMessage() for r in caplog.records if r.name == "wsgimirror.agent.dispatch"] == [
        f"not recorded to file://{tmp_path}/t.gor: HTTP_BAD NAME is not a header name"
    ]


def call_without_yielding(middleware, count: int = 1, **headers: str) -> None:
    """``count`` requests served in-process one after another: no outcome of a write arrives in between."""
    import io

    for _ in range(count):
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/x", "SERVER_NAME": "h", "SERVER_PORT": "80",
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "CONTENT_LENGTH": "3",
                   "wsgi.input": io.BytesIO(b"abc"), **headers}  # fmt: skip
        result = middleware(environ, lambda status, headers, exc_info=None: None)
        assert b"".join(result) == b"seen 3 abc"
        getattr(result, "close", lambda: None)()  # a request not captured gets the app's own list


def half_open_recording(tmp_path, **record) -> MirrorMiddleware:
    """A middleware recording to ``t.gor`` whose circuit is half-open, as after a write to a full disk."""
    from wsgimirror.errors import MirrorSendError

    config = record_config(f"file://{tmp_path}/t.gor", record_responses=False, Record=record,
                           Mirror={"BreakerFailures": 1, "BreakerSeconds": 0.05})  # fmt: skip
    middleware = MirrorMiddleware(echo_app, config)
    [destination] = middleware._generation.dispatcher._runtime()[1]["rec"].destinations
    destination.failure("rec", "all", MirrorSendError("disk_full"))
    wait_until(lambda: destination.state == "half_open", 5)
    return middleware


def test_a_half_open_file_destination_whose_trial_cannot_be_written_takes_the_next_copy(tmp_path):
    middleware = half_open_recording(tmp_path)
    call_without_yielding(middleware, **{"HTTP_BAD NAME": "x"})  # the trial: no valid HTTP head, nothing written
    call_without_yielding(middleware)
    stats = recorded(middleware, 1)
    middleware.close()
    assert (stats["dropped"], stats["succeeded"]) == ({"bad_request": 1}, 1)
    assert stats["by_route"]["all"]["dropped"] == {"bad_request": 1}
    assert stats["by_destination"][f"rec/file://{tmp_path}/t.gor"]["circuit"] == "closed"  # the written copy closed it


def test_a_half_open_file_destination_takes_one_trial_at_a_time(tmp_path):
    middleware = half_open_recording(tmp_path)
    call_without_yielding(middleware, 2)  # the trial's outcome is not known yet when the second comes
    stats = recorded(middleware, 1)
    middleware.close()
    assert (stats["succeeded"], stats["dropped"]) == (1, {"circuit_open": 1})


def test_a_half_open_file_destination_whose_trial_is_refused_takes_the_next_one_as_its_trial(tmp_path):
    middleware = half_open_recording(tmp_path, MaxBytes=1)
    call_without_yielding(middleware, 2)  # no copy fits MaxBytes: each trial is refused, and frees its slot
    middleware.close()
    assert middleware.stats()["dropped"] == {"disk_budget": 2}


def test_least_requests_spreads_copies_over_file_destinations_by_copies_being_written(tmp_path):
    config = record_config(f"file://{tmp_path}/a.gor", record_responses=False)
    config["ReverseProxy"]["Clusters"]["rec"] = {
        "LoadBalancingPolicy": "LeastRequests",
        "Destinations": [{"Address": f"file://{tmp_path}/a.gor"}, {"Address": f"file://{tmp_path}/b.gor"}],
    }
    middleware = MirrorMiddleware(echo_app, config)
    call_without_yielding(middleware, 4)  # 0 and 0: a; 1 and 0: b; 1 and 1: a; 2 and 1: b
    recorded(middleware, 4)
    for _ in range(2):  # one at a time, each written before the next: a tie, so a
        call_without_yielding(middleware, 1)
        recorded(middleware, middleware.stats()["mirrored"])
    middleware.close()
    by_destination = middleware.stats()["by_destination"]
    assert [by_destination[f"rec/file://{tmp_path}/{name}.gor"]["succeeded"] for name in "ab"] == [4, 2]


def test_a_recorded_copy_never_carries_the_loop_token(recording, tmp_path):
    """A file is read by people and programs: whoever reads the token can forge it and switch mirroring off."""
    token = "edge-7f3c9a1b2d4e"
    middleware, address = recording(record_config(f"file://{tmp_path}/t.gor", Mirror={"LoopToken": token}))
    one_request(address, method="POST", target="/x", body=b"1", headers={"Echo": token})
    recorded(middleware, 1)
    middleware.close()
    (chunk,) = files(tmp_path, "t_*")
    [request] = [p for p in payloads(chunk) if p.kind == 1]
    assert request.header("X-Mirrored-By") == "wsgimirror"  # a mark that proves nothing
    assert token.encode() not in chunk.read_bytes().replace(b"Echo: " + token.encode(), b"")


SEPARATOR_TEXT = "🐵🙈🙉".encode()


def test_a_body_holding_the_separator_and_a_forged_request_is_replayed_once_and_whole(recording, tmp_path):
    """The probe's attack: a body that carries GoReplay's separator line and a forged DELETE with a forged token."""
    from tests.e2e.test_replay import replay
    from tests.helpers import Sink

    forged = b"1 %s 1 -1\nDELETE /admin/users/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer forged\r\n\r\n" % (
        b"f" * 24)  # fmt: skip
    body = b"a=1\n" + SEPARATOR_TEXT + b"\n" + forged + b"\n" + SEPARATOR_TEXT + b"\nb=2\n" + SEPARATOR_TEXT
    middleware, address = recording(record_config(f"file://{tmp_path}/t.gor", Mirror={"MemoryBodyBytes": 16}),
                                    app=lambda environ, start_response: echo_body(environ, start_response))  # fmt: skip
    with Client(address) as client:
        assert client.request("POST", "/notes", body=body).body == body
        assert client.request("POST", "/notes", body=b"plain").body == b"plain"
    recorded(middleware, 2)
    middleware.close()
    (chunk,) = files(tmp_path, "t_*")
    # No payload holds the separator, whichever reader splits the file (this one splits on every occurrence).
    assert [(p.kind, p.start) for p in payloads(chunk)] == [(1, "POST /notes HTTP/1.1"), (2, "HTTP/1.1 200 OK")] * 2
    with Sink() as sink:
        status, out, err = replay(str(chunk), "--target", sink.address, "--speed", "0")
        assert status == 0, out + err
        sent = sorted((r.method, r.target, r.body) for r in sink.requests)  # at --speed 0 either may come first
        assert sent == [("POST", "/notes", body), ("POST", "/notes", b"plain")]


def echo_body(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _fill_disk_under(recorder) -> None:
    """Point the open chunk's descriptor at /dev/full: the kernel answers every later write with ENOSPC."""
    wait_until(lambda: recorder.files, 5, "the writer to open its chunk")
    chunk = os.path.realpath(recorder.files[-1])
    [fd] = [int(fd) for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == chunk]
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fd)
    os.close(full)


@pytest.mark.parametrize("gz", [False, True])
def test_copies_lost_when_a_flush_fails_are_counted_disk_full_not_written(tmp_path, caplog, gz):
    from wsgimirror.record import recorder as record_module

    record_module._failed._next, record_module._failed._held = 0.0, 0
    caplog.set_level(logging.WARNING, logger="wsgimirror.record")
    recorder, gate, outcomes = held_recorder(tmp_path, "t.gor.gz" if gz else "t.gor", flush_seconds=0)
    _fill_disk_under(recorder)
    failing = recorder.files[0]
    gate.release()  # the small copy fits the file's buffer: its write succeeds, and the flush fails
    wait_until(lambda: outcomes, 5, "the first outcome")
    assert [why for _, why in outcomes] == ["disk_full"]
    [warning] = [r for r in caplog.records if "could not" in r.getMessage()]
    assert warning.getMessage() == f"wsgimirror could not flush {failing}: [Errno 28] No space left on device"
    assert not os.path.exists(failing)  # no copy of it reached the disk: the chunk is removed, not left empty
    recorder.submit(a_record(_Body(30), outcomes))  # the next copy goes to a new chunk, on a sound file
    assert recorder.close(5)
    assert [why for _, why in outcomes] == ["disk_full", None] and len(recorder.files) == 1
    assert [len(p.body) for p in payloads(recorder.files[0])] == [30]


def test_copies_lost_when_a_reload_closes_their_chunk_on_a_full_disk_are_counted_disk_full(tmp_path, caplog):
    from wsgimirror.record import recorder as record_module

    record_module._failed._next, record_module._failed._held = 0.0, 0
    caplog.set_level(logging.WARNING, logger="wsgimirror.record")
    recorder, gate, outcomes = held_recorder(tmp_path, flush_seconds=3600)
    _fill_disk_under(recorder)
    failing = recorder.files[0]
    gate.release()
    wait_until(lambda: recorder.written > 0 and not recorder._queue, 5, "the copy to reach the file's buffer")
    assert outcomes == []  # in the buffer, not yet with the OS: not counted written
    recorder.close_chunk()  # what a reload that drops the destination asks
    wait_until(lambda: outcomes, 5, "the outcome")
    assert [why for _, why in outcomes] == ["disk_full"]
    [warning] = [r for r in caplog.records if "could not" in r.getMessage()]
    assert warning.getMessage() == f"wsgimirror could not close {failing}: [Errno 28] No space left on device"
    assert recorder.close(5)
    assert not os.path.exists(failing) and recorder.files == []


def test_a_chunk_that_fails_to_close_at_rollover_fails_its_copies_and_the_next_chunk_takes_the_rest(tmp_path):
    recorder, gate, outcomes = held_recorder(tmp_path, flush_seconds=3600, chunk_bytes=1)
    _fill_disk_under(recorder)
    gate.release()
    wait_until(lambda: outcomes, 5, "the first outcome")
    recorder.submit(a_record(_Body(40), outcomes))
    assert recorder.close(5)
    assert [why for _, why in outcomes] == ["disk_full", None]
    assert len(recorder.files) == 1 and [len(p.body) for p in payloads(recorder.files[0])] == [40]
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(recorder.files[0])]  # the failed one is gone


def test_sigterm_writes_every_recorded_copy_before_the_server_exits(tmp_path):
    """FlushSeconds is an hour: only the close on SIGTERM can put the copies in the file."""
    config = write_config(tmp_path, record_config(f"file://{tmp_path}/t.gor", record_responses=False,
                                                  Record={"FlushSeconds": 3600}))  # fmt: skip
    port = free_port()
    proc = Process([PY, "-m", "wsgimirror", "serve", "tests.e2e.apps:app", "--config", config,
                    "--bind", f"127.0.0.1:{port}"], ready="serving on")  # fmt: skip
    try:
        with Client(("127.0.0.1", port)) as client:
            for i in range(10):
                assert client.request("POST", f"/r{i}", body=b"x" * i).status == 200
        wait_until(lambda: files(tmp_path, "t_*"), 5, "the writer to open its chunk")
        [chunk] = files(tmp_path, "t_*")
        assert chunk.stat().st_size == 0  # all of it (about 2 KB) still in the file's 4 KiB buffer
    finally:
        status, _, err = proc.stop(timeout=10)  # SIGTERM, by its pid, whatever happened above
    assert status == 0, err
    assert [(p.start, len(p.body)) for p in payloads(chunk)] == [(f"POST /r{i} HTTP/1.1", i) for i in range(10)]
    assert "mirrored: 10 succeeded, 0 failed, 0 in flight" in err, err


def test_closing_with_a_file_destination_no_request_reached_says_everything_ended(recording, tmp_path, sink):
    config = record_config(f"file://{tmp_path}/t.gor", route={"Match": {"Paths": ["/recorded/*"]},
                                                              "Metadata": {"MirrorCluster": "rec"}})  # fmt: skip
    config["ReverseProxy"]["Routes"]["sent"] = {"Match": {"Paths": ["/sent/*"]}, "Metadata": {"MirrorCluster": "web"}}
    config["ReverseProxy"]["Clusters"]["web"] = {"Destinations": [{"Address": sink.address}]}
    middleware, address = recording(config)
    one_request(address, target="/sent/1")  # the file's writer never starts in this process
    sink.wait_for(1)
    assert middleware.close(timeout=5) is True and files(tmp_path, "t_*") == []


def test_a_recorder_never_keeps_the_event_loop_alive():
    """Its watcher is unreferenced: a script that records and then waits for the loop to empty still ends."""
    from gevent import get_hub

    from wsgimirror.config.model import RecordSettings

    loop = get_hub().loop
    with tempfile.TemporaryDirectory() as directory:
        recorder = Recorder(f"{directory}/t.gor", RecordSettings(flush_seconds=0.05))
        before = loop.activecnt
        recorder._started()  # the writer and its watcher start (nothing else runs meanwhile: no switch)
        assert recorder._notify.active and loop.activecnt == before  # started, and not counted by the loop
        outcomes: list = []
        recorder.submit(a_record(_Body(3), outcomes))
        wait_until(lambda: outcomes, 5, "the outcome")  # it still delivers
        assert recorder.close(5)


@pytest.mark.parametrize("breaker", [0, 2], ids=["breaker-off", "breaker-on"])
def test_a_full_disk_leaves_no_chunk_behind(tmp_path, breaker):
    """On a full disk every attempt used to open a new chunk that stayed, empty: 350 files for 400 requests."""
    from tests.helpers import ChildServer

    directory = tmp_path / "traffic"
    directory.mkdir()
    config = record_config(f"file://{directory}/t.gor", Mirror={"BreakerFailures": breaker, "BreakerSeconds": 0.05},
                           Record={"FlushSeconds": 0.01})  # fmt: skip
    with ChildServer(write_config(tmp_path, config)) as child:
        child.control("/__limit?fsize=0")  # no file may grow: the disk is full
        for i in range(40):
            assert one_request(child.address, method="POST", target=f"/{i}", body=b"x" * 100).status == 200
            if breaker:
                time.sleep(0.01)  # let circuits half-open between requests, so trials are made
        wait_until(lambda: child.stats()["stats"]["in_flight"] == 0, 10, "the copies to end")
        stats = child.stats()["stats"]
    assert stats["failed"] > 0 and set(stats["failures"]) == {"disk_full"}
    assert list(directory.iterdir()) == []
