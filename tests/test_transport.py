"""The wire, on real local sockets: what a mirror's write leaves on the socket."""

import socket

import gevent

from wsgimirror.transport import _send


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
