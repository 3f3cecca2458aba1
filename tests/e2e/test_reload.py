"""reload(): an atomic swap under load, and several clusters sharing one capture by percentage."""

import time

import gevent
import pytest

from tests.helpers import Client, mirror_config, wait_until
from wsgimirror import ConfigError
from wsgimirror.middleware import MirrorMiddleware


def slow_reader(environ, start_response):
    """Reads the body in two halves with a pause between, so captures straddle the reload."""
    stream = environ["wsgi.input"]
    first = stream.read(8)
    gevent.sleep(0.002)
    rest = stream.read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [first + rest]


def test_reload_under_load_loses_and_duplicates_nothing(server, make_sink):
    before, after = make_sink(), make_sink()
    # The clients share the server's process and keep its loop busy: mirrors wait for it to be idle, so room
    # for every copy to wait (MaxInFlight) and time (Timeout) make this about reloading, not about shedding.
    room = {"MaxInFlight": 2000, "Timeout": 60}
    mw = MirrorMiddleware(slow_reader, mirror_config(before.address, **room))
    address = server(mw)
    spans = {}

    def client_loop(worker):
        with Client(address) as client:
            for i in range(150):
                key = f"{worker}-{i}"
                start = time.monotonic()
                assert client.request("POST", f"/r/{key}", body=key.encode() * 4).body == key.encode() * 4
                spans[key] = (start, time.monotonic())

    workers = [gevent.spawn(client_loop, w) for w in range(8)]
    wait_until(lambda: len(spans) >= 400)
    old = mw._generation.dispatcher
    swapped_at = time.monotonic()
    mw.reload(mirror_config(after.address, **room))
    with pytest.raises(ConfigError, match="^Mirror.MaxInFlight: must be at least 1"):
        mw.reload(mirror_config(before.address, MaxInFlight=0))  # changes nothing
    gevent.joinall(workers, raise_error=True)
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    stats = mw.stats()
    assert stats["copies"] == 1200 == stats["mirrored"] == stats["succeeded"]
    got_before = [r.target.rsplit("/", 1)[1] for r in before.wait_for(1)]
    got_after = [r.target.rsplit("/", 1)[1] for r in after.requests]
    assert sorted(got_before + got_after) == sorted(spans)  # every request mirrored exactly once
    assert all(spans[k][0] < swapped_at for k in got_before)  # the old config only for requests already in
    assert all(spans[k][1] > swapped_at for k in got_after)
    assert {k for k, (start, _) in spans.items() if start > swapped_at} <= set(got_after)
    assert {k for k, (_, end) in spans.items() if end < swapped_at} <= set(got_before)
    wait_until(lambda: old.active == 0)
    idle = [c for s in old._clusters.values() for d in s.destinations for c in d.pool.pool.queue if c]
    assert idle and all(c.sock is None for c in idle)  # the retired config closed its connections


def test_several_clusters_each_take_their_share_of_one_capture(server, make_sink):
    thirty, seventy, everything = make_sink(), make_sink(), make_sink()
    config = mirror_config(everything.address, MaxInFlight=10000, Timeout=60)  # see the test above
    clusters = config["ReverseProxy"]["Clusters"]
    clusters["thirty"] = {"Metadata": {"MirrorPercent": 30}, "Destinations": [{"Address": thirty.address}]}
    clusters["seventy"] = {"Metadata": {"MirrorPercent": "70"}, "Destinations": [{"Address": seventy.address}]}
    config["ReverseProxy"]["Routes"]["all"]["Metadata"]["MirrorCluster"] = "m, thirty, seventy"
    mw = MirrorMiddleware(slow_reader, config)
    n = 3000

    def client_loop(worker):
        with Client(server_address) as client:
            for i in range(n // 6):
                client.request("POST", f"/{worker}/{i}", body=b"0123456789")

    server_address = server(mw)
    gevent.joinall([gevent.spawn(client_loop, w) for w in range(6)], raise_error=True)
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    by_cluster = mw.stats()["by_cluster"]
    bound = 5 * (0.3 * 0.7 / n) ** 0.5 * n  # five standard deviations
    assert by_cluster["m"]["succeeded"] == n
    assert abs(by_cluster["thirty"]["succeeded"] - 0.3 * n) < bound
    assert abs(by_cluster["seventy"]["succeeded"] - 0.7 * n) < bound
    assert by_cluster["thirty"]["dropped"] == {"sampled_out": n - by_cluster["thirty"]["succeeded"]}
    assert all(r.body == b"0123456789" for r in thirty.requests + seventy.requests)


def test_a_reload_away_from_a_destination_closes_its_idle_connections(server, make_sink):
    from tests.helpers import ScriptedServer

    old = ScriptedServer(lambda sock, head, body: sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") or True)
    new = make_sink()
    mw = MirrorMiddleware(slow_reader, mirror_config(old.address))
    try:
        with Client(server(mw)) as client:
            client.request("POST", "/a", body=b"x")
            wait_until(lambda: mw.stats()["succeeded"] == 1)
            assert (old.connections, old.ended) == (1, 0)  # kept alive, idle in the pool
            mw.reload(mirror_config(new.address))
            wait_until(lambda: old.ended == 1, 5, "the idle connection to the old destination to close")
            client.request("POST", "/b", body=b"y")
            assert [r.target for r in new.wait_for(1)] == ["/b"]
    finally:
        old.stop()


def test_a_reload_that_drops_one_destination_keeps_the_idle_connections_of_the_others(server):
    from tests.helpers import ScriptedServer

    def answer(sock, head, body):
        return sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") or True

    kept, dropped = ScriptedServer(answer), ScriptedServer(answer)

    def config(*clusters: tuple[str, str]) -> dict:
        return {
            "ReverseProxy": {
                "Routes": {
                    "all": {
                        "Match": {"Paths": ["/{**any}"]},
                        "Metadata": {"MirrorCluster": ",".join(c for c, _ in clusters)},
                    }
                },
                "Clusters": {cid: {"Destinations": [{"Address": address}]} for cid, address in clusters},
            }
        }

    mw = MirrorMiddleware(slow_reader, config(("k", kept.address), ("d", dropped.address)))
    try:
        with Client(server(mw)) as client:
            client.request("POST", "/a", body=b"x")
            wait_until(lambda: mw.stats()["succeeded"] == 2)
            mw.reload(config(("k", kept.address)))
            wait_until(lambda: dropped.ended == 1, 5, "the idle connection to the dropped destination to close")
            client.request("POST", "/b", body=b"y")
            wait_until(lambda: len(kept.requests) == 2)
            assert (kept.connections, kept.ended) == (1, 0)  # the second mirror reused the first's connection
    finally:
        mw.close()
        kept.stop()
        dropped.stop()
