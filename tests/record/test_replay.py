"""Replay's parts in-process: pacing, what is sent of a recorded request, the plan and the exit status."""

from __future__ import annotations

import re

import pytest

from tests.helpers import ROOT
from wsgimirror.record.gor import BadMessage, Payload, parse_message, parse_payload
from wsgimirror.record.source import Options, Pacer, Source, _request
from wsgimirror.record.summary import exit_status, plan, plan_text

FIXTURE = str(ROOT / "tests" / "data" / "goreplay.gor")
SECOND = 10**9


def dues(options: Options, stamps: list[float]) -> list[float]:
    pacer = Pacer(options)
    return [round(pacer.next(int(s * SECOND)), 6) for s in stamps]


def test_the_recorded_gaps_are_kept_scaled_and_capped_as_goreplay_does():
    stamps = [100.0, 100.5, 101.0, 104.0, 103.0, 105.0]  # a 3 s gap, one out of order, then one 1 s after 104
    assert dues(Options([], speed=1), stamps) == [0, 0.5, 1.0, 4.0, 4.0, 5.0]  # every gap, however long
    assert dues(Options([], speed=2), stamps) == [0, 0.25, 0.5, 2.0, 2.0, 2.5]
    assert dues(Options([], speed=1, max_wait=1), stamps) == [0, 0.5, 1.0, 2.0, 2.0, 3.0]
    assert dues(Options([], speed=2, max_wait=1), stamps) == [0, 0.25, 0.5, 1.5, 1.5, 2.0]  # capped after scaling
    assert dues(Options([], speed=0), stamps) == [0, 0, 0, 0, 0, 0]


def test_a_rate_replaces_the_recorded_gaps():
    assert dues(Options([], rate=4), [100.0, 900.0, 100.0]) == [0, 0.25, 0.5]


def test_a_loop_follows_the_last_request_at_once():
    pacer = Pacer(Options([], speed=1))
    assert [pacer.next(s * SECOND) for s in (10, 11)] == [0, 1.0]
    pacer.restart()
    assert [pacer.next(s * SECOND) for s in (10, 11)] == [1.0, 2.0]


def payload(message: bytes) -> Payload:
    found = parse_payload(b"1 " + b"a" * 24 + b" 5 -1\n" + message)
    assert found is not None
    return found


def test_hop_by_hop_and_own_headers_are_not_sent_again_and_the_length_is_the_decoded_bodys():
    raw = (b"POST http://shop.example/orders?x=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive\r\n"
           b"Keep-Alive: 5\r\nProxy-Authorization: x\r\nExpect: 100-continue\r\nTE: trailers\r\nUpgrade: h2c\r\n"
           b"Transfer-Encoding: chunked\r\nX-Kept: yes\r\n\r\n3\r\nabc\r\n0\r\n\r\n")  # fmt: skip
    request = _request(payload(raw), parse_message(raw))
    assert (request.method, request.target, request.host) == ("POST", "/orders?x=1", "shop.example")
    assert request.headers == [("X-Kept", "yes"), ("Content-Length", "3")] and request.body.value() == b"abc"


def test_a_bodiless_request_gets_no_content_length_unless_it_was_framed():
    get = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert _request(payload(get), parse_message(get)).headers == []
    empty = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
    assert _request(payload(empty), parse_message(empty)).headers == [("Content-Length", "0")]


@pytest.mark.parametrize(
    "raw",
    [b"G(T / HTTP/1.1\r\n\r\n", b"GET / SMTP\r\n\r\n", b"GET * HTTP/1.1\r\n\r\n",
     b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", b"GET\t/ HTTP/1.1\r\n\r\n"],
)  # fmt: skip
def test_a_request_that_cannot_be_sent_as_recorded_is_malformed(raw):
    with pytest.raises(BadMessage):
        _request(payload(raw), parse_message(raw))


def test_filters_count_what_they_leave_out():
    source = Source(Options([FIXTURE], methods=frozenset({"GET", "DELETE"}), path_filter=re.compile("^/items/7")))
    assert [r.target for r in source.requests()] == ["/items/7"]
    assert (source.records, source.filtered, source.skipped_malformed) == (3, 2, 1)


def written(path, payloads: list[tuple[str, str, int, bytes]]) -> str:
    """A .gor file of (type, id, timestamp, message): any type, order and id, unlike tests/e2e's ``gor``."""
    from wsgimirror.record.gor import SEPARATOR

    path.write_bytes(b"".join(b"%s %s %d -1\n" % (kind.encode(), pid.encode(), stamp) + message + SEPARATOR
                              for kind, pid, stamp, message in payloads))  # fmt: skip
    return str(path)


def get_(target: str, *headers: str) -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: h\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


def numbered(tmp_path, count: int) -> str:
    """``count`` GETs of /0, /1, ... in order."""
    return written(tmp_path / "numbered.gor", [("1", f"{i:024x}", i, get_(f"/{i}")) for i in range(count)])


def test_paced_workers_each_send_every_nth_request():
    shares = [[r.target for r in Source(Options([FIXTURE], share=(i, 2))).requests()] for i in (0, 1)]
    assert shares == [["/orders?src=gor", "/items/7"], ["/items/42"]]


def test_flooding_workers_send_the_blocks_they_claim_and_together_every_request_once(tmp_path):
    from wsgimirror.record.source import Claims

    path, claims = numbered(tmp_path, 50), Claims()
    first = Source(Options([path], claims=claims))
    second = Source(Options([path], claims=claims))
    taken = first.requests()
    early = [next(taken).target for _ in range(Claims.BLOCK)]  # the first claims 0-15 and sends them
    assert early == [f"/{i}" for i in range(16)]
    # the second skips them, claims 16-31, 32-47 and 48-63 in turn and sends what there is of them
    assert [r.target for r in second.requests()] == [f"/{i}" for i in range(16, 50)]
    assert [r.target for r in taken] == []  # what is left of the first's reading is the second's
    assert (first.records, second.records) == (16, 34)


def test_recorded_answers_are_kept_with_their_request_only_when_comparing():
    comparing = Source(Options([FIXTURE], compare=True))
    found = {r.target: r.recorded.message if r.recorded else None for r in comparing.requests()}
    assert found == {"/orders?src=gor": b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n'
                     b'Content-Length: 13\r\n\r\n{"id": "o-1"}', "/items/42": None, "/items/7": None}  # fmt: skip
    plain = Source(Options([FIXTURE]))
    assert all(r.recorded is None for r in plain.requests())


def test_the_plan_counts_and_times_the_replay():
    figures = plan(Options([FIXTURE], speed=1))
    assert figures == {"records": 3, "requests": 3, "filtered": 0, "skipped_malformed": 1, "skipped_cut": 0,
                       "skipped_unknown_type": 0, "unreadable_files": 0, "methods": {"POST": 1, "GET": 1, "DELETE": 1},
                       "endpoints": {"POST /orders": 1, "GET /items/{id}": 1, "DELETE /items/{id}": 1},
                       "expected_seconds": 0.5}  # fmt: skip
    assert plan(Options([FIXTURE], speed=0))["expected_seconds"] == 0.0
    assert plan(Options([FIXTURE], rate=1))["expected_seconds"] == 2.0
    assert plan(Options([FIXTURE], rate=1, duration=1.5))["expected_seconds"] == 1.5
    assert plan(Options([FIXTURE], speed=1, loop=True, duration=30))["expected_seconds"] == 30
    text = plan_text(figures, Options([FIXTURE], speed=1))
    assert "3 requests to replay of 3 recorded (1 malformed)" in text
    assert "expected duration: 0.5s (speed 1, recorded gaps kept)" in text


def test_the_exit_status_says_whether_every_request_got_an_answer_and_nothing_regressed():
    assert exit_status({"sent": 3, "failed": 0}) == 0
    assert exit_status({"sent": 3, "failed": 1}) == 1
    assert exit_status({"sent": 0, "failed": 0}) == 1  # nothing replayed is a mistake in CI, not a pass
    assert exit_status({"sent": 3, "failed": 0, "compare": {"regression": True}}) == 1
    assert exit_status({"sent": 3, "failed": 0, "compare": {"regression": False}}) == 0


@pytest.mark.parametrize(
    "target, expected",
    [
        ("http://shadow.test", ("http", "shadow.test", 80, "")),
        ("https://shadow.test", ("https", "shadow.test", 443, "")),
        ("HTTPS://shadow.test:8443/v2/", ("https", "shadow.test", 8443, "/v2")),
        ("http://shadow.test/prefiX/", ("http", "shadow.test", 80, "/prefiX")),
    ],
)
def test_a_target_without_a_port_takes_its_schemes_default_and_its_path_becomes_the_base(target, expected):
    from wsgimirror.record.replay import _destination

    destination = _destination(target)
    assert (destination.scheme, destination.host, destination.port, destination.base_path) == expected


def test_a_loop_reports_a_damaged_file_once_and_counts_the_payloads_it_skips_each_pass(tmp_path):
    """Each pass reads the files again: a payload skipped is skipped each time, but a file cut off or
    unreadable is one file, warned about once."""
    import shutil

    shutil.copy(FIXTURE, tmp_path / "a.gor")  # its last payload is cut off, and one payload is malformed
    (tmp_path / "b.gor.gz").write_bytes(b"not gzip")
    warnings: list[str] = []
    source = Source(Options([str(tmp_path / "a.gor"), str(tmp_path / "b.gor.gz")], loop=True, warn=warnings.append))
    for _ in range(3):
        assert [r.target for r in source.requests()] == ["/orders?src=gor", "/items/42", "/items/7"]
    assert source.passes == 3 and (source.records, source.skipped_malformed) == (9, 3)
    assert (source.counts.partial, source.counts.unreadable, len(warnings)) == (1, 1, 1)
    assert warnings == source.counts.problems and "b.gor.gz" in warnings[0]


def test_a_file_that_becomes_unreadable_during_a_loop_is_reported_then(tmp_path):
    import shutil

    path = tmp_path / "a.gor"
    shutil.copy(FIXTURE, path)
    warnings: list[str] = []
    source = Source(Options([str(path)], loop=True, warn=warnings.append))
    assert len(list(source.requests())) == 3 and warnings == []
    path.unlink()
    assert list(source.requests()) == [] and source.counts.unreadable == 1 and "a.gor" in warnings[0]


def test_a_claim_lock_left_held_fails_the_worker_instead_of_hanging(monkeypatch, tmp_path):
    from wsgimirror.record.source import Claims, ReplayError

    claims = Claims()
    monkeypatch.setattr(Claims, "LOCK_SECONDS", 0.05)
    claims._lock.acquire()  # as a worker killed between taking the lock and giving it back leaves it
    with pytest.raises(ReplayError) as caught:
        list(Source(Options([numbered(tmp_path, 3)], claims=claims)).requests())
    assert str(caught.value) == "a worker was killed while claiming requests: the others cannot go on"
    claims._lock.release()
    assert claims.take() == 0  # nothing was claimed meanwhile


OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_directory_argument_gives_its_recordings_and_the_arguments_after_it_follow(tmp_path):
    from wsgimirror.record.source import expand

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for name in ("b.gor", "a.gor_0.gz", "notes.txt"):
        (first / name).write_bytes(b"")
    (second / "c.gor").write_bytes(b"")
    (tmp_path / "d.gor").write_bytes(b"")
    assert expand([str(first), str(second), str(tmp_path / "d.gor")]) == [
        str(first / "a.gor_0.gz"), str(first / "b.gor"), str(second / "c.gor"), str(tmp_path / "d.gor")]  # fmt: skip


def test_the_read_depth_orders_that_many_payloads_by_timestamp(tmp_path):
    path = written(tmp_path / "late.gor", [("1", "a", 30, get_("/30")), ("1", "b", 10, get_("/10")),
                                           ("1", "c", 20, get_("/20"))])  # fmt: skip
    assert [r.target for r in Source(Options([path])).requests()] == ["/10", "/20", "/30"]
    assert [r.target for r in Source(Options([path], read_depth=1)).requests()] == ["/30", "/10", "/20"]


def test_comparing_each_request_takes_the_first_answer_of_its_id_and_nothing_is_left_held(tmp_path):
    path = written(tmp_path / "answers.gor", [
        ("2", "a", 1, OK_ANSWER.replace(b"ok", b"A1")), ("2", "a", 2, OK_ANSWER.replace(b"ok", b"A2")),
        ("1", "a", 3, get_("/a")),
        ("1", "b", 4, get_("/b")), ("2", "b", 5, OK_ANSWER.replace(b"ok", b"B1")),
        ("2", "b", 6, OK_ANSWER.replace(b"ok", b"B2")),
        ("2", "z", 7, OK_ANSWER),  # an answer whose request never comes
    ])  # fmt: skip
    source = Source(Options([path], compare=True))
    found = {}
    for request in source.requests():
        found[request.target] = request.recorded.message[-2:] if request.recorded else None
        source.done(request)
    assert found == {"/a": b"A1", "/b": b"B1"}
    assert source.pending == {} and len(source.early) == 0


def test_a_comparing_source_stopped_early_frees_what_it_read_ahead(tmp_path):
    source = Source(Options([numbered(tmp_path, 10)], compare=True))
    requests = source.requests()
    first = next(requests)  # the rest are read ahead, waiting for their answers
    assert len(source.pending) == 10
    requests.close()
    source.done(first)
    assert source.pending == {}


def test_a_request_whose_message_is_not_http_is_counted_with_why(tmp_path):
    path = written(tmp_path / "odd.gor", [("1", "a", 1, b"hello\r\n\r\n"), ("1", "b", 2, get_("/ok"))])
    source = Source(Options([path]))
    assert [r.target for r in source.requests()] == ["/ok"]
    assert source.skipped_malformed == 1 and source.malformed == ["a: not an HTTP start line: 'hello'"]


def test_cut_requests_are_counted_each(tmp_path):
    cut = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"
    path = written(tmp_path / "cut.gor", [("1", "a", 1, cut), ("1", "b", 2, cut), ("1", "c", 3, get_("/ok"))])
    source = Source(Options([path]))
    assert [r.target for r in source.requests()] == ["/ok"] and source.cut == 2


def test_the_mirrors_mark_is_removed_unless_kept(tmp_path):
    path = written(tmp_path / "marked.gor", [("1", "a", 1, get_("/m", "X-Mirrored-By: wsgimirror", "X-Other: 1"))])
    removed = [r.headers for r in Source(Options([path])).requests()]
    kept = [r.headers for r in Source(Options([path], keep_mirror_mark=True)).requests()]
    assert removed == [[("X-Other", "1")]] and kept == [[("X-Mirrored-By", "wsgimirror"), ("X-Other", "1")]]
    raw = get_("/m", "X-Mirrored-By: wsgimirror")
    assert _request(payload(raw), parse_message(raw)).headers == []  # removed by default
    assert _request(payload(raw), parse_message(raw), True).headers == [("X-Mirrored-By", "wsgimirror")]


def test_a_skipped_request_frees_its_decoded_body_at_once(tmp_path):
    """A chunked body past 32 KiB is decoded into a temporary file; a request skipped after decoding closes it."""
    import gc
    import warnings

    body = b"x" * (40 << 10)
    chunked = (b"POST /up HTTP/1.1\r\nHost: h\r\nBad Name: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")  # fmt: skip
    path = written(tmp_path / "bad.gor", [("1", "a", 1, chunked)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = Source(Options([path]))
        assert list(source.requests()) == [] and source.skipped_malformed == 1
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert source.malformed == ["a: 'Bad Name' is not a header name"]


def test_the_first_bad_header_is_the_one_named():
    for raw, why in [
        (b"GET / HTTP/1.1\r\nX: a\x01b\r\nBad Name: 1\r\n\r\n", "the X header holds control characters"),
        (b"GET / HTTP/1.1\r\nBad Name: 1\r\nX: a\x01b\r\n\r\n", "'Bad Name' is not a header name"),
    ]:
        with pytest.raises(BadMessage) as caught:
            _request(payload(raw), parse_message(raw))
        assert str(caught.value) == why
    bare = b"GET / HTTP/1.0\r\n\r\n"
    assert _request(payload(bare), parse_message(bare)).headers == []  # no header at all is fine
