"""The wire, on real local sockets: what a mirror's write leaves on the socket."""

import socket

import gevent

from wsgimirror.send.transport import _send


def test_a_write_larger_than_the_socket_takes_at_once_arrives_whole_and_in_order():
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the first send takes only part of it
    data = bytes(range(256)) * 4096  # 1 MiB
    received = bytearray()

    def read_slowly():
        while len(received) < len(data):
            received.extend(theirs.recv(65536))
            gevent.sleep(0.001)

    reader = gevent.spawn(read_slowly)
    try:
        _send(ours, data)
        reader.join(timeout=5)
    finally:
        ours.close()
        theirs.close()
    assert bytes(received) == data


def test_an_os_error_other_than_a_reset_or_a_timeout_fails_the_mirror_as_socket_error_with_its_message():
    """A connected UDP socket to a closed port: the write goes out, the read gets ECONNREFUSED from the ICMP answer."""
    import pytest

    from wsgimirror.errors import MirrorSendError
    from wsgimirror.send.transport import _roundtrip

    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", port))
    try:
        with pytest.raises(MirrorSendError) as caught:
            _roundtrip(udp, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None, False, None, reused=True)
    finally:
        udp.close()
    assert caught.value.reason == "socket_error" and "refused" in str(caught.value).lower()


def test_a_lane_keeps_one_connection_reconnects_after_a_close_and_closes_it_when_done():
    """A flood's sender: its requests go out one after the other on its own connection, which the pool never sees."""
    from dataclasses import replace

    from tests.helpers import ScriptedServer
    from wsgimirror.config.model import HttpClientSettings, MirrorSettings
    from wsgimirror.record.replay import _destination
    from wsgimirror.send.pools import connection_pool
    from wsgimirror.send.transport import Lane, exchange

    def answer(sock, head, body):  # the third answer ends its connection
        closing = head.startswith(b"GET /3 ")
        sock.sendall(b"HTTP/1.1 204 No Content\r\n" + (b"Connection: close\r\n" if closing else b"") + b"\r\n")
        return not closing

    target = ScriptedServer(answer)
    pool = connection_pool(_destination(target.address), replace(MirrorSettings(), max_in_flight=2),
                           HttpClientSettings())  # fmt: skip
    lane = Lane(pool)
    try:
        statuses = [exchange(lane, b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i, None, False, 5, 5, True)
                    for i in range(1, 6)]  # fmt: skip
        assert statuses == [204] * 5 and target.connections == 2  # one until the close, one after
        # one connection object, connected again after the close; the pool's own slots never used
        assert pool.num_connections == 1 and pool.resting == 0 and list(pool.pool.queue) == [None, None]
        lane.close()
        lane.close()  # twice is harmless
        from tests.helpers import wait_until

        wait_until(lambda: target.ended == 2, 5, "the lane's connection to close")
    finally:
        target.stop()
        pool.close()


def answered(lines: int, kept: bool):
    """_roundtrip over a socket pair whose other end answers with ``lines`` header lines; (status, kept headers)."""
    import pytest

    from wsgimirror.capture.answer import Answer
    from wsgimirror.capture.body import CaptureBudget
    from wsgimirror.errors import MirrorSendError
    from wsgimirror.send.transport import MAX_HEADERS, _roundtrip

    assert lines in (MAX_HEADERS, MAX_HEADERS + 1)
    ours, theirs = socket.socketpair()
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v%d\r\n" % (i, i) for i in range(lines - 1))
    theirs.sendall(head + b"Content-Length: 2\r\n\r\nok")
    answer = Answer(1 << 20, CaptureBudget()) if kept else None
    try:
        if lines > MAX_HEADERS:
            with pytest.raises(MirrorSendError, match="100 header lines"):
                _roundtrip(ours, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None, False, None, False, answer)
            return None, answer
        return _roundtrip(ours, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", None, False, None, False, answer), answer
    finally:
        ours.close()
        theirs.close()


def test_an_answer_of_exactly_max_headers_lines_is_taken_whole_and_one_more_fails_it():
    from wsgimirror.send.transport import MAX_HEADERS

    assert answered(MAX_HEADERS, kept=False)[0] == (200, True)
    (status, answer) = answered(MAX_HEADERS, kept=True)
    assert status == (200, True) and answer.complete and bytes(answer.body) == b"ok"
    assert answer.headers[0] == ("X-0", "v0") and len(answer.headers) == MAX_HEADERS
    assert answer.headers[-1] == ("Content-Length", "2")
    answered(MAX_HEADERS + 1, kept=False)
    _, refused = answered(MAX_HEADERS + 1, kept=True)
    assert not refused.complete  # never compared
