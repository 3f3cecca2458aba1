"""The comparison's pure parts: trees, the field diff, endpoint names, counting and Diffy's rule."""

import gzip
import hashlib
import json
import zlib

import pytest

from wsgimirror.capture.answer import Answer
from wsgimirror.capture.body import CaptureBudget
from wsgimirror.compare.analysis import MAX_FIELDS, OTHER_FIELD, Analysis, merge, new_endpoint, summarize
from wsgimirror.compare.diff import MirrorMade, compare, ignored_matcher
from wsgimirror.compare.endpoints import Endpoints, is_identifier
from wsgimirror.compare.trees import Digest, Text, comparable
from wsgimirror.compare.verdicts import Settings, bucket


def answer(body: bytes = b"", headers=(), status: int = 200, limit: int = 1 << 20, budget=None) -> Answer:
    a = Answer(limit, budget or CaptureBudget())
    a.status, a.headers = status, list(headers)
    a.feed(body)
    a.complete = True
    return a


def tree(body, content_type="application/json", **kwargs):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return comparable(answer(data, [("Content-Type", content_type)]), frozenset(), False, 1 << 20, **kwargs)


def kinds(app, mirror, **kwargs):
    return [(d.field, d.kind) for d in compare(tree(app), tree(mirror), **kwargs)]


@pytest.mark.parametrize(
    "app, mirror, expected",
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, [("body.a", "value")]),
        ({"a": 1}, {"a": 1.0}, []),  # numbers by value
        ({"a": 12}, {"a": 12.5}, [("body.a", "value")]),
        ({"a": None}, {"a": 0}, [("body.a", "type")]),
        ({"a": True}, {"a": 1}, [("body.a", "type")]),
        ({"a": 1, "b": 2}, {"a": 1}, [("body.b", "missing")]),
        ({"a": 1}, {"a": 1, "c": 3}, [("body.c", "added")]),
        ({"a": {"b": {"c": "x"}}}, {"a": {"b": {"c": "y"}}}, [("body.a.b.c", "value")]),
        ({"l": [1, 2]}, {"l": [1, 2, 3]}, [("body.l", "size")]),
        ({"l": [1, 2]}, {"l": [2, 1]}, [("body.l", "order")]),
        ({"l": [1, 2]}, {"l": [1.0, 2]}, []),
        ({"a": "1"}, {"a": 1}, [("body.a", "type")]),
        ({"l": [{"p": 1}, {"p": 2}]}, {"l": [{"p": 1}, {"p": 3}]}, [("body.l[].p", "value")]),
        ([1, 2], [1, 3], [("body[]", "value")]),
        ([1, 2, 3], [4, 5, 6], [("body[]", "value")]),  # one finding per field and kind, however many elements
        ({"a": 1}, [1], [("body", "type")]),
    ],
)
def test_field_paths_and_kinds(app, mirror, expected):
    assert kinds(app, mirror) == expected


def test_unordered_arrays_pair_what_is_left_after_matching_twins():
    assert kinds({"l": [1, 2, 3]}, {"l": [3, 1, 2]}, ordered=False) == []
    assert kinds({"l": [{"id": 1}, {"id": 2}]}, {"l": [{"id": 2}, {"id": 5}]}, ordered=False) == [
        ("body.l[].id", "value")
    ]
    assert kinds({"l": [1, 1, 2]}, {"l": [1, 2, 2]}, ordered=False) == [("body.l[]", "value")]


def test_status_and_headers_compare_case_insensitively_with_multi_values_sorted():
    ignore = frozenset({"date"})
    a = comparable(answer(headers=[("Vary", "b"), ("vary", "a"), ("X-A", "1"), ("Date", "x")]), ignore, False, 99)
    b = comparable(answer(headers=[("VARY", "a"), ("Vary", "b"), ("X-B", "1"), ("Date", "y")], status=201), ignore,
                   False, 99)  # fmt: skip
    assert [(d.field, d.kind) for d in compare(a, b)] == [
        ("status", "value"), ("headers.x-a", "missing"), ("headers.x-b", "added")
    ]  # fmt: skip


@pytest.mark.parametrize(
    "pattern, field, ignored",
    [
        ("body.meta.*", "body.meta.x", True),
        ("body.meta.*", "body.meta.x.y", True),
        ("body.meta.*", "body.meta", False),
        ("body.meta.*", "body.metadata.x", False),
        ("body.items[].updated_at", "body.items[].updated_at", True),
        ("body.items[].updated_at", "body.items[].updated", False),
        ("body.*.id", "body.items[].id", True),
        ("headers.x-trace-id", "headers.x-trace-id", True),
        ("body.a", "body.ab", False),
        ("body.a", "body.a[]", True),
    ],
)
def test_ignore_patterns_match_one_segment_per_star_and_everything_below(pattern, field, ignored):
    assert ignored_matcher((pattern,))(field) is ignored


def test_bodies_are_decoded_from_gzip_and_deflate_both_wrapped_and_raw():
    document = json.dumps({"a": [1, 2]}).encode()
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    encoded = [("gzip", gzip.compress(document)), ("deflate", zlib.compress(document)),
               ("deflate", raw.compress(document) + raw.flush()), ("x-gzip", gzip.compress(document))]  # fmt: skip
    for encoding, data in encoded:
        got = comparable(answer(data, [("Content-Encoding", encoding)]), frozenset(), False, 1 << 20)
        assert got.is_json and got.body == {"a": [1, 2]}, encoding


def test_a_body_that_inflates_past_the_limit_is_compared_by_the_hash_of_what_came():
    bomb = gzip.compress(b"0" * 5_000_000)
    got = comparable(answer(bomb, [("Content-Encoding", "gzip")]), frozenset(), False, 1 << 20)
    assert isinstance(got.body, Digest) and got.body.length == len(bomb)


def test_text_bytes_and_json_without_a_json_content_type():
    assert tree(b'{"a": 1}', "text/plain").is_json
    assert isinstance(tree(b"hello", "text/plain").body, Text)
    assert tree(b"\xff\xfe\x00", "application/octet-stream").body == b"\xff\xfe\x00"
    assert not tree(b"{not json", "application/json").is_json


def test_an_answer_over_its_limit_keeps_only_length_and_hash_and_gives_memory_back():
    budget = CaptureBudget(memory_limit=100)
    a = answer(b"x" * 60, limit=1000, budget=budget)
    assert a.whole and budget.memory == 60
    a.feed(b"y" * 60)  # over the process budget: hash only from here
    assert not a.whole and budget.memory == 0 and a.length == 120
    b = answer(b"x" * 60 + b"y" * 60, limit=100)
    assert not b.whole and b.digest == a.digest


def test_head_answers_have_no_body():
    assert comparable(answer(b"body"), frozenset(), True, 99).body == b""


# -- endpoints -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, name",
    [
        ("/users/42/orders", "GET /users/{id}/orders"),
        ("/users/6f1c2d3e-0b1a-4c5d-9e8f-1a2b3c4d5e6f", "GET /users/{id}"),
        ("/files/deadbeefdeadbeef", "GET /files/{id}"),
        ("/t/aGVsbG8gd29ybGQ1MjM0", "GET /t/{id}"),
        ("/settings/notification-settings", "GET /settings/notification-settings"),
        ("/v2/users", "GET /v2/users"),
        ("", "GET /"),
    ],
)
def test_generic_endpoint_names(path, name):
    assert Endpoints(()).name("GET", path) == name


def test_configured_templates_win_in_order():
    endpoints = Endpoints(["/users/{id}/orders/{order}", "/users/{name}"])
    assert endpoints.name("POST", "/users/ann/orders/7") == "POST /users/{id}/orders/{order}"
    assert endpoints.name("GET", "/users/ann") == "GET /users/{name}"
    assert endpoints.name("GET", "/users/ann/x") == "GET /users/ann/x"
    assert not is_identifier("") and is_identifier("123")


# -- counting and the rule ----------------------------------------------------------------------------


def test_numbers_compare_by_value_unless_types_are_strict():
    assert kinds({"a": 1, "l": [1, 2]}, {"a": 1.0, "l": [1.0, 2]}, strict_types=True) == [
        ("body.a", "type"), ("body.l[]", "type")]  # fmt: skip
    assert kinds({"a": True}, {"a": 1}) == [("body.a", "type")]  # true is not 1, whatever Python says
    assert kinds({"l": [{"n": 1}, {"n": 2}]}, {"l": [{"n": 2.0}, {"n": 1}]}, ordered=False) == []
    assert kinds({"l": [1, 2.0]}, {"l": [2, 1]}) == [("body.l", "order")]  # by value, a reordering


FIVE = Settings(min_samples=5)


def counted(*comparisons: tuple[bool, list], has_baseline: bool = False) -> dict:
    """The summary of comparisons ``(baseline?, differences)`` of one endpoint, at five comparisons a side."""
    analysis = Analysis()
    for baseline, found in comparisons:
        analysis.record("GET /x", baseline, found, 5, has_baseline)
    return analysis.snapshot(FIVE)["by_endpoint"]["GET /x"]


def test_counts_separate_candidate_from_baseline_and_field_rates():
    comparisons = [(False, [("body.t", "value")] if i < 20 else []) for i in range(40)]
    comparisons += [(True, [("body.ts", "value")]) for _ in range(40)]
    comparisons += [(False, [("body.ts", "value")]) for _ in range(40)]
    x = counted(*comparisons, has_baseline=True)
    assert (x["compared"], x["same"], x["different"], x["baseline_compared"], x["baseline_different"]) == \
        (80, 20, 60, 40, 40)  # fmt: skip
    assert x["fields"]["body.t"]["rate"] == 0.25 and x["fields"]["body.t"]["regression"]
    assert x["fields"]["body.ts"]["rate"] == 0.5 and x["fields"]["body.ts"]["noise_rate"] == 1.0
    assert x["fields"]["body.ts"]["verdict"] == "noise" and x["verdict"] == "regression"


def test_fields_per_endpoint_are_capped_and_examples_counted():
    analysis = Analysis()
    for i in range(MAX_FIELDS + 10):
        _, counted, wanted = analysis.record("GET /x", False, [(f"body.f{i}", "value")], 1)
    fields = analysis.counts()[0]["GET /x"]["fields"]
    assert len(fields) == MAX_FIELDS + 1 and fields[OTHER_FIELD]["differences"] == 10
    assert counted == [OTHER_FIELD] and wanted == []  # the cap's one example was logged already


def test_merged_counts_add_up():
    one = Analysis()
    one.record("GET /x", False, [("status", "value")], 0)
    counts = one.counts()[0]
    total = merge([counts, counts])
    assert total["GET /x"]["compared"] == 2 and total["GET /x"]["fields"]["status"]["kinds"] == {"value": 2}
    assert not summarize(total, Settings())["GET /x"]["regression"]  # two comparisons: still learning
    assert summarize(total, Settings(min_samples=2))["GET /x"]["regression"]


def test_skips_register_the_endpoint_and_endpoints_are_capped():
    from wsgimirror.compare.analysis import MAX_ENDPOINTS, OTHER_ENDPOINT

    analysis = Analysis()
    assert analysis.skip("budget", "GET /x") == "GET /x"
    assert analysis.counts() == ({"GET /x": new_endpoint()}, {"budget": 1})
    for i in range(MAX_ENDPOINTS - 1):
        analysis.record(f"GET /e{i}", False, [], 0)
    assert analysis.record("GET /late", False, [("status", "value")], 5) == (OTHER_ENDPOINT, ["status"], ["status"])
    assert analysis.skip("no_answer", "GET /later") == OTHER_ENDPOINT
    assert analysis.record("GET /x", False, [], 0)[0] == "GET /x"  # known before the cap: still itself
    assert len(analysis.counts()[0]) == MAX_ENDPOINTS + 1


def test_merging_reads_records_with_counters_left_out():
    one = {"GET /": {"compared": 2, "fields": {"status": {"differences": 1}}, "latency": {"app": {"3": 2}}}}
    two = {"GET /": {"same": 1, "fields": {"status": {"noise": 2}}}}
    merged = merge([one, two])["GET /"]
    assert (merged["compared"], merged["same"], merged["with_baseline"]) == (2, 1, 0)
    assert merged["fields"] == {"status": {"kinds": {}, "differences": 1, "noise": 2, "added_only": 0,
                                           "mirror_made": 0}}  # fmt: skip
    assert merged["latency"] == {"app": {"3": 2}, "candidate": {}, "baseline": {}}


def test_rates_are_rounded_to_six_places_and_zero_without_comparisons():
    counts = merge([{"GET /": {"compared": 30, "same": 20, "different": 10,
                               "fields": {"status": {"kinds": {"value": 10}, "differences": 10}}},
                     "GET /b": {"baseline_compared": 7, "baseline_different": 1,
                                "fields": {"body": {"noise": 1}}}}])  # fmt: skip
    summary = summarize(counts, FIVE)
    assert summary["GET /"]["fields"]["status"]["rate"] == 0.333333
    body = summary["GET /b"]["fields"]["body"]
    assert (body["rate"], body["noise_rate"], body["verdict"], body["regression"]) == (0.0, 0.142857, "learning",
                                                                                       False)  # fmt: skip
    assert summary["GET /"]["regression"] is True and summary["GET /b"]["regression"] is False


# -- what each difference carries, and the edges of decoding (mutation gaps) ----------------------------


def differences(app, mirror, **kwargs):
    return [tuple(d) for d in compare(app, mirror, **kwargs)]


def test_each_difference_carries_both_values():
    old = [("Content-Type", "application/json"), ("Vary", "a"), ("X-Old", "1"), ("X-Both", "1"), ("X-Both", "2")]
    new = [("Content-Type", "application/json"), ("Vary", "b"), ("X-New", "1"), ("X-Both", "2")]
    a = comparable(answer(b'{"a": {"x": 1}, "l": [1, 2], "m": 1}', old), frozenset(), False, 99)
    b = comparable(answer(b'{"a": {"x": 2}, "l": [1, 2, 3], "n": 2}', new, status=500), frozenset(), False, 99)
    assert differences(a, b) == [
        ("status", "value", 200, 500),
        ("headers.vary", "value", "a", "b"),
        ("headers.x-old", "missing", "1", None),
        ("headers.x-both", "value", ["1", "2"], "2"),
        ("headers.x-new", "added", None, "1"),
        ("body.a.x", "value", 1, 2),
        ("body.l", "size", 2, 3),
        ("body.m", "missing", 1, None),
        ("body.n", "added", None, 2),
    ]


def test_bodies_of_other_shapes_are_shown_by_size_and_digest():
    binary, text, json_body = tree(bytes(range(128, 228))), tree(b"hi"), tree({"a": 1})
    big = comparable(answer(b"x" * 200, [("Content-Type", "application/json")], limit=100), frozenset(), False, 100)
    shown = {"length": 100, "bytes": bytes(range(128, 192)).hex()}
    assert differences(json_body, binary) == [("body", "type", {"a": 1}, shown)]
    assert differences(text, json_body) == [("body", "type", "hi", {"a": 1})]
    digest = {"length": 200, "sha256": hashlib.sha256(b"x" * 200).hexdigest()}
    assert differences(big, text) == [("body", "bytes", digest, "hi")]
    assert differences(big, big) == [] and isinstance(big.body, Digest) and big.status == 200


def test_array_elements_pair_up_by_position_or_by_canonical_order():
    a, b = tree({"l": [{"id": 1}, {"id": 2}]}), tree({"l": [{"id": 4}, {"id": 3}]})
    assert differences(a, b, ordered=False) == [("body.l[].id", "value", 1, 3)]  # 1-3 and 2-4, sorted
    assert differences(a, b) == [("body.l[].id", "value", 1, 4)]  # 1-4 and 2-3, by position; one kept per kind
    assert kinds({"l": [[1, 2]]}, {"l": [[2, 1]]}) == [("body.l[]", "order")]  # nested arrays keep the order rule
    assert kinds({"l": [1, 2.0]}, {"l": [2, 1]}, strict_types=True) == [("body.l[]", "value"), ("body.l[]", "type")]
    many = list(range(100))
    assert kinds({"l": many}, {"l": many[::-1]}) == [("body.l", "order")]
    assert kinds({"l": many}, {"l": [n + 1000 for n in many]}) == [("body.l[]", "value")]


@pytest.mark.parametrize(
    "body, content_type, is_json",
    [(b" 42", "application/json", True), (b"42", "text/plain", False), (b'  {"a": 1}', "text/plain", True),
     (b"[1]", "text/plain", True), (b"[1]", "Application/JSON", True), (b"1 ", "application/problem+json", True)],
)  # fmt: skip
def test_when_a_body_is_json(body, content_type, is_json):
    assert tree(body, content_type).is_json is is_json


def test_decoding_stops_at_the_limit_exactly():
    for size, decoded in ((1000, True), (1001, False)):
        data = b"[0" + b" " * (size - 3) + b"]"
        assert len(data) == size
        got = comparable(answer(gzip.compress(data), [("Content-Encoding", "gzip")]), frozenset(), False, 1000)
        assert got.is_json is decoded, size
    wrapped = zlib.compress(b'{"a": 1}')  # zlib data labelled gzip: not decoded, compared as bytes
    assert comparable(answer(wrapped, [("Content-Encoding", "gzip")]), frozenset(), False, 99).body == wrapped


def test_a_decompression_bomb_is_never_inflated_in_memory():
    import tracemalloc

    bomb = gzip.compress(bytes(64 << 20), compresslevel=1)
    tracemalloc.start()
    got = comparable(answer(bomb, [("Content-Encoding", "gzip")], limit=1 << 20), frozenset(), False, 1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(got.body, Digest) and peak < 8 << 20


def test_a_head_answer_keeps_its_status_and_headers():
    got = comparable(answer(b"x", [("X-A", "1")], status=204), frozenset(), True, 99)
    assert got == (204, {"x-a": ["1"]}, b"", False)


def test_type_order_and_unordered_differences_carry_their_values():
    assert differences(tree({"a": 1}), tree({"a": "1"})) == [("body.a", "type", 1, "1")]
    assert differences(tree({"l": [1, 2]}), tree({"l": [2, 1]})) == [("body.l", "order", [1, 2], [2, 1])]
    # twins (1 and 9) are set aside first, then what is left pairs up: 5 against 7
    assert differences(tree({"l": [9, 1, 5]}), tree({"l": [1, 9, 7]}), ordered=False) == [("body.l[]", "value", 5, 7)]
    # sorted alone, 1 3 against 3 4 would pair 1 with 3: the twin 3 is set aside, and 1 pairs with 4
    assert differences(tree({"l": [1, 3]}), tree({"l": [3, 4]}), ordered=False) == [("body.l[]", "value", 1, 4)]


def test_a_bomb_keeps_the_answers_status_headers_and_digest():
    bomb = gzip.compress(bytes(1 << 20))
    got = comparable(answer(bomb, [("Content-Encoding", "gzip")], status=203), frozenset(), False, 1000)
    assert got == (203, {"content-encoding": ["gzip"]}, Digest(len(bomb), hashlib.sha256(bomb).hexdigest()), False)


# -- normalisation, added and mirror-made differences --------------------------------------------------------


def test_a_br_body_is_decoded_within_the_limit_when_a_decoder_is_installed():
    brotli = pytest.importorskip("brotli")  # a test extra: installed by the README's test line
    data = json.dumps({"a": [1, 2]}).encode()
    got = comparable(answer(brotli.compress(data), [("Content-Encoding", "br")]), frozenset(), False, 1 << 20)
    assert got.is_json and got.body == {"a": [1, 2]}
    bomb = brotli.compress(bytes(8 << 20))
    got = comparable(answer(bomb, [("Content-Encoding", "br")]), frozenset(), False, 1 << 20)
    assert isinstance(got.body, Digest)  # decodes past the limit: compared by the hash of what came
    junk = comparable(answer(b"not brotli", [("Content-Encoding", "br")]), frozenset(), False, 99)
    assert junk.body == Text("not brotli")


def test_transfer_headers_are_not_compared_by_default():
    from wsgimirror.config.load import load_config
    from wsgimirror.config.model import CompareSettings

    ignored = CompareSettings().ignore_headers
    assert {"content-encoding", "vary", "content-length", "date", "server", "transfer-encoding"} <= ignored
    config = {
        "ReverseProxy": {"Routes": {}, "Clusters": {}},
        "Compare": {"TransferHeaders": [], "IgnoreHeaders": ["X-A"]},
    }
    assert load_config(config).compare.ignore_headers == frozenset({"x-a"})


def test_what_the_mirror_changed_in_the_request_is_mirror_made():
    made = MirrorMade([("shop.example", "10.0.0.7:8000"), (None, "wsgimirror"), (None, "203.0.113.9"),
                       ("keep-alive", None), ("same", "same")])  # fmt: skip
    app = tree({"host": "shop.example", "url": "http://shop.example/x", "h": {"Connection": "keep-alive"}, "n": 1})
    mirror = tree({"host": "10.0.0.7:8000", "url": "http://10.0.0.7:8000/x", "h": {"X-Mirrored-By": "wsgimirror",
                   "X-Forwarded-For": "203.0.113.9"}, "n": 2})  # fmt: skip
    found = [(d.field, d.kind) for d in compare(app, mirror, made=made)]
    assert found == [("body.host", "mirror"), ("body.url", "mirror"), ("body.h.Connection", "mirror"),
                     ("body.h.X-Mirrored-By", "mirror"), ("body.h.X-Forwarded-For", "mirror"),
                     ("body.n", "value")]  # fmt: skip
    assert not made.explains("other", "10.0.0.7:8000")  # the app's value was not the original
    assert not made.explains(1, 2) and made.explains(None, "wsgimirror")


def test_added_and_mirror_made_differences_are_counted_apart_and_judged_as_configured():
    analysis = Analysis()
    for _ in range(20):
        analysis.record("GET /x", False, [("body.new", "added"), ("body.host", "mirror"), ("body.v", "value")], 0)
    row = analysis.snapshot(Settings())["by_endpoint"]["GET /x"]
    fields = row["fields"]
    assert (fields["body.new"]["added_only"], fields["body.new"]["verdict"], fields["body.new"]["rate"]) == (
        20,
        "added",
        0.0,
    )
    assert (fields["body.host"]["mirror_made"], fields["body.host"]["verdict"]) == (20, "mirror-made")
    assert fields["body.v"]["verdict"] == "regression" and row["different"] == 20
    strict = analysis.snapshot(Settings(added_fields="regression"))["by_endpoint"]["GET /x"]["fields"]
    assert strict["body.new"]["verdict"] == "regression" and strict["body.host"]["verdict"] == "mirror-made"
    only_mirror = Analysis()
    only_mirror.record("GET /m", False, [("body.host", "mirror")], 0)
    assert only_mirror.snapshot(Settings())["same"] == 1  # a comparison whose only differences the mirror made


# -- counting behind the verdicts ----------------------------------------------------------------------------


def test_a_baseline_echo_of_what_the_mirror_changed_is_not_noise():
    analysis = Analysis()
    analysis.record("GET /e", True, [("headers.host", "mirror")], 5, has_baseline=True)
    analysis.record("GET /e", True, [("headers.host", "mirror"), ("body.id", "value")], 5, has_baseline=True)
    fields = analysis.counts()[0]["GET /e"]["fields"]
    assert fields["headers.host"]["noise"] == 0 and fields["body.id"]["noise"] == 1


def test_a_candidate_field_that_is_only_added_or_mirror_made_is_counted_as_such():
    analysis = Analysis()
    analysis.record("GET /e", False, [("body.extra", "added"), ("body.extra", "mirror")], 5)
    analysis.record("GET /e", False, [("headers.x", "mirror")], 5)
    analysis.record("GET /e", False, [("body.v", "added"), ("body.v", "value")], 5)
    fields = analysis.counts()[0]["GET /e"]["fields"]
    assert (fields["body.extra"]["added_only"], fields["body.extra"]["mirror_made"]) == (1, 0)
    assert (fields["headers.x"]["added_only"], fields["headers.x"]["mirror_made"]) == (0, 1)
    assert (fields["body.v"]["added_only"], fields["body.v"]["mirror_made"], fields["body.v"]["differences"]) == (
        0,
        0,
        1,
    )


def test_latencies_are_counted_once_each_in_their_bucket():
    analysis = Analysis()
    for _ in range(3):
        analysis.record("GET /e", False, [], 5, latency=(0.002, 0.004))
    analysis.record("GET /e", True, [], 5, latency=(0.002, 0.003))
    latency = analysis.counts()[0]["GET /e"]["latency"]
    assert latency["app"] == {bucket(0.002): 3}  # the app's time is counted with the candidate's comparison only
    assert latency["candidate"] == {bucket(0.004): 3} and latency["baseline"] == {bucket(0.003): 1}


def test_added_fields_count_at_their_full_rate_when_they_regress():
    analysis = Analysis()
    for _ in range(10):
        analysis.record("GET /e", False, [("body.new", "added")], 5)
    counts = analysis.counts()[0]
    reported = summarize(counts, Settings(min_samples=10))["GET /e"]["fields"]["body.new"]
    assert (reported["verdict"], reported["rate"]) == ("added", 0.0)
    regressing = summarize(counts, Settings(min_samples=10, added_fields="regression"))["GET /e"]["fields"]["body.new"]
    assert (regressing["verdict"], regressing["rate"]) == ("regression", 1.0)


def test_fields_that_differ_share_the_confidence_level():
    """p 0.00052 is a regression for a field alone and noise when two fields differ (Bonferroni)."""

    def endpoint(fields: int) -> dict:
        analysis = Analysis()
        for i in range(11):
            differences = [(f"body.f{k}", "value") for k in range(fields)] if i < 8 else []
            analysis.record("GET /e", False, differences, 5, has_baseline=True)
            analysis.record("GET /e", True, [], 5, has_baseline=True)
        return summarize(analysis.counts()[0], Settings(min_samples=10))["GET /e"]

    assert endpoint(1)["fields"]["body.f0"]["verdict"] == "regression"
    two = endpoint(2)
    assert [two["fields"][f]["verdict"] for f in ("body.f0", "body.f1")] == ["noise", "noise"]
    assert two["fields"]["body.f0"]["p_value"] == 0.000516


def compared(analysis, n, *, baseline=False, has_baseline=False, fields=(), app=0.002, mirror=0.004):
    for _ in range(n):
        analysis.record("GET /e", baseline, list(fields), 5, has_baseline=has_baseline, latency=(app, mirror))


def test_an_endpoint_like_its_baseline_is_the_same_and_its_latency_is_judged_against_the_baseline():
    analysis = Analysis()
    compared(analysis, 12, has_baseline=True)
    compared(analysis, 10, baseline=True, mirror=0.003)  # exactly MinSamples on the baseline's side
    summary = summarize(analysis.counts()[0], Settings(min_samples=10))["GET /e"]
    assert {k: summary[k] for k in ("compared", "baseline_compared", "with_baseline", "same", "different")} == {
        "compared": 12, "baseline_compared": 10, "with_baseline": 12, "same": 12, "different": 0}  # fmt: skip
    assert (summary["verdict"], summary["regression"], summary["excess"]) == ("same", False, 0.0)
    latency = summary["latency"]
    assert latency["against"] == "baseline" and latency["candidate"]["n"] == 12 and latency["reference"]["n"] == 10
    assert latency["verdict"] == "slower"  # 4 ms against the baseline's 3 ms, every time


def test_without_enough_baseline_latencies_the_app_is_the_reference():
    analysis = Analysis()
    compared(analysis, 12, has_baseline=True)
    compared(analysis, 9, baseline=True, mirror=0.003)
    summary = summarize(analysis.counts()[0], Settings(min_samples=10))["GET /e"]
    assert summary["verdict"] == "learning" and summary["latency"]["against"] == "app"
    assert summary["latency"]["reference"]["n"] == 12


@pytest.mark.parametrize(
    ("candidate", "baseline", "expected"),
    [
        ((10, False), 0, "same"),  # no baseline: MinSamples candidates are enough
        ((10, True), 10, "same"),  # exactly MinSamples a side
        ((12, True), 0, "learning"),  # a baseline is configured, none compared yet
        ((12, "first"), 0, "learning"),  # one comparison said so
        ((12, False), 1, "learning"),  # the baseline answered once: wait for its sample
    ],
)
def test_an_endpoint_learns_until_each_side_it_expects_has_its_sample(candidate, baseline, expected):
    analysis = Analysis()
    n, has_baseline = candidate
    for i in range(n):
        compared(analysis, 1, has_baseline=has_baseline is True or (has_baseline == "first" and i == 0))
    compared(analysis, baseline, baseline=True)
    assert summarize(analysis.counts()[0], Settings(min_samples=10))["GET /e"]["verdict"] == expected


def test_an_endpoint_is_noise_when_a_field_is_and_the_same_when_only_added_fields_differ():
    noisy = Analysis()
    compared(noisy, 12, has_baseline=True, fields=[("body.t", "value")])
    compared(noisy, 12, baseline=True, fields=[("body.t", "value")])
    assert summarize(noisy.counts()[0], Settings(min_samples=10))["GET /e"]["verdict"] == "noise"
    added = Analysis()
    compared(added, 12, fields=[("body.new", "added")])
    summary = summarize(added.counts()[0], Settings(min_samples=10))["GET /e"]
    assert summary["verdict"] == "same" and summary["fields"]["body.new"]["verdict"] == "added"


def test_merging_sums_latency_buckets_and_takes_counts_without_fields():
    one = {"GET /e": {"compared": 1, "latency": {"app": {"5": 1}, "candidate": {"7": 2}}}}
    two = {"GET /e": {"compared": 2, "latency": {"app": {"5": 3}}}}
    merged = merge([one, two])["GET /e"]
    assert merged["compared"] == 3 and merged["fields"] == {}
    assert merged["latency"]["app"] == {"5": 4} and merged["latency"]["candidate"] == {"7": 2}


def test_a_fields_rates_and_excess_are_exact_to_six_places():
    alone = Analysis()  # no baseline: the noise rate is 0, not unknown
    for i in range(12):
        compared(alone, 1, fields=[("body.t", "value")] if i % 3 == 0 else [])
    field = summarize(alone.counts()[0], Settings(min_samples=10))["GET /e"]["fields"]["body.t"]
    assert (field["rate"], field["noise_rate"], field["excess"]) == (0.333333, 0.0, 0.333333)
    paired = Analysis()
    compared(paired, 12, has_baseline=True, fields=[("body.t", "value")])
    for i in range(12):
        compared(paired, 1, baseline=True, fields=[("body.t", "value")] if i % 4 == 0 else [])
    field = summarize(paired.counts()[0], Settings(min_samples=10))["GET /e"]["fields"]["body.t"]
    assert (field["rate"], field["noise_rate"], field["excess"]) == (1.0, 0.25, 0.75)
