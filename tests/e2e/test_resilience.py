"""Client faults and a soak: the server keeps serving, nothing truncated is mirrored, nothing leaks."""

import gc
import os
import time

import gevent
from gevent.pywsgi import WSGIServer

from tests.helpers import Client, mirror_config, one_request, open_files, request_bytes, serve, wait_until
from wsgimirror.middleware import MirrorMiddleware


def reading_app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % len(body)]


def test_malformed_chunked_encoding_is_not_mirrored(server, sink):
    mw = MirrorMiddleware(reading_app, mirror_config(sink.address, MemoryBodyBytes=100))
    address = server(mw)
    head = request_bytes("POST", "/bad", {"Transfer-Encoding": "chunked"})
    with Client(address) as client:
        client.send(head + b"a0\r\n" + b"x" * 160 + b"\r\nzz-not-hex\r\n\r\n")
        try:
            response = client.read_response()
            assert response.status >= 400
        except ConnectionError:
            pass  # gevent may close the connection instead of answering
    wait_until(lambda: mw.stats()["dropped"].get("incomplete_body") == 1)
    assert one_request(address, method="POST", target="/after", body=b"fine").body == b"4"
    assert [r.target for r in sink.wait_for(1)] == ["/after"]


def test_content_length_larger_than_the_body_is_not_mirrored(server, sink):
    mw = MirrorMiddleware(reading_app, mirror_config(sink.address))
    address = server(mw)
    with Client(address) as client:
        client.send(request_bytes("POST", "/short", {"Content-Length": "1000"}) + b"only this")
        client.sock.shutdown(1)  # the client says it is done: the body ends 991 bytes early
        gevent.sleep(0.1)
    wait_until(lambda: mw.stats()["dropped"].get("incomplete_body") == 1)
    assert one_request(address, target="/after").status == 200
    assert [r.target for r in sink.wait_for(1)] == ["/after"]


class CountingSink:
    """A mirror destination that only counts, so the soak measures the app's memory, not the sink's."""

    def __init__(self):
        self.count = 0
        self.bytes = 0

    def __call__(self, environ, start_response):
        stream = environ["wsgi.input"]
        while piece := stream.read(65536):
            self.bytes += len(piece)
        self.count += 1
        start_response("204 No Content", [])
        return []


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def live_greenlets() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet) and not o.dead)


def test_soak_stays_flat_and_accounts_for_every_mirror(server, private_tempdir):
    counting = CountingSink()
    sink_server: WSGIServer = serve(counting)
    try:
        destination = f"http://127.0.0.1:{sink_server.server_port}"
        mw = MirrorMiddleware(reading_app, mirror_config(destination, MemoryBodyBytes=4096, MaxInFlight=256))
        address = server(mw)
        bodies = [os.urandom(size) for size in (0, 100, 3000, 9000)]  # 9000 spills to a temp file

        def client_loop(count):
            with Client(address) as client:
                for i in range(count):
                    body = bodies[i % len(bodies)]
                    assert client.request("POST", f"/soak/{i}", body=body).body == b"%d" % len(body)

        def run(total):
            workers = [gevent.spawn(client_loop, total // 8) for _ in range(8)]
            gevent.joinall(workers, raise_error=True)
            wait_until(lambda: mw.stats()["in_flight"] == 0, timeout=30)

        start = time.monotonic()
        run(4000)  # warm up: pools, buffers, allocator arenas
        gc.collect()
        rss, files, greenlets = rss_kib(), len(open_files()), live_greenlets()
        run(20000)
        gc.collect()
        elapsed = time.monotonic() - start
        stats = mw.stats()
        assert stats["copies"] == 24000
        assert stats["copies"] == stats["mirrored"] + sum(stats["dropped"].values())
        assert stats["mirrored"] == stats["succeeded"] + stats["failed"] + stats["in_flight"]
        assert stats["failed"] == 0 and stats["in_flight"] == 0
        wait_until(lambda: counting.count == stats["succeeded"])
        assert rss_kib() - rss < 8 * 1024, (rss, rss_kib())
        assert len(open_files()) <= files
        assert os.listdir(private_tempdir) == []  # the suite's own directory: only what the code made
        assert live_greenlets() <= greenlets
        assert elapsed < 120
    finally:
        sink_server.stop(timeout=1)


def test_the_default_config_has_room_for_a_burst_to_a_slow_destination(server, make_sink):
    """100 requests at once to a destination answering in 200 ms: every copy is delivered with the default
    MaxInFlight (sized for 400 mirrors/s at 200 ms and more); the former default of 64 dropped 36."""
    slow = make_sink(delay=0.2)

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    mw = MirrorMiddleware(app, mirror_config(slow.address))
    address = server(mw)
    jobs = [gevent.spawn(one_request, address, method="POST", target="/burst", body=b"x" * 100) for _ in range(100)]
    gevent.joinall(jobs, raise_error=True)
    wait_until(lambda: mw.stats()["in_flight"] == 0 and mw.stats()["pending"] == 0)
    stats = mw.stats()
    assert (stats["copies"], stats["succeeded"], stats["dropped"]) == (100, 100, {})
    assert len(slow.wait_for(100)) == 100


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def keep_the_loop_busy(seconds: float) -> gevent.Greenlet:
    """A greenlet with a timer due at every turn of the loop, as a saturated server has events: never idle."""

    def spin():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            gevent.sleep(1e-6)

    return gevent.spawn(spin)


def test_mirrors_wait_for_an_idle_loop_and_are_dropped_as_overloaded_after_timeout(server, sink):
    mw = MirrorMiddleware(echo, mirror_config(sink.address, Timeout=0.3))
    address = server(mw)
    busy = keep_the_loop_busy(1.0)
    with Client(address) as client:
        for i in range(3):
            assert client.request("POST", f"/busy/{i}", body=b"x").body == b"x"  # the real traffic is served
    stats = mw.stats()
    assert (stats["mirrored"], stats["in_flight"], sink.requests) == (3, 3, [])  # waiting, not started
    busy.join()
    wait_until(lambda: mw.stats()["in_flight"] == 0)
    stats = mw.stats()
    assert stats["dropped"] == {"overloaded": 3} and stats["mirrored"] == 0 and sink.requests == []
    one_request(address, method="POST", target="/idle", body=b"y")  # an idle loop sends at once
    assert [r.target for r in sink.wait_for(1)] == ["/idle"]


def test_a_full_backlog_sheds_the_copy_before_capturing_the_request(server, make_sink):
    slow = make_sink(delay=1.0)
    seen = []

    def app(environ, start_response):
        seen.append(type(environ["wsgi.input"]).__name__)
        return echo(environ, start_response)

    mw = MirrorMiddleware(app, mirror_config(slow.address, MaxInFlight=2))
    with Client(server(mw)) as client:
        for i in range(5):
            assert client.request("POST", f"/{i}", body=b"%d" % i).body == b"%d" % i
    stats = mw.stats()
    assert stats["dropped"] == {"backlog_full": 3} and stats["mirrored"] == 2
    assert seen == ["TeeInput", "TeeInput", "Input", "Input", "Input"]  # the shed ones were never teed
    # the two admitted copies are the first two requests; they run concurrently, so either may arrive first
    assert sorted(r.body for r in slow.wait_for(2)) == [b"0", b"1"]


def test_a_burst_leaves_only_keep_alive_connections_resting_and_those_close_when_idle(server):
    """A soak of one sequential client grew from 138 to 218 open descriptors as pools filled towards 256 per
    destination: idle connections are now bounded, and closed after KeepAliveSeconds."""
    from tests.helpers import ScriptedServer

    def slow_answer(sock, head, body):
        gevent.sleep(0.2)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True

    destination = ScriptedServer(slow_answer)
    try:
        mw = MirrorMiddleware(echo, mirror_config(destination.address, KeepAliveConnections=8, KeepAliveSeconds=0.5))
        address = server(mw)
        gevent.joinall([gevent.spawn(one_request, address, method="POST", target=f"/{i}", body=b"x")
                        for i in range(40)], raise_error=True)  # fmt: skip
        wait_until(lambda: mw.stats()["succeeded"] == 40, 10, "the burst's mirrors")
        opened = destination.connections
        assert opened > 8  # the burst needed many at once
        # Within two sweeps (KeepAliveSeconds) no more rest than KeepAliveConnections, then none once idle.
        wait_until(lambda: opened - destination.ended <= 8, 2, "the burst's extra connections to close")
        wait_until(lambda: destination.ended == opened, 5, "the resting connections to close once idle")
    finally:
        destination.stop()
