"""Comparison you can trust, over real servers: verdicts that respect sample sizes, normalisation, added and
mirror-made fields, latency side by side, and a report that shows magnitude."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import time

from tests.e2e.test_compare import compare_config, settled, url
from tests.helpers import one_request, wait_until
from wsgimirror.middleware import MirrorMiddleware


def json_app(make, *, status=lambda environ: "200 OK", encode=None, delay=0.0):
    """An app answering ``make(environ)`` as JSON; ``encode``: a content coding to apply; ``delay``: seconds."""

    def app(environ, start_response):
        environ["wsgi.input"].read()
        if delay:
            time.sleep(delay)
        body = json.dumps(make(environ)).encode()
        headers = [("Content-Type", "application/json")]
        if encode == "gzip":
            body = gzip.compress(body)
            headers += [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
        headers.append(("Content-Length", str(len(body))))
        start_response(status(environ), headers)
        return [body]

    return app


def drive(mw_address, paths, count, mw=None):
    """``count`` requests over ``paths``, one after the other. The client runs in the servers' loop here, where
    mirrors start when the loop is idle: with ``mw``, each request waits for the last one's mirrors to end."""
    import gevent

    for i in range(count):
        assert one_request(mw_address, target=paths[i % len(paths)]).status in (200, 500)
        while mw is not None and mw._runtime.in_flight:  # (stats() would summarize every endpoint each time)
            gevent.sleep(0.001)


def endpoint(mw, name, candidate, baseline=0):
    return settled(mw, candidate, baseline)["by_endpoint"][name]


# -- 1. verdicts that respect sample sizes ------------------------------------------------------------------


def test_a_status_that_fails_at_random_is_noise_and_learning_comes_first(server):
    """The endpoint answers 500 one time in five on every side: scattered rates are not a regression."""
    flaky = json_app(lambda e: {"ok": True}, status=lambda e: "500 Oops" if random.random() < 0.2 else "200 OK")
    mw = MirrorMiddleware(flaky, compare_config(url(server(flaky)), url(server(flaky))))
    address = server(mw)
    drive(address, ["/flaky"], 8)
    early = endpoint(mw, "GET /flaky", 8, 8)
    assert early["verdict"] == "learning" and not early["regression"]  # eight a side: no verdict yet
    drive(address, ["/flaky"], 72)
    late = endpoint(mw, "GET /flaky", 80, 80)
    assert late["regression"] is False and late["fields"].get("status", {}).get("verdict") in (None, "noise", "same")


def test_a_baseline_sampled_rarely_makes_noise_wait_not_regress(server):
    """Noise against a baseline sampled at 10 %: the endpoint learns until the baseline has its minimum sample."""
    noisy = json_app(lambda e: {"id": random.random()})
    config = compare_config(url(server(noisy)), url(server(noisy)))
    config["ReverseProxy"]["Clusters"]["baseline"]["Metadata"] = {"MirrorPercent": 10}
    mw = MirrorMiddleware(noisy, config)
    drive(server(mw), ["/n"], 40)
    row = endpoint(mw, "GET /n", 40)
    assert row["baseline_compared"] < 10 and row["with_baseline"] == 40
    assert row["verdict"] == "learning" and not row["regression"]
    assert row["fields"]["body.id"]["rate"] == 1.0 and row["fields"]["body.id"]["verdict"] == "learning"


def test_a_real_change_regresses_once_both_sides_have_their_sample(server):
    old = json_app(lambda e: {"total": 10})
    new = json_app(lambda e: {"total": 11})
    mw = MirrorMiddleware(old, compare_config(url(server(new)), url(server(old))))
    drive(server(mw), ["/t"], 12)
    field = endpoint(mw, "GET /t", 12, 12)["fields"]["body.total"]
    assert (field["verdict"], field["rate"], field["noise_rate"]) == ("regression", 1.0, 0.0) and field[
        "p_value"
    ] < 1e-5


# -- 2. normalisation ------------------------------------------------------------------------------------------


def test_the_same_json_gzip_encoded_is_the_same(server):
    make = lambda e: {"items": [1, 2, 3], "name": "x"}  # noqa: E731
    mw = MirrorMiddleware(json_app(make), compare_config(url(server(json_app(make, encode="gzip")))))
    drive(server(mw), ["/g"], 12)
    row = endpoint(mw, "GET /g", 12)
    assert row["fields"] == {} and row["same"] == 12  # no content-encoding, vary or body difference


def test_numbers_are_compared_by_value_unless_strict_types(server):
    app, candidate = json_app(lambda e: {"price": 12}), json_app(lambda e: {"price": 12.0})
    by_value = MirrorMiddleware(app, compare_config(url(server(candidate))))
    strict = MirrorMiddleware(app, compare_config(url(server(candidate)), StrictTypes=True))
    for mw in (by_value, strict):
        drive(server(mw), ["/p"], 10)
    assert endpoint(by_value, "GET /p", 10)["same"] == 10
    field = endpoint(strict, "GET /p", 10)["fields"]["body.price"]
    assert field["kinds"] == {"type": 10} and field["verdict"] == "regression"


# -- 3. added fields -------------------------------------------------------------------------------------------


def test_an_added_field_is_reported_not_a_regression_unless_asked(server):
    app, candidate = json_app(lambda e: {"a": 1}), json_app(lambda e: {"a": 1, "new": True})
    reported = MirrorMiddleware(app, compare_config(url(server(candidate))))
    regressing = MirrorMiddleware(app, compare_config(url(server(candidate)), AddedFields="regression"))
    for mw in (reported, regressing):
        drive(server(mw), ["/a"], 10)
    row = endpoint(reported, "GET /a", 10)
    assert row["fields"]["body.new"]["kinds"] == {"added": 10} and row["fields"]["body.new"]["verdict"] == "added"
    assert row["regression"] is False
    assert endpoint(regressing, "GET /a", 10)["fields"]["body.new"]["verdict"] == "regression"


# -- 4. what the mirror itself changed ---------------------------------------------------------------------


def echo_headers(environ):
    headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
    return {"headers": headers, "url": f"http://{environ.get('HTTP_HOST', '')}{environ['PATH_INFO']}"}


def test_without_a_baseline_echoes_of_what_the_mirror_changed_are_mirror_made(server):
    """An app that echoes its request: the mirror's Host, X-Forwarded-* and X-Mirrored-By come back changed."""
    app = json_app(echo_headers)
    mw = MirrorMiddleware(app, compare_config(url(server(app))))
    drive(server(mw), ["/echo"], 12)
    row = endpoint(mw, "GET /echo", 12)
    verdicts = {field: values["verdict"] for field, values in row["fields"].items()}
    assert verdicts["body.headers.Host"] == "mirror-made" and verdicts["body.url"] == "mirror-made"
    assert verdicts["body.headers.X-Mirrored-By"] == "mirror-made"
    assert verdicts["body.headers.X-Forwarded-For"] == "mirror-made"
    assert row["regression"] is False and row["same"] == 12, verdicts


# -- 5. latency --------------------------------------------------------------------------------------------


def test_a_slower_candidate_gets_its_own_verdict_against_the_baseline(server, tmp_path, capsys):
    from wsgimirror.commands.cli import main

    fast, slow = json_app(lambda e: {"a": 1}), json_app(lambda e: {"a": 1}, delay=0.03)
    log = tmp_path / "diff.jsonl"
    mw = MirrorMiddleware(fast, compare_config(url(server(slow)), url(server(fast)), Log=str(log)))
    drive(server(mw), ["/l"], 30)
    latency = endpoint(mw, "GET /l", 30, 30)["latency"]
    assert latency["verdict"] == "slower" and latency["against"] == "baseline" and latency["slower_p50"] > 100
    assert latency["candidate"]["p50_ms"] >= 30 and latency["candidate"]["n"] == 30
    mw.close()
    assert main(["report", str(log)]) == 0  # slower, yet the same answers: not a content regression
    out = capsys.readouterr().out
    assert "0 regressing, 1 slower" in out and "GET /l is slower: p50 +" in out and "of the baseline" in out
    assert main(["report", str(log), "--fail-slower"]) == 1


# -- 6. the report -----------------------------------------------------------------------------------------


def test_the_report_orders_by_excess_folds_the_noise_and_shows_what_was_not_compared(server, tmp_path, capsys):
    from wsgimirror.commands.cli import main

    def v1(environ):
        return {"n": 1, "noise": random.random()}

    rare = itertools.count()

    def v2(environ):
        path = environ["PATH_INFO"]
        wrong = path == "/rare" and next(rare) % 5 == 0  # a field wrong one time in five, every fifth request
        return {"n": 2 if path == "/always" or wrong else 1, "noise": random.random()}

    log = tmp_path / "diff.jsonl"
    old, new = json_app(v1), json_app(v2, status=lambda e: "500 No" if e["PATH_INFO"] == "/always" else "200 OK")
    mw = MirrorMiddleware(old, compare_config(url(server(new)), url(server(old)), Log=str(log), MaxPerSecond=100_000))
    paths = ["/rare", "/always", *(f"/quiet{i}" for i in range(6))]
    drive(server(mw), paths, 8 * 60, mw)
    settled(mw, 8 * 60, 8 * 60)
    mw.close()
    assert main(["report", str(log)]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("! ")]
    assert rows[0].startswith("! GET /always") and rows[1].startswith("! GET /rare")  # 100 % first, then 20 %
    assert "6 endpoints within the noise or the same are folded away: --all shows them" in out
    assert "GET /quiet0" not in out
    assert "  status: differs in 100.0% of 60 (noise 0.0% of 60)" in out
    assert main(["report", str(log), "--all"]) == 1
    assert "GET /quiet0" in capsys.readouterr().out


def test_comparisons_not_made_are_shown_with_their_reasons(server, tmp_path, capsys):
    from wsgimirror.commands.cli import main

    app = json_app(lambda e: {"a": 1})
    log = tmp_path / "diff.jsonl"
    mw = MirrorMiddleware(app, compare_config(url(server(app)), Log=str(log), MaxPerSecond=1))
    drive(server(mw), ["/b"], 6)
    wait_until(lambda: sum(mw.stats()["compare"]["skipped"].values()) >= 4, what="budget skips")
    mw.close()
    main(["report", str(log)])
    assert "comparisons not made: budget " in capsys.readouterr().out
    main(["report", str(log), "--html", str(tmp_path / "r.html")])
    assert "comparisons not made:</b> budget " in (tmp_path / "r.html").read_text()


def test_a_page_of_hundreds_of_endpoints_stays_small_and_shows_examples_with_their_request(server, tmp_path):
    """1.6 MB for 119 endpoints before: noise is folded, examples are drawn for the endpoints that need them."""
    from wsgimirror.compare.html import render

    def v(version):
        return json_app(lambda e: {"path": e["PATH_INFO"], "big": [{"k": i, "v": "x" * 40} for i in range(200)],
                                   "total": version if e["PATH_INFO"].endswith("7") else 1})  # fmt: skip

    mw = MirrorMiddleware(v(1), compare_config(url(server(v(2))), MaxPerSecond=100_000, Examples=5))
    drive(server(mw), [f"/e{i}" for i in range(300)], 300 * 10, mw)
    settled(mw, 3000)
    page = render(mw.comparison_report())
    assert len(page.encode()) < 700_000, len(page)
    assert page.count("<section") == 300 and "the request</summary>" in page
    assert "GET /e7" in page and "({" not in page  # no Python repr of a JSON body


def test_one_json_side_and_one_text_side_show_as_text_not_a_python_tuple(server):
    from wsgimirror.compare.html import render

    app = json_app(lambda e: {"args": {"a": "1"}})

    def text(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain words"]

    mw = MirrorMiddleware(app, compare_config(url(server(text)), MinSamples=1))
    drive(server(mw), ["/j"], 1)
    settled(mw, 1)
    page = render(mw.comparison_report())
    assert "({&#x27;args&#x27;" not in page and "({'args'" not in page and "&quot;args&quot;" in page


def test_the_live_page_keeps_examples_of_every_regressing_endpoint(server):
    """With 119 endpoints, the newest 200 examples were all one busy endpoint's: each keeps its own now."""

    def v(version):
        return json_app(lambda e: {"n": version if e["PATH_INFO"] != "/busy" or version == 1 else 3})

    mw = MirrorMiddleware(v(1), compare_config(url(server(v(2))), MaxPerSecond=100_000))
    address = server(mw)
    drive(address, ["/busy"], 400, mw)
    drive(address, [f"/other{i}" for i in range(119)], 119 * 2, mw)
    settled(mw, 400 + 238)
    shown = {e["endpoint"] for e in mw.comparison_report().examples}
    assert {f"GET /other{i}" for i in range(119)} <= shown and "GET /busy" in shown
