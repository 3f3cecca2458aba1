"""Mirror destinations that misbehave: the real responses stay correct and on time, failures are counted.

Each destination is a raw TCP server with a scripted answer, so every framing and fault is exact.
"""

import contextlib
import logging
import re
import socket
import struct
import time

import gevent
import pytest

from tests.helpers import Client, ScriptedServer, free_port, mirror_config, wait_until
from wsgimirror.middleware import MirrorMiddleware

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"real:" + body]


def answer(data: bytes, keep: bool = True):
    def behaviour(sock, head, body):
        sock.sendall(data)
        return keep

    return behaviour


def never_answers(sock, head, body):
    gevent.sleep(30)
    return False


def resets_mid_response(sock, head, body):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return False  # closing with linger 0 sends RST


def drips(sock, head, body):
    for byte in OK:
        sock.sendall(bytes([byte]))
        gevent.sleep(0.1)
    return True


def closes_after_answering(sock, head, body):
    sock.sendall(OK)  # claims keep-alive, then closes while the connection is idle in the pool
    return False


@pytest.fixture(params=["gevent", "thread"])
def executor(request):
    """Both ways a mirror runs: in a greenlet that one gevent.Timeout bounds, or on a pool thread where a
    deadline bounds each socket operation."""
    return request.param


@pytest.fixture
def scripted():
    servers = []

    def factory(behaviour):
        srv = ScriptedServer(behaviour)
        servers.append(srv)
        return srv

    yield factory
    for srv in servers:
        srv.stop()


def drive(server, mw, count=10, one_by_one=False):
    """Send ``count`` requests on one keep-alive connection; every answer must be right and prompt.

    ``one_by_one`` waits for each mirror to end before the next request, so that mirrors
    never overlap and a reusable mirror connection is always free.
    """
    timings = []
    with Client(server(mw)) as client:
        for i in range(count):
            start = time.monotonic()
            response = client.request("POST", f"/r{i}", body=b"body%d" % i)
            timings.append(time.monotonic() - start)
            assert (response.status, response.body) == (200, b"real:body%d" % i)
            if one_by_one:
                wait_until(lambda i=i: mw.stats()["succeeded"] + mw.stats()["failed"] == i + 1)
    assert max(timings) < 0.5, timings


FAULTS = [
    ("refused", None, {}, "refused: "),
    ("timeout", never_answers, {"Timeout": 0.3}, "timeout: no complete answer in time"),
    ("reset", resets_mid_response, {}, "reset: [Errno 104] Connection reset by peer"),
    ("bad_response", answer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", keep=False), {},
     "bad_response: not a valid HTTP response: "),
    ("timeout", drips, {"Timeout": 0.3}, "timeout: no complete answer in time"),
    ("closed", answer(b"", keep=False), {}, "closed: the destination closed the connection without answering"),
    ("closed", answer(b"HTTP/1.1 200 OK\r\nContent-Le", keep=False), {},
     "closed: the connection closed in the middle of the response head"),
    ("bad_response", answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"), {},
     "bad_response: the destination switched protocols"),
]  # fmt: skip


@pytest.mark.parametrize("reason, behaviour, knobs, detail", FAULTS, ids=[f"{f[0]}-{i}" for i, f in enumerate(FAULTS)])
def test_faulty_mirrors_never_reach_the_client(
    server, scripted, caplog, hub_errors, reason, behaviour, knobs, detail, executor
):
    address = scripted(behaviour).address if behaviour else f"http://127.0.0.1:{free_port()}"
    mw = MirrorMiddleware(
        app, mirror_config(address, BreakerFailures=0, **knobs, Executor=executor)
    )  # every mirror is tried
    with caplog.at_level(logging.WARNING, logger="wsgimirror"):
        drive(server, mw)
        wait_until(lambda: mw.stats()["failed"] == 10)
    stats = mw.stats()
    assert stats["failures"] == {reason: 10} and stats["in_flight"] == 0
    [line] = [r.getMessage() for r in caplog.records if r.name.startswith("wsgimirror")]
    assert f"is failing: {detail}" in line, line
    assert hub_errors.getvalue() == ""


def test_a_500_is_an_answer_and_keeps_the_connection(server, scripted, executor):
    dest = scripted(answer(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"))
    mw = MirrorMiddleware(app, mirror_config(dest.address, Executor=executor))
    drive(server, mw, one_by_one=True)
    assert mw.stats()["statuses"] == {"5xx": 10}
    assert dest.connections == 1


@pytest.mark.parametrize(
    "response, connections",
    [
        (OK, 1),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n", 1),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 1),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 1),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", 1),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", 10),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 10),
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (3 << 20, b"z" * (3 << 20)), 10),
    ],
    ids=["length", "chunked", "204", "304", "100-then-201", "connection-close", "http10", "3MiB-body"],
)
def test_response_framings_are_read_and_the_connection_reused_when_allowed(
    server, scripted, response, connections, executor
):
    dest = scripted(answer(response))  # the server would keep every connection: closing is our decision
    mw = MirrorMiddleware(app, mirror_config(dest.address, Executor=executor))
    drive(server, mw, one_by_one=True)
    assert mw.stats()["failed"] == 0
    assert dest.connections == connections


def test_a_close_delimited_response_is_an_answer(server, scripted, executor):
    dest = scripted(answer(b"HTTP/1.1 200 OK\r\n\r\nbody until close", keep=False))
    mw = MirrorMiddleware(app, mirror_config(dest.address, Executor=executor))
    drive(server, mw, count=3)
    wait_until(lambda: mw.stats()["succeeded"] == 3)


def test_head_mirrors_do_not_wait_for_a_body(server, scripted, executor):
    dest = scripted(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"))
    mw = MirrorMiddleware(app, mirror_config(dest.address, Timeout=2, Executor=executor))
    with Client(server(mw)) as client:
        for i in range(3):
            assert client.request("HEAD", "/").status == 200
            wait_until(lambda i=i: mw.stats()["succeeded"] == i + 1)
    assert dest.connections == 1 and mw.stats()["failed"] == 0


def test_a_connection_the_destination_closed_while_idle_is_replaced(server, scripted, executor):
    dest = scripted(closes_after_answering)
    mw = MirrorMiddleware(app, mirror_config(dest.address, Executor=executor))
    with Client(server(mw)) as client:
        for i in range(5):
            client.request("POST", f"/{i}", body=b"x")
            wait_until(lambda i=i: mw.stats()["succeeded"] == i + 1)
            wait_until(lambda i=i: dest.connections == i + 1)
            gevent.sleep(0.02)  # let the close reach us while the connection is idle
    assert mw.stats()["failed"] == 0
    assert len(dest.requests) == 5  # each mirror was sent exactly once


def test_a_reused_connection_reset_after_part_of_the_answer_is_not_sent_again(server, scripted, executor):
    """Only a reused connection that gave nothing back is retried: a partial answer means the
    destination received the request, and a second copy would be a duplicate."""
    answers = iter([OK, b"HTTP/1.1 200 OK\r\nContent-Le"])

    def first_whole_then_partial_and_reset(sock, head, body):
        data = next(answers)
        sock.sendall(data)
        if data != OK:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        return True

    dest = scripted(first_whole_then_partial_and_reset)
    mw = MirrorMiddleware(app, mirror_config(dest.address, BreakerFailures=0, Executor=executor))
    with Client(server(mw)) as client:
        client.request("POST", "/one", body=b"x")
        wait_until(lambda: mw.stats()["succeeded"] == 1)
        client.request("POST", "/two", body=b"y")  # on the kept-alive connection
        wait_until(lambda: mw.stats()["failed"] == 1)
    assert mw.stats()["failures"] == {"reset": 1}
    assert [head.split(b" ")[1] for head, _ in dest.requests] == [b"/one", b"/two"]  # /two sent once
    assert dest.connections == 1


def test_a_destination_without_tcp_nodelay_does_not_stall_each_mirror_on_delayed_acks(server, executor):
    """gevent.pywsgi's own listener has no TCP_NODELAY and writes an answer's head and body apart:
    without quick ACKs from the mirror's side, every mirror on a kept-alive connection waits ~40 ms."""
    from gevent.pywsgi import WSGIServer

    def destination(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"several ", b"chunks"]

    legacy = WSGIServer(("127.0.0.1", 0), destination, log=None)  # a plain listener: Nagle on
    legacy.start()
    try:
        config = mirror_config(f"http://127.0.0.1:{legacy.address[1]}", Executor=executor)

        def app(environ, start_response):
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]

        mw = MirrorMiddleware(app, config)
        with Client(server(mw)) as client:
            for i in range(20):
                client.request("POST", "/x", body=b"a" * 100)
                wait_until(lambda i=i: mw.stats()["succeeded"] == i + 1, what="the mirror's end")
        assert mw.stats()["by_cluster"]["m"]["latency_ms"]["p50"] < 20  # about 42 ms per mirror without quick ACKs
    finally:
        legacy.stop(timeout=1)


UPLOAD = b"u" * (16 << 20)  # more than the socket buffers take: the mirror is still writing when the fault comes


@contextlib.contextmanager
def raw_destination(handle=None):
    """A listener whose one connection ``handle(conn)`` treats as it likes, then closes; its address.

    With no ``handle`` the kernel accepts the connection and nothing ever reads it.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        try:
            handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    destination = gevent.spawn(serve) if handle is not None else None
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        if destination is not None:
            destination.kill()
        listener.close()


def upload(server, mw) -> None:
    with Client(server(mw)) as client:
        assert client.request("POST", "/upload", body=UPLOAD).body == b"real:" + UPLOAD


def assert_upload_times_out(server, executor, address, timeout, within):
    """An upload mirrored to ``address`` fails as one timeout, counted within ``within`` s of the app's answer."""
    config = mirror_config(address, Timeout=timeout, ConnectTimeout=5, MaxBodyBytes=64 << 20, Executor=executor)
    mw = MirrorMiddleware(app, config)
    upload(server, mw)
    started = time.monotonic()
    wait_until(lambda: mw.stats()["failed"] == 1, 10)
    assert mw.stats()["failures"] == {"timeout": 1} and time.monotonic() - started < within


def test_a_destination_that_resets_while_the_body_is_written_fails_as_reset(server, executor, caplog):
    def resets_after_the_head(conn):  # reads a little, then resets with the rest of the body unread
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with raw_destination(resets_after_the_head) as address:
        mw = MirrorMiddleware(app, mirror_config(address, MaxBodyBytes=64 << 20, Executor=executor))
        upload(server, mw)
        wait_until(lambda: mw.stats()["failed"] == 1)
    assert mw.stats()["failures"] == {"reset": 1}
    [line] = [r.getMessage() for r in caplog.records if "is failing" in r.getMessage()]
    assert re.search(r"is failing: reset: \[Errno (104|32)\] (Connection reset by peer|Broken pipe)$", line), line


def test_an_answer_slower_than_connect_timeout_but_within_timeout_is_waited_for(server, scripted, executor):
    def answers_late(sock, head, body):
        gevent.sleep(0.5)
        sock.sendall(OK)
        return True

    dest = scripted(answers_late)
    mw = MirrorMiddleware(app, mirror_config(dest.address, ConnectTimeout=0.2, Timeout=3, Executor=executor))
    drive(server, mw, count=1)
    wait_until(lambda: mw.stats()["succeeded"] + mw.stats()["failed"] == 1)
    assert mw.stats()["succeeded"] == 1


def test_a_destination_that_never_accepts_fails_as_connect_timeout_after_connect_timeout(server, executor):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # never accepted: the kernel's queue holds one connection, and drops later handshakes
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    try:
        mw = MirrorMiddleware(app, mirror_config(f"http://127.0.0.1:{port}", ConnectTimeout=0.3, Timeout=10,
                                                 Executor=executor))  # fmt: skip
        drive(server, mw, count=1)
        wait_until(lambda: mw.stats()["failed"] == 1, 8)
        stats = mw.stats()
        assert stats["failures"] == {"connect_timeout": 1}
        assert stats["by_cluster"]["m"]["latency_ms"]["p50"] < 5000  # its 0.3 s, not the 10 s Timeout
    finally:
        for sock in (*fillers, listener):
            sock.close()


def test_a_destination_that_never_reads_the_body_times_out(server, executor):
    with raw_destination() as address:  # accepted by the kernel, never read: the body fills the buffers and waits
        assert_upload_times_out(server, executor, address, timeout=0.5, within=2)


def test_a_timeout_under_a_second_lets_a_prompt_destination_answer(server, scripted, executor):
    dest = scripted(answer(OK))
    mw = MirrorMiddleware(app, mirror_config(dest.address, Timeout=0.5, Executor=executor))
    drive(server, mw, count=3, one_by_one=True)
    assert (mw.stats()["succeeded"], mw.stats()["failed"]) == (3, 0)


def test_a_destination_that_reads_the_body_slowly_is_cut_off_at_the_timeout(server, executor):
    def trickles(conn):  # 64 KiB every 20 ms: each write ends within the timeout, the whole 16 MiB takes 5 s
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        while conn.recv(65536):
            gevent.sleep(0.02)

    with raw_destination(trickles) as address:
        assert_upload_times_out(server, executor, address, timeout=1, within=3)


def test_a_reused_connection_closed_without_an_answer_is_retried_once_on_a_new_one(server, scripted, executor):
    """The destination read the request on a kept-alive connection and closed it unanswered (as a server does
    when its idle timeout races the request): nothing came back, so the mirror is sent again, once."""
    answers = iter([OK, b"", OK])

    def second_closed_unanswered(sock, head, body):
        data = next(answers)
        sock.sendall(data)
        return bool(data)

    dest = scripted(second_closed_unanswered)
    mw = MirrorMiddleware(app, mirror_config(dest.address, BreakerFailures=0, Executor=executor))
    drive(server, mw, count=2, one_by_one=True)
    assert (mw.stats()["succeeded"], mw.stats()["failed"]) == (2, 0)
    assert dest.connections == 2 and len(dest.requests) == 3  # the second mirror, sent again on a new connection


def headers_forever(sock, head, body):
    """A head that never ends: one header line after another, as fast as the socket takes them."""
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Endless: " + b"a" * 100 + b"\r\n"
    with contextlib.suppress(OSError):
        for _ in range(1_000_000):  # about 110 MB, bounded; the mirror gives up long before
            sock.sendall(line * 100)
    return False


def one_huge_header(sock, head, body):
    sock.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: ")
    with contextlib.suppress(OSError):
        for _ in range(1024):  # 64 MiB of one value
            sock.sendall(b"v" * 65536)
    return False


def many_short_headers(sock, head, body):
    sock.sendall(b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 150 + b"Content-Length: 2\r\n\r\nok")
    return True


@pytest.mark.parametrize("behaviour", [headers_forever, one_huge_header, many_short_headers])
@pytest.mark.parametrize("compared", [False, True], ids=["sent", "compared"])
def test_an_answer_head_past_its_bounds_fails_the_mirror_at_once(server, scripted, behaviour, compared, executor):
    """A destination sending header lines forever grew the app from 34 MiB to 2.2 GiB; a 64 MiB header held the
    mirror until its timeout. The head is bounded (64 KiB, 100 lines) and such a mirror fails at once."""
    destination = scripted(behaviour).address
    config = mirror_config(destination, BreakerFailures=0, Timeout=30, Executor=executor)
    if compared:
        config["ReverseProxy"]["Routes"]["all"]["Metadata"]["MirrorCompare"] = "m"
    mw = MirrorMiddleware(app, config)
    started = time.monotonic()
    drive(server, mw, count=3, one_by_one=True)
    assert time.monotonic() - started < 10  # not the 30 s timeout
    stats = mw.stats()
    assert stats["failures"] == {"head_too_large": 3}
    if compared:
        assert stats["compare"]["skipped"] == {"no_answer": 3}
