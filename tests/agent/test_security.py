"""The agent's socket is the user's alone, and the agent opens no network listener unless one is configured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.agent.test_agent import echo, mirror_to, settled
from tests.helpers import one_request
from wsgimirror.middleware import MirrorMiddleware


def listening_tcp(pid: int) -> list[tuple[str, int]]:
    """The TCP addresses process ``pid`` listens on, read from /proc (its sockets' inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with open(f"/proc/{pid}/net/{table}") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    address, port = fields[1].split(":")
                    found.append((address[:width], int(port, 16)))
    return found


def test_the_agent_opens_no_network_listener_unless_asked(agents, server, sink):
    mw = MirrorMiddleware(echo, agents.config(mirror_to(sink.address)))
    one_request(server(mw), method="POST", target="/x", body=b"1")
    settled(mw, 1)
    assert listening_tcp(agents.pid()) == []


def test_the_agents_metrics_listen_on_loopback_for_a_bare_port(agents, server, sink):
    from tests.helpers import free_port

    port = free_port()
    mw = MirrorMiddleware(echo, agents.config(mirror_to(sink.address), MetricsBind=str(port)))
    one_request(server(mw), method="POST", target="/x", body=b"1")
    settled(mw, 1)
    assert listening_tcp(agents.pid()) == [("0100007F", port)]  # 127.0.0.1
    page = one_request(("127.0.0.1", port), target="/compare", host="127.0.0.1")
    assert page.status == 200 and page.body.startswith(b"<!doctype html>")


@pytest.mark.skipif(os.geteuid() != 0, reason="a client of another user needs root to become that user")
def test_a_client_of_another_user_is_refused_before_a_byte_is_read(agents, server, sink):
    mw = MirrorMiddleware(echo, agents.config(mirror_to(sink.address)))
    one_request(server(mw), method="POST", target="/x", body=b"1")
    settled(mw, 1)
    os.chmod(os.path.dirname(agents.path), 0o711)  # let the other user reach the socket, to show the agent refuses
    os.chmod(agents.path, 0o666)
    intruder = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)\n"
        "from wsgimirror.agent.protocol import frame\n"
        "s.sendall(frame(('ask', 1, 'compare')))\n"
        "print(repr(s.recv(100)))\n"
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-c", intruder, agents.path], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})  # fmt: skip
    assert result.stdout.strip() in ("b''", ""), result  # the agent closed the connection without an answer
    one_request(server(mw), method="POST", target="/y", body=b"2")
    settled(mw, 2)  # the app's own mirrors go on


def test_no_agent_is_started_in_a_directory_others_can_enter(tmp_path, monkeypatch, server, sink, caplog):
    """The socket's directory must be private: else the middleware sends its mirrors itself, and says why."""
    monkeypatch.delenv("WSGIMIRROR_AGENT")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    config = {**mirror_to(sink.address), "Agent": {"Socket": str(shared / "a.sock")}}
    mw = MirrorMiddleware(echo, config)
    assert "wsgimirror cannot use an agent" in caplog.text and "0700" in caplog.text
    one_request(server(mw), method="POST", target="/x", body=b"1")
    assert [r.body for r in sink.wait_for(1)] == [b"1"]
    assert mw.stats()["executor"] != "agent" and not (shared / "a.sock").exists()
