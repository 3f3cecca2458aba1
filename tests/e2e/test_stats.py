"""stats(): the totals and their breakdowns by route, cluster and destination, with latency figures."""

from tests.helpers import free_port, one_request, wait_until
from wsgimirror.middleware import MirrorMiddleware


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [])
    return [b"ok"]


def test_breakdowns_by_route_cluster_and_destination(server, make_sink):
    ok, failing, slow = make_sink(), make_sink(status=503), make_sink(delay=0.5)
    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "ReverseProxy": {
            "Routes": {
                "api": {"Match": {"Paths": ["/api/*"]}, "Metadata": {"MirrorCluster": "good,bad"}},
                "admin": {"Match": {"Paths": ["/admin/*"]}, "Metadata": {"MirrorCluster": "slow"}},
            },
            "Clusters": {
                "good": {
                    "LoadBalancingPolicy": "RoundRobin",
                    "Destinations": {"a": {"Address": ok.address}, "b": {"Address": failing.address}},
                },
                "bad": {
                    "Destinations": {"dead": {"Address": dead}},
                    "Metadata": {"MirrorPercent": 50, "MirrorSampleBy": "key", "HashBy": "query", "Key": "u"},
                },
                "slow": {"Destinations": {"s": {"Address": slow.address}}},
            },
        },
        "Mirror": {"Timeout": 0.2, "BreakerFailures": 0},
    }
    mw = MirrorMiddleware(app, config)
    address = server(mw)
    for i in range(20):
        one_request(address, target=f"/api/x?u={i}")
    one_request(address, target="/admin/y")
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    stats = mw.stats()
    api, admin = stats["by_route"]["api"], stats["by_route"]["admin"]
    assert api["copies"] == 40 and api["mirrored"] + sum(api["dropped"].values()) == 40
    assert admin == {**admin, "copies": 1, "mirrored": 1, "failed": 1, "timed_out": 1}
    good, bad = stats["by_cluster"]["good"], stats["by_cluster"]["bad"]
    assert (good["mirrored"], good["succeeded"], good["statuses"]) == (20, 20, {"2xx": 10, "5xx": 10})
    assert 0 < good["latency_ms"]["p50"] <= good["latency_ms"]["p99"] < 1000 and good["latency_ms"]["samples"] == 20
    sampled_in = bad["mirrored"]
    assert 4 <= sampled_in <= 16 and bad["dropped"] == {"sampled_out": 20 - sampled_in}
    assert bad["failed"] == sampled_in and bad["failures"] == {"refused": sampled_in}
    assert stats["by_cluster"]["slow"]["failures"] == {"timeout": 1}
    by_destination = stats["by_destination"]
    assert by_destination["good/a"]["statuses"] == {"2xx": 10} and by_destination["good/b"]["statuses"] == {"5xx": 10}
    assert by_destination["bad/dead"]["failed"] == sampled_in
    assert by_destination["good/a"]["circuit"] == "closed"
    assert stats["copies"] == 41 and stats["succeeded"] + stats["failed"] == stats["mirrored"]


def test_each_destination_counts_the_copies_picked_for_it_and_none_is_pending(server, make_sink):
    """The demo and every wrapped-suite run showed `copies: 0` and a negative `pending` per destination."""
    from tests.helpers import Client, assert_accounted

    fast, slow = make_sink(), make_sink(delay=0.5)
    config = {
        "ReverseProxy": {
            "Routes": {"r": {"Match": {"Paths": ["/{**any}"]}, "Metadata": {"MirrorCluster": "c"}}},
            "Clusters": {
                "c": {
                    "LoadBalancingPolicy": "RoundRobin",
                    "HttpClient": {"MaxConnectionsPerServer": 1},  # the slow one's second copy finds no connection
                    "Destinations": {"fast": {"Address": fast.address}, "slow": {"Address": slow.address}},
                }
            },
        }
    }
    mw = MirrorMiddleware(app, config)
    with Client(server(mw)) as client:
        for i in range(4):
            client.request("POST", f"/{i}", body=b"x")
            wait_until(lambda: mw.stats()["by_destination"].get("c/fast", {}).get("in_flight", 1) == 0)
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    stats = mw.stats()
    fast_figures, slow_figures = stats["by_destination"]["c/fast"], stats["by_destination"]["c/slow"]
    assert (fast_figures["copies"], fast_figures["mirrored"], fast_figures["pending"]) == (2, 2, 0)
    assert (slow_figures["copies"], slow_figures["mirrored"], slow_figures["dropped"]) == (2, 1, {"backlog_full": 1})
    assert slow_figures["pending"] == 0 and slow_figures["succeeded"] == 1
    assert_accounted(stats)
