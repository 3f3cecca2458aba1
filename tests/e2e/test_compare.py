"""Shadow comparison over real sockets: the app's answer against a candidate's and a baseline's."""

import gzip
import json
import os
import time

import gevent
import pytest

from tests.e2e.compare_apps import answering, users_v1, users_v2
from tests.helpers import Client, one_request, request_bytes, wait_until
from wsgimirror.middleware import MirrorMiddleware

ENDPOINT = "GET /users/{id}"


def compare_config(candidate=None, baseline=None, **compare):
    clusters, names, metadata = {}, [], {}
    if candidate:
        clusters["candidate"] = {"Destinations": {"c": {"Address": candidate}}}
        names.append("candidate")
        metadata["MirrorCompare"] = "candidate"
    if baseline:
        clusters["baseline"] = {"Destinations": {"b": {"Address": baseline}}}
        names.append("baseline")
        metadata["MirrorBaseline"] = "baseline"
    metadata["MirrorCluster"] = ",".join(names)
    return {
        "ReverseProxy": {"Routes": {"all": {"Match": {"Paths": ["*"]}, "Metadata": metadata}}, "Clusters": clusters},
        "Compare": compare,
    }


def url(address):
    return f"http://{address[0]}:{address[1]}"


def settled(mw, candidate, baseline=0):
    """Wait until every mirror's answer was compared (or skipped), then return stats()["compare"]."""

    def done():
        c = mw.stats()["compare"]
        base = sum(e["baseline_compared"] for e in c["by_endpoint"].values())
        return c["compared"] + sum(c["skipped"].values()) >= candidate and base >= baseline

    wait_until(done, what="the comparisons")
    return mw.stats()["compare"]


def test_with_a_baseline_only_the_real_difference_regresses_and_timestamps_and_ids_are_noise(server):
    candidate, baseline = url(server(users_v2)), url(server(users_v1))
    mw = MirrorMiddleware(users_v1, compare_config(candidate, baseline))
    address = server(mw)
    for user in range(1, 81):
        assert one_request(address, target=f"/users/{user}").status == 200
    compare = settled(mw, 80, 80)
    endpoint = compare["by_endpoint"][ENDPOINT]
    assert (endpoint["compared"], endpoint["baseline_compared"]) == (80, 80)
    assert endpoint["regression"] is True
    fields = endpoint["fields"]
    total = fields["body.total"]
    assert {key: total[key] for key in ("kinds", "differences", "noise", "rate", "noise_rate", "regression",
                                        "verdict")} == {"kinds": {"value": 20}, "differences": 20, "noise": 0,
                                                        "rate": 0.25, "noise_rate": 0.0, "regression": True,
                                                        "verdict": "regression"}  # fmt: skip
    assert total["p_value"] < 1e-4 and total["excess"] == 0.25
    for noise in ("body.generated_at", "body.request_id", "headers.x-request-id"):
        assert fields[noise]["rate"] == 1.0 and fields[noise]["noise_rate"] == 1.0, noise
        assert fields[noise]["regression"] is False, noise
    assert [f for f, v in fields.items() if v["regression"]] == ["body.total"]
    assert compare["compared"] == 80 and compare["different"] == 80 and compare["same"] == 0


def test_without_a_baseline_ignore_fields_silence_the_noise(server):
    candidate = url(server(users_v2))
    config = compare_config(
        candidate, IgnoreFields=["body.generated_at", "body.request_id"], IgnoreHeaders=["X-Request-Id"]
    )
    mw = MirrorMiddleware(users_v1, config)
    address = server(mw)
    for user in range(1, 41):
        one_request(address, target=f"/users/{user}")
    compare = settled(mw, 40)
    endpoint = compare["by_endpoint"][ENDPOINT]
    assert list(endpoint["fields"]) == ["body.total"]
    assert endpoint["fields"]["body.total"]["differences"] == 10 and endpoint["regression"] is True
    assert (compare["same"], compare["different"]) == (30, 10)


def test_a_wildcard_silences_a_whole_subtree(server):
    candidate = url(server(users_v2))
    mw = MirrorMiddleware(users_v1, compare_config(candidate, IgnoreFields=["body.*"], IgnoreHeaders=["x-request-id"]))
    address = server(mw)
    for user in (4, 8):
        one_request(address, target=f"/users/{user}")
    assert settled(mw, 2)["same"] == 2


@pytest.mark.parametrize("order, kinds", [("ordered", {"body.items": {"order": 1}}), ("unordered", {})])
def test_array_order_counts_only_when_ordered(server, order, kinds):
    def listing(items):
        return answering(headers=[("Content-Type", "application/json")], body=json.dumps({"items": items}).encode())

    candidate = url(server(listing([3, 2, 1])))
    mw = MirrorMiddleware(listing([1, 2, 3]), compare_config(candidate, ArrayOrder=order))
    one_request(server(mw), target="/list")
    fields = settled(mw, 1)["by_endpoint"]["GET /list"]["fields"]
    assert {f: v["kinds"] for f, v in fields.items()} == kinds


def test_arrays_of_other_lengths_and_elements_aggregate_under_one_path(server):
    def listing(prices):
        body = json.dumps({"items": [{"price": p} for p in prices]}).encode()
        return answering(headers=[("Content-Type", "application/json")], body=body)

    candidate = url(server(listing([1, 5, 3, 4])))
    mw = MirrorMiddleware(listing([1, 2, 3]), compare_config(candidate))
    one_request(server(mw), target="/list")
    fields = settled(mw, 1)["by_endpoint"]["GET /list"]["fields"]
    assert {f: v["kinds"] for f, v in fields.items()} == {"body.items": {"size": 1}, "body.items[].price": {"value": 1}}


def test_gzip_answers_are_compared_decoded(server):
    def gzipped(document, level):
        body = gzip.compress(json.dumps(document).encode(), compresslevel=level)
        headers = [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]
        return answering(headers=headers, body=body)

    candidate = url(server(gzipped({"a": 1, "b": 2}, 1)))
    mw = MirrorMiddleware(gzipped({"a": 1, "b": 3}, 9), compare_config(candidate))
    one_request(server(mw), target="/g")
    fields = settled(mw, 1)["by_endpoint"]["GET /g"]["fields"]
    assert {f: v["kinds"] for f, v in fields.items()} == {"body.b": {"value": 1}}


@pytest.mark.parametrize(
    "app_body, mirror_body, kind, expected",
    [
        (b"<html><p>Hello</p></html>", b"<html><p>Hello!</p></html>", "text/html", {"body": {"bytes": 1}}),
        (b"<html><p>Hello</p></html>", b"<html><p>Hello</p></html>", "text/html", {}),
        (bytes(range(256)) * 4, bytes(range(256)) * 4, "application/octet-stream", {}),
        (bytes(range(256)) * 4, bytes(range(255, -1, -1)) * 4, "application/octet-stream", {"body": {"bytes": 1}}),
        (b'{"a": 1}', b"<html>oops</html>", "application/json", {"body": {"type": 1}}),
    ],
    ids=["html-different", "html-same", "binary-same", "binary-different", "json-vs-html"],
)
def test_html_and_binary_answers(server, app_body, mirror_body, kind, expected):
    candidate = url(server(answering(headers=[("Content-Type", kind)], body=mirror_body)))
    mw = MirrorMiddleware(answering(headers=[("Content-Type", kind)], body=app_body), compare_config(candidate))
    one_request(server(mw), target="/page")
    fields = settled(mw, 1)["by_endpoint"]["GET /page"]["fields"]
    assert {f: v["kinds"] for f, v in fields.items()} == expected


@pytest.mark.parametrize("same", [True, False])
def test_answers_over_max_body_bytes_are_compared_by_length_and_hash(server, same):
    big = b"x" * 300_000
    other = big if same else big[:-1] + b"y"
    candidate = url(server(answering(headers=[("Content-Type", "text/plain")], body=other)))
    mw = MirrorMiddleware(answering(headers=[("Content-Type", "text/plain")], body=big),
                          compare_config(candidate, MaxBodyBytes=1024))  # fmt: skip
    one_request(server(mw), target="/big")
    compare = settled(mw, 1)
    assert compare["same"] == (1 if same else 0)
    fields = compare["by_endpoint"]["GET /big"]["fields"]
    shown = {f: {k: v[k] for k in ("kinds", "differences", "noise", "rate", "verdict")} for f, v in fields.items()}
    # one comparison: learning, never a regression yet, however different
    assert shown == ({} if same else {"body": {"kinds": {"bytes": 1}, "differences": 1, "noise": 0, "rate": 1.0,
                                                "verdict": "learning"}})  # fmt: skip
    assert mw.stats()["compare"]["skipped"] == {}


def test_head_requests_compare_status_and_headers_only(server):
    app = answering(headers=[("Content-Type", "text/plain"), ("X-Version", "1")], body=b"app body")
    candidate = url(server(answering(headers=[("Content-Type", "text/plain"), ("X-Version", "2")], body=b"other")))
    mw = MirrorMiddleware(app, compare_config(candidate))
    assert one_request(server(mw), method="HEAD", target="/h").body == b""
    fields = settled(mw, 1)["by_endpoint"]["HEAD /h"]["fields"]
    assert {f: v["kinds"] for f, v in fields.items()} == {"headers.x-version": {"value": 1}}


def test_the_app_raising_is_skipped_as_not_captured(server, sink):
    def broken(environ, start_response):
        raise RuntimeError("boom")

    mw = MirrorMiddleware(broken, compare_config(sink.address))
    assert one_request(server(mw), target="/x").status == 500
    compare = settled(mw, 1)
    assert compare["skipped"] == {"not_captured": 1} and compare["compared"] == 0
    assert len(sink.wait_for(1)) == 1  # the mirror itself still goes out


def test_a_client_that_leaves_mid_response_is_skipped_as_not_captured(server, sink):
    left = gevent.event.Event()

    def slow(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        for _ in range(200):
            yield b"x" * 65536
            gevent.sleep(0.01)
            if left.is_set():
                gevent.sleep(0.05)

    mw = MirrorMiddleware(slow, compare_config(sink.address))
    address = server(mw)
    client = Client(address)
    client.send(request_bytes("GET", "/stream"))
    client.file.readline()
    client.sock.close()
    client.file.close()
    left.set()
    compare = settled(mw, 1)
    assert compare["skipped"] == {"not_captured": 1}


def test_a_failed_mirror_is_skipped_as_no_answer(server):
    from prometheus_client import CollectorRegistry

    from tests.helpers import free_port

    registry = CollectorRegistry()
    mw = MirrorMiddleware(users_v1, compare_config(f"http://127.0.0.1:{free_port()}"), prometheus=registry)
    one_request(server(mw), target="/users/1")
    assert settled(mw, 1)["skipped"] == {"no_answer": 1}
    labels = {"route": "all", "cluster": "candidate", "endpoint": ENDPOINT, "result": "no_answer"}
    assert registry.get_sample_value("wsgimirror_compared_total", labels) == 1


def test_mirrors_that_are_not_compared_hold_none_of_the_comparison_memory(server, make_sink):
    plain = make_sink(body=b"x" * 5000)
    config = compare_config(url(server(users_v2)))
    config["ReverseProxy"]["Routes"] = {
        "api": {
            "Match": {"Paths": ["/users*"]},
            "Metadata": {"MirrorCluster": "candidate", "MirrorCompare": "candidate"},
        },
        "plain": {"Match": {"Paths": ["/plain"]}, "Metadata": {"MirrorCluster": "plain"}},
    }
    config["ReverseProxy"]["Clusters"]["plain"] = {"Destinations": {"p": {"Address": plain.address}}}
    mw = MirrorMiddleware(users_v1, config)
    address = server(mw)
    for _ in range(5):
        one_request(address, target="/plain")
    one_request(address, target="/users/1")
    wait_until(lambda: mw.stats()["succeeded"] == 6)
    assert settled(mw, 1)["compared"] == 1
    assert mw._comparer.budget.memory == 0  # a mirror keeps its answer only to compare it, then gives it back
    mw.close()


def test_a_request_that_cannot_be_sent_as_http_is_dropped_with_nothing_compared_or_held(server, caplog):
    import io
    import logging

    caplog.set_level(logging.DEBUG, logger="wsgimirror.agent.dispatch")
    candidate = url(server(users_v2))
    mw = MirrorMiddleware(users_v1, compare_config(candidate))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/users/1", "SERVER_NAME": "h", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
               "HTTP_BAD NAME": "x"}  # fmt: skip
    result = mw(environ, lambda status, headers, exc_info=None: None)
    assert json.loads(b"".join(result))["id"] == 1
    result.close()
    wait_until(lambda: mw.stats()["dropped"] == {"bad_request": 1})
    assert mw.close(5)
    stats = mw.stats()
    assert stats["by_route"]["all"]["dropped"] == stats["by_cluster"]["candidate"]["dropped"] == {"bad_request": 1}
    assert [(d["mirrored"], d["in_flight"]) for d in stats["by_destination"].values()] == [(0, 0)]
    compare = mw.stats()["compare"]
    assert (compare["compared"], compare["skipped"]) == (0, {})
    assert mw._comparer.budget.memory == 0 and mw.stats()["capture"]["memory_bytes"] == 0
    assert [r.getMessage() for r in caplog.records if r.name == "wsgimirror.agent.dispatch"] == [
        f"not mirrored to {candidate}: HTTP_BAD NAME is not a header name"
    ]


def test_past_max_per_second_comparisons_are_skipped_as_budget(server):
    candidate = url(server(users_v1))
    mw = MirrorMiddleware(users_v1, compare_config(candidate, MaxPerSecond=1))
    address = server(mw)
    start = time.monotonic()
    for user in range(6):
        one_request(address, target=f"/users/{user}")
    compare = settled(mw, 6)
    seconds = int(time.monotonic() - start) + 1
    assert compare["compared"] + compare["skipped"]["budget"] == 6
    assert 1 <= compare["compared"] <= seconds + 1 and compare["skipped"]["budget"] >= 6 - seconds - 1


def test_answer_memory_goes_back_to_the_budget(server):
    candidate = url(server(users_v2))
    mw = MirrorMiddleware(users_v1, compare_config(candidate))
    address = server(mw)
    for user in range(10):
        one_request(address, target=f"/users/{user}")
    settled(mw, 10)
    wait_until(lambda: mw._comparer.budget.memory == 0, what="the answers' memory to be given back")


# -- the client's response is untouched -------------------------------------------------------------


def raw_exchange(address, target):
    """The exact bytes of one response, without its Date line."""
    with Client(address) as client:
        client.send(request_bytes("GET", target, headers={"Connection": "close"}))
        data = b""
        while True:
            piece = client.sock.recv(65536)
            if not piece:
                break
            data += piece
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.lower().startswith(b"date:"))


def sized(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
    return [b"hello", b" ", b"world"]


def chunked(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"one", b"", b"two", b"three"])


def one_piece(environ, start_response):
    start_response("201 Created", [("Content-Type", "application/json")])
    return [b'{"created": true}']  # a one-element list: gevent frames it with Content-Length from len()


def legacy_write(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"and returned"]


@pytest.mark.parametrize("app", [sized, chunked, one_piece, legacy_write])
def test_client_responses_are_byte_identical_with_comparison_on(server, sink, app):
    bare = raw_exchange(server(app), "/r")
    mw = MirrorMiddleware(app, compare_config(sink.address))
    compared = raw_exchange(server(mw), "/r")
    assert compared == bare
    settled(mw, 1)


def test_legacy_write_bytes_are_part_of_the_compared_answer(server):
    candidate = url(server(answering(headers=[("Content-Type", "text/plain")], body=b"written and returned")))
    mw = MirrorMiddleware(legacy_write, compare_config(candidate))
    one_request(server(mw), target="/w")
    assert settled(mw, 1)["same"] == 1


def test_a_generator_that_sleeps_between_chunks_still_streams(server, sink):
    finished = gevent.event.Event()

    def streaming(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        gevent.sleep(1.0)
        yield b"second"
        finished.set()

    mw = MirrorMiddleware(streaming, compare_config(sink.address))
    with Client(server(mw)) as client:
        client.send(request_bytes("GET", "/s"))
        client.file.readline()
        while client.file.readline() not in (b"\r\n", b""):
            pass
        size = int(client.file.readline(), 16)
        assert client.file.read(size) == b"first"
        assert not finished.is_set()  # the first chunk arrived while the app was still at work
    wait_until(finished.is_set)


# -- the diff log --------------------------------------------------------------------------------------


def test_the_diff_log_holds_counts_and_examples_with_removed_headers_left_out(server, tmp_path):
    candidate = url(server(users_v2))
    log = tmp_path / "diff-{pid}.jsonl"
    config = compare_config(candidate, Log=str(log), Examples=2, IgnoreFields=["body.generated_at", "body.request_id"],
                            IgnoreHeaders=["x-request-id"])  # fmt: skip
    config["Mirror"] = {"RemoveHeaders": ["Authorization", "Set-Cookie"]}
    app = users_v1

    def with_cookie(environ, start_response):
        def start(status, headers, *exc):
            return start_response(status, [*headers, ("Set-Cookie", "session=secret")], *exc)

        return app(environ, start)

    mw = MirrorMiddleware(with_cookie, config)
    address = server(mw)
    for user in range(1, 21):
        one_request(address, target=f"/users/{user}?q=1", headers={"Authorization": "Bearer secret"})
        settled(mw, user)  # in request order: the examples below are the first comparisons made
    assert mw.close(5)
    path = tmp_path / f"diff-{os.getpid()}.jsonl"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    examples = [r for r in records if r["type"] == "example"]
    counts = [r for r in records if r["type"] == "counts"]
    # Set-Cookie differs in every answer (the candidate sets none), body.total in one in four:
    # the first two of each are examples, and a body.total example shows every difference of its comparison.
    assert [[d["field"] for d in e["differences"]] for e in examples] == [
        ["headers.set-cookie"], ["headers.set-cookie"], ["headers.set-cookie", "body.total"],
        ["headers.set-cookie", "body.total"]
    ]  # fmt: skip
    example = examples[2]
    assert example["endpoint"] == ENDPOINT and example["source"] == "candidate"
    assert example["request"]["method"] == "GET" and example["request"]["target"].startswith("/users/4?q=1")
    assert example["request"]["body_length"] == 0
    assert example["differences"][0] == {
        "field": "headers.set-cookie",
        "kind": "missing",
        "app": "(removed: Mirror.RemoveHeaders)",
        "mirror": "(removed: Mirror.RemoveHeaders)",
    }
    assert example["differences"][1] == {"field": "body.total", "kind": "value", "app": 40, "mirror": 41}
    assert "authorization" not in {name.lower() for name, _ in example["request"]["headers"]}
    assert "set-cookie" not in {name.lower() for name, _ in example["app"]["headers"]}
    assert "secret" not in path.read_text()
    assert counts[-1]["by_endpoint"][ENDPOINT]["compared"] == 20
    assert counts[-1]["process"]["pid"] == os.getpid()


def test_the_diff_log_rotates_and_keeps_one_previous_file(server, tmp_path):
    candidate = url(server(users_v2))
    log = tmp_path / "diff.jsonl"
    mw = MirrorMiddleware(users_v1, compare_config(candidate, Log=str(log), LogMaxBytes=4096, Examples=1000,
                                                   LogSeconds=0.001))  # fmt: skip
    address = server(mw)
    for user in range(1, 41):
        one_request(address, target=f"/users/{user}")
    settled(mw, 40)
    mw.close(5)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["diff.jsonl", "diff.jsonl.1"]
    assert all(p.stat().st_size <= 4096 + 8192 for p in tmp_path.iterdir())


def test_a_full_disk_never_reaches_a_request(server, tmp_path, caplog):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    candidate = url(server(users_v2))
    mw = MirrorMiddleware(users_v1, compare_config(candidate, Log="/dev/full", LogSeconds=0.001))  # every write: ENOSPC
    address = server(mw)
    for user in range(1, 6):
        assert one_request(address, target=f"/users/{user}").status == 200
    assert settled(mw, 5)["compared"] == 5
    assert sum("cannot write the diff log" in r.getMessage() for r in caplog.records) == 1


def test_comparisons_are_prometheus_series(server):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    candidate, baseline = url(server(users_v2)), url(server(users_v1))
    mw = MirrorMiddleware(users_v1, compare_config(candidate, baseline, IgnoreHeaders=["x-request-id"]),
                          prometheus=registry)  # fmt: skip
    address = server(mw)
    for user in range(1, 9):
        one_request(address, target=f"/users/{user}")
    settled(mw, 8, 8)

    def value(name, **labels):
        return registry.get_sample_value(name, labels) or 0.0

    common = {"route": "all", "endpoint": ENDPOINT}
    assert value("wsgimirror_compared_total", cluster="candidate", result="different", **common) == 8
    assert value("wsgimirror_compared_total", cluster="baseline", result="different", **common) == 8
    field = {"endpoint": ENDPOINT, "field": "body.total"}
    assert value("wsgimirror_field_differences_total", source="candidate", **field) == 2
    assert value("wsgimirror_field_differences_total", source="baseline", **field) == 0
    assert value("wsgimirror_field_differences_total", source="baseline", endpoint=ENDPOINT,
                 field="body.generated_at") == 8  # fmt: skip


def test_a_reload_keeps_the_counts_and_takes_the_new_settings(server):
    candidate = url(server(users_v2))
    mw = MirrorMiddleware(users_v1, compare_config(candidate, IgnoreHeaders=["x-request-id"]))
    address = server(mw)
    one_request(address, target="/users/4")
    settled(mw, 1)
    mw.reload(compare_config(candidate, IgnoreHeaders=["x-request-id"], IgnoreFields=["body.total"],
                             RelativeThreshold=100))  # fmt: skip
    one_request(address, target="/users/8")
    compare = settled(mw, 2)
    fields = compare["by_endpoint"][ENDPOINT]["fields"]
    assert compare["compared"] == 2 and fields["body.total"]["differences"] == 1  # the second one ignores it
    assert fields["body.total"]["regression"] is False  # judged with the new threshold


def test_comparing_a_large_json_answer_does_not_hold_the_event_loop(server):
    """A 4 MiB JSON diff takes about a second of CPU: it runs in a native thread, and the loop,
    which serves the real traffic, keeps turning (a greenlet ticking every millisecond sees no long gap)."""
    items = [{"id": i, "name": f"item {i}", "price": i} for i in range(80_000)]
    app_body = json.dumps({"items": items}).encode()
    changed = json.dumps({"items": [{**item, "price": item["price"] + i % 2} for i, item in enumerate(items)]})
    candidate = url(server(answering(headers=[("Content-Type", "application/json")], body=changed.encode())))
    app = answering(headers=[("Content-Type", "application/json")], body=app_body)
    mw = MirrorMiddleware(app, compare_config(candidate, MaxBodyBytes=8 << 20))
    address = server(mw)
    gaps, running = [], True

    def tick():
        last = time.perf_counter()
        while running:
            gevent.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = gevent.spawn(tick)
    one_request(address, target="/big")
    compare = settled(mw, 1)
    running = False
    ticker.join()
    assert compare["by_endpoint"]["GET /big"]["fields"]["body.items[].price"]["differences"] == 1
    assert max(gaps) < 0.3, f"the loop was held {max(gaps) * 1000:.0f} ms"


def test_an_app_yielding_text_instead_of_bytes_fails_as_without_the_middleware(server, sink):
    def buggy(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["not bytes"]

    bare = raw_exchange(server(buggy), "/bug")
    mw = MirrorMiddleware(buggy, compare_config(sink.address))
    assert raw_exchange(server(mw), "/bug") == bare
    assert settled(mw, 1)["skipped"] == {"not_captured": 1}


def test_a_head_answer_announcing_a_body_it_does_not_send_is_compared_at_once(server):
    """A HEAD answer's Content-Length describes the GET's body: nothing follows it, and nothing is waited for."""
    from tests.helpers import ScriptedServer

    def head_answer(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Version: 2\r\nContent-Length: 100\r\n\r\n")
        return True

    candidate = ScriptedServer(head_answer)
    try:
        app = answering(headers=[("Content-Type", "text/plain"), ("X-Version", "1")], body=b"app body")
        mw = MirrorMiddleware(app, compare_config(candidate.address))
        started = time.monotonic()
        assert one_request(server(mw), method="HEAD", target="/h").body == b""
        compare = settled(mw, 1)
        assert time.monotonic() - started < 5 and compare["skipped"] == {}
        assert {f: v["kinds"] for f, v in compare["by_endpoint"]["HEAD /h"]["fields"].items()} == {
            "headers.x-version": {"value": 1}
        }
    finally:
        candidate.stop()


def test_an_answer_delimited_by_the_connection_closing_is_compared(server):
    """HTTP/1.1 allows a body with no length that ends when the connection does: it is a whole answer."""
    from tests.helpers import ScriptedServer

    def close_delimited(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Version: 2\r\n\r\napp body")
        return False

    def cut_short(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\napp body")
        return False

    def chunks_cut_short(sock, head, body):  # no last chunk: the answer is not whole
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\napp\r\n")
        return False

    app = answering(headers=[("Content-Type", "text/plain"), ("X-Version", "1")], body=b"app body")
    for behaviour, skipped, fields in ((close_delimited, {}, {"headers.x-version": {"value": 1}}),
                                       (cut_short, {"no_answer": 1}, {}),
                                       (chunks_cut_short, {"no_answer": 1}, {})):  # fmt: skip
        candidate = ScriptedServer(behaviour)
        try:
            mw = MirrorMiddleware(app, compare_config(candidate.address))
            one_request(server(mw), target="/h")
            compare = settled(mw, 1)
            assert compare["skipped"] == skipped
            assert {f: v["kinds"] for f, v in compare["by_endpoint"]["GET /h"]["fields"].items()} == fields
        finally:
            candidate.stop()


def test_when_the_memory_budget_runs_out_identical_answers_are_skipped_never_reported_different(server, make_sink):
    """One side kept as a hash while the other was parsed: identical answers were 76-79 % "different"."""
    same = json.dumps({"items": [{"sku": i, "price": i * 3} for i in range(120)]}).encode()  # about 3 KiB
    candidate = url(server(slow(answering(headers=[("Content-Type", "application/json")], body=same), 0.3)))
    mw = MirrorMiddleware(answering(headers=[("Content-Type", "application/json")], body=same),
                          compare_config(candidate, MemoryBytes=4 * len(same)))  # fmt: skip
    address = server(mw)
    gevent.joinall([gevent.spawn(one_request, address, target=f"/items/{i}") for i in range(12)], raise_error=True)
    compare = settled(mw, 12)
    assert compare["different"] == 0 and compare["compared"] + compare["skipped"]["memory_budget"] == 12
    assert compare["skipped"]["memory_budget"] > 0
    assert not any(e["regression"] for e in compare["by_endpoint"].values())


def slow(app, seconds):
    def delayed(environ, start_response):
        gevent.sleep(seconds)
        return app(environ, start_response)

    return delayed


def nested(depth: int, leaf: bytes, shape: str) -> bytes:
    return (b"[" * depth + leaf + b"]" * depth) if shape == "list" else (b'{"a":' * depth + leaf + b"}" * depth)


@pytest.mark.parametrize("shape", ["list", "object"])
@pytest.mark.parametrize("depth", [200, 600, 990, 5000])
def test_an_answer_nested_deeply_is_compared_once_with_its_example_and_no_traceback(
    server, depth, shape, tmp_path, caplog, hub_errors
):
    """Answers nested some hundreds of levels deep, differing at the bottom, were lost as internal_error with
    a traceback (or counted, then lost again writing the example): one outcome, and an example."""
    json_answer = [("Content-Type", "application/json")]
    candidate = url(server(answering(headers=json_answer, body=nested(depth, b"2", shape))))
    mw = MirrorMiddleware(answering(headers=json_answer, body=nested(depth, b"1", shape)),
                          compare_config(candidate, Log=str(tmp_path / "diff.jsonl")))  # fmt: skip
    assert one_request(server(mw), target="/deep").body == nested(depth, b"1", shape)
    compare = settled(mw, 1)
    assert (compare["compared"], compare["different"], compare["skipped"]) == (1, 1, {})
    (example,) = mw.comparison_report().examples
    assert example["differences"] and "Traceback" not in caplog.text and hub_errors.getvalue() == ""
    mw.close()
    logged = [json.loads(line) for line in (tmp_path / "diff.jsonl").read_text().splitlines()]
    assert [r["type"] for r in logged] == ["example", "counts", "counts"]
