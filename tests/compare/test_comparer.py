"""The comparer in-process: its budget, what it counts and reports to Prometheus, and the diff log's records."""

import base64
import json
from collections import Counter

from tests.helpers import wait_until
from wsgimirror.capture.answer import Answer
from wsgimirror.capture.body import CaptureBudget
from wsgimirror.compare import comparer as comparer_module
from wsgimirror.compare.comparer import Comparer, request_record
from wsgimirror.config.model import CompareSettings

ENVIRON = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/api", "PATH_INFO": "/users/42"}
HEAD = b"GET /users/42?x=1 HTTP/1.1\r\nHost: m.test\r\nX-Note: a: b\r\nAccept: */*\r\n\r\n"


class Metrics:
    def __init__(self):
        self.events = []

    def compared(self, *args):
        self.events.append(("compared", *args))

    def field_difference(self, *args):
        self.events.append(("field", *args))


def answer(body: bytes, status: int = 200, headers=(("Content-Type", "application/json"),)) -> Answer:
    a = Answer(1 << 20, CaptureBudget())
    a.status, a.headers, a.complete = status, list(headers), True
    a.feed(body)
    return a


def request():
    return request_record(HEAD, lambda limit: b"body"[:limit], 4)


def test_the_budget_admits_exactly_max_per_second_in_each_second(monkeypatch):
    clock = [100.2]
    monkeypatch.setattr(comparer_module.time, "monotonic", lambda: clock[0])
    comparer = Comparer(CompareSettings(max_per_second=3))
    assert [comparer.admit() for _ in range(4)] == [True, True, True, False]
    clock[0] = 100.9
    assert comparer.admit() is False  # the same second
    clock[0] = 101.0
    assert [comparer.admit() for _ in range(4)] == [True, True, True, False]


def test_skips_are_counted_and_reported_with_their_labels():
    metrics = Metrics()
    comparer = Comparer(CompareSettings(), metrics)
    incomplete = answer(b"{}")
    incomplete.complete = False
    comparer.compare("r", "c", False, ENVIRON, request, incomplete, answer(b"{}"))
    assert metrics.events == [("compared", "r", "c", "GET /api/users/{id}", "not_captured")]
    assert comparer.snapshot()["skipped"] == {"not_captured": 1}
    assert list(comparer.snapshot()["by_endpoint"]) == ["GET /api/users/{id}"]


def test_a_comparison_reports_its_result_and_each_field_once(tmp_path):
    metrics = Metrics()
    comparer = Comparer(CompareSettings(), metrics)
    comparer.compare(
        "r", "c", True, ENVIRON, request, answer(b'{"a": 1, "b": [1, 2]}'), answer(b'{"a": 2, "b": [3, 4]}')
    )
    comparer.compare("r", "c", False, ENVIRON, request, answer(b'{"a": 1}'), answer(b'{"a": 1}'))
    endpoint = "GET /api/users/{id}"
    assert metrics.events == [
        ("compared", "r", "c", endpoint, "different"),
        ("field", endpoint, "body.a", "baseline"),
        ("field", endpoint, "body.b[]", "baseline"),
        ("compared", "r", "c", endpoint, "same"),
    ]


def test_the_diff_log_records_examples_and_counts_in_full(tmp_path, monkeypatch):
    log = tmp_path / "d.jsonl"
    settings = CompareSettings(log=str(log), examples=1, log_seconds=60)
    comparer = Comparer(settings)
    comparer.configure(settings, frozenset({"x-secret"}))
    app = answer(b'{"a": 1, "s": "' + b"x" * 3000 + b'"}', headers=[("Content-Type", "application/json"),
                 ("X-Secret", "app")])  # fmt: skip
    mirror = answer(b'{"a": 2, "s": "y"}', status=201, headers=[("Content-Type", "application/json"),
                    ("X-Secret", "mirror")])  # fmt: skip
    comparer.compare("r", "c", False, ENVIRON, request, app, mirror)
    comparer.compare("r", "c", False, ENVIRON, request, app, mirror)  # no second example: Examples is 1
    comparer.close()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["type"] for r in records] == ["example", "counts", "counts"]  # the first counts is due at once
    example = records[0]
    assert example["time"] == round(example["time"], 3)
    assert {k: example[k] for k in ("endpoint", "route", "cluster", "source")} == {
        "endpoint": "GET /api/users/{id}", "route": "r", "cluster": "c", "source": "candidate"
    }  # fmt: skip
    assert example["request"] == {
        "method": "GET", "target": "/users/42?x=1",
        "headers": [["Host", "m.test"], ["X-Note", "a: b"], ["Accept", "*/*"]],
        "body": base64.b64encode(b"body").decode(), "body_length": 4,
    }  # fmt: skip
    assert example["app"]["status"] == 200 and example["app"]["body_length"] == len(app.body)
    assert example["app"]["headers"] == [["Content-Type", "application/json"]]  # X-Secret left out
    mirror_body = base64.b64encode(b'{"a": 2, "s": "y"}').decode()
    assert example["mirror"] == {"status": 201, "headers": [["Content-Type", "application/json"]],
                                 "body": mirror_body, "body_length": 18}  # fmt: skip
    differences = {d["field"]: d for d in example["differences"]}
    assert differences["status"] == {"field": "status", "kind": "value", "app": 200, "mirror": 201}
    assert differences["headers.x-secret"]["app"] == "(removed: Mirror.RemoveHeaders)"
    assert differences["body.a"] == {"field": "body.a", "kind": "value", "app": 1, "mirror": 2}
    long = differences["body.s"]["app"]
    assert long == {"truncated": json.dumps("x" * 3000)[:2048], "chars": 3002}
    counts = records[-1]
    assert counts["time"] == round(counts["time"], 6)
    assert counts["thresholds"] == {"relative": 20.0, "absolute": 0.03, "min_samples": 10, "confidence": 0.999,
                                    "latency_threshold": 20.0, "added_fields": "report"}  # fmt: skip
    assert counts["skipped"] == {} and counts["by_endpoint"]["GET /api/users/{id}"]["compared"] == 2
    kept = comparer.kept.all()
    assert len(kept) == 1 and kept[0]["endpoint"] == "GET /api/users/{id}"


def test_counts_are_written_at_most_every_log_seconds(tmp_path, monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(comparer_module.time, "monotonic", lambda: clock[0])
    log = tmp_path / "d.jsonl"
    comparer = Comparer(CompareSettings(log=str(log), examples=0, log_seconds=10))
    for now in (50.0, 55.0, 59.9, 60.0, 61.0):
        clock[0] = now
        comparer.compare("r", "c", False, ENVIRON, request, answer(b"{}"), answer(b'{"a": 1}'))
    times = [
        json.loads(line)["by_endpoint"]["GET /api/users/{id}"]["compared"] for line in log.read_text().splitlines()
    ]
    assert times == [1, 4]  # at 50 s, then at 60 s


def test_the_last_comparisons_of_a_burst_reach_the_log_when_the_interval_is_over(tmp_path):
    """Counts used to be written only when a comparison came after the interval: a quiet period after a burst
    left the log (and ``wsgimirror report``) behind until the next request."""
    log = tmp_path / "d.jsonl"
    comparer = Comparer(CompareSettings(log=str(log), examples=0, log_seconds=0.2))
    for _ in range(3):
        comparer.compare("r", "c", False, ENVIRON, request, answer(b"{}"), answer(b'{"a": 1}'))

    def logged():
        return [
            json.loads(line)["by_endpoint"]["GET /api/users/{id}"]["compared"] for line in log.read_text().splitlines()
        ]

    assert logged() == [1]
    wait_until(lambda: logged() == [1, 3], timeout=5, what="the burst's last counts")
    comparer.close()


def test_a_value_of_exactly_the_cap_is_shown_whole():
    exact = "x" * (comparer_module.SHOWN_VALUE_CHARS - 2)  # 2046 characters and two quotes
    assert comparer_module._capped(exact) == exact
    assert comparer_module._capped(exact + "x") == {"truncated": json.dumps(exact + "x")[:2048], "chars": 2049}
    assert comparer_module._capped(b"raw") == b"raw"  # not JSON: shown by str() when cut, never an error


def test_a_body_field_named_like_a_removed_header_is_shown():
    from wsgimirror.compare.diff import Difference

    plain = CompareSettings(sensitive_names=())  # no name masked here: only the removed header's values are
    comparer = Comparer(plain)
    comparer.configure(plain, frozenset({"x-secret"}))
    shown = comparer._shown_difference(Difference("body.x-secret", "value", 1, 2))
    assert shown["app"] == 1
    # a field whose name past the length of "headers." happens to be a removed header is not a header either
    shown = comparer._shown_difference(Difference("body.abcx-secret", "value", 1, 2))
    assert (shown["app"], shown["mirror"]) == (1, 2)


def test_a_reload_keeps_the_diff_log_open_unless_its_path_or_size_changes(tmp_path):
    first = CompareSettings(log=str(tmp_path / "d.jsonl"), log_max_bytes=1 << 20)
    comparer = Comparer(first)
    writer = comparer._writer
    writer.write({"type": "probe"})
    comparer.configure(CompareSettings(log=str(tmp_path / "d.jsonl"), log_max_bytes=1 << 20, examples=9))
    assert comparer._writer is writer and writer._fd >= 0  # the same file goes on
    comparer.configure(CompareSettings(log=str(tmp_path / "d.jsonl"), log_max_bytes=1 << 21))
    assert comparer._writer is not writer and writer._fd == -1  # a new size: a new writer, the old one closed
    second = comparer._writer
    comparer.configure(CompareSettings(log=str(tmp_path / "e.jsonl"), log_max_bytes=1 << 21))
    assert comparer._writer is not second and comparer._writer.template.endswith("e.jsonl")
    third = comparer._writer
    third.write({"type": "probe"})
    comparer.configure(CompareSettings())
    assert comparer._writer is None and third._fd == -1


def test_close_writes_the_last_counts_and_closes_the_log(tmp_path):
    comparer = Comparer(CompareSettings(log=str(tmp_path / "d.jsonl")))
    comparer.compare("r", "c", False, ENVIRON, request, answer(b"{}"), answer(b"{}"))
    comparer.close()
    assert comparer._writer._fd == -1
    records = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert records[-1]["type"] == "counts" and records[-1]["by_endpoint"]["GET /api/users/{id}"]["same"] == 1
    assert isinstance(records[-1]["time"], float)


def test_the_endpoint_of_an_environ_without_optional_keys():
    comparer = Comparer(CompareSettings())
    assert comparer.endpoint({"PATH_INFO": "/a"}) == "GET /a"  # no method, no SCRIPT_NAME (PEP 3333 allows it)
    assert comparer.endpoint({"REQUEST_METHOD": "PUT", "SCRIPT_NAME": "/app"}) == "PUT /app"
    assert comparer.endpoint({"REQUEST_METHOD": "DELETE", "SCRIPT_NAME": "/app", "PATH_INFO": "/x"}) == "DELETE /app/x"


def test_a_comparison_over_budget_is_skipped_with_its_labels(monkeypatch):
    metrics = Metrics()
    comparer = Comparer(CompareSettings(max_per_second=1), metrics)
    monkeypatch.setattr(comparer, "admit", lambda: False)
    comparer.compare("r", "c", False, ENVIRON, request, answer(b"{}"), answer(b"{}"))
    assert metrics.events == [("compared", "r", "c", "GET /api/users/{id}", "budget")]
    assert comparer.snapshot()["skipped"] == {"budget": 1}


def test_a_failing_comparison_is_logged_once_and_counted_as_internal_error(monkeypatch, caplog):
    import logging

    metrics = Metrics()
    comparer = Comparer(CompareSettings(), metrics)

    def broken(*args):
        raise RuntimeError("a bug in the diff")

    monkeypatch.setattr(comparer, "_differences", broken)
    monkeypatch.setattr(comparer_module._failed, "_next", 0.0)  # not held back by an earlier test's warning
    monkeypatch.setattr(comparer_module._failed, "_held", 0)
    caplog.set_level(logging.WARNING, logger="wsgimirror.compare.comparer")
    comparer.compare("r", "c", False, ENVIRON, request, answer(b"{}"), answer(b"{}"))
    assert metrics.events == [("compared", "r", "c", "GET /api/users/{id}", "internal_error")]
    assert comparer.snapshot()["skipped"] == {"internal_error": 1}
    [record] = [r for r in caplog.records if "could not compare" in r.getMessage()]
    assert record.getMessage() == "wsgimirror could not compare an answer of route 'r'"
    assert record.exc_info is not None and "a bug in the diff" in str(record.exc_info[1])


def test_the_live_page_keeps_examples_of_every_endpoint_and_field_within_its_bound():
    """The newest 200 examples of a busy endpoint once hid every other endpoint's: examples are kept per endpoint and
    field (Compare.Examples each), at most KEPT_EXAMPLES in all, the fullest giving way first."""
    comparer = Comparer(CompareSettings(examples=5, max_per_second=100_000))
    for i in range(1000):  # a busy endpoint differs first, then 150 others four times each
        environ = {**ENVIRON, "PATH_INFO": "/busy" if i < 400 else f"/e{i % 150}/x"}
        comparer.compare("r", "c", i % 2 == 1, environ, request, answer(b'{"n": 0}'), answer(b'{"n": %d}' % (i + 1)))
    report = comparer.report()
    by_endpoint = Counter(e["endpoint"] for e in report.examples)
    assert len(report.examples) <= comparer_module.KEPT_EXAMPLES and report.processes == 1
    assert len(by_endpoint) == 151 and min(by_endpoint.values()) >= 2  # every endpoint keeps some
    assert by_endpoint["GET /api/busy"] <= 5  # Compare.Examples per endpoint and field: the busy one got no more
    assert {e["source"] for e in report.examples} == {"candidate", "baseline"}
    assert isinstance(report.examples[-1]["time"], float) and report.settings.relative == 20.0
    busy = report.counts["GET /api/busy"]
    assert busy["different"] == 200 and busy["baseline_different"] == 200


def test_an_example_request_shows_at_most_its_first_16_kib():
    big = b"x" * 40000
    shown = Comparer(CompareSettings())._shown_request(*request_record(HEAD, lambda limit: big[:limit], len(big)))
    assert len(base64.b64decode(shown["body"])) == 16384 and shown["body_length"] == 40000
    assert (shown["method"], shown["target"]) == ("GET", "/users/42?x=1")
