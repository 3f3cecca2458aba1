"""The listening sockets of the commands' servers and the agent's page."""

from __future__ import annotations

import socket


def make_listener(bind: tuple[str, int]) -> socket.socket:
    """A listening socket with TCP_NODELAY (inherited by accepted sockets on Linux).

    gevent.pywsgi writes headers and body in two sends; without TCP_NODELAY every reused
    keep-alive connection stalls about 40 ms on Nagle plus delayed ACK.
    """
    family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(bind)
    listener.listen(1024)
    return listener
