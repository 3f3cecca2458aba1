"""Real agent processes for the agent's tests: each test has its own socket, and its agents are stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time

import pytest

from tests.helpers import wait_until


def agent_pid(path: str) -> int | None:
    """The pid of the agent listening at ``path`` (its peer credentials), or None when none answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(path)
            pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            return pid
    except OSError:
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead for our purposes
        return fh.read().split(")")[-1].split()[0] != "Z"


def stop(pid: int) -> None:
    """Stop a process we started, by its id: SIGCONT (it may be stopped), SIGTERM, then SIGKILL."""
    for signum in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def agents(tmp_path, monkeypatch):
    """Mirrors go through an embedded agent (the users' default) at a socket of this test's own.

    ``agents.config(base)`` adds the test's Agent section; ``agents.pid()`` is the agent's pid. Every agent
    seen at the socket is stopped at the end.
    """
    monkeypatch.delenv("WSGIMIRROR_AGENT", raising=False)
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)

    class Agents:
        path = str(directory / "agent.sock")
        seen: set[int] = set()

        def config(self, config: dict, **agent) -> dict:
            return {**config, "Agent": {"Socket": self.path, "IdleSeconds": 30, **agent}}

        def pid(self, timeout: float = 10) -> int:
            found: list[int] = []
            wait_until(lambda: found.append(agent_pid(self.path) or 0) or found[-1], timeout, "an agent to answer")
            self.seen.add(found[-1])
            return found[-1]

    helper = Agents()
    yield helper
    from wsgimirror.agent.handoff import LINKS

    for link in list(LINKS):  # every middleware of the test lets go of its agent first, or it would start another
        link.shutdown()
    pid = agent_pid(helper.path)
    for each in helper.seen | ({pid} if pid else set()):
        stop(each)
