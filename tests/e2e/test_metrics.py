"""Prometheus metrics: in-process, over HTTP from ``wsgimirror serve``, and summed over gunicorn workers."""

import sys
import urllib.request

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Process, example_config, free_port, one_request, wait_until
from wsgimirror.middleware import MirrorMiddleware


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [])
    return [b"ok"]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples, name, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def test_metrics_on_a_registry(server, make_sink):
    ok, failing = make_sink(), make_sink(status=500)
    registry = CollectorRegistry()
    config = {
        "ReverseProxy": {
            "Routes": {"r": {"Match": {"Paths": ["/m/*"]}, "Metadata": {"MirrorCluster": "c"}}},
            "Clusters": {
                "c": {
                    "LoadBalancingPolicy": "RoundRobin",
                    "Destinations": {"ok": {"Address": ok.address}, "err": {"Address": failing.address}},
                }
            },
        }
    }
    mw = MirrorMiddleware(app, config, prometheus=registry)
    address = server(mw)
    for i in range(10):
        one_request(address, target=f"/m/{i}")
    one_request(address, target="/other")
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    value = registry.get_sample_value
    assert value("wsgimirror_requests_total") == 11
    assert value("wsgimirror_copies_total", {"route": "r", "cluster": "c"}) == 10
    labels = {"route": "r", "cluster": "c", "outcome": "succeeded"}
    assert value("wsgimirror_mirrors_total", {**labels, "destination": "c/ok"}) == 5
    assert value("wsgimirror_responses_total", {"cluster": "c", "destination": "c/err", "status_class": "5xx"}) == 5
    assert value("wsgimirror_mirror_duration_seconds_count", {"cluster": "c", "destination": "c/ok"}) == 5
    assert value("wsgimirror_in_flight", {"cluster": "c", "destination": "c/ok"}) == 0
    again = MirrorMiddleware(app, config, prometheus=registry)  # a second middleware shares the series
    assert again.stats()["requests"] == 0


def test_serve_exposes_metrics_over_http(tmp_path, sink):
    port, metrics_port = free_port(), free_port()
    config = example_config(tmp_path, sink.address)
    proc = Process(
        [sys.executable, "-m", "wsgimirror", "serve", "examples.legacy_app:application", "--config", config,
         "--bind", f"127.0.0.1:{port}", "--metrics-bind", f"127.0.0.1:{metrics_port}"],
        ready="serving on",
    )  # fmt: skip
    try:
        for i in range(6):
            one_request(("127.0.0.1", port), method="POST", target=f"/api/{i}", body=b"x", host="localhost")
        sink.wait_for(6)
        wait_until(lambda: total(scrape(metrics_port), "wsgimirror_mirrors_total", outcome="succeeded") == 6)
        samples = scrape(metrics_port)
        assert total(samples, "wsgimirror_requests_total") == 6
        assert total(samples, "wsgimirror_mirror_duration_seconds_count", cluster="shadow") == 6
    finally:
        status, _, err = proc.stop()
    assert status == 0, err


def test_gunicorn_workers_metrics_are_summed_by_the_master(tmp_path, sink):
    port, metrics_port = free_port(), free_port()
    proc = Process(
        [sys.executable, "-m", "gunicorn", "-c", "examples/gunicorn.conf.py"],
        ready="wsgimirror metrics on",
        env={
            "WSGIMIRROR_CONFIG": example_config(tmp_path, sink.address),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WSGIMIRROR_METRICS_BIND": f"127.0.0.1:{metrics_port}",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": "",
        },
    )
    try:
        proc.wait_for_line("Booting worker")
        proc.wait_for_line("Booting worker")
        for i in range(30):
            response = one_request(
                ("127.0.0.1", port), method="POST", target="/api/orders", body=b'{"n": %d}' % i, host="127.0.0.1",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            assert response.status == 201
        sink.wait_for(30)
        wait_until(lambda: total(scrape(metrics_port), "wsgimirror_mirrors_total", outcome="succeeded") == 30)
        samples = scrape(metrics_port)
        assert total(samples, "wsgimirror_copies_total", route="api") == 30
        assert total(samples, "wsgimirror_in_flight") == 0
        per_worker = [v for (n, ls), v in samples.items() if n == "wsgimirror_requests_total"]
        assert sum(per_worker) == 30
    finally:
        status, _, err = proc.stop()
    assert status == 0, err
