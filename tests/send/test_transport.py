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
